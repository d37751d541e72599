"""Forecast one part of a feature, reuse the rest: the shared frame of FreqCa and SVD-Cache.

With P the projector onto the forecast part (high DCT band, principal channel subspace), the
forecast at time t is

    F(t) = A + P (G(t) - A)        (A: newest computed value, G: the wrapped forecaster)

so the complementary part (I - P) A is reused unchanged and only P sees the extrapolation. Every
forecaster we have is linear in its history, so this equals running the wrapped forecaster on
the projected history (FreqCa's "Hermite on the high band, reuse the low band") while storing
nothing beyond the wrapped forecaster's own tensors: A is the same tensor object as the newest
history entry, so a FreqCa cache with Hermite order 2 holds exactly 3 hidden states.
The projection is applied at forecast time, so a projector that changes at a full step (the SVD
basis) never mixes bases inside the history.

Part weighting (`split_select`):
- "fixed": the paper's assignment, forecast P x and reuse (I - P) x.
- "adaptive" (default): F(t) = A + g_P P(G(t) - A) + g_Q (I - P)(G(t) - A), gains measured at
  every full step. Before a new computed value V arrives, the wrapped forecaster predicts it over
  the same horizon a forecast spans; per part, g is the least-squares scale of the predicted
  increment onto the true one, <P pred, P true> / ||P pred||^2, clipped to [0, 1]: 1 = forecast
  this part, 0 = reuse it, between = damp an overshooting extrapolation. On our trained micro
  FLUX the low DCT band and the low-energy SVD residual carry smooth, timestep-driven drift
  (reusing them, the fixed assignment, cost 5-7 dB PSNR at 5x); a binary forecast-or-reuse
  choice per part recovered part of that, the gains all of it (bench/results/methods_*). Cost:
  one extra forecast and two projections per full step, two scalars per forecaster.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from ... import distributed
from ..forecasters.base import Forecaster
from ...registry import Registry

DECOMPOSITIONS: Registry = Registry("decomposition")


@dataclass(frozen=True)
class TokenGrid:
    """Token grid of the forecast image segment, in token order (t slowest, w fastest)."""

    t: int
    h: int
    w: int

    @property
    def tokens(self) -> int:
        return self.t * self.h * self.w


class Decomposition(ABC):
    """A projector onto the part of a [b, N, C] feature that is forecast."""

    def __init__(self, config) -> None:
        self.config = config

    def fit(self, value: torch.Tensor, grid: TokenGrid | None) -> None:
        """Called with each newly computed value (full steps). Default: nothing to fit."""

    @abstractmethod
    def project(self, x: torch.Tensor, grid: TokenGrid | None) -> torch.Tensor:
        """P x: the forecast part of x ([b, N, C], fp32)."""

    def tensors(self) -> list[torch.Tensor]:
        return []


class DecomposedForecaster(Forecaster):
    """F(t) = A + P (G(t) - A): forecast the projected part, reuse the rest (see module doc)."""

    def __init__(self, config, inner: Forecaster, decomposition: Decomposition) -> None:
        super().__init__(config)
        self.inner = inner
        self.decomposition = decomposition
        self.grid: TokenGrid | None = None  # set by the engine before each update / forecast
        self.anchor: torch.Tensor | None = None
        self.adaptive = getattr(config, "split_select", "fixed") == "adaptive"
        self.gains = (1.0, 0.0)  # (projected part P, complement I - P): the paper's assignment until measured
        self.history: list[tuple[float, float]] = []  # gains per full step, for diagnostics and tests

    def reset(self) -> None:
        self.inner.reset()
        self.anchor = None
        self.gains = (1.0, 0.0)
        self.history = []

    def update(self, t: float, value: torch.Tensor) -> None:
        if self.adaptive and self.anchor is not None and self.inner.ready and value.shape == self.anchor.shape:
            self._measure_gains(t, value)
        self.inner.update(t, value)
        self.anchor = _newest_held(self.inner)
        if self.anchor is None:
            self.anchor = value
        self.decomposition.fit(value, self.grid)

    def _measure_gains(self, t: float, value: torch.Tensor) -> None:
        """Per part, the least-squares scale of the forecaster's increment onto the true increment."""
        predicted = self.inner.forecast(t) - self.anchor
        true = value - self.anchor
        predicted_p = self.decomposition.project(predicted, self.grid)
        true_p = self.decomposition.project(true, self.grid)
        self.gains = (_gain(predicted_p, true_p), _gain(predicted - predicted_p, true - true_p))
        self.history.append(self.gains)

    def forecast(self, t: float) -> torch.Tensor:
        gain_p, gain_q = self.gains
        if gain_p == 0.0 and gain_q == 0.0:
            return self.anchor
        increment = self.inner.forecast(t) - self.anchor
        if gain_p == gain_q:
            return self.anchor + gain_p * increment
        projected = self.decomposition.project(increment, self.grid)
        return self.anchor + gain_p * projected + gain_q * (increment - projected)

    @property
    def ready(self) -> bool:
        return self.inner.ready and self.anchor is not None

    def tensors(self) -> list[torch.Tensor]:
        held = self.inner.tensors() + self.decomposition.tensors()
        if self.anchor is not None:
            held.append(self.anchor)  # usually the inner's newest entry: counted once (by id)
        return held


def _gain(predicted: torch.Tensor, true: torch.Tensor) -> float:
    """argmin_g ||g predicted - true||^2 clipped to [0, 1]; 1 when nothing was predicted (a tie)."""
    energy, dot = distributed.agree_sum(float(predicted.double().square().sum()),  # over every rank's tokens
                                        float((predicted.double() * true.double()).sum()))
    if energy == 0.0:
        return 1.0
    return min(1.0, max(0.0, dot / energy))


def _newest_held(inner: Forecaster) -> torch.Tensor | None:
    """The newest computed value as the wrapped forecaster stores it, so it is not kept twice."""
    ladder = getattr(inner, "ladder", None)
    if ladder is not None and getattr(ladder, "dd", None):
        return ladder.dd[0]
    anchor = getattr(inner, "anchor", None)
    if isinstance(anchor, tuple) and len(anchor) == 2 and isinstance(anchor[1], torch.Tensor):
        return anchor[1]
    return None
