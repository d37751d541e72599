"""Output-level cache on constructed trajectories: the backtest keeps wrong predictors out, a run is
never worse than output reuse on the same schedule, and presets keep their share at any step count."""
from __future__ import annotations

import math

import pytest
import torch

from accel_core import ConfigError, ForecastCacheConfig, preset
from accel_core.config import PRESET_SHARES
from accel_core.output import BudgetSchedule, OutputCacheRun, OutputPredictor, evaluation_budget
from accel_core.output.predictor import CANDIDATES, QUADRATIC
from accel_core.schedule import caching_window


def _sigmas(steps: int) -> list[float]:
    return [1.0 - i / steps for i in range(steps)] + [0.0]


def _sample(denoiser, sigmas, config=None, x0=None):
    """Euler over `sigmas` with `denoiser(x, sigma)`; through an OutputCacheRun when config is set.
    Returns (final x, run stats or None)."""
    x = x0.clone() if x0 is not None else torch.ones(2, 4, 8, 8)
    run = OutputCacheRun(config, "test", sigmas) if config is not None else None
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        if run is None:
            den = denoiser(x, s)
        else:
            call = run.begin(s, x)
            if call.compute:
                den = denoiser(x, s)
                run.record(call, x, den)
            else:
                den = run.forecast(call, x)
        d = (x - den) / s
        x = x + d * (s_next - s)
    return x, (run.close() if run is not None else None)


def _smooth_denoiser(x, sigma):
    """Denoised estimate moving smoothly (quadratically) with sigma, like a converging sampler."""
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(x.shape, generator=g) for _ in range(3))
    return a + b * sigma + 0.5 * c * sigma ** 2 + 0.3 * sigma * x  # depends on x: history matters


def _erratic_denoiser(x, sigma):
    """Denoised estimate that jumps around: extrapolation is the wrong predictor here."""
    g = torch.Generator().manual_seed(int(sigma * 1000))
    base = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    return base + 0.3 * torch.randn(x.shape, generator=g) + 0.3 * sigma * x


def test_backtest_finds_the_exact_candidate_on_a_linear_slope():
    pred = OutputPredictor()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 4, 4, generator=g)
    a, b = torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g)
    slope_at = lambda s: a + b * s  # noqa: E731  d linear in sigma
    for s in (1.0, 0.9, 0.8, 0.7, 0.6):
        pred.add(s, x, x - s * slope_at(s))
    result = pred.backtests[-1]
    assert result.blend_error.item() < 0.3 * result.reuse_error.item()
    err = (pred.predict_slope(0.5, x) - slope_at(0.5)).norm() / slope_at(0.5).norm()
    reuse_err = (slope_at(0.6) - slope_at(0.5)).norm() / slope_at(0.5).norm()
    assert err < 0.3 * reuse_err


def test_a_deliberately_wrong_predictor_is_detected_and_not_used():
    """Slopes on a random walk: each new increment is independent of the last, so extrapolating the last
    increment only adds error (reuse is the best predictor); the backtest must find that."""
    pred = OutputPredictor(candidates=("slope_linear",), decay=1.0)
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 2, 16, 16)
    slope = torch.randn(x.shape, generator=g)
    sigmas = [1.0 - 0.03 * i for i in range(30)]
    for s in sigmas:
        slope = slope + 0.1 * torch.randn(x.shape, generator=g)
        pred.add(s, x, x - s * slope)
    assert abs(pred.weights.item()) < 0.15  # the wrong extrapolation gets (almost) no weight
    errors = pred.backtests[3:]
    assert sum(r.blend_error.item() for r in errors) <= sum(r.reuse_error.item() for r in errors) * 1.05


def test_fitted_blend_is_never_worse_than_reuse_on_the_backtests_it_has_seen():
    torch.manual_seed(0)
    pred = OutputPredictor(decay=1.0)
    x = torch.randn(3, 2, 4, 4)
    history = []
    for i in range(10):
        s = 1.0 - 0.09 * i
        den = torch.randn_like(x) * 0.5 + math.sin(3 * s)  # partly predictable, partly noise
        history.append((s, den))
        pred.add(s, x, den)
    # Accumulated objective (decay 1 = plain sum) at the fitted weights vs at w = 0 (reuse).
    w = pred.weights
    fitted = -2 * (w * pred.rhs).sum(dim=1) + torch.einsum("bi,bij,bj->b", w, pred.gram, w)
    assert (fitted <= 1e-6).all()


@pytest.mark.parametrize("denoiser", [_smooth_denoiser, _erratic_denoiser], ids=["smooth", "erratic"])
@pytest.mark.parametrize("interval", [3, 5, 7])
def test_a_run_never_ends_worse_than_output_reuse_on_the_same_schedule(denoiser, interval):
    sigmas = _sigmas(50)
    truth, _ = _sample(denoiser, sigmas)
    common = dict(cache_mode="output", schedule="budget", interval=interval, warmup_steps=2, final_full_steps=1)
    blend, blend_stats = _sample(denoiser, sigmas, ForecastCacheConfig(method="taylorseer", **common))
    reuse, reuse_stats = _sample(denoiser, sigmas, ForecastCacheConfig(method="reuse", **common))
    assert blend_stats.computed_calls == reuse_stats.computed_calls
    err_blend = (blend - truth).norm() / truth.norm()
    err_reuse = (reuse - truth).norm() / truth.norm()
    assert err_blend <= err_reuse * 1.02 + 1e-6, (err_blend, err_reuse)


def test_smooth_trajectories_are_forecast_much_better_than_reuse():
    sigmas = _sigmas(50)
    truth, _ = _sample(_smooth_denoiser, sigmas)
    common = dict(cache_mode="output", schedule="budget", interval=5, warmup_steps=2, final_full_steps=1)
    blend, _ = _sample(_smooth_denoiser, sigmas, ForecastCacheConfig(**common))
    reuse, _ = _sample(_smooth_denoiser, sigmas, ForecastCacheConfig(method="reuse", **common))
    assert (blend - truth).norm() < 0.1 * (reuse - truth).norm()


@pytest.mark.parametrize("name", ["quality", "balanced", "fast"])
@pytest.mark.parametrize("steps", [20, 28, 50])
def test_presets_keep_their_share_of_evaluations_at_any_step_count(name, steps):
    config = preset(name)
    sigmas = _sigmas(steps)
    _, stats = _sample(_smooth_denoiser, sigmas, config)
    share = PRESET_SHARES[name]
    assert abs(stats.computed_calls - steps / share) <= 1.0, (stats.computed_calls, steps / share)
    assert stats.computed_calls == stats.output.budget


@pytest.mark.parametrize("steps,interval", [(50, 5), (20, 5), (28, 7), (9, 3)])
def test_budget_schedule_spends_exactly_its_budget(steps, interval):
    config = ForecastCacheConfig(cache_mode="output", schedule="budget", interval=interval, warmup_steps=2,
                                 final_full_steps=1)
    allowed = caching_window(_sigmas(steps), config)
    schedule = BudgetSchedule(allowed, fraction=1 / interval, adapt=False)
    computed = []
    for step in range(steps):
        if schedule.is_full(step):
            computed.append(step)
            schedule.completed(step)
    assert len(computed) == schedule.budget == evaluation_budget(steps, 1 / interval, 3)
    assert computed[:2] == [0, 1] and computed[-1] == steps - 1
    gaps = [b - a for a, b in zip(computed[1:-1], computed[2:-1])]
    assert not gaps or max(gaps) - min(gaps) <= 1  # even spacing in between


def test_adaptive_schedule_shortens_gaps_where_the_error_grows_and_keeps_the_budget():
    steps = 50
    config = ForecastCacheConfig(cache_mode="output", schedule="adaptive", interval=5, warmup_steps=1,
                                 final_full_steps=0)
    schedule = BudgetSchedule(caching_window(_sigmas(steps), config), fraction=0.2, adapt=True)
    computed, last = [], None
    for step in range(steps):
        if schedule.is_full(step):
            horizon = None if last is None else step - last
            # Error per step low in the first half, ten times higher in the second.
            error = None if horizon is None else horizon * (0.01 if step < 25 else 0.1)
            schedule.completed(step, error, horizon)
            computed.append(step)
            last = step
    assert len(computed) <= schedule.budget
    first = [b - a for a, b in zip(computed, computed[1:]) if b <= 25]
    second = [b - a for a, b in zip(computed, computed[1:]) if a > 25]
    assert second and first and min(second) < max(first)


def test_heun_calls_of_one_step_share_the_decision():
    sigmas = _sigmas(20)
    run = OutputCacheRun(preset("balanced"), "test", sigmas)
    x = torch.ones(1, 2, 4, 4)
    decisions = {}
    for i in range(len(sigmas) - 1):
        for sigma in ((sigmas[i], sigmas[i + 1]) if sigmas[i + 1] > 0 else (sigmas[i],)):
            call = run.begin(sigma, x)
            decisions.setdefault(i, []).append(call.compute)
            if call.compute:
                run.record(call, x, x * 0.5 + sigma)
            else:
                run.forecast(call, x)
    # Heun's corrector sits at sigma_{i+1}, which the step tracker maps to step i+1: the second call
    # of step i shares step i+1's decision. What matters: no step mixes a fresh and a stale slope
    # without a computed anchor, and the budget counts steps, not calls.
    stats = run.close()
    assert stats.calls == sum(len(v) for v in decisions.values())
    assert stats.computed_calls >= stats.output.budget


def test_shape_change_within_a_run_resets_and_computes():
    run = OutputCacheRun(ForecastCacheConfig(cache_mode="output", schedule="budget", interval=5, warmup_steps=1,
                                             final_full_steps=0), "test", _sigmas(20))
    x = torch.ones(1, 2, 4, 4)
    for s in _sigmas(20)[:3]:
        call = run.begin(s, x)
        if call.compute:
            run.record(call, x, x * 0.5)
    bigger = torch.ones(1, 2, 8, 8)
    call = run.begin(_sigmas(20)[3], bigger)
    assert call.compute and run.stats.resets == 1


def test_output_mode_rejects_verify_and_split_with_a_clear_message():
    with pytest.raises(ConfigError, match="cache_mode 'output'.*final_hidden"):
        ForecastCacheConfig(cache_mode="output", verify="last_block")
    with pytest.raises(ConfigError, match="schedule 'budget' needs cache_mode 'output'"):
        ForecastCacheConfig(cache_mode="final_hidden", schedule="budget")


def test_hidden_modes_get_the_family_recipe_at_the_preset_share():
    hidden = preset("balanced", "flux", "final_hidden")
    assert hidden.cache_mode == "final_hidden" and hidden.schedule == "fixed" and hidden.interval == 5
    assert preset("balanced", "flux").cache_mode == "output"


def test_candidate_lists():
    assert set(OutputPredictor().candidates) == set(CANDIDATES + QUADRATIC)


def _cfg_run(steps=20, interval=4, cfg_layout="split"):
    config = ForecastCacheConfig(cache_mode="output", schedule="budget", interval=interval, warmup_steps=2,
                                 final_full_steps=1, cfg_layout=cfg_layout)
    return OutputCacheRun(config, "test", _sigmas(steps))


def _cfg_errors(split: bool, cfg_layout="split") -> tuple[list[float], OutputCacheRun]:
    run = _cfg_run(cfg_layout=cfg_layout)
    g = torch.Generator().manual_seed(0)
    base, direction = torch.randn(1, 2, 8, 8, generator=g), torch.randn(1, 2, 8, 8, generator=g)
    x = torch.zeros(1, 2, 8, 8)
    scale = 3.0
    errors = []
    for s in _sigmas(20)[:-1]:
        uncond = base * math.cos(4 * s)  # curved
        cond = uncond + direction * s  # guidance direction fading with the noise level
        guided = uncond + scale * (cond - uncond)
        call = run.begin(s, x)
        if call.compute:
            run.record(call, x, guided, (cond, uncond, scale) if split else None)
        else:
            errors.append(float((run.forecast(call, x) - guided).norm() / guided.norm()))
    return errors, run


def test_plain_cfg_is_forecast_as_uncond_plus_guidance_direction():
    split_errors, run = _cfg_errors(split=True)
    assert set(run.series) == {"uncond", "guidance"} and run.layout == "split" and split_errors
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    call = run.begin(0.07, x)
    expected = (run.series["uncond"].predict_denoised(0.07, x)
                + 3.0 * run.series["guidance"].predict_denoised(0.07, torch.zeros_like(x)))
    assert torch.allclose(run.forecast(call, x), expected)


def test_auto_layout_keeps_both_and_forecasts_with_the_one_that_backtested_better():
    """cfg_layout auto: the guided series and the uncond + guidance-direction series both run; each
    computed step scores both on the guided output, and forecasts use the lower decayed error."""
    split_errors, run = _cfg_errors(split=True, cfg_layout="auto")
    guided_errors, single = _cfg_errors(split=False, cfg_layout="auto")
    assert set(run.series) == {"guided", "uncond", "guidance"} and run.scale == 3.0
    assert set(single.series) == {"guided"} and single.layout == "guided"
    assert run.layout_errors["guided"] > 0 and run.layout_errors["split"] > 0
    expected_layout = "split" if run.layout_errors["split"] <= run.layout_errors["guided"] else "guided"
    assert run.layout == expected_layout
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    call = run.begin(0.07, x)
    split = (run.series["uncond"].predict_denoised(0.07, x)
             + 3.0 * run.series["guidance"].predict_denoised(0.07, torch.zeros_like(x)))
    guided = run.series["guided"].predict_denoised(0.07, x)
    assert torch.allclose(run.forecast(call, x), split if run.layout == "split" else guided)
    # Run-time choice: never worse than the better of the two fixed layouts by more than a little.
    assert sum(split_errors) <= 1.05 * sum(guided_errors) or run.layout == "guided"


def test_the_layout_with_the_lower_backtest_error_is_used():
    """Guidance direction that jumps at random (unforecastable) while the guided output stays smooth: the
    guided layout must win the backtest (auto layout)."""
    run = _cfg_run(steps=30, interval=3, cfg_layout="auto")
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 2, 8, 8)
    smooth = torch.randn(1, 2, 8, 8, generator=g)
    for s in _sigmas(30)[:-1]:
        guided = smooth * (1 + s)
        uncond = torch.randn(1, 2, 8, 8, generator=g)  # erratic branch, exact CFG identity kept
        cond = uncond + (guided - uncond) / 3.0
        call = run.begin(s, x)
        if call.compute:
            run.record(call, x, uncond + 3.0 * (cond - uncond), (cond, uncond, 3.0))
        else:
            run.forecast(call, x)
    assert run.layout == "guided" and run.layout_errors["split"] > run.layout_errors["guided"]
    assert run.stats.output.cfg_layouts.get("guided", 0) > 0
    forced = _cfg_run(cfg_layout="split")  # forced layouts exist for the tune-time bench
    call = forced.begin(1.0, x)
    forced.record(call, x, uncond + 3.0 * (cond - uncond), (cond, uncond, 3.0))
    assert set(forced.series) == {"uncond", "guidance"} and forced.layout == "split"
    forced = _cfg_run(cfg_layout="guided")
    call = forced.begin(1.0, x)
    forced.record(call, x, uncond + 3.0 * (cond - uncond), (cond, uncond, 3.0))
    assert set(forced.series) == {"guided"} and forced.layout == "guided"


def test_cfg_layout_is_a_checked_config_field_with_the_tuned_default():
    """The bench knob is a config field (not a module global): default split, unknown values refused with the
    allowed ones, and a non-default layout shows in the tag."""
    assert ForecastCacheConfig().cfg_layout == "split" and preset("balanced").cfg_layout == "split"
    with pytest.raises(ConfigError, match="cfg_layout must be one of split, guided, auto \\(got 'both'\\)"):
        ForecastCacheConfig(cache_mode="output", cfg_layout="both")
    assert preset("balanced").replace(cfg_layout="auto").tag() == preset("balanced").tag() + "-auto"


def test_a_changed_cfg_result_falls_back_to_one_guided_series():
    """A custom CFG function or post-CFG patch (here: a rescale) breaks guided = u + s (c - u): one series."""
    run = _cfg_run()
    x = torch.ones(1, 2, 4, 4)
    cond, uncond = torch.full_like(x, 2.0), torch.full_like(x, 1.0)
    call = run.begin(1.0, x)
    run.record(call, x, 0.7 * (uncond + 3.0 * (cond - uncond)), (cond, uncond, 3.0))
    assert set(run.series) == {"guided"}
    call = run.begin(0.95, x)
    run.record(call, x, uncond + 3.0 * (cond - uncond), (cond, uncond, 3.0))
    assert set(run.series) == {"uncond", "guidance"}  # layout changed: series restarted, not mixed
    assert len(run.series["uncond"].history) == 1
