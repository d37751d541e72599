"""Autotune keys never contain an exact token count: resolution changes must not re-tune every shape."""
from __future__ import annotations

import pytest

ROW_ARGS = {"rows", "rows_per_batch", "base_sb", "base_sn", "M", "N"}


@pytest.mark.parametrize("module, name", [("forecast", "_combine_tuned"), ("ladder", "_ladder_tuned")])
def test_tuned_kernels_key_on_buckets_only(kernel_table, module, name):
    import importlib

    tuned = getattr(importlib.import_module(f"kernels.{module}"), name)
    assert "ROWS_BUCKET" in tuned.keys
    assert not ROW_ARGS & set(tuned.keys), tuned.keys
    assert set(tuned.keys) <= set(tuned.fn.arg_names)  # every key names a real kernel argument


def test_rows_bucket_is_the_next_power_of_two():
    from kernels._common import rows_bucket

    assert [rows_bucket(n) for n in (1, 64, 65, 4096, 4097, 4608, 6889)] == [64, 64, 128, 4096, 8192, 8192, 8192]
    # FLUX squares from 512 to 1536 pixels in 16-pixel steps: 65 token counts, at most 5 tunings.
    counts = {(side // 16) ** 2 for side in range(512, 1537, 16)}
    assert len(counts) > 60 and len({rows_bucket(n) for n in counts}) <= 5
