"""FoCa (arXiv 2508.16211): forecast-then-calibrate, caching as a feature-ODE solve.

The paper gives the idea (multistep predictor + corrector) but not variable-step coefficients;
our design:
- Predictor (explicit two-step, variable step): march from the newest trajectory point F_k
  (computed *or* forecast) with the local slope (F_k - F_{k-1}) / (t_k - t_{k-1}).
- Corrector (Heun / trapezoid): average that slope with the anchor slope measured between the two
  newest *computed* values, F = F_k + h * (slope_local + slope_anchor) / 2. The anchor term pulls
  drift from accumulated forecasts back toward what the real model did.
- The forecast becomes the new trajectory point; a full step resets the window to true values.
Exact on a line (both slopes equal). Needs two computed anchors before it can forecast.
"""
from __future__ import annotations

import torch

from .base import SAME_TIME_EPS, Forecaster
from .registry import FORECASTERS


@FORECASTERS.register("foca")
class FoCaForecaster(Forecaster):
    history_length = 3  # F_{k-1}, F_k and the anchor slope

    def __init__(self, config) -> None:
        super().__init__(config)
        self.reset()

    def reset(self) -> None:
        self.points: list[tuple[float, torch.Tensor]] = []  # newest last, at most 2
        self.anchor: tuple[float, torch.Tensor] | None = None  # newest computed value
        self.anchor_slope: torch.Tensor | None = None

    def _push_point(self, t: float, value: torch.Tensor) -> None:
        if self.points and abs(t - self.points[-1][0]) <= SAME_TIME_EPS:
            self.points[-1] = (t, value)
        else:
            self.points = (self.points + [(t, value)])[-2:]

    def update(self, t: float, value: torch.Tensor) -> None:
        if self.anchor is not None and abs(t - self.anchor[0]) > SAME_TIME_EPS:
            self.anchor_slope = (value - self.anchor[1]) / (t - self.anchor[0])
        elif self.anchor is not None and len(self.points) == 2 and self.anchor_slope is not None:
            pass  # same-time replacement keeps the slope measured against the previous anchor
        self.anchor = (t, value)
        self._push_point(t, value)

    def forecast(self, t: float) -> torch.Tensor:
        assert self.anchor_slope is not None, "forecast() before two updates: check `ready` first"
        t_k, f_k = self.points[-1]
        if abs(t - t_k) <= SAME_TIME_EPS:
            return f_k
        if len(self.points) == 2:
            t_prev, f_prev = self.points[0]
            local = (f_k - f_prev) / (t_k - t_prev)
        else:
            local = self.anchor_slope
        value = f_k + (t - t_k) * 0.5 * (local + self.anchor_slope)
        self._push_point(t, value)
        return value

    @property
    def ready(self) -> bool:
        return self.anchor_slope is not None

    def tensors(self) -> list[torch.Tensor]:
        held = [v for _, v in self.points]
        if self.anchor is not None:
            held.append(self.anchor[1])
        if self.anchor_slope is not None:
            held.append(self.anchor_slope)
        return held
