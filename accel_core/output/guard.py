"""Finite-output guard of a run (host-free): a forecast that is not finite, or whose size leaves a bound
set by the computed steps, is never handed to the sampler; the host computes that call instead.

Why: a forecast is a linear map of cached outputs with weights from a backtest fit, a calibrated profile
or an extrapolation. A damaged profile (a coefficient of 1e30 is finite), an overflow in half precision
or a diverging extrapolation gives NaN / inf or an output orders of magnitude off, and the sampler turns
one such step into an all-NaN latent. Checked per forecast:
  - every value finite;
  - RMS(forecast) <= FACTOR x the largest RMS of the outputs computed so far in the run (the first
    forecast always follows a computed step, so the bound exists; RMS, not the norm, so that a change of
    latent size, e.g. a resolution stage, does not move it).
A rejected forecast is computed instead (the host runs the model for that call and counts it as computed),
and the run reports how many were, once: one warning at the first rejection, a count in the summary.

Under sequence parallelism every rank checks its own shard and the decision is agreed (`agree_any`: one
small collective per forecast), so all ranks compute the same calls.
"""
from __future__ import annotations

import logging

import torch

from .. import distributed
from ..stats import RunStats

log = logging.getLogger(__name__)

FACTOR = 10.0  # a forecast may be at most this many times the RMS of the largest computed output


def rms(t: torch.Tensor) -> float:
    """Root mean square of the finite values of `t` (float64 accumulation: no overflow on 1e30)."""
    if t.numel() == 0:
        return 0.0
    v = t.detach().double()
    v = torch.where(torch.isfinite(v), v, torch.zeros((), dtype=v.dtype, device=v.device))
    return float(v.square().mean().sqrt())


class ForecastGuard:
    """Per-run bound on forecasts (see the module doc). `observe` every computed output, `check` every forecast."""

    def __init__(self, factor: float = FACTOR, what: str = "forecast") -> None:
        self.factor = factor
        self.what = what
        self.largest = 0.0  # largest RMS of a computed output (local shard)
        self.warned = False

    def observe(self, computed: torch.Tensor) -> None:
        """A computed output of the run (the guided output, or the last block's target tokens)."""
        if computed.numel():
            self.largest = max(self.largest, rms(computed))

    def reason(self, forecast: torch.Tensor) -> str:
        """Why `forecast` must not be used ("" when it may), agreed over ranks."""
        v = forecast.detach()
        finite = bool(torch.isfinite(v).all())
        size = rms(v) if finite else 0.0
        too_large = finite and self.largest > 0 and size > self.factor * self.largest
        if not distributed.agree_any(not finite or too_large):
            return ""
        if not finite:
            return "not finite"
        if too_large:
            return f"RMS {size:.3g} over {self.factor:g}x the largest computed output's {self.largest:.3g}"
        return "out of bounds on another rank"

    def reject(self, stats: RunStats, reason: str) -> None:
        """Count a rejected forecast (its call is computed instead) and warn once per run."""
        stats.guard.guarded += 1
        if not self.warned:
            self.warned = True
            log.warning("DiT Accel: a %s was %s at step %s; that call is computed instead (every rejected %s is "
                        "counted in the run summary). A damaged learned profile or a forecaster diverging on this "
                        "model does this: check the profile, or use a safer preset.", self.what, reason,
                        stats.call_steps[-1] if stats.call_steps else "?", self.what)


def count_as_computed(stats: RunStats, evaluations: int = 1) -> None:
    """A call the run had counted as a forecast that the host computed after all (same counters as a
    forecast step turned computed elsewhere)."""
    if stats.timeline:
        stats.timeline[-1] = "C"
    stats.forecast_calls -= 1
    stats.computed_calls += 1
    stats.computed_evaluations += evaluations
