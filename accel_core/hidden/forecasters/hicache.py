"""HiCache (arXiv 2508.16984): scaled-Hermite forecasting on the same divided-difference ladder.

F(t0 + k) = dd[0] + sum_{i>=1} dd_i * s^i * H_i(s * k), with H the physicists' Hermite polynomials
and s the contraction scale (0.71). dd_i is the i-th divided difference, i.e. the i-th Taylor
coefficient estimate (derivative / i!). At order 1 and s = 1/sqrt(2) this is exactly Taylor.

Time unit (our choice, documented): k is measured in the gap between the two newest anchors
(dd scaled to match), so the Hermite argument stays O(1) on both the sigma axis (gaps ~0.02)
and the step axis (gaps ~interval). The paper measures k in steps with the interval fixed,
which is the same up to that constant.
"""
from __future__ import annotations

import torch

from ... import ops
from .base import Forecaster
from .newton import NewtonLadder, storage_dtype
from .registry import FORECASTERS


def hermite(n: int, x: float) -> float:
    """Physicists' Hermite polynomial H_n(x) by the three-term recurrence."""
    h_prev, h = 1.0, 2.0 * x
    if n == 0:
        return h_prev
    for m in range(1, n):
        h_prev, h = h, 2.0 * x * h - 2.0 * m * h_prev
    return h


@FORECASTERS.register("hicache")
class HiCacheForecaster(Forecaster):
    def __init__(self, config) -> None:
        super().__init__(config)
        self.ladder = NewtonLadder(config.order, storage_dtype(config))

    def reset(self) -> None:
        self.ladder.reset()

    def update(self, t: float, value: torch.Tensor) -> None:
        self.ladder.push(t, value)

    def coefficients(self, t: float) -> list[float]:
        times = self.ladder.times
        if len(times) < 2:
            return [1.0]
        unit = times[0] - times[1]  # signed: keeps k positive in the direction of travel
        k = (t - times[0]) / unit
        s = self.config.hermite_scale
        return [1.0] + [(unit ** i) * (s ** i) * hermite(i, s * k) for i in range(1, len(times))]

    def forecast(self, t: float) -> torch.Tensor:
        return ops.call("forecast_combine", self.ladder.dd, self.coefficients(t))

    def forecast_terms(self, t: float):
        return self.ladder.dd, self.coefficients(t)

    @property
    def ready(self) -> bool:
        return bool(self.ladder.dd)

    def tensors(self) -> list[torch.Tensor]:
        return list(self.ladder.dd)
