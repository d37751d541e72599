"""Newton divided-difference ladder over non-uniform times (shared by TaylorSeer and HiCache).

The ladder holds, newest anchor first, dd[i] = f[t_0, ..., t_i]. A new anchor updates it in one
pass: dd'[0] = f_new, dd'[i+1] = (dd'[i] - dd[i]) / (t_new - t_i). True divided differences stay
exact on non-uniform spacing (warm-up steps 1 apart, later anchors `interval` apart; shifted
sigma schedules), which TaylorSeer's step-count differences are not.
"""
from __future__ import annotations

import torch

from .base import SAME_TIME_EPS


class NewtonLadder:
    def __init__(self, max_order: int) -> None:
        self.max_order = max_order
        self.times: list[float] = []
        self.dd: list[torch.Tensor] = []

    def reset(self) -> None:
        self.times = []
        self.dd = []

    def _drop_newest(self) -> None:
        """Recover the ladder as it was before the newest anchor: f[t1..ti] = dd[i-1] - (t0 - ti) dd[i]."""
        t0 = self.times[0]
        older = [self.dd[i - 1] - (t0 - self.times[i]) * self.dd[i] for i in range(1, len(self.dd))]
        self.times = self.times[1:]
        self.dd = older

    def push(self, t: float, value: torch.Tensor) -> None:
        if self.times and abs(t - self.times[0]) <= SAME_TIME_EPS:
            self._drop_newest()
        new = [value]
        for i, old in enumerate(self.dd[: self.max_order]):
            new.append((new[i] - old) / (t - self.times[i]))
        self.dd = new
        self.times = ([t] + self.times)[: len(new)]

    @property
    def orders(self) -> int:
        """Highest order available (number of anchors - 1)."""
        return len(self.dd) - 1
