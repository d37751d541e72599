"""Cluster Tokens (ClusCa): K-means clusters of a block's hidden state at every full step; a partial
call computes a few random members of every cluster, and (with `propagate`) the mean correction of a
cluster's fresh members, times a gain measured at full steps, is spread to the rest of the cluster."""
from __future__ import annotations

import torch

from ... import distributed
from ..kmeans import kmeans
from ..propagate import cluster_means, propagate_corrections
from ..selection import cluster_members
from .base import TRUST_DECAY, PartialCall, TokenPolicy
from .registry import TOKEN_POLICIES


@TOKEN_POLICIES.register("clusters")
class ClusterPolicy(TokenPolicy):
    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.generator = torch.Generator().manual_seed(settings.seed)  # k-means init and member draws
        self.features: torch.Tensor | None = None  # [N, C] clustering features of the newest full call
        self.assign: torch.Tensor | None = None  # [N] cluster of every target token
        self.centroids: torch.Tensor | None = None
        self.gain_num = 0.0
        self.gain_den = 0.0
        self.gains: list[float] = []  # gain applied at each propagating merge

    def add_features(self, hidden: torch.Tensor) -> None:
        self.features = hidden.detach().float().mean(dim=0)

    def after_full(self, run, out_rows: torch.Tensor) -> None:
        if self.features is not None:
            self.assign, self.centroids = kmeans(self.features, self.settings.clusters, init=self.centroids,
                                                 iterations=self.settings.kmeans_iterations,
                                                 generator=self.generator)

    @property
    def measured_gain(self) -> float | None:
        """Propagation gain measured at full steps (None before the first measurement)."""
        if self.gain_den <= 0:
            return None
        return min(1.0, max(0.0, self.gain_num / self.gain_den))

    def measure(self, run, forecast_rows, truth_rows, fresh_change, rows) -> float | None:
        """The propagation gain, measured the way the trust is: the cluster means of the (trusted) fresh
        tokens' corrections against the true errors of every other token."""
        if self.assign is None or self.assign.numel() != truth_rows.shape[1]:
            return None
        before = self.measured_gain
        assign = self.assign.to(truth_rows.device)
        k = self.centroids.shape[0]
        means, counts = cluster_means(run.trust * fresh_change, assign[rows], k)
        others = torch.ones(truth_rows.shape[1], dtype=torch.bool, device=truth_rows.device)
        others[rows] = False
        others &= counts[assign] > 0
        spread = means[:, assign[others]]
        error = truth_rows[:, others].float() - forecast_rows[:, others].float()
        num, den = distributed.agree_sum(float((spread * error).sum()), float((spread * spread).sum()))
        self.gain_num = TRUST_DECAY * self.gain_num + num
        self.gain_den = TRUST_DECAY * self.gain_den + den
        if not self.settings.propagate:
            return None
        gain = self.measured_gain  # applied too: it must have settled as well
        return abs(gain - before) if gain is not None and before is not None else float("inf")

    def ready(self, run) -> bool:
        return self.assign is not None

    def select(self, run, n_target: int, grid: tuple[int, ...]) -> PartialCall | None:
        if self.assign is None or self.assign.numel() != n_target:
            return None
        return PartialCall(cluster_members(self.assign, self.settings.per_cluster, self.generator))

    def spread(self, run, base, rows, fresh):
        if not self.settings.propagate or self.assign is None:
            return None
        out, gain = propagate_corrections(base, rows, fresh, self.assign.to(base.device), self.centroids.shape[0],
                                          gain=run.at_horizon(self.measured_gain or 0.0))
        self.gains.append(gain)
        return out

    def needs_rows(self) -> bool:
        return self.settings.propagate and self.assign is not None

    def applied_gains(self) -> list[float]:
        return self.gains

    def reset(self) -> None:
        self.features = self.assign = self.centroids = None
        self.gain_num = self.gain_den = 0.0

    def close(self) -> None:
        self.features = self.assign = self.centroids = None
