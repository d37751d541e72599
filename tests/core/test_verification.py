"""SpeCa verification in the engine: schedule, threshold and decisions on constructed errors."""
from __future__ import annotations

import math

import pytest
import torch

from accel_core import ForecastCacheConfig, ForecastRun, spec_for_class

STEPS = 20
SIGMAS = [1.0 - i / STEPS for i in range(STEPS + 1)]
CPU = torch.device("cpu")


def _run(**cfg):
    base = dict(method="taylorseer", order=1, interval=6, warmup_steps=2, final_full_steps=1, verify="first_block",
                verify_threshold=0.2, verify_decay=0.5, verify_floor=0.05, min_forecasts=1)
    base.update(cfg)
    return ForecastRun(ForecastCacheConfig(**base), spec_for_class("Flux"), SIGMAS)


def _with_error(err: float, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    truth = torch.ones(batch, 4, 3)
    return truth * (1.0 + err), truth  # relative L2 error = err exactly


def _drive(run, errors: dict[int, float], keys=("c",)):
    """Sample all steps; a probed forecast at step s sees relative error errors.get(s, 0)."""
    for step in range(STEPS):
        plan = run.begin_call(SIGMAS[step], list(keys), 4, len(keys), torch.float32, CPU)
        if plan.probe:
            forecast, truth = _with_error(errors.get(step, 0.0), len(keys))
            if not run.verify(plan, forecast, truth) and run.config.verify_mode == "rollback":
                run.rollback(plan)
        if plan.compute:
            plan.scratch["recorded"] = True
        run.end_call(plan, completed=True)
    return run.close()


def test_threshold_decays_geometrically_to_the_floor():
    run = _run()
    assert run.threshold(0) == pytest.approx(0.2)
    assert run.threshold(10) == pytest.approx(0.2 * 0.5 ** 0.5)
    assert _run(verify_floor=0.15).threshold(19) == pytest.approx(0.15)


def test_all_accepted_runs_the_longest_forecast_chains():
    stats = _drive(_run(), {})
    # full: warm-up 0,1; then every 6th step (max 5 forecasts); final step 19.
    assert stats.timeline == list("CCFFFFFCFFFFFCFFFFFC")
    assert stats.verify.rejected == 0 and stats.verify.accepted == stats.verify.probes
    # min_forecasts=1: the first forecast after each full step is not probed.
    assert stats.verify.probes == sum(1 for s in range(STEPS) if stats.timeline[s] == "F") - 3


def test_rollback_recomputes_the_rejected_step_and_restarts_the_chain():
    stats = _drive(_run(), {4: 0.5})
    assert stats.timeline[:9] == list("CCFFRFFFF")
    assert stats.verify.rollbacks == 1 and stats.verify.rejected == 1
    assert stats.computed_calls == stats.timeline.count("C") + stats.timeline.count("R")


def test_next_step_mode_keeps_the_forecast_and_computes_the_next_call():
    stats = _drive(_run(verify_mode="next_step"), {4: 0.5})
    assert stats.timeline[:8] == list("CCFFRCFF")
    assert stats.verify.rollbacks == 0
    assert stats.forecast_calls == stats.timeline.count("F") + stats.timeline.count("R")


def test_error_exactly_at_threshold_is_accepted_and_just_above_is_rejected():
    run = _run()
    tau = run.threshold(4)
    accepted = _drive(_run(), {4: tau * (1 - 1e-6)})
    rejected = _drive(_run(), {4: tau * (1 + 1e-3)})
    assert accepted.verify.rejected == 0 and rejected.verify.rejected == 1


def test_one_failing_sample_in_a_batch_rejects_the_whole_call():
    run = _run()
    plans = []
    for step in range(5):
        plan = run.begin_call(SIGMAS[step], ["c", "u"], 4, 2, torch.float32, CPU)
        plans.append(plan)
        if plan.probe:
            truth = torch.ones(2, 4, 3)
            forecast = truth.clone()
            forecast[1] *= 1.5  # only the uncond sample is off
            assert not run.verify(plan, forecast, truth)
            break
        plan.scratch["recorded"] = True
        run.end_call(plan, completed=True)
    assert plans[-1].probe and run.stats.verify.rejected == 1
    assert run.stats.verify.probe_log[-1][1] == pytest.approx(0.5)


def test_probe_cost_is_reported_in_full_calls():
    run = _run()
    run.stats.verify.blocks_per_call = 57
    stats = _drive(run, {})
    assert stats.verify.probe_blocks == stats.verify.probes
    assert stats.verify.probe_cost_calls == pytest.approx(stats.verify.probes / 57)
    assert "probes" in stats.summary() and math.isfinite(stats.verify.probe_cost_calls)


def test_min_forecasts_must_leave_room_for_a_probe():
    from accel_core import ConfigError

    with pytest.raises(ConfigError, match="min_forecasts"):
        ForecastCacheConfig(interval=3, min_forecasts=3, verify="last_block")
