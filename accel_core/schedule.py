"""Which steps run the full model and which are forecast: a deterministic plan per run.

After `warmup_steps` full steps, one full step follows every `interval - 1` forecast steps
(TaylorSeer's counter: warm-up 3, interval 6 over 50 steps gives full steps 0,1,2,8,14,...,44).
Steps outside the [start, end] sigma window and the last `final_full_steps` are always full.
"""
from __future__ import annotations

from typing import Sequence

from .config import ForecastCacheConfig


def caching_window(
    sample_sigmas: Sequence[float],
    config: ForecastCacheConfig,
    start_sigma: float = float("inf"),
    end_sigma: float = 0.0,
) -> list[bool]:
    """Per step, True when the step may be forecast at all (after warm-up, before the final full
    steps, inside the [end_sigma, start_sigma] window)."""
    total = max(1, len(sample_sigmas) - 1)
    if not config.enabled or config.interval <= 1:
        return [False] * total
    # warmup_sigma protects a share of the noise range, not a step count: the steps whose sigma is within
    # that share of the schedule's first sigma (more steps for schedules shifted toward high noise, fewer
    # at low step counts, as the share of the trajectory they cover is what matters).
    protect_above = float(sample_sigmas[0]) * (1.0 - config.warmup_sigma) if config.warmup_sigma > 0 else float("inf")
    return [
        i >= config.warmup_steps and i < total - config.final_full_steps
        and end_sigma <= float(sample_sigmas[i]) <= start_sigma
        and float(sample_sigmas[i]) < protect_above
        for i in range(total)
    ]


def plan_full_steps(
    sample_sigmas: Sequence[float],
    config: ForecastCacheConfig,
    start_sigma: float = float("inf"),
    end_sigma: float = 0.0,
) -> list[bool]:
    """Return, per step, True when the step must run the full model.

    Args:
        sample_sigmas: the run's schedule, descending, including the final 0.
        config: forecast cache settings.
        start_sigma / end_sigma: caching is allowed only for steps whose sigma lies in
            [end_sigma, start_sigma] (ComfyUI converts percents with `percent_to_sigma`).
    """
    plan: list[bool] = []
    last_full = -1
    for i, active in enumerate(caching_window(sample_sigmas, config, start_sigma, end_sigma)):
        full = (not active) or last_full < 0 or (i - last_full) >= config.interval
        if full:
            last_full = i
        plan.append(full)
    return plan
