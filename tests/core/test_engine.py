"""The per-run engine with plain tensors: branches, resets, memory accounting."""
from __future__ import annotations

import torch

from accel_core import ForecastCacheConfig, ForecastRun, spec_for_class

SIGMAS = [1.0 - i / 10 for i in range(11)]


def _run(**cfg):
    return ForecastRun(ForecastCacheConfig(**cfg), spec_for_class("Flux"), SIGMAS)


def _compute_call(run, plan, h_in, h_out):
    run.capture_input(plan, h_in)
    run.record_final(plan, h_out)
    plan.scratch["recorded"] = True
    run.end_call(plan, completed=True)


def test_branches_keep_separate_histories_and_forecast_exactly_on_lines():
    run = _run(interval=10, warmup_steps=3, final_full_steps=0, order=1)
    keys = ["cond", "uncond"]
    for step in range(3):
        sigma = SIGMAS[step]
        plan = run.begin_call(sigma, keys, n_target=4, batch=2, dtype=torch.float32, device=torch.device("cpu"))
        assert plan.compute
        h_in = torch.zeros(2, 4, 3)
        h_out = torch.stack([torch.full((4, 3), 1.0 + sigma), torch.full((4, 3), -5.0 * sigma)])
        _compute_call(run, plan, h_in, h_out)
    plan = run.begin_call(SIGMAS[3], keys, 4, 2, torch.float32, torch.device("cpu"))
    assert not plan.compute
    h_in = torch.ones(2, 4, 3)
    out = run.forecast_final(plan, h_in)
    torch.testing.assert_close(out[0], torch.full((4, 3), 1.0 + 1.0 + SIGMAS[3]))
    torch.testing.assert_close(out[1], torch.full((4, 3), 1.0 - 5.0 * SIGMAS[3]))
    assert h_in.eq(1.0).all()  # input untouched
    run.end_call(plan)
    stats = run.close()
    assert stats.timeline == ["C", "C", "C", "F"]
    assert stats.evaluations == 8 and stats.computed_evaluations == 6
    # order 1 keeps 2 tensors of 4 tokens x 3 channels x 4 bytes per branch
    assert stats.branch_cache_bytes == {"cond": 2 * 4 * 3 * 4, "uncond": 2 * 4 * 3 * 4}


def test_shape_change_resets_the_branch_and_computes():
    run = _run(interval=10, warmup_steps=1, final_full_steps=0)
    plan = run.begin_call(SIGMAS[0], [0], 4, 1, torch.float32, torch.device("cpu"))
    _compute_call(run, plan, torch.zeros(1, 4, 3), torch.ones(1, 4, 3))
    plan = run.begin_call(SIGMAS[1], [0], 9, 1, torch.float32, torch.device("cpu"))  # resolution changed
    assert plan.compute
    assert run.stats.resets == 1 and run.stats.fallbacks == 1


def test_interrupted_compute_is_not_an_anchor():
    run = _run(interval=10, warmup_steps=1, final_full_steps=0)
    plan = run.begin_call(SIGMAS[0], [0], 4, 1, torch.float32, torch.device("cpu"))
    run.end_call(plan, completed=False)
    plan = run.begin_call(SIGMAS[1], [0], 4, 1, torch.float32, torch.device("cpu"))
    assert plan.compute  # no history yet, so the scheduled forecast falls back to computing


def test_reset_warns_once_per_run_for_all_branches(caplog):
    run = _run(interval=10, warmup_steps=1, final_full_steps=0)
    plan = run.begin_call(SIGMAS[0], ["c", "u"], 4, 2, torch.float32, torch.device("cpu"))
    _compute_call(run, plan, torch.zeros(2, 4, 3), torch.ones(2, 4, 3))
    with caplog.at_level("WARNING"):
        plan = run.begin_call(SIGMAS[1], ["c", "u"], 4, 2, torch.float64, torch.device("cpu"))  # dtype changed
    assert plan.compute and run.stats.resets == 2
    assert len([r for r in caplog.records if "cache reset" in r.getMessage()]) == 1
