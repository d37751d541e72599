"""The forecaster interface: a time series of feature tensors in, a predicted tensor out.

History is kept in fp32: differences of near-equal bf16 tensors cancel catastrophically.
Times are floats on the configured axis (sigma or continuous step index).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch

from ... import ops

if TYPE_CHECKING:  # a hint only: config.py validates names against the registries, which import this module
    from ...config import ForecastCacheConfig

# Two anchors closer than this on the time axis are treated as the same time (Heun's corrector
# and the next predictor both evaluate at sigma_{i+1}): the newer value replaces the older.
SAME_TIME_EPS = 1e-7


class Forecaster(ABC):
    """Predicts a feature tensor at a new time from values computed at earlier times."""

    def __init__(self, config: ForecastCacheConfig) -> None:
        self.config = config

    @abstractmethod
    def reset(self) -> None:
        """Forget all history."""

    @abstractmethod
    def update(self, t: float, value: torch.Tensor) -> None:
        """Record a truly computed value at time t (fp32 tensor, owned by the forecaster)."""

    @abstractmethod
    def forecast(self, t: float) -> torch.Tensor:
        """Predict the value at time t (fp32). May advance internal state (step-marching methods)."""

    def forecast_terms(self, t: float) -> tuple[list[torch.Tensor], list[float]] | None:
        """(tensors, coefficients) whose weighted sum is the forecast at t, for stateless linear
        forecasters (a fused kernel then reads the history once); None for the others."""
        return None

    def forecast_add(self, t: float, base: torch.Tensor) -> torch.Tensor:
        """base + forecast(t), added in fp32, in base's dtype (one fused pass when kernels are installed)."""
        terms = self.forecast_terms(t)
        if terms is None:
            terms = ([self.forecast(t)], [1.0])
        return ops.call("forecast_residual_add", base, *terms)

    @property
    @abstractmethod
    def ready(self) -> bool:
        """True once enough history exists to forecast."""

    @abstractmethod
    def tensors(self) -> list[torch.Tensor]:
        """The tensors held, for memory accounting."""

    def memory_bytes(self) -> int:
        seen: set[int] = set()
        total = 0
        for tensor in self.tensors():
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
        return total
