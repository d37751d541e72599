"""FoCa (arXiv 2508.16211): forecast-then-calibrate, caching as a feature-ODE solve.

The paper gives the idea (a multistep predictor, then a corrector) but not variable-step
coefficients. Our design treats the cached feature F as the state of dF/dt = g(t):
- Drift model from computed anchors only: the slope between the two newest anchors estimates g at
  their midpoint; the change of that slope between consecutive anchor pairs estimates dg/dt.
  The curvature term is shrunk by CURVATURE_SHRINK (0.5). Measured in a one-off analysis of one
  50-step euler trajectory of an intermediate micro FLUX checkpoint (anchors every 7 steps, final-hidden residual, mean relative error of the
  forecast hidden state): full curvature (= Taylor order 2) 0.083, none (= order 1) 0.063,
  half 0.057, reuse 0.148.
- March from the newest trajectory point (computed or forecast) to the requested time:
  predictor (explicit, variable step) P = F_k + h g(t_k); corrector (Heun / trapezoid)
  F = F_k + h (g(t_k) + g(t)) / 2, i.e. the predictor pulled toward the drift at the new time.
- The forecast becomes the new trajectory point; a computed step resets the march to true values.
Exact on a line (constant drift). Needs two computed anchors before it can forecast.
"""
from __future__ import annotations

import torch

from ... import ops
from .base import SAME_TIME_EPS, Forecaster
from .registry import FORECASTERS

CURVATURE_SHRINK = 0.5


@FORECASTERS.register("foca")
class FoCaForecaster(Forecaster):
    def __init__(self, config) -> None:
        super().__init__(config)
        self.reset()

    def reset(self) -> None:
        self.point: tuple[float, torch.Tensor] | None = None  # newest trajectory point (t, F)
        self.anchor: tuple[float, torch.Tensor] | None = None  # newest computed value
        self.slope: tuple[float, torch.Tensor] | None = None  # (midpoint time, anchor slope)
        self.curvature: torch.Tensor | None = None

    def update(self, t: float, value: torch.Tensor) -> None:
        # Same time (Heun corrector, then the next predictor): the newer value replaces the anchor
        # and the drift model is kept.
        if self.anchor is not None and abs(t - self.anchor[0]) > SAME_TIME_EPS:
            t_prev, f_prev = self.anchor
            mid = 0.5 * (t + t_prev)
            slope = (value - f_prev) / (t - t_prev)
            if self.slope is not None and abs(mid - self.slope[0]) > SAME_TIME_EPS:
                self.curvature = (slope - self.slope[1]) / (mid - self.slope[0])
            self.slope = (mid, slope)
        self.anchor = (t, value)
        self.point = (t, value)

    def forecast(self, t: float) -> torch.Tensor:
        assert self.slope is not None, "forecast() before two updates: check `ready` first"
        t_k, f_k = self.point
        h = t - t_k
        if abs(h) <= SAME_TIME_EPS:
            return f_k
        # Predictor f_k + h g(t_k) plus Heun corrector (h/2)(g(t) - g(t_k)), with the drift model
        # g(s) = slope + shrink (s - mid) curvature, is one linear combination of the stored tensors:
        # f_k + h slope + h shrink ((t_k - mid) + (t - t_k) / 2) curvature. One `forecast_combine` pass.
        mid, slope = self.slope
        terms, coeffs = [f_k, slope], [1.0, h]
        if self.curvature is not None:
            terms.append(self.curvature)
            coeffs.append(h * CURVATURE_SHRINK * ((t_k - mid) + 0.5 * (t - t_k)))
        value = ops.call("forecast_combine", terms, coeffs)
        self.point = (t, value)
        return value

    @property
    def ready(self) -> bool:
        return self.slope is not None

    def tensors(self) -> list[torch.Tensor]:
        held = [self.point[1]] if self.point is not None else []
        if self.anchor is not None:
            held.append(self.anchor[1])
        if self.slope is not None:
            held.append(self.slope[1])
        if self.curvature is not None:
            held.append(self.curvature)
        return held
