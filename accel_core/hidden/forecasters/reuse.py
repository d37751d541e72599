"""Reuse (FORA): the forecast is the last computed value. The baseline every method must beat."""
from __future__ import annotations

import torch

from .base import Forecaster
from .registry import FORECASTERS


@FORECASTERS.register("reuse")
class ReuseForecaster(Forecaster):
    def reset(self) -> None:
        self.value: torch.Tensor | None = None

    def __init__(self, config) -> None:
        super().__init__(config)
        self.reset()

    def update(self, t: float, value: torch.Tensor) -> None:
        self.value = value

    def forecast(self, t: float) -> torch.Tensor:
        assert self.value is not None, "forecast() before update(): check `ready` first"
        return self.value

    @property
    def ready(self) -> bool:
        return self.value is not None

    def tensors(self) -> list[torch.Tensor]:
        return [] if self.value is None else [self.value]
