"""Newton divided-difference ladder over non-uniform times (shared by TaylorSeer and HiCache).

The ladder holds, newest anchor first, dd[i] = f[t_0, ..., t_i]. A new anchor updates it in one
pass: dd'[0] = f_new, dd'[i+1] = (dd'[i] - dd[i]) / (t_new - t_i). True divided differences stay
exact on non-uniform spacing (warm-up steps 1 apart, later anchors `interval` apart; shifted
sigma schedules), which TaylorSeer's step-count differences are not.
The update runs as the `ladder_update` op (one fused pass with kernels installed); storage is the
value's dtype (fp32 from the engine) or bf16 (`history_dtype`), math always fp32.
"""
from __future__ import annotations

import torch

from ... import ops
from .base import SAME_TIME_EPS

_STORAGE = {"fp32": None, "bf16": torch.bfloat16}  # None: keep the value's dtype


def storage_dtype(config) -> torch.dtype | None:
    """Ladder storage dtype for a config's `history_dtype`."""
    return _STORAGE[getattr(config, "history_dtype", "fp32")]


class NewtonLadder:
    def __init__(self, max_order: int, storage: torch.dtype | None = None) -> None:
        self.max_order = max_order
        self.storage = storage
        self.times: list[float] = []
        self.dd: list[torch.Tensor] = []

    def reset(self) -> None:
        self.times = []
        self.dd = []

    def _drop_newest(self) -> None:
        """Recover the ladder as it was before the newest anchor: f[t1..ti] = dd[i-1] - (t0 - ti) dd[i]."""
        t0 = self.times[0]
        older = [(self.dd[i - 1].float() - (t0 - self.times[i]) * self.dd[i].float()).to(self.dd[i].dtype)
                 for i in range(1, len(self.dd))]
        self.times = self.times[1:]
        self.dd = older

    def push(self, t: float, value: torch.Tensor) -> None:
        if self.times and abs(t - self.times[0]) <= SAME_TIME_EPS:
            self._drop_newest()
        old = self.dd[: self.max_order]
        gaps = [t - self.times[i] for i in range(len(old))]
        new = ops.call("ladder_update", value, old, gaps, self.storage)
        self.dd = list(new)
        self.times = ([t] + self.times)[: len(new)]

    @property
    def orders(self) -> int:
        """Highest order available (number of anchors - 1)."""
        return len(self.dd) - 1
