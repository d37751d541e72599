"""Token gather / scatter and ClusCa's cluster propagation (for the token methods).

Rows are tokens of [B, N, C] tensors; one program moves a [BLOCK_R, BLOCK_C] tile of rows picked
by an index tensor. Index values must lie in [0, N) (resp. [0, K)): checking them on the host
would cost a device sync per call, so out-of-range rows are masked (read as zeros, never written)
instead of faulting; the torch references raise on them.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import INDEX_DTYPES, SUPPORTED_DTYPES, default_tile, grid_2d, launch, on_kernel_device


# Token counts vary with resolution: no JIT specialization on them (see forecast.py).
@triton.jit(do_not_specialize=["rows", "M", "N", "x_sb", "x_sn"])
def _gather_kernel(
    # pointers: source x [B, N, C] (strided rows), index [B, M] contiguous, out [B, M, C] contiguous
    x_ptr, idx_ptr, out_ptr,
    # sizes and x's batch / row strides (elements; last dim contiguous)
    rows, M, N, C, x_sb, x_sn,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = r < rows
    idx = tl.load(idx_ptr + r, mask=row_ok, other=0).to(tl.int64)
    valid = row_ok & (idx >= 0) & (idx < N)
    b = r // M
    src = (b * x_sb + idx * x_sn)[:, None] + c[None, :]
    col_ok = (c < C)[None, :]
    vals = tl.load(x_ptr + src, mask=valid[:, None] & col_ok, other=0.0)
    tl.store(out_ptr + r[:, None] * C + c[None, :], vals.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok)


@triton.jit(do_not_specialize=["rows", "M", "N"])
def _scatter_kernel(
    # pointers: out [B, N, C] contiguous (already a copy of dst), index [B, M], src [B, M, C] contiguous
    out_ptr, idx_ptr, src_ptr,
    rows, M, N, C,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = r < rows
    idx = tl.load(idx_ptr + r, mask=row_ok, other=0).to(tl.int64)
    valid = row_ok & (idx >= 0) & (idx < N)
    b = r // M
    mask = valid[:, None] & (c < C)[None, :]
    vals = tl.load(src_ptr + r[:, None] * C + c[None, :], mask=mask, other=0.0)
    tl.store(out_ptr + ((b * N + idx) * C)[:, None] + c[None, :], vals.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["rows", "N", "K"])
def _propagate_kernel(
    # pointers: cache [B, N, C], fresh [B, K, C], assign [B, N], out [B, N, C]; all contiguous
    cache_ptr, fresh_ptr, assign_ptr, out_ptr,
    rows, N, K, C, gamma,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = r < rows
    a = tl.load(assign_ptr + r, mask=row_ok, other=0).to(tl.int64)
    valid = row_ok & (a >= 0) & (a < K)
    col_ok = (c < C)[None, :]
    offs = r[:, None] * C + c[None, :]
    cached = tl.load(cache_ptr + offs, mask=row_ok[:, None] & col_ok, other=0.0).to(tl.float32)
    b = r // N
    spread = tl.load(fresh_ptr + ((b * K + a) * C)[:, None] + c[None, :], mask=valid[:, None] & col_ok,
                     other=0.0).to(tl.float32)
    out = cached + gamma * (spread - cached)
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok)


def _index_ok(index: torch.Tensor, batch: int) -> bool:
    return index.dtype in INDEX_DTYPES and index.dim() == 2 and index.shape[0] == batch


def supports_gather(x: torch.Tensor, index: torch.Tensor) -> bool:
    return (x.dim() == 3 and x.dtype in SUPPORTED_DTYPES and x.stride(-1) == 1 and _index_ok(index, x.shape[0])
            and on_kernel_device(x, index))


def token_gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Kernel form of `token_gather_ref`: [B, M, C] rows of x picked by index."""
    B, N, C = x.shape
    M = index.shape[1]
    out = torch.empty((B, M, C), dtype=x.dtype, device=x.device)
    if out.numel():
        idx = index.contiguous()
        launch(_gather_kernel, None, grid_2d(B * M, C), x, idx, out, B * M, M, N, C, x.stride(0), x.stride(1),
               default=default_tile(C))
    return out


def supports_scatter(dst: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> bool:
    return (dst.dim() == 3 and src.dim() == 3 and dst.dtype in SUPPORTED_DTYPES and src.dtype in SUPPORTED_DTYPES
            and _index_ok(index, dst.shape[0]) and src.shape[:2] == index.shape and src.shape[2] == dst.shape[2]
            and on_kernel_device(dst, index, src))


def token_scatter(dst: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Kernel form of `token_scatter_ref`: a contiguous copy of dst with the indexed rows replaced."""
    out = dst.contiguous().clone() if dst.is_contiguous() else dst.contiguous()
    B, N, C = out.shape
    M = index.shape[1]
    if B * M and C:
        launch(_scatter_kernel, None, grid_2d(B * M, C), out, index.contiguous(), src.contiguous(), B * M, M, N, C,
               default=default_tile(C))
    return out


def supports_propagate(cache: torch.Tensor, fresh: torch.Tensor, assign: torch.Tensor, gamma: float) -> bool:
    return (cache.dim() == 3 and fresh.dim() == 3 and cache.dtype in SUPPORTED_DTYPES
            and fresh.dtype in SUPPORTED_DTYPES and fresh.shape[0] == cache.shape[0]
            and fresh.shape[2] == cache.shape[2] and _index_ok(assign, cache.shape[0])
            and assign.shape[1] == cache.shape[1] and not isinstance(gamma, torch.Tensor)
            and on_kernel_device(cache, fresh, assign))


def cluster_propagate(cache: torch.Tensor, fresh: torch.Tensor, assign: torch.Tensor, gamma: float) -> torch.Tensor:
    """Kernel form of `cluster_propagate_ref`: (1 - gamma) * cache + gamma * fresh[assign], cache's dtype."""
    B, N, C = cache.shape
    K = fresh.shape[1]
    out = torch.empty((B, N, C), dtype=cache.dtype, device=cache.device)
    if out.numel():
        launch(_propagate_kernel, None, grid_2d(B * N, C), cache.contiguous(), fresh.contiguous(),
               assign.contiguous(), out, B * N, N, K, C, float(gamma), default=default_tile(C))
    return out
