"""Forecast evaluation: sum_i c_i * history_i (+ base) in one pass over the history.

The torch reference (`accel_core.ops.forecast_combine_ref` / `forecast_residual_add_ref`) makes
one pass per term plus dtype casts; here each history tensor is read once, the base once, and the
result written once, so a forecast step costs about one memory sweep of the ladder.
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from ._common import (SUPPORTED_DTYPES, default_tile, grid_2d, launch, on_kernel_device, rows_bucket,
                      tile_configs)

MAX_TERMS = 4  # orders 0..3 (ForecastCacheConfig.order <= 3)


# Token counts change with resolution: no JIT specialization on them (or on strides that scale with
# them), so a new resolution reuses the compiled kernel. C (model width) stays specialized.
@triton.jit(do_not_specialize=["rows", "rows_per_batch", "ROWS_BUCKET", "base_sb", "base_sn"])
def _combine_kernel(
    # pointers: output, base (residual add), up to four history tensors, coefficients in memory
    out_ptr, base_ptr, h0_ptr, h1_ptr, h2_ptr, h3_ptr, coef_ptr,
    # coefficients as scalars (used when COEF_IN_MEMORY is False)
    c0, c1, c2, c3,
    # sizes: rows = batch * rows_per_batch; ROWS_BUCKET is only an autotune key
    rows, rows_per_batch, C, ROWS_BUCKET,
    # strides of base (elements): batch and row; its last dim is contiguous. out/history are [rows, C].
    base_sb, base_sn,
    NUM_TERMS: tl.constexpr, HAS_BASE: tl.constexpr, COEF_IN_MEMORY: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (r < rows)[:, None] & (c < C)[None, :]
    offs = r[:, None] * C + c[None, :]  # int64: rows * C exceeds 2^31 for long videos
    if COEF_IN_MEMORY:
        c0 = tl.load(coef_ptr)
        if NUM_TERMS > 1:
            c1 = tl.load(coef_ptr + 1)
        if NUM_TERMS > 2:
            c2 = tl.load(coef_ptr + 2)
        if NUM_TERMS > 3:
            c3 = tl.load(coef_ptr + 3)
    acc = tl.load(h0_ptr + offs, mask=mask, other=0.0).to(tl.float32) * c0
    if NUM_TERMS > 1:
        acc += tl.load(h1_ptr + offs, mask=mask, other=0.0).to(tl.float32) * c1
    if NUM_TERMS > 2:
        acc += tl.load(h2_ptr + offs, mask=mask, other=0.0).to(tl.float32) * c2
    if NUM_TERMS > 3:
        acc += tl.load(h3_ptr + offs, mask=mask, other=0.0).to(tl.float32) * c3
    if HAS_BASE:
        b = r // rows_per_batch
        n = r - b * rows_per_batch
        base_offs = (b * base_sb + n * base_sn)[:, None] + c[None, :]
        acc += tl.load(base_ptr + base_offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


_combine_tuned = triton.autotune(configs=tile_configs(), key=["C", "ROWS_BUCKET", "NUM_TERMS", "HAS_BASE"])(
    _combine_kernel)


def supports(base: torch.Tensor | None, history: Sequence[torch.Tensor], coefficients) -> bool:
    """Shapes/dtypes/devices this kernel handles; anything else stays on the reference."""
    n = min(len(history), len(coefficients))
    if n < 1 or n > MAX_TERMS or history[0].dim() < 1:
        return False
    terms = list(history[:n])
    tensors = terms + ([base] if base is not None else [])
    if any(t.dtype not in SUPPORTED_DTYPES for t in tensors) or not on_kernel_device(*tensors):
        return False
    if any(t.shape != terms[0].shape or not t.is_contiguous() for t in terms):
        return False
    if isinstance(coefficients, torch.Tensor) and (coefficients.dim() != 1 or not coefficients.is_floating_point()):
        return False
    if base is not None:
        if base.shape != terms[0].shape or base.stride(-1) != 1:
            return False
        if base.dim() != 3 and not base.is_contiguous():  # only [B, N, C] slices may be strided
            return False
    return True


def _launch(out: torch.Tensor, base: torch.Tensor | None, terms: list[torch.Tensor], coefficients) -> None:
    C = terms[0].shape[-1]
    rows = terms[0].numel() // max(1, C)
    if rows == 0 or C == 0:
        return
    if base is not None and base.dim() == 3:
        rows_per_batch, base_sb, base_sn = base.shape[1], base.stride(0), base.stride(1)
    else:  # contiguous base of any rank (or none): one "batch" of all rows
        rows_per_batch, base_sb, base_sn = rows, 0, C
    in_memory = isinstance(coefficients, torch.Tensor)
    if in_memory:
        coef = coefficients.to(device=out.device, dtype=torch.float32)
        scalars = [0.0] * MAX_TERMS
    else:
        coef = out  # unused pointer
        scalars = [float(coefficients[i]) if i < len(terms) else 0.0 for i in range(MAX_TERMS)]
    ptrs = terms + [terms[0]] * (MAX_TERMS - len(terms))
    launch(_combine_kernel, _combine_tuned, grid_2d(rows, C),
           out, base if base is not None else out, *ptrs, coef, *scalars,
           rows, rows_per_batch, C, rows_bucket(rows), base_sb, base_sn,
           NUM_TERMS=len(terms), HAS_BASE=base is not None, COEF_IN_MEMORY=in_memory,
           default=default_tile(C))


def forecast_combine(history: Sequence[torch.Tensor], coefficients) -> torch.Tensor:
    """Kernel form of `forecast_combine_ref`: fp32 [*, N, C] from up to four history tensors."""
    n = min(len(history), len(coefficients))
    terms = list(history[:n])
    out = torch.empty(terms[0].shape, dtype=torch.float32, device=terms[0].device)
    _launch(out, None, terms, coefficients)
    return out


def forecast_residual_add(base: torch.Tensor, history: Sequence[torch.Tensor], coefficients) -> torch.Tensor:
    """Kernel form of `forecast_residual_add_ref`: base + sum_i c_i h_i, in base's dtype (contiguous)."""
    n = min(len(history), len(coefficients))
    terms = list(history[:n])
    out = torch.empty(base.shape, dtype=base.dtype, device=base.device)
    _launch(out, base, terms, coefficients)
    return out


def supports_combine(history, coefficients) -> bool:
    return supports(None, history, coefficients)


def supports_residual_add(base, history, coefficients) -> bool:
    return supports(base, history, coefficients)
