"""Verification error: per-sample relative L1 / L2 error in one pass over forecast and truth.

Each program reduces a slice of one sample into two fp32 partial sums (|d|^p and |t|^p); a tiny
torch sum over the partials finishes. Partials, not atomics: the result is deterministic.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import SUPPORTED_DTYPES, interpreting, on_kernel_device

BLOCK = 1024
# Enough programs to fill a large GPU (132 SMs on H100/H200) several times over at batch 1.
TARGET_PROGRAMS = 1024


@triton.jit(do_not_specialize=["M", "per_prog", "P"])  # token counts vary: see forecast.py
def _relative_error_kernel(
    # pointers: forecast and truth (contiguous [B, M]), partial sums [B, P, 2] fp32
    f_ptr, t_ptr, part_ptr,
    # sizes: elements per sample, elements per program (a multiple of BLOCK), programs per sample
    M, per_prog, P,
    L1: tl.constexpr, BLOCK: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1).to(tl.int64)
    start = p * per_prog
    acc_d = tl.zeros([BLOCK], dtype=tl.float32)
    acc_t = tl.zeros([BLOCK], dtype=tl.float32)
    for k in range(0, per_prog, BLOCK):
        offs = start + k + tl.arange(0, BLOCK)
        mask = offs < M
        f = tl.load(f_ptr + b * M + offs, mask=mask, other=0.0).to(tl.float32)
        t = tl.load(t_ptr + b * M + offs, mask=mask, other=0.0).to(tl.float32)
        d = f - t
        if L1:
            acc_d += tl.abs(d)
            acc_t += tl.abs(t)
        else:
            acc_d += d * d
            acc_t += t * t
    out = (b * P + p) * 2
    tl.store(part_ptr + out, tl.sum(acc_d, axis=0))
    tl.store(part_ptr + out + 1, tl.sum(acc_t, axis=0))


def supports(forecast: torch.Tensor, truth: torch.Tensor, norm: str = "l2") -> bool:
    return (norm in ("l1", "l2") and forecast.shape == truth.shape and forecast.dim() >= 1
            and forecast.shape[0] > 0 and forecast.dtype in SUPPORTED_DTYPES and truth.dtype in SUPPORTED_DTYPES
            and on_kernel_device(forecast, truth))


def relative_error(forecast: torch.Tensor, truth: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Kernel form of `relative_error_ref`: fp32 [B]."""
    B = forecast.shape[0]
    f = forecast.reshape(B, -1).contiguous()
    t = truth.reshape(B, -1).contiguous()
    M = f.shape[1]
    if M == 0:
        return torch.zeros(B, dtype=torch.float32, device=forecast.device)
    blocks = triton.cdiv(M, BLOCK)
    # Interpret mode runs programs one by one in Python: few, long programs are much faster there.
    want = 4 if interpreting() else triton.cdiv(TARGET_PROGRAMS, B)
    per_prog = triton.cdiv(blocks, max(1, min(blocks, want))) * BLOCK
    P = triton.cdiv(M, per_prog)
    partial = torch.empty((B, P, 2), dtype=torch.float32, device=forecast.device)
    _relative_error_kernel[(B, P)](f, t, partial, M, per_prog, P, L1=norm == "l1", BLOCK=BLOCK)
    sums = partial.sum(1)
    num, den = sums[:, 0], sums[:, 1]
    if norm == "l2":
        num, den = num.sqrt(), den.sqrt()
    return num / den.clamp_min(1e-12)
