"""Issue 18 on constructed trajectories: forecasts are weighted by backtests at the horizon they are made
over, the schedule never spends more than its budget, and a run with no measurements spaces evenly."""
from __future__ import annotations

import math
import random

import pytest
import torch

from accel_core import ForecastCacheConfig, preset
from accel_core.output import BudgetSchedule, OutputCacheRun, OutputPredictor, evaluation_budget

SEGMENT = 8  # the slope is a random walk whose every increment is eased in over 8 steps: a line through two
# points one step apart holds for about a step, but eight steps apart (at segment starts) the increments
# are independent, so extrapolating the last one only adds error and its best weight is 0


def _ramped(shape=(1, 2, 8, 8), segments=8):
    g = torch.Generator().manual_seed(0)
    increments = [torch.randn(shape, generator=g) for _ in range(segments)]

    def slope_at(t: float) -> torch.Tensor:
        out = torch.full(shape, 2.0)
        for n, inc in enumerate(increments):
            u = min(1.0, max(0.0, (t - SEGMENT * n) / SEGMENT))
            out = out + inc * (3 * u * u - 2 * u ** 3)  # smoothstep: eased in and out
        return out
    return slope_at


def _add(pred: OutputPredictor, slope_at, t: float):
    x = torch.zeros(1, 2, 8, 8)
    sigma = 1.0 - t / 100
    return pred.add(sigma, x, x - sigma * slope_at(t), time=t)


def _error(pred: OutputPredictor, slope_at, t: float) -> float:
    sigma = 1.0 - t / 100
    truth = slope_at(t)
    return float((pred.predict_slope(sigma, torch.zeros_like(truth), time=t) - truth).norm() / truth.norm())


def test_one_step_backtests_do_not_vouch_for_an_eight_step_forecast():
    slope_at = _ramped()
    matched = OutputPredictor(candidates=("slope_linear",), decay=1.0)  # horizon_match 1.5 (the default)
    blind = OutputPredictor(candidates=("slope_linear",), decay=1.0, horizon_match=0.0)  # rounds 1-3
    for t in (0, 1, 2, 3):  # a warm-up of consecutive steps: every backtest is one step long
        _add(matched, slope_at, t)
        _add(blind, slope_at, t)
    # One step out the extrapolation is right, and both use it.
    assert matched.weights_for(1.0) is not None and matched.weights_for(1.0).item() > 0.5
    reuse_error_1 = float((slope_at(3) - slope_at(4)).norm() / slope_at(4).norm())
    assert _error(matched, slope_at, 4) < 0.4 * reuse_error_1
    # Eight steps out the blind blend keeps the one-step weight and overshoots; the matched one has no
    # backtest that long and is exactly output reuse.
    assert matched.weights_for(8.0) is None
    reuse_error_8 = float((slope_at(3) - slope_at(11)).norm() / slope_at(11).norm())
    assert _error(matched, slope_at, 11) == pytest.approx(reuse_error_8, rel=1e-5)
    assert _error(blind, slope_at, 11) > 1.5 * reuse_error_8


def test_a_wrong_long_horizon_extrapolator_gets_no_weight_once_measured_at_that_horizon():
    slope_at = _ramped()
    pred = OutputPredictor(candidates=("slope_linear",), decay=1.0)
    for t in (0, 1, 2, 3, 8, 16, 24, 32, 40):  # one-step backtests first, then (mostly) eight-step ones
        _add(pred, slope_at, t)
    long = pred.weights_for(8.0)
    assert long is not None and abs(long.item()) < 0.2  # fitted on eight-step backtests only
    assert pred.weights_for(1.0).item() > long.item()  # short forecasts also count the one-step backtests
    # What the backtests at horizon 8 saw: the blend each would have used (fitted on the ones before it)
    # was about output reuse, not the one-step blend's overshoot.
    eight = [r for r in pred.backtests if r.horizon == 8.0]
    assert len(eight) == 4
    assert sum(r.blend_error.item() for r in eight) <= 1.02 * sum(r.reuse_error.item() for r in eight)


def test_horizon_weights_are_cached_and_dropped_with_each_new_backtest():
    slope_at = _ramped()
    pred = OutputPredictor(candidates=("slope_linear",))
    for t in (0, 1, 2):
        _add(pred, slope_at, t)
    first = pred.weights_for(1.0)
    assert pred.weights_for(1.0) is first  # solved once per set of backtests
    _add(pred, slope_at, 3)
    assert pred.weights_for(1.0) is not first
    pred.reset()
    assert pred.weights_for(1.0) is None and not pred.fits


# ------------------------------------------------------------------------------------------ schedule
@pytest.mark.parametrize("steps,share", [(20, 3), (28, 5), (50, 5), (50, 7), (37, 3)])
def test_a_run_with_no_measurements_spaces_its_budget_evenly(steps, share):
    allowed = [i >= 1 for i in range(steps)]  # the first step is computed, nothing else is forced
    for adapt in (False, True):
        sched = BudgetSchedule(allowed, fraction=1 / share, adapt=adapt)
        full = []
        for step in range(steps):
            if sched.is_full(step):
                full.append(step)
                sched.completed(step)  # no backtest error measured
        assert len(full) == sched.budget == evaluation_budget(steps, 1 / share, 1)
        gaps = [b - a for a, b in zip(full, full[1:])] + [steps - full[-1]]
        assert max(gaps) - min(gaps) <= 1, (full, gaps)  # even to within a step


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("share", [3, 5, 7])
def test_the_schedule_never_spends_more_than_its_budget_whatever_it_measures(seed, share):
    rng = random.Random(seed)
    steps = rng.choice([20, 28, 30, 50])
    allowed = [i >= 1 for i in range(steps)]
    sched = BudgetSchedule(allowed, fraction=1 / share, adapt=True)
    full, last = [], None
    for step in range(steps):
        if sched.is_full(step):
            horizon = None if last is None else step - last
            error = None if last is None else rng.choice([1e-4, 0.01, 0.3, 5.0]) * rng.random()
            sched.completed(step, error, horizon)
            full.append(step)
            last = step
    assert full[0] == 0 and len(full) <= sched.budget
    # A cap on the gap: no gap longer than twice the even one.
    even = steps / sched.budget
    assert all(b - a <= 2 * even + 1 for a, b in zip(full, full[1:]))


@pytest.mark.parametrize("name", ["quality", "balanced", "fast"])
@pytest.mark.parametrize("steps", [20, 28, 50])
def test_presets_keep_their_share_and_place_no_step_count_fitted_on_models(name, steps):
    config = preset(name)
    assert config.warmup_steps == 1  # only the first step, which every run must compute
    sigmas = [1.0 - i / steps for i in range(steps)] + [0.0]
    run = OutputCacheRun(config, "test", sigmas)
    share = {"quality": 3, "balanced": 5, "fast": 7}[name]
    assert abs(run.schedule.budget - steps / share) <= 1
    assert run.stats.tag == config.tag() and not run.stats.output.schedule_note


def test_a_trimmed_explicit_schedule_is_what_the_tag_shows_and_is_said_once(caplog):
    config = ForecastCacheConfig(cache_mode="output", schedule="budget", interval=7, warmup_steps=3,
                                 final_full_steps=1)
    sigmas = [1.0 - i / 20 for i in range(20)] + [0.0]
    with caplog.at_level("INFO", logger="accel_core.output.run"):
        run = OutputCacheRun(config, "test", sigmas)
    assert run.schedule.budget == 3
    assert "-w1-f1-" in run.stats.tag and "-w3-" not in run.stats.tag
    assert "warmup_steps 3 -> 1" in run.stats.output.schedule_note
    assert sum("warmup_steps 3 -> 1" in r.getMessage() for r in caplog.records) == 1


def test_warmup_sigma_protects_a_share_of_the_noise_range_not_a_step_count():
    from accel_core.schedule import caching_window

    config = ForecastCacheConfig(cache_mode="output", schedule="budget", interval=5, warmup_steps=1,
                                 final_full_steps=0, warmup_sigma=0.05)
    for steps in (20, 50, 100):
        sigmas = [1.0 - i / steps for i in range(steps)] + [0.0]
        allowed = caching_window(sigmas, config)
        protected = [i for i, a in enumerate(allowed) if not a]
        # Exactly the steps with sigma >= 0.95: one step at 20 steps, three at 50, six at 100.
        assert protected == [i for i in range(steps) if sigmas[i] >= 0.95 - 1e-12], steps
    assert len([a for a in caching_window([1.0 - i / 50 for i in range(50)] + [0.0], config) if not a]) == 3
    with pytest.raises(Exception, match="warmup_sigma"):
        ForecastCacheConfig(cache_mode="output", schedule="budget", warmup_sigma=0.9)


def test_the_wall_speedup_estimate_is_every_call_at_the_median_computed_time():
    from accel_core.stats import RunStats

    stats = RunStats(family="flux", tag="t", total_steps=50)
    stats.calls, stats.wall_seconds = 50, 2.0
    assert stats.wall_speedup_estimate is None  # no computed call timed yet
    stats.full_call_seconds = [0.9, 0.2, 0.2, 0.2]  # the first call carries set-up: the median ignores it
    assert stats.wall_speedup_estimate == pytest.approx(50 * 0.2 / 2.0)
    assert "about 5.0x wall" in stats.summary() and stats.as_dict()["wall_speedup_estimate"] == pytest.approx(5.0)


@pytest.mark.parametrize("steps", [8, 9, 20, 28, 30, 50, 100])
@pytest.mark.parametrize("share", [3, 5, 7])
def test_a_preset_spends_what_output_reuse_every_k_computes(steps, share):
    """The naive baseline computes steps 0, k, 2k, ...: a preset gets exactly that many evaluations."""
    assert evaluation_budget(steps, 1 / share, 1) == len(range(0, steps, share))


def test_gap_share_runs_from_just_after_a_full_step_to_the_next_one():
    """Token methods place partial steps by how far a step lies into its gap (TokenSettings.partial_from)."""
    config = preset("balanced")
    steps = 30
    sigmas = [1.0 - i / steps for i in range(steps)] + [0.0]
    run = OutputCacheRun(config, "test", sigmas)
    x = torch.zeros(1, 2, 4, 4)
    full, shares = [], {}
    for i in range(steps):
        call = run.begin(sigmas[i], x)
        if call.compute:
            full.append(i)
            run.record(call, x, x + sigmas[i])
        else:
            shares[i] = run.gap_share(i)
    assert len(full) >= 3 and shares
    for a, b in zip(full, full[1:]):
        inside = [shares[i] for i in range(a + 1, b)]
        assert inside == sorted(inside) and all(0.0 < s < 1.0 for s in inside)  # rises through the gap
        assert inside == pytest.approx([(i - a) / (b - a) for i in range(a + 1, b)])
