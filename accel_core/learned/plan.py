"""The full-step plan an output-cache run follows, simulated without a model.

L2P weights belong to forecast positions of one plan, so calibration must see exactly the plan the
run will follow: the even "budget" schedule (no error feedback, hence deterministic given the steps)
of the same config, built with the run's own code (fit_to_budget, caching_window, BudgetSchedule).
"""
from __future__ import annotations

from typing import Sequence

from ..config import ForecastCacheConfig


def budget_plan(config: ForecastCacheConfig, sample_sigmas: Sequence[float]) -> list[bool]:
    """Per step, True when the run computes it (config's share, warm-up and final steps, even spacing)."""
    from ..output.budget import BudgetSchedule
    from ..output.run import fit_to_budget  # late: output.run imports this package lazily too
    from ..schedule import caching_window

    steps = max(1, len(sample_sigmas) - 1)
    fitted = fit_to_budget(config, steps)
    schedule = BudgetSchedule(caching_window(sample_sigmas, fitted), fraction=1.0 / config.interval, adapt=False)
    plan = []
    for step in range(steps):
        full = schedule.is_full(step)
        plan.append(full)
        if full:
            schedule.completed(step)
    return plan
