"""Choosing and fitting an L2P table from recorded runs (shared by scripts/calibrate_l2p.py and the
Calibrate Forecasts node). Host-free.

History length and ridge are chosen by the error on held-back runs (a quarter, at least one), then the
table is refitted on every run. The held-back score goes into the profile header ("validation").

CFG layout: runs recorded with plain CFG (SplitTrajectory) are fitted as two series, the unconditional
slope and the guidance direction, each with its own history, ridge and weights ("split"); runs without
(cfg 1, guidance-distilled models, custom CFG) as the guided slope ("guided"). `L2PFit.cfg_layout` says
which layout plain-CFG runs get by default; chosen on the tune model micro_qwen_image (bench/bench_l2p.py,
both layouts measured, docs/L2P.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..config import PRESET_SHARES, preset
from ..errors import ConfigError
from .l2p import L2PTable, SplitTrajectory, evaluate, evaluate_split, fit
from .plan import budget_plan

HISTORIES = (1, 2, 3, 4, 5, 6)
RIDGES = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1)
BUDGETS = tuple(PRESET_SHARES)  # quality 1/3, balanced 1/5, fast 1/7
MIN_RUNS = 2  # one to fit, one to hold back
LAYOUTS = ("guided", "split")


@dataclass(frozen=True)
class L2PFit:
    """How L2P calibration fits recorded runs (a bench / test knob, not a node input).

    Attributes:
        cfg_layout (`str`, defaults to "guided"): the layout of plain-CFG calibration runs when the layout asked
            for is "auto": "guided" (one series, the guided slope) or "split" (the unconditional slope and the
            guidance direction; the Calibrate node then also records the CFG branches). Chosen on the tune
            model micro_qwen_image (bench/bench_l2p.py, cfg 3, mean of (PSNR mean + worst) / 2 over balanced
            and fast): guided 19.79 dB, split 18.43 dB (split balanced 26.38 / 10.75, guided 26.94 / 16.90;
            fast 22.39 / 14.21 vs 22.52 / 12.81).
    """

    cfg_layout: str = "guided"

    def __post_init__(self) -> None:
        if self.cfg_layout not in LAYOUTS:
            raise ConfigError(
                f"L2P calibration: cfg_layout must be one of {', '.join(LAYOUTS)} (got {self.cfg_layout!r}). Use "
                "guided (the tuned default) or split (uncond and guidance direction as two series).")


DEFAULT_FIT = L2PFit()


# Guidance-direction ridges also reach near-reuse (the direction is noisier than the unconditional slope,
# and the CFG scale multiplies its error).
GUIDANCE_RIDGES = RIDGES + (10.0, 1e3)


def fit_steps(layout: str = "guided") -> int:
    """Progress units of `fit_layout` / `choose_and_fit`: one per (history, ridge) candidate plus the final
    refit, per series (split: uncond, then guidance)."""
    units = len(HISTORIES) * len(RIDGES) + 1
    return units + (len(HISTORIES) * len(GUIDANCE_RIDGES) + 1 if layout == "split" else 0)


def resolve_layout(trajectories: Sequence, layout: str = "auto", l2p_fit: L2PFit = DEFAULT_FIT) -> str:
    """"split" when asked for (or "auto" with l2p_fit.cfg_layout "split") and every run has both CFG branches;
    otherwise "guided". Asking for "split" on runs without plain CFG is a ValueError."""
    if layout not in ("auto",) + LAYOUTS:
        raise ValueError(f"unknown L2P layout {layout!r}; choose auto, {', '.join(LAYOUTS)}")
    have = bool(trajectories) and all(isinstance(t, SplitTrajectory) for t in trajectories)
    if layout == "split" and not have:
        raise ValueError("the split L2P layout needs runs recorded with plain CFG (cond and uncond branches, "
                         "cfg != 1)")
    if layout == "auto":
        layout = l2p_fit.cfg_layout if have else "guided"
    return layout


def fit_layout(trajectories: Sequence, plan: Sequence[bool], layout: str = "auto",
               progress: Callable[[], None] | None = None,
               l2p_fit: L2PFit = DEFAULT_FIT) -> tuple[dict[str, L2PTable], dict, str]:
    """({series: table}, validation, layout): "guided" -> {"guided"}, "split" -> {"uncond", "guidance"}
    ("auto": `l2p_fit.cfg_layout` for plain-CFG runs). The split validation scores the combined guided forecast
    (comparable with the guided layout's) and keeps each series' own choice and score under "series"."""
    layout = resolve_layout(trajectories, layout, l2p_fit)
    if layout == "guided":
        table, validation = choose_and_fit([t.series("guided") if isinstance(t, SplitTrajectory) else t
                                            for t in trajectories], plan, progress)
        return {"guided": table}, {**validation, "layout": "guided"}, "guided"
    # Unconditional slope: its own held-back error. Guidance direction: the held-back error of the combined
    # guided forecast (uncond fixed at its choice), which weighs its error by the CFG scale as a run does.
    uncond, chosen = choose_and_fit([t.series("uncond") for t in trajectories], plan, progress)
    held = chosen["held_back_trajectories"]
    train, test = trajectories[:-held], trajectories[-held:]
    u_train = fit([t.series("uncond") for t in train], plan, chosen["history"], chosen["ridge"])
    g_train = [t.series("guidance") for t in train]
    best = None
    for history in HISTORIES:
        for ridge in GUIDANCE_RIDGES:
            score = evaluate_split(u_train, fit(g_train, plan, history, ridge), test)
            if best is None or score["l2p_rel_error"] < best[0]["l2p_rel_error"]:
                best = (score, history, ridge)
            if progress is not None:
                progress()
    score, g_history, g_ridge = best
    guidance = fit([t.series("guidance") for t in trajectories], plan, g_history, g_ridge)
    if progress is not None:
        progress()
    tables = {"uncond": uncond, "guidance": guidance}
    validation = {"held_back_trajectories": held, "fit_trajectories": len(train), "layout": "split",
                  "l2p_rel_error": round(score["l2p_rel_error"], 6),
                  "reuse_rel_error": round(score["reuse_rel_error"], 6), "forecasts": score["forecasts"],
                  "history": [chosen["history"], g_history], "ridge": [chosen["ridge"], g_ridge],
                  "uncond": {k: chosen[k] for k in ("l2p_rel_error", "reuse_rel_error", "history", "ridge")},
                  "metric": "teacher-forced relative L2 error of the guided forecast slope (uncond + scale * "
                            "guidance), mean over forecasts; history / ridge: [uncond, guidance]"}
    return tables, validation, "split"


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
