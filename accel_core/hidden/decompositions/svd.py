"""SVD-Cache (arXiv 2601.07396): forecast the principal subspace, reuse the residual.

Design choices (the paper leaves the EMA form, threshold and level open):
- Subspace of the CHANNEL axis of the cached feature F [b*N, C], refit at every full step from
  the newest computed value by a seeded randomized SVD (range finder with 2 power iterations),
  so runs are repeatable. Rank k = smallest with sum_{i<k} s_i^2 >= svd_energy * ||F||_F^2,
  capped by svd_max_rank (the energy is measured against the whole Frobenius norm, so the cap
  shows up as unreached energy, never as an inflated estimate).
- The basis V (C x k) is held fixed until the next full step; only the projector V V^T is used,
  which is invariant to the sign and rotation ambiguity of singular vectors (never averaged).
- Forecast F(t) = A + (G(t) - A) V V^T: the in-subspace part follows the wrapped forecaster,
  the out-of-subspace residual of the newest anchor is reused.
"""
from __future__ import annotations

import torch

from ... import distributed
from .base import DECOMPOSITIONS, Decomposition, TokenGrid

_POWER_ITERATIONS = 2
_OVERSAMPLE = 4


def randomized_svd(m: torch.Tensor, rank: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Top `rank` singular values S and right singular vectors V (columns) of m [R, C], fp32."""
    rows, cols = m.shape
    q = min(rank + _OVERSAMPLE, rows, cols)
    gen = torch.Generator(device=m.device).manual_seed(seed)
    omega = torch.randn(cols, q, generator=gen, device=m.device, dtype=m.dtype)
    basis, _ = torch.linalg.qr(m @ omega)
    for _ in range(_POWER_ITERATIONS):
        basis, _ = torch.linalg.qr(m.T @ basis)
        basis, _ = torch.linalg.qr(m @ basis)
    _, s, vh = torch.linalg.svd(basis.T @ m, full_matrices=False)
    k = min(rank, s.numel())
    return s[:k], vh[:k].T


def energy_rank(s: torch.Tensor, total_energy: float, energy: float) -> int:
    """Smallest k with sum(s[:k]^2) >= energy * total_energy (all of s when never reached)."""
    if total_energy <= 0:
        return 1
    cumulative = torch.cumsum(s.double() ** 2, 0) / total_energy
    reached = (cumulative >= energy).nonzero()
    return int(reached[0]) + 1 if reached.numel() else int(s.numel())


@DECOMPOSITIONS.register("svd")
class SubspaceDecomposition(Decomposition):
    """Projects onto the principal channel subspace of the newest computed value."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.basis: torch.Tensor | None = None  # C x k
        self.rank = 0
        self.energy_captured = 0.0

    def fit(self, value: torch.Tensor, grid: TokenGrid | None) -> None:
        m = value.reshape(-1, value.shape[-1]).float()
        total = float(m.square().sum())
        s, v = randomized_svd(m, self.config.svd_max_rank)
        if distributed.active():  # a basis cannot be summed over token shards: rank 0's, on every rank
            packed = distributed.agree_tensor(torch.cat([v, s[None], torch.full_like(s[None], total)]))
            v, s, total = packed[:-2], packed[-2], float(packed[-1, 0])
        k = energy_rank(s, total, self.config.svd_energy)
        self.basis = v[:, :k].contiguous()
        self.rank = k
        self.energy_captured = float((s[:k].double() ** 2).sum() / total) if total > 0 else 1.0

    def project(self, x: torch.Tensor, grid: TokenGrid | None) -> torch.Tensor:
        if self.basis is None:
            return x
        return (x @ self.basis) @ self.basis.T

    def tensors(self) -> list[torch.Tensor]:
        return [self.basis] if self.basis is not None else []
