"""TaylorSeer (arXiv 2503.06923): polynomial extrapolation of cached features.

Our form is Newton's interpolating polynomial through the last order+1 full-step anchors,
p(t) = sum_i dd[i] * prod_{j<i} (t - t_j), with true divided differences over sigma or the
step index. It extrapolates any polynomial of degree <= order exactly (the paper's step-count
differences do not on non-uniform anchor spacing).
"""
from __future__ import annotations

import torch

from ... import ops
from .base import Forecaster
from .newton import NewtonLadder, storage_dtype
from .registry import FORECASTERS


def newton_coefficients(t: float, times: list[float]) -> list[float]:
    """Per-order weights c_i = prod_{j<i} (t - t_j) of the Newton form."""
    coeffs = [1.0]
    for j in range(len(times) - 1):
        coeffs.append(coeffs[-1] * (t - times[j]))
    return coeffs


@FORECASTERS.register("taylorseer")
class TaylorSeerForecaster(Forecaster):
    def __init__(self, config) -> None:
        super().__init__(config)
        self.ladder = NewtonLadder(config.order, storage_dtype(config))

    def reset(self) -> None:
        self.ladder.reset()

    def update(self, t: float, value: torch.Tensor) -> None:
        self.ladder.push(t, value)

    def coefficients(self, t: float) -> list[float]:
        return newton_coefficients(t, self.ladder.times)

    def forecast(self, t: float) -> torch.Tensor:
        return ops.call("forecast_combine", self.ladder.dd, self.coefficients(t))

    def forecast_terms(self, t: float):
        return self.ladder.dd, self.coefficients(t)

    @property
    def ready(self) -> bool:
        return bool(self.ladder.dd)

    def tensors(self) -> list[torch.Tensor]:
        return list(self.ladder.dd)
