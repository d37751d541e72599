"""Propagating fresh tokens' corrections to their clusters (ClusCa), with a gain measured at run time.

ClusCa's release mixes fresh *values* into the cache (order0 <- g * fresh + (1 - g) * order0) and
counts the drift twice (ALGORITHMS.md 5.4). Here the quantity propagated is the forecast's *error*
at the fresh tokens, e = fresh - forecast: cluster members share features, so they share much of the
forecast's error, while their values differ (other image regions). Members get forecast + g * e_c,
e_c the mean error of the cluster's fresh tokens. How much of e_c carries over (g) depends on the
model and the step, so it is not a constant: the fresh tokens are split in two halves, each half's
cluster means predict the other half's errors, and g is the least-squares gain of that cross-fit,
clipped to [0, 1] (0 when the errors do not transfer: then the forecast is left alone).
"""
from __future__ import annotations

import torch

from .. import distributed, ops


def cluster_means(errors: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """errors [B, M, P], labels [M] -> (means [B, k, P], counts [k]). Under sequence parallelism a cluster's
    fresh tokens lie on several ranks: sums and counts are summed over ranks (one collective), so every
    rank spreads the mean a single GPU would (per-rank means put the sharded result 4.7 % off)."""
    B, M, P = errors.shape
    sums = torch.zeros(B, k, P, dtype=errors.dtype, device=errors.device).index_add_(1, labels, errors)
    counts = torch.bincount(labels, minlength=k).to(errors.dtype)
    sums, counts = distributed.agree_sum(sums, counts)
    return sums / counts.clamp_min(1)[None, :, None], counts


def fit_gain(errors: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Cross-fitted gain g in [0, 1] of cluster-mean errors for held-out fresh tokens."""
    M = errors.shape[1]
    if M < 2:
        return 0.0
    halves = torch.arange(M, device=errors.device) % 2
    num = den = 0.0
    for a in (0, 1):
        fit, held = halves == a, halves != a
        means, counts = cluster_means(errors[:, fit], labels[fit], k)
        usable = counts[labels[held]] > 0  # held-out tokens whose cluster has a fitting member
        if not bool(usable.any()):
            continue
        predicted = means[:, labels[held][usable]]
        target = errors[:, held][:, usable]
        num += float((predicted * target).sum())
        den += float((predicted * predicted).sum())
    if den <= 0:
        return 0.0
    return float(min(1.0, max(0.0, num / den)))


def propagate_corrections(forecast: torch.Tensor, fresh_rows: torch.Tensor, fresh_values: torch.Tensor,
                          assign: torch.Tensor, k: int, gain: float | None = None
                          ) -> tuple[torch.Tensor, float]:
    """forecast [B, N, P] (token rows), fresh_rows [M] indices with their true values [B, M, P],
    assign [N] cluster of every token. Returns (corrected [B, N, P], gain used): fresh rows exact,
    the others forecast + gain * their cluster's mean error."""
    errors = fresh_values - forecast[:, fresh_rows]
    labels = assign[fresh_rows]
    if gain is None:
        gain = fit_gain(errors, labels, k)
    B = forecast.shape[0]
    out = forecast
    if gain > 0:
        means, _ = cluster_means(errors, labels, k)
        out = forecast + gain * ops.call("token_gather", means, assign.expand(B, -1))
    return ops.call("token_scatter", out, fresh_rows.expand(B, -1), fresh_values), gain
