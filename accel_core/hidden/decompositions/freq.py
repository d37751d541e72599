"""FreqCa (arXiv 2510.08669): reuse the low DCT band, forecast the high band.

Design choices (the paper's code reshapes tokens to a square and, for Qwen, uses a 1-D FFT):
- An orthonormal DCT-II over the true token grid of the target image segment, per channel:
  (h, w) for images, (t, h, w) or per-frame (h, w) for video (`video_transform`). Reference
  tokens (Kontext, Qwen-Image-Edit) never enter: the engine forecasts target tokens only.
- Low band: coefficients whose normalised frequency radius sqrt(sum_k (i_k / n_k)^2) is within
  `freq_cutoff` of the largest radius (FreqCa's 0.1 of the maximum radius, made resolution-free
  by normalising each axis by its length, so non-square grids split evenly). DC is always low.
- Transform by matrix products with cached basis matrices (one small n x n matrix per axis).
The projector returned is the HIGH-pass P = I - L, applied to the forecast increment.
"""
from __future__ import annotations

import math

import torch

from .base import DECOMPOSITIONS, Decomposition, TokenGrid

_BASIS_CACHE: dict[tuple, torch.Tensor] = {}
_MASK_CACHE: dict[tuple, torch.Tensor] = {}
_CACHE_LIMIT = 64  # resolutions x devices seen in a session; tiny matrices


def dct_matrix(n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n x n): coefficients = D @ x, x = D.T @ coefficients."""
    key = (n, str(device), dtype)
    cached = _BASIS_CACHE.get(key)
    if cached is None:
        k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
        i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
        d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
        d[0] /= math.sqrt(2.0)
        if len(_BASIS_CACHE) >= _CACHE_LIMIT:
            _BASIS_CACHE.clear()
        cached = _BASIS_CACHE[key] = d.to(device=device, dtype=dtype)
    return cached


def _apply_axis(x: torch.Tensor, matrix: torch.Tensor, dim: int) -> torch.Tensor:
    """matrix applied along `dim` of x."""
    return torch.movedim(torch.tensordot(matrix, x, dims=([1], [dim])), 0, dim)


def low_band_mask(sizes: tuple[int, ...], cutoff: float, device) -> torch.Tensor:
    """Boolean mask over DCT coefficients (shape `sizes`) of the low band."""
    key = (sizes, cutoff, str(device))
    cached = _MASK_CACHE.get(key)
    if cached is None:
        grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) / n for n in sizes], indexing="ij")
        radius = torch.sqrt(sum(g * g for g in grids))
        max_radius = math.sqrt(sum(((n - 1) / n) ** 2 for n in sizes)) or 1.0
        mask = radius <= cutoff * max_radius
        mask.view(-1)[0] = True
        if len(_MASK_CACHE) >= _CACHE_LIMIT:
            _MASK_CACHE.clear()
        cached = _MASK_CACHE[key] = mask.to(device)
    return cached


def dct_nd(x: torch.Tensor, dims: tuple[int, ...], inverse: bool = False) -> torch.Tensor:
    """Separable orthonormal DCT-II (or its inverse) of x along `dims`."""
    for dim in dims:
        d = dct_matrix(x.shape[dim], x.device, x.dtype)
        x = _apply_axis(x, d.T if inverse else d, dim)
    return x


def split_bands(x: torch.Tensor, grid: TokenGrid, cutoff: float, per_frame: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) bands of x [b, N, C] laid out on `grid`; low + high == x."""
    b, n, c = x.shape
    if grid.tokens != n:
        raise ValueError(f"token grid {grid} holds {grid.tokens} tokens, feature has {n}")
    spatial = x.reshape(b, grid.t, grid.h, grid.w, c)
    dims = (2, 3) if per_frame or grid.t == 1 else (1, 2, 3)
    coefficients = dct_nd(spatial, dims)
    sizes = tuple(spatial.shape[d] for d in dims)
    mask = low_band_mask(sizes, cutoff, x.device)
    shape = [1] * spatial.dim()
    for d, size in zip(dims, sizes):
        shape[d] = size
    low = dct_nd(coefficients * mask.view(shape).to(x.dtype), dims, inverse=True).reshape(b, n, c)
    return low, x - low


@DECOMPOSITIONS.register("freq")
class FrequencyDecomposition(Decomposition):
    """Projects onto the high DCT band (the low band is reused)."""

    def project(self, x: torch.Tensor, grid: TokenGrid | None) -> torch.Tensor:
        if grid is None or grid.tokens != x.shape[1]:
            grid = TokenGrid(1, x.shape[1], 1)  # no grid known: a 1-D split along the token order
        _, high = split_bands(x, grid, self.config.freq_cutoff, per_frame=self.config.video_transform == "2d")
        return high


@DECOMPOSITIONS.register("none")
class IdentityDecomposition(Decomposition):
    """Forecast everything (no wrapper is built for it; registered so the name validates)."""

    def project(self, x: torch.Tensor, grid: TokenGrid | None) -> torch.Tensor:
        return x
