"""Issue 21 item 2: the finite-output guard (accel_core/output/guard.py). A forecast that is not finite or
whose RMS exceeds 10x the largest computed output is rejected; the count goes to the run summary once."""
from __future__ import annotations

import logging

import torch

from accel_core.output.guard import FACTOR, ForecastGuard, count_as_computed, rms
from accel_core.stats import RunStats


def test_finite_forecasts_within_the_bound_pass():
    guard = ForecastGuard()
    guard.observe(torch.ones(1, 4, 8, 8))
    assert guard.reason(torch.full((1, 4, 8, 8), FACTOR * 0.99)) == ""
    assert guard.reason(torch.zeros(1, 4, 8, 8)) == ""


def test_non_finite_and_runaway_forecasts_are_rejected():
    guard = ForecastGuard()
    assert guard.reason(torch.tensor([1.0, float("nan")])) == "not finite"  # no computed output yet: finite only
    assert guard.reason(torch.tensor([1e30, 1.0])) == ""
    guard.observe(torch.ones(2, 3))
    assert guard.reason(torch.tensor([float("inf")])) == "not finite"
    assert "over 10x the largest computed output" in guard.reason(torch.full((2, 3), 1e30))  # finite, runaway
    assert guard.reason(torch.full((5, 7), 2.0)) == ""  # RMS, not norm: another size compares the same


def test_rms_survives_overflowing_values():
    assert rms(torch.tensor([3e38, 3e38], dtype=torch.float32)) > 1e38  # float64 accumulation
    assert abs(rms(torch.tensor([float("nan"), 2.0])) - 2.0 ** 0.5) < 1e-12  # finite values only (as zeros)
    assert rms(torch.zeros(0)) == 0.0


def test_rejections_are_counted_warned_once_and_summarised(caplog):
    stats = RunStats(family="flux", tag="t", total_steps=8)
    stats.timeline, stats.call_steps = ["C", "F", "F"], [0, 1, 2]
    stats.calls, stats.computed_calls, stats.forecast_calls = 3, 1, 2
    stats.evaluations, stats.computed_evaluations = 3, 1
    guard = ForecastGuard()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            guard.reject(stats, "not finite")
            count_as_computed(stats)
    assert stats.guard.guarded == 2 and stats.forecast_calls == 0 and stats.computed_calls == 3
    assert stats.timeline[-1] == "C"
    assert len([r for r in caplog.records if "computed instead" in r.getMessage()]) == 1
    assert "2 forecast(s) not finite or out of bounds, computed instead" in stats.summary()
    assert stats.as_dict()["guarded"] == 2
    assert "finite-output guard" not in RunStats(family="flux", tag="t").summary()
