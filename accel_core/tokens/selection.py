"""Which target tokens a partial step computes. Indices are shared by the whole batch (every CFG
branch of a sample must compute the same tokens for the guided output to be exact there). Under sequence
parallelism each rank holds a shard of the tokens: the selection is made over every rank's tokens (as on
one GPU) and each rank keeps its own rows (accel_core/distributed.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import distributed


def cluster_members(assign: torch.Tensor, per_cluster: int, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
    """Up to `per_cluster` random members of every cluster (ClusCa's fresh tokens), sorted.

    Random (not the member nearest the centroid) so that over the forecast steps of one gap different
    members are refreshed and the correction estimate is not tied to one token."""
    local, (assign, offset) = assign, distributed.gather_rows(assign)  # every rank's tokens (one GPU's view)
    n = assign.numel()
    noise = torch.rand(n, generator=generator, device="cpu").to(assign.device)
    # Rank inside each cluster by the noise: sort by (cluster, noise), then rank = position - cluster start.
    order = torch.argsort(assign.double() * 2.0 + noise.double())
    sorted_assign = assign[order]
    counts = torch.bincount(sorted_assign)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n, device=assign.device) - starts[sorted_assign]
    return distributed.local_rows(order[rank < per_cluster].sort().values, offset, local.numel())


def region_rings(coverage: torch.Tensor, grid: tuple[int, ...], rings: int, threshold: float = 0.0
                 ) -> torch.Tensor:
    """Ring index per token: 0 inside the mask (coverage > threshold), i for the i-th one-token
    dilation ring around it (EEdit's cascade), -1 outside all rings. Computed once per run."""
    t, h, w = (1,) * (3 - len(grid)) + tuple(grid)
    inside = (coverage.reshape(t, h, w) > threshold).float()[:, None]  # [t, 1, h, w]
    ring = torch.full_like(inside, -1.0)
    ring[inside > 0] = 0
    grown = inside
    for i in range(1, rings + 1):
        dilated = F.max_pool2d(grown, 3, stride=1, padding=1)
        ring[(dilated > 0) & (grown == 0)] = float(i)
        grown = dilated
    return ring.flatten().long()


def dynamics_top(change: torch.Tensor, keep: int) -> torch.Tensor:
    """The `keep` tokens with the largest change score [N] (DaTo's temporal-difference score), sorted."""
    return distributed.topk_rows(change, keep)  # the top `keep` over every rank's tokens (one GPU's choice)
