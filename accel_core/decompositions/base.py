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
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from ..forecasters.base import Forecaster
from ..registry import Registry

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

    def reset(self) -> None:
        self.inner.reset()
        self.anchor = None

    def update(self, t: float, value: torch.Tensor) -> None:
        self.inner.update(t, value)
        self.anchor = value
        self.decomposition.fit(value, self.grid)

    def forecast(self, t: float) -> torch.Tensor:
        predicted = self.inner.forecast(t)
        return self.anchor + self.decomposition.project(predicted - self.anchor, self.grid)

    @property
    def ready(self) -> bool:
        return self.inner.ready and self.anchor is not None

    def tensors(self) -> list[torch.Tensor]:
        held = self.inner.tensors() + self.decomposition.tensors()
        if self.anchor is not None:
            held.append(self.anchor)  # usually the inner's newest entry: counted once (by id)
        return held
