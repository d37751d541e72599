"""In-process ComfyUI test harness: bootstrap, micro models, deterministic assets, test-only nodes."""
