"""Shared launch helpers: interpret-mode detection, token-count buckets, autotuned vs fixed launch."""
from __future__ import annotations

import os

import torch
import triton

# Dtypes every kernel accepts; math is always fp32 (fp64 and others stay on the torch reference).
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
INDEX_DTYPES = (torch.int32, torch.int64)


def interpreting() -> bool:
    """True under TRITON_INTERPRET=1 (kernels run on CPU tensors through Triton's interpreter)."""
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def on_kernel_device(*tensors: torch.Tensor) -> bool:
    """All tensors on one CUDA device, or on the CPU while interpreting."""
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        return False
    device = next(iter(devices))
    return device.type == "cuda" or (interpreting() and device.type == "cpu")


def rows_bucket(rows: int) -> int:
    """Autotune key for a token/row count: the next power of two (at least 64).

    Resolution changes between and within runs (dynamic-resolution sampling, batch splits): an
    exact count in the key would re-tune, and stall, at every new shape; a bucket tunes once per
    doubling.
    """
    return max(64, 1 << max(0, int(rows) - 1).bit_length())


def launch(kernel, tuned, grid, *args, default: dict, **kwargs) -> None:
    """Launch `tuned` (an autotuned kernel) on a GPU, `kernel` with the `default` config otherwise.

    The interpreter cannot time configs (autotune benchmarks with CUDA events), so interpret
    mode, and kernels without configs, run one fixed config.
    """
    if tuned is None or interpreting():
        kernel[grid](*args, **kwargs, **default)
    else:
        tuned[grid](*args, **kwargs)


def grid_2d(rows: int, cols: int):
    """Grid over [rows, cols] tiles of BLOCK_R x BLOCK_C."""
    return lambda meta: (triton.cdiv(rows, meta["BLOCK_R"]), triton.cdiv(cols, meta["BLOCK_C"]))


def tile_configs() -> list[triton.Config]:
    """Tiles for the streaming elementwise kernels (memory-bound: every config moves the same bytes;
    the choice only trades occupancy against per-program overhead). Untimed here: no GPU was
    available when they were written; the GPU bench records the chosen one's bandwidth."""
    shapes = [(1, 1024, 4), (2, 1024, 4), (4, 1024, 8), (8, 512, 8), (16, 256, 4), (32, 128, 4)]
    return [triton.Config({"BLOCK_R": r, "BLOCK_C": c}, num_warps=w) for r, c, w in shapes]


def default_tile(cols: int) -> dict:
    """The fixed tile used in interpret mode: ~4096 elements, as wide as the row allows."""
    block_c = min(1024, triton.next_power_of_2(max(1, cols)))
    return {"BLOCK_R": max(1, 4096 // block_c), "BLOCK_C": block_c, "num_warps": 4}
