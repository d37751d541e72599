"""Dynamic Tokens (DaTo's dynamics score, ported to DiTs): a partial call computes the target tokens
whose output changed most between the newest two full steps; the static rest keep the forecast."""
from __future__ import annotations

import torch

from ..selection import dynamics_top
from .base import PartialCall, TokenPolicy
from .registry import TOKEN_POLICIES


@TOKEN_POLICIES.register("dynamics")
class DynamicsPolicy(TokenPolicy):
    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.outputs: list[torch.Tensor] = []  # token rows [B, N, P] of the newest two full outputs

    def after_full(self, run, out_rows: torch.Tensor) -> None:
        self.outputs = (self.outputs + [out_rows.detach().float()])[-2:]

    def ready(self, run) -> bool:
        return len(self.outputs) == 2

    def select(self, run, n_target: int, grid: tuple[int, ...]) -> PartialCall | None:
        if len(self.outputs) < 2 or self.outputs[-1].shape[1] != n_target:
            return None
        change = (self.outputs[-1] - self.outputs[-2]).pow(2).sum(dim=(0, 2))
        return PartialCall(dynamics_top(change, max(1, round(self.settings.keep * n_target))))

    def reset(self) -> None:
        self.outputs = []

    def close(self) -> None:
        self.outputs = []
