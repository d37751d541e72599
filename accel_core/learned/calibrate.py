"""Choosing and fitting an L2P table from recorded runs (shared by scripts/calibrate_l2p.py and the
Calibrate Forecasts node). Host-free.

History length and ridge are chosen by the error on held-back runs (a quarter, at least one), then the
table is refitted on every run. The held-back score goes into the profile header ("validation").
"""
from __future__ import annotations

from typing import Callable, Sequence

from ..config import PRESET_SHARES, preset
from .l2p import L2PTable, evaluate, fit
from .plan import budget_plan

HISTORIES = (1, 2, 3, 4, 5, 6)
RIDGES = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1)
BUDGETS = tuple(PRESET_SHARES)  # quality 1/3, balanced 1/5, fast 1/7
MIN_RUNS = 2  # one to fit, one to hold back


def fit_steps() -> int:
    """Progress units of `choose_and_fit`: one per (history, ridge) candidate plus the final refit."""
    return len(HISTORIES) * len(RIDGES) + 1


def choose_and_fit(trajectories: Sequence, plan: Sequence[bool],
                   progress: Callable[[], None] | None = None) -> tuple[L2PTable, dict]:
    """Pick (history, ridge) by the error on held-back trajectories, refit on all; returns
    (table, validation dict). `progress` is called once per unit of `fit_steps()`."""
    if len(trajectories) < MIN_RUNS:
        raise ValueError(f"L2P calibration needs at least {MIN_RUNS} runs (one is held back to score the fit), "
                         f"got {len(trajectories)}")
    held = max(1, len(trajectories) // 4)
    train, test = trajectories[:-held], trajectories[-held:]
    best = None
    for history in HISTORIES:
        for ridge in RIDGES:
            score = evaluate(fit(train, plan, history, ridge), test)
            if best is None or score["l2p_rel_error"] < best[0]["l2p_rel_error"]:
                best = (score, history, ridge)
            if progress is not None:
                progress()
    score, history, ridge = best
    table = fit(trajectories, plan, history, ridge)
    if progress is not None:
        progress()
    validation = {"held_back_trajectories": held, "fit_trajectories": len(train),
                  "l2p_rel_error": round(score["l2p_rel_error"], 6),
                  "reuse_rel_error": round(score["reuse_rel_error"], 6),
                  "forecasts": score["forecasts"], "history": history, "ridge": ridge,
                  "metric": "teacher-forced relative L2 error of the forecast slope, mean over forecasts"}
    return table, validation


def budget_header(budget: str, sigmas: Sequence[float]) -> tuple[list[bool], dict]:
    """(full-step plan, header "budget" entry) of output preset `budget` on schedule `sigmas`."""
    if budget not in PRESET_SHARES:
        raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(PRESET_SHARES)}")
    config = preset(budget)
    plan = budget_plan(config, sigmas)
    return plan, {"preset": budget, "share": f"1/{PRESET_SHARES[budget]}", "interval": config.interval,
                  "warmup_steps": config.warmup_steps, "final_full_steps": config.final_full_steps,
                  "schedule": "budget", "evaluations": sum(plan)}
