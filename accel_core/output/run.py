"""Per-run state of the output-level cache (host-free).

The adapter calls, for every call of the sampler's guided model (all CFG branches at once):
`begin(sigma, x)` -> compute or forecast; then `record(call, x, denoised, branches)` after a
computed call, or `forecast(call, x)` for the denoised estimate. Deciding per noise level (not per
call) keeps the calls of a Heun-type step that share a sigma on one decision, and deciding above the
CFG split keeps both branches on one schedule.

CFG: the guided output u + s (c - u) amplifies a forecast error of either branch by the scale s.
When the host reports the branches (cond, uncond, scale) and the guided output is exactly
u + s (c - u) (no custom CFG function or post-CFG patch changed it), the unconditional output u and
the guidance direction c - u are forecast as two series with their own backtest-fitted blends
(forecast u^ + s (c - u)^); otherwise the guided output is one series. The config's cfg_layout "auto"
keeps both layouts and lets a per-step backtest on the guided output pick; on the tune models it did not
beat the split, so it is not the default.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch

from .. import distributed
from ..cache_run import CacheRunCalls
from ..config import ForecastCacheConfig
from ..schedule import caching_window
from ..stats import RunStats
from ..step import StepInfo, StepTracker
from .budget import BudgetSchedule, evaluation_budget
from .predictor import CANDIDATES, QUADRATIC, OutputPredictor

log = logging.getLogger(__name__)


def fit_to_budget(config: ForecastCacheConfig, total_steps: int) -> ForecastCacheConfig:
    """Warm-up and final steps that fit in the budget at short step counts (an explicit warm-up 3 + final
    1 with fast at 20 steps would take every evaluation the preset allows): the share of evaluations is
    the promise, so explicit protections are cut to leave at least one placed step. The run reports the
    values it used (its tag) and says once why they were cut."""
    if config.schedule == "fixed":
        return config
    budget = evaluation_budget(total_steps, 1.0 / config.interval, forced=0)
    final = min(config.final_full_steps, max(0, budget - 2))
    warmup = max(1, min(config.warmup_steps, budget - final - 1))
    return config.replace(warmup_steps=warmup, final_full_steps=final)


# Which CFG layout forecasts use with plain CFG is the config's cfg_layout: "split" (uncond + guidance
# direction, the default), "guided", or "auto" (both kept, the run-time backtest picks). Chosen on the tune
# models (bench/bench_cfg_split.py, mean of (mean + worst) / 2 at cfg 3: split 28.95, auto 28.64, guided 28.63 dB).
LAYOUT_DECAY = 0.5  # weight kept by older layout backtests


def is_plain_cfg(denoised: torch.Tensor, branches) -> bool:
    """Whether the guided output is exactly uncond + scale * (cond - uncond) of `branches` = (cond, uncond,
    scale), with scale != 1 (no custom CFG function or post-CFG patch changed it). Shared with L2P
    calibration, which records the two series only then."""
    if branches is None:
        return False
    cond, uncond, scale = branches
    if abs(scale - 1.0) < 1e-6 or cond.shape != denoised.shape or uncond.shape != denoised.shape:
        return False
    expected = uncond.float() + scale * (cond.float() - uncond.float())
    # Largest output and largest mismatch over every rank's tokens (one collective).
    peak, mismatch = distributed.agree_max(torch.stack([denoised.float().abs().max(),
                                                        (expected - denoised.float()).abs().max()])).tolist()
    return mismatch <= 1e-4 * peak + 1e-6


@dataclass
class OutputCall:
    info: StepInfo
    compute: bool


# Runs of at most this many sampler steps (few-step / distilled schedules: FLUX schnell 4, Lightning 4-8)
# compute every step. On the tune models at 4-8 steps even computing every other step lost 5-15 dB against
# the uncached run (mean 22.4-32.5 dB), and the presets 18-29 dB (bench/results/few_steps_tune.json):
# no caching is measurably safe there. Longer runs keep their preset's share.
FEW_STEPS = 8
FEW_STEPS_NOTE = ("{steps} steps: too few to cache safely, every step computed (caching pays from about 20 steps; "
                  "for short runs use quality)")


class OutputCacheRun(CacheRunCalls):
    """One sampling run with the output-level cache."""

    def __init__(self, config: ForecastCacheConfig, family: str, sample_sigmas: Sequence[float],
                 start_sigma: float = float("inf"), end_sigma: float = 0.0, sampler: str | None = None,
                 schedule_steps: int | None = None) -> None:
        """`schedule_steps`: steps of the whole sampling when this run is one stage of it (Progressive
        Resolution calls the sampler once per stage); the few-step rule judges the whole schedule."""
        self.config = config
        self.tracker = StepTracker(sample_sigmas)
        self.few_steps = (schedule_steps or self.tracker.total_steps) <= FEW_STEPS
        fitted = fit_to_budget(config, self.tracker.total_steps)
        self.fitted = fitted
        allowed = caching_window(sample_sigmas, fitted, start_sigma, end_sigma)
        self.schedule = BudgetSchedule(allowed, fraction=1.0 / config.interval,
                                       adapt=config.schedule == "adaptive")  # "budget": even spacing
        self.fixed_plan = None
        if config.schedule == "fixed":
            from ..schedule import plan_full_steps

            self.fixed_plan = plan_full_steps(sample_sigmas, config, start_sigma, end_sigma)
        self.candidates = () if config.method == "reuse" else CANDIDATES + QUADRATIC
        self.series: dict[str, OutputPredictor] = {}  # "guided", or "uncond" + "guidance"
        self.scale = 1.0  # CFG scale of the newest computed call (split series)
        self.pending_branches = None  # (cond, uncond, scale) of the call in progress, set by the host
        self.layout = "guided"  # "split" or "guided": what forecasts use now
        self.layout_errors = {"guided": 0.0, "split": 0.0}
        self.signature: tuple | None = None
        # The tag names what the run does: the warm-up and final steps it used, not the ones asked for.
        self.stats = RunStats(family=family, tag=fitted.tag(), total_steps=self.tracker.total_steps)
        if (fitted.warmup_steps, fitted.final_full_steps) != (config.warmup_steps, config.final_full_steps) \
                and not self.few_steps:
            self.stats.output.schedule_note = (
                f"warmup_steps {config.warmup_steps} -> {fitted.warmup_steps}, final_full_steps "
                f"{config.final_full_steps} -> {fitted.final_full_steps}: {self.tracker.total_steps} steps at 1/"
                f"{config.interval} allow {evaluation_budget(self.tracker.total_steps, 1.0 / config.interval, 0)} "
                "evaluations, and at least one must be placed by the schedule")
            log.info("DiT Accel: %s.", self.stats.output.schedule_note)
        self._warned: set[str] = set()
        self.expected_change = ""  # a planned input change (resolution stage), logged as info once
        self._last_full_step_time = 0.0
        self.tokens = None  # a token method's TokenRun (partial steps), set by the adapter
        if self.few_steps:
            self.stats.output.schedule_note = FEW_STEPS_NOTE.format(steps=self.tracker.total_steps)
        self.learned = self._learned(config, family, sample_sigmas, sampler)

    def mark_partial(self, kind: str) -> None:
        """A forecast step that ran the model on a token subset ("partial"), or in full after all."""
        if kind == "partial":
            self.stats.timeline[-1] = "P"
            self.stats.tokens.partial_calls += 1
            return
        self.stats.timeline[-1] = "C"
        self.stats.forecast_calls -= 1
        self.stats.computed_calls += 1
        self.stats.computed_evaluations += 1

    def _learned(self, config: ForecastCacheConfig, family: str, sample_sigmas: Sequence[float], sampler: str | None):
        """The L2P (or LESA, by the profile's method) forecaster of config.learned_profile, or None."""
        if not config.learned_profile:
            return None
        from ..learned import L2PForecaster, LESAForecaster, load_l2p_cached  # late: only runs with a profile pay

        profile = load_l2p_cached(config.learned_profile)
        if profile.family != family:
            from ..errors import ProfileMismatchError

            raise ProfileMismatchError(
                f"Forecast Cache: L2P profile {profile.source} was calibrated on model family {profile.family!r}, "
                f"but the model is {family!r}. Make a profile for this model with scripts/calibrate_l2p.py.")
        cls = LESAForecaster if profile.method == "lesa" else L2PForecaster
        if profile.method == "lesa":  # the tag names the kind of profile in use (the config only knows a file)
            self.stats.tag = self.stats.tag.replace("output-l2p-", "output-lesa-", 1)
        learned = cls(profile, sample_sigmas, sampler)
        self._note_outside(learned.outside)
        return learned

    def _note_outside(self, reason: str) -> None:
        """Forecasts outside the profile's range use the backtest blend; one warning per run."""
        if reason and not self.stats.learned.outside:
            self.stats.learned.outside = reason
            log.warning("DiT Accel: the L2P profile does not cover this run (%s); forecasting with the "
                        "backtest blend instead.", reason)

    def _full_planned(self, step: int) -> bool:
        if self.few_steps:
            return True
        if self.fixed_plan is not None:
            return self.fixed_plan[min(step, len(self.fixed_plan) - 1)]
        return self.schedule.is_full(step)

    def gap_share(self, step: int) -> float:
        """How far `step` lies into the gap between the last full step and the next planned one, in
        (0, 1]: 1 at the gap's end (where shadow calls measure). 1 when the plan is not known ahead."""
        if self.few_steps:
            return 1.0
        if self.fixed_plan is not None:
            plan = self.fixed_plan
            last = max((i for i in range(min(step, len(plan))) if plan[i]), default=-1)
            nxt = next((i for i in range(step + 1, len(plan)) if plan[i]), len(plan))
        else:
            allowed = self.schedule.allowed
            last = self.schedule.last_full
            forced = next((i for i in range(step + 1, len(allowed)) if not allowed[i]), len(allowed))
            nxt = min(self.schedule.next_full, forced)  # a forced step (final steps, window) ends a gap too
        if last < 0 or nxt <= last or step <= last:
            return 1.0
        return min(1.0, (step - last) / (nxt - last))

    def expect_input_change(self, reason: str) -> None:
        """The next change of input size is planned (e.g. a resolution stage): restart quietly."""
        self.expected_change = reason

    def begin(self, sigma: float, x: torch.Tensor) -> OutputCall:
        info = self.tracker.locate(sigma)
        signature = (tuple(x.shape), x.dtype, str(x.device))
        if self.signature is not None and signature != self.signature:
            if self.expected_change:
                log.info("DiT Accel: %s (%s -> %s); output cache restarts.", self.expected_change,
                         self.signature[0], signature[0])
                self.expected_change = ""
            elif "reset" not in self._warned:
                self._warned.add("reset")
                log.warning("DiT Accel: input changed within a run (%s -> %s); output cache reset.",
                            self.signature[0], signature[0])
            self.stats.resets += 1
            self.series.clear()
            if self.tokens is not None:
                self.tokens.reset()
            if self.learned is not None:
                self.learned.reset()
        self.signature = signature
        planned = self._full_planned(info.step)
        compute = planned or not self.series
        if compute and not planned:
            self.stats.fallbacks += 1
        self.stats.calls += 1
        self.stats.evaluations += 1
        self.stats.timeline.append("C" if compute else "F")
        self.stats.call_steps.append(info.step)
        if compute:
            self.stats.computed_calls += 1
            self.stats.computed_evaluations += 1
        else:
            self.stats.forecast_calls += 1
        return OutputCall(info, compute)

    def plan_boundaries(self, steps: Sequence[int]) -> None:
        """Steps where the function will change (read from the conds at the run's first call): they are
        computed (restart) and added to the budget, so the preset's share applies to the rest and no
        planned full step is spent just before one."""
        total = self.tracker.total_steps
        if self.fixed_plan is not None or total <= FEW_STEPS:
            return
        allowed = list(self.schedule.allowed)
        extra = [s for s in set(steps) if 0 < s < total and allowed[s]]
        if not extra:
            return
        for s in extra:
            allowed[s] = False
        budget = self.schedule.budget
        self.schedule = BudgetSchedule(allowed, fraction=self.schedule.fraction, adapt=self.schedule.adapt)
        self.schedule.budget = min(total, max(self.schedule.budget, budget + len(extra)))

    def restart(self, sigma: float) -> None:
        """The model's function changes at `sigma` (ControlNet range, hook keyframe, conditioning range):
        forecasts must not come from steps computed before, so the history is dropped and the next call
        computes (the budget replans around it)."""
        self.stats.boundary_steps.append(self.tracker.locate(sigma).step)
        self.series.clear()
        self.layout_errors = {"guided": 0.0, "split": 0.0}
        if self.tokens is not None:
            self.tokens.reset()
        if self.learned is not None:
            self.learned.reset()

    def carry(self) -> dict | None:
        """What a next pass on the same trajectory may continue from (KSamplerAdvanced pairs, SplitSigmas):
        the forecast series, when this run stopped above sigma 0. None when there is nothing to carry or
        the run kept state that is per run (token methods, a learned profile). Call before `close`."""
        if self.tracker.sample_sigmas[-1] <= 0 or not self.series or self.tokens is not None or self.learned:
            return None
        return {"series": dict(self.series), "layout": self.layout, "scale": self.scale,
                "layout_errors": dict(self.layout_errors), "signature": self.signature,
                "sigma": self.tracker.sample_sigmas[-1], "steps": self.tracker.total_steps,
                "computed": self.stats.computed_calls}

    def adopt(self, carried: dict) -> None:
        """Start from the previous pass's series (the host checked it is the same trajectory: same model,
        conds and latent, no new noise, this run starting at the sigma that one stopped at). The warm-up
        still computes; forecasts after it extrapolate from both passes instead of reusing one step. The
        budget is what the whole trajectory's share leaves after the first pass (two passes of 12 + 16
        steps at 1/5 compute 6 steps in all, as one run of 28 would, not 2 + 3)."""
        if self.tracker.sample_sigmas[0] != carried["sigma"] or self.tokens is not None or self.learned:
            return
        self.series = dict(carried["series"])
        self.layout, self.scale = carried["layout"], carried["scale"]
        self.layout_errors = dict(carried["layout_errors"])
        self.signature = carried["signature"]
        self.stats.output.continued = True
        if self.fixed_plan is None and self.tracker.total_steps > FEW_STEPS:
            whole = evaluation_budget(carried["steps"] + self.tracker.total_steps, self.schedule.fraction, forced=0)
            forced = sum(1 for allowed in self.schedule.allowed if not allowed)
            # What the whole trajectory's share leaves, never less than this pass's forced steps + 1.
            self.schedule.budget = min(self.tracker.total_steps, max(forced + 1, whole - carried["computed"]))

    def _predictor(self, name: str) -> OutputPredictor:
        if name not in self.series:
            self.series[name] = OutputPredictor(candidates=self.candidates,
                                                horizon_match=self.config.horizon_match,
                                                bands=self.config.blend_bands)
        return self.series[name]

    @staticmethod
    def _is_plain_cfg(denoised: torch.Tensor, branches) -> bool:
        return is_plain_cfg(denoised, branches)

    def record(self, call: OutputCall, x: torch.Tensor, denoised: torch.Tensor, branches=None) -> None:
        """A computed call: its guided output and, when known, (cond, uncond, scale) of its CFG branches."""
        split_ok = self.config.cfg_split and self._is_plain_cfg(denoised, branches)
        wanted = {"guided"} | ({"uncond", "guidance"} if split_ok else set())
        if self.config.cfg_layout == "split" and split_ok:
            wanted = {"uncond", "guidance"}
        elif self.config.cfg_layout == "guided":
            wanted = {"guided"}
        if set(self.series) != wanted:
            self.series.clear()  # the CFG layout changed (or first call): start the series afresh
            self.layout_errors = {"guided": 0.0, "split": 0.0}
        sigma = call.info.sigma
        if self.learned is not None:
            # A split profile needs the branches of every computed step, as the split series do.
            self._note_outside(self.learned.add(call.info.step, sigma, x, denoised, branches if split_ok else None))
        time = call.info.step_time  # horizons in steps: the backtests' and the forecasts' share one clock
        self._backtest_layouts(sigma, x, denoised, time)
        results = []
        if "guided" in wanted:
            results.append(self._predictor("guided").add(sigma, x, denoised, time))
        if split_ok and "uncond" in wanted:
            cond, uncond, self.scale = branches
            results += [self._predictor("uncond").add(sigma, x, uncond, time),
                        self._predictor("guidance").add(sigma, torch.zeros_like(x), cond.float() - uncond.float(),
                                                        time)]
        has_split = {"uncond", "guidance"} <= set(self.series)
        # Ties (no comparison yet) go to the split, the layout the tune models preferred.
        self.layout = "split" if has_split and (
            "guided" not in self.series or self.layout_errors["split"] <= self.layout_errors["guided"]) else "guided"
        results = [r for r in results if r is not None]
        error = horizon = None
        if results:
            error = max(float(r.blend_error.max()) for r in results)
            reuse = max(float(r.reuse_error.max()) for r in results)
            horizon = max(1e-6, call.info.step_time - self._last_full_step_time)
            self.stats.backtest_log.append((call.info.step, round(error, 5), round(reuse, 5)))
        if self.fixed_plan is None:
            self.schedule.completed(call.info.step, error, horizon)
        self._last_full_step_time = call.info.step_time
        memory = sum(p.memory_bytes() for p in self.series.values())
        self.stats.peak_cache_bytes = max(self.stats.peak_cache_bytes, memory)
        self.stats.branch_cache_bytes = {"+".join(sorted(self.series)): self.stats.peak_cache_bytes}

    def _backtest_layouts(self, sigma: float, x: torch.Tensor, denoised: torch.Tensor, time: float) -> None:
        """Both layouts predict this computed step's guided output from their history (before it is added)."""
        if not ({"guided", "uncond", "guidance"} <= set(self.series)):
            return
        truth = denoised.float()
        # Squared norms summed over every rank's tokens before the ratio (one collective).
        norm_sq, *errors_sq = distributed.agree_sum(*[float(v.double().square().sum()) for v in (
            truth, self._predict("guided", sigma, x, time) - truth, self._predict("split", sigma, x, time) - truth)])
        for name, error_sq in zip(("guided", "split"), errors_sq):
            self.layout_errors[name] = LAYOUT_DECAY * self.layout_errors[name] + error_sq / (norm_sq or 1.0)

    def _predict(self, layout: str, sigma: float, x: torch.Tensor, time: float) -> torch.Tensor:
        if layout == "guided":
            return self.series["guided"].predict_denoised(sigma, x, time)
        uncond = self.series["uncond"].predict_denoised(sigma, x, time)
        guidance = self.series["guidance"].predict_denoised(sigma, torch.zeros_like(x), time)
        return uncond + self.scale * guidance

    def predict(self, call: OutputCall, x: torch.Tensor) -> torch.Tensor:
        """The forecast at this call without counting it (token methods measure it against a full step)."""
        return self._predict(self.layout, call.info.sigma, x, call.info.step_time)

    def forecast(self, call: OutputCall, x: torch.Tensor) -> torch.Tensor:
        if self.learned is not None and self.learned.history and not self.stats.learned.outside:
            denoised, reason = self.learned.forecast(call.info.step, call.info.sigma, x)
            if not reason:
                self.stats.learned.forecasts += 1
                return denoised
            self._note_outside(reason)
        self.stats.output.cfg_layouts[self.layout] = self.stats.output.cfg_layouts.get(self.layout, 0) + 1
        return self._predict(self.layout, call.info.sigma, x, call.info.step_time)

    def close(self) -> RunStats:
        for predictor in self.series.values():
            if predictor.weights is not None:
                self.stats.output.blend_weights += [round(float(w), 3) for w in predictor.weights.mean(dim=0)]
        self.stats.output.budget = self.schedule.budget if self.fixed_plan is None else sum(self.fixed_plan)
        if self.few_steps:
            self.stats.output.budget = self.tracker.total_steps
        self.series.clear()
        if self.tokens is not None:
            self.tokens.fill_stats(self.stats)
            self.tokens.close()
        return self.stats
