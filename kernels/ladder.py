"""Divided-difference ladder update on a full step, in one pass.

new[0] = value, new[i+1] = (new[i] - old[i]) / gaps[i]: each old entry and the value are read
once, each new entry written once, math in fp32 and storage in fp32 or bf16 (halves the cache).
The torch reference (`accel_core.ops.ladder_update_ref`) makes two passes per order plus casts.
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from ._common import SUPPORTED_DTYPES, default_tile, grid_2d, launch, on_kernel_device, rows_bucket, tile_configs

MAX_OLD = 3  # order <= 3: at most three old entries feed a new ladder of four


@triton.jit(do_not_specialize=["rows", "ROWS_BUCKET"])  # token counts vary: see forecast.py
def _ladder_kernel(
    # pointers: the new value, up to three old entries, up to four new entries, gaps in memory
    value_ptr, o0_ptr, o1_ptr, o2_ptr, n0_ptr, n1_ptr, n2_ptr, n3_ptr, gap_ptr,
    # gaps as scalars (used when GAPS_IN_MEMORY is False)
    g0, g1, g2,
    # sizes (every tensor is a contiguous [rows, C]); ROWS_BUCKET is only an autotune key
    rows, C, ROWS_BUCKET,
    NUM_OLD: tl.constexpr, GAPS_IN_MEMORY: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (r < rows)[:, None] & (c < C)[None, :]
    offs = r[:, None] * C + c[None, :]
    if GAPS_IN_MEMORY:
        if NUM_OLD > 0:
            g0 = tl.load(gap_ptr)
        if NUM_OLD > 1:
            g1 = tl.load(gap_ptr + 1)
        if NUM_OLD > 2:
            g2 = tl.load(gap_ptr + 2)
    cur = tl.load(value_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(n0_ptr + offs, cur.to(n0_ptr.dtype.element_ty), mask=mask)
    # Each level uses the unrounded fp32 value of the level above, so bf16 storage rounds once.
    if NUM_OLD > 0:
        cur = (cur - tl.load(o0_ptr + offs, mask=mask, other=0.0).to(tl.float32)) / g0
        tl.store(n1_ptr + offs, cur.to(n1_ptr.dtype.element_ty), mask=mask)
    if NUM_OLD > 1:
        cur = (cur - tl.load(o1_ptr + offs, mask=mask, other=0.0).to(tl.float32)) / g1
        tl.store(n2_ptr + offs, cur.to(n2_ptr.dtype.element_ty), mask=mask)
    if NUM_OLD > 2:
        cur = (cur - tl.load(o2_ptr + offs, mask=mask, other=0.0).to(tl.float32)) / g2
        tl.store(n3_ptr + offs, cur.to(n3_ptr.dtype.element_ty), mask=mask)


_ladder_tuned = triton.autotune(configs=tile_configs(), key=["C", "ROWS_BUCKET", "NUM_OLD"])(_ladder_kernel)


def supports(value: torch.Tensor, ladder: Sequence[torch.Tensor], gaps, storage_dtype=None) -> bool:
    if len(ladder) > MAX_OLD or len(gaps) != len(ladder) or value.dim() < 1:
        return False
    storage = storage_dtype or value.dtype
    tensors = [value, *ladder]
    if storage not in SUPPORTED_DTYPES or any(t.dtype not in SUPPORTED_DTYPES for t in tensors):
        return False
    if not on_kernel_device(*tensors) or any(t.shape != value.shape or not t.is_contiguous() for t in tensors):
        return False
    return not isinstance(gaps, torch.Tensor) or (gaps.dim() == 1 and gaps.is_floating_point())


def ladder_update(value: torch.Tensor, ladder: Sequence[torch.Tensor], gaps,
                  storage_dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Kernel form of `ladder_update_ref`: len(ladder) + 1 new contiguous tensors in the storage dtype."""
    storage = storage_dtype or value.dtype
    old = list(ladder)
    new = [torch.empty(value.shape, dtype=storage, device=value.device) for _ in range(len(old) + 1)]
    C = value.shape[-1]
    rows = value.numel() // max(1, C)
    if rows == 0 or C == 0:
        return new
    in_memory = isinstance(gaps, torch.Tensor)
    if in_memory:
        gap_buf, scalars = gaps.to(device=value.device, dtype=torch.float32), [1.0] * MAX_OLD
    else:
        gap_buf = value  # unused pointer
        scalars = [float(gaps[i]) if i < len(old) else 1.0 for i in range(MAX_OLD)]
    old_ptrs = old + [value] * (MAX_OLD - len(old))
    new_ptrs = new + [new[0]] * (MAX_OLD + 1 - len(new))
    launch(_ladder_kernel, _ladder_tuned, grid_2d(rows, C),
           value, *old_ptrs, *new_ptrs, gap_buf, *scalars, rows, C, rows_bucket(rows),
           NUM_OLD=len(old), GAPS_IN_MEMORY=in_memory, default=default_tile(C))
    return new
