"""Batched K-means for token clustering (ClusCa), warm-started from the previous full step.

Squared-L2 assignment via one matmul ([N, C] x [C, K]) instead of ClusCa's L1 (cityblock): L1 has
no matmul form, so at FLUX size (4096 x 3072, K = 16) it costs N*K*C element ops with poor locality,
while the matmul runs on tensor cores. Features are L2-normalised per token first, so the clusters
follow feature direction, not magnitude (late-block hidden states differ mostly in norm).
"""
from __future__ import annotations

import torch

from .. import distributed


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    # argmin ||x - c||^2 = argmax (x.c - |c|^2 / 2)
    scores = x @ centroids.T - 0.5 * (centroids * centroids).sum(-1)
    return scores.argmax(dim=-1)


def kmeans(features: torch.Tensor, k: int, init: torch.Tensor | None = None, iterations: int = 5,
           generator: torch.Generator | None = None, tol: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the rows of `features` [N, C] into k groups.

    Returns (assign [N] int64, centroids [k, C] fp32). `init` (centroids of an earlier call) warm
    starts Lloyd's iterations; otherwise k distinct rows picked by `generator` seed them. Empty
    clusters are re-seeded with the row farthest from its centroid, so every cluster has members
    when k <= N. Stops early when no centroid moves by more than `tol` (relative).
    """
    if features.dim() != 2:
        raise ValueError(f"kmeans: features must be [N, C], got {tuple(features.shape)}")
    n = features.shape[0]
    offset, total = distributed.shard_offset(n)  # under sequence parallelism: rows of every rank's shard
    k = max(1, min(int(k), total))
    x = _normalise(features.float())
    if init is not None and init.shape == (k, x.shape[1]):
        centroids = init.float().to(x.device).clone()
    else:
        rows = torch.randperm(total, generator=generator, device="cpu")[:k].to(x.device)
        mine = (rows >= offset) & (rows < offset + n)  # seeds in this shard; the other ranks' are summed in
        centroids = distributed.agree_sum(torch.zeros(k, x.shape[1], device=x.device).index_copy(
            0, mine.nonzero().flatten(), x[rows[mine] - offset]))
    assign = _assign(x, centroids)
    for _ in range(max(1, iterations)):
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        sums, counts = distributed.agree_sum(sums, counts)  # over every rank's tokens (one collective)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
        empty = (counts == 0).nonzero().flatten()
        if empty.numel():
            distance = (x - new[assign]).pow(2).sum(-1)
            far = distance.topk(min(empty.numel(), n)).indices
            new[empty[: far.numel()]] = x[far]
            new = distributed.agree_tensor(new)  # re-seeded from rank 0's rows (empties agree: global counts)
        moved = float((new - centroids).norm(dim=-1).max())
        centroids = new
        assign = _assign(x, centroids)
        if moved <= tol:
            break
    return assign, centroids
