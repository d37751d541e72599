"""Developer scripts (setup helpers, harness, training of test assets). Not part of the node pack."""
