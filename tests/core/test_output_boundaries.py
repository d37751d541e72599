"""The output cache's host-free side of graph combinations: restarts where the model's function changes,
switch steps planned into the budget, and a split pass continuing the pass before it."""
from __future__ import annotations

import torch

from accel_core import preset
from accel_core.output import OutputCacheRun


def _sigmas(steps: int, start: float = 1.0, stop: float = 0.0) -> list[float]:
    return [start - (start - stop) * i / steps for i in range(steps + 1)]


def _run(run: OutputCacheRun, sigmas, restart_at=()) -> list[str]:
    """Drive `run` over `sigmas` with a smooth denoiser; restart before the given steps. Returns marks."""
    x = torch.ones(1, 4, 8, 8)
    for i, s in enumerate(sigmas[:-1]):
        if i in restart_at:
            run.restart(s)
        call = run.begin(s, x)
        den = x * 0.5 + s if call.compute else run.forecast(call, x)
        if call.compute:
            run.record(call, x, den)
        x = x + (x - den) / max(s, 1e-3) * (sigmas[i + 1] - s)
    return run.stats.timeline


def test_restart_computes_and_drops_the_history():
    config = preset("balanced", "flux")
    sigmas = _sigmas(28)
    run = OutputCacheRun(config, "flux", sigmas)
    _run(run, sigmas[:11])  # steps 0-9; the plan computes 0, 1, 8, 14, ...
    assert run.series and run.stats.timeline[9] == "F"  # step 10 would be a forecast too
    run.restart(sigmas[10])
    assert not run.series and run.begin(sigmas[10], torch.ones(1, 4, 8, 8)).compute
    again = OutputCacheRun(config, "flux", sigmas)
    marks = _run(again, sigmas, restart_at={9, 20})
    assert marks[9] == "C" and marks[20] == "C"
    assert again.stats.boundary_steps == [9, 20]


def test_planned_switches_are_computed_on_top_of_the_budget():
    config = preset("balanced", "flux")
    plain = OutputCacheRun(config, "flux", _sigmas(28))
    _run(plain, _sigmas(28))
    planned = OutputCacheRun(config, "flux", _sigmas(28))
    planned.plan_boundaries([9, 20])
    marks = _run(planned, _sigmas(28), restart_at={9, 20})
    assert marks[9] == marks[20] == "C"
    assert planned.stats.computed_calls == plain.stats.computed_calls + 2  # the share applies to the rest
    assert planned.stats.fallbacks == 0  # both were planned: no unplanned full step


def test_a_continued_pass_spends_what_the_whole_trajectory_has_left():
    config = preset("balanced", "flux")
    full = _sigmas(28)
    first = OutputCacheRun(config, "flux", full[:13])
    _run(first, full[:13])
    carried = first.carry()
    assert carried is not None and carried["sigma"] == full[12]
    second = OutputCacheRun(config, "flux", full[12:])
    second.adopt(carried)
    assert second.stats.output.continued and second.series  # starts with the first pass's series
    _run(second, full[12:])
    whole = OutputCacheRun(config, "flux", full)
    _run(whole, full)
    assert first.stats.computed_calls + second.stats.computed_calls == whole.stats.computed_calls


def test_nothing_is_carried_from_a_finished_run_or_into_another_schedule():
    config = preset("balanced", "flux")
    finished = OutputCacheRun(config, "flux", _sigmas(20))
    _run(finished, _sigmas(20))
    assert finished.carry() is None  # ended at sigma 0
    first = OutputCacheRun(config, "flux", _sigmas(12, 1.0, 0.5))
    _run(first, _sigmas(12, 1.0, 0.5))
    other = OutputCacheRun(config, "flux", _sigmas(16, 0.6, 0.0))  # does not start where the first stopped
    other.adopt(first.carry())
    assert not other.stats.output.continued and not other.series
