"""Per-run forecast cache: step decisions, per-branch histories, forecasts. Host-free.

The adapter calls, per model call: `begin_call` (decide compute or forecast), then for the
final-hidden mode `record_final` / `forecast_final`, or for the per-block mode
`record_segment` / `forecast_segment` per block segment, then `end_call`. With verification on
(SpeCa), a forecast call may carry `probe=True`: the adapter runs one block for real, and
`verify` decides; a rejected forecast is recomputed (`rollback`) or forces the next call to compute. Tensors arrive with the
CFG branches concatenated along dim 0 (ComfyUI batches cond+uncond); each branch keeps its own
history, keyed by the host's stable per-cond id.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import torch

from .. import distributed, ops
from ..cache_run import CacheRunCalls
from ..config import ForecastCacheConfig
from ..models import ModelSpec
from ..schedule import caching_window, plan_full_steps
from ..stats import RunStats
from ..step import StepInfo, StepTracker
from .decompositions import DECOMPOSITIONS, DecomposedForecaster, TokenGrid
from .forecasters import Forecaster, make_forecaster
from .forecasters.reuse import ReuseForecaster

log = logging.getLogger(__name__)

FINAL_SLOT = "final"
# Slots whose tokens are the target image (the only ones a decomposition applies to).
TARGET_SLOT_SUFFIX = "/target"
# Forecasters that need two computed anchors before their first forecast.
_MIN_ANCHORS = {"foca": 2, "hyca": 2}


@dataclass
class CallPlan:
    """Decision and scratch data of one model call."""

    info: StepInfo
    compute: bool
    time: float
    branch_keys: list[Hashable]
    n_target: int
    grid: TokenGrid | None = None  # token grid of the target image (for frequency decompositions)
    probe: bool = False  # verify this forecast with one real block (SpeCa)
    threshold: float = 0.0  # acceptance threshold of the probe (relative L2)
    h_in: torch.Tensor | None = None  # target image tokens entering the first block
    scratch: dict = field(default_factory=dict)  # adapter-side per-call values (token counts)


@dataclass
class _Branch:
    signature: tuple
    anchors: int = 0
    forecasters: dict[str, Forecaster] = field(default_factory=dict)

    def memory_bytes(self) -> int:
        return sum(f.memory_bytes() for f in self.forecasters.values())


class ForecastRun(CacheRunCalls):
    """State of one sampling run (created in OUTER_SAMPLE, dropped at its end)."""

    def __init__(
        self,
        config: ForecastCacheConfig,
        spec: ModelSpec,
        sample_sigmas: Sequence[float],
        start_sigma: float = float("inf"),
        end_sigma: float = 0.0,
    ) -> None:
        self.config = config
        self.spec = spec
        self.tracker = StepTracker(sample_sigmas)
        self.plan = plan_full_steps(sample_sigmas, config, start_sigma, end_sigma)
        self.window = caching_window(sample_sigmas, config, start_sigma, end_sigma)
        self.verifying = config.enabled and config.verify != "off"
        self._last_full_step = -1  # newest step that ran the full model (verification schedule)
        self._force_compute = False  # next_step mode: a rejected forecast forces the next call
        self.branches: dict[Hashable, _Branch] = {}
        self.stats = RunStats(family=spec.family, tag=config.tag(), total_steps=self.tracker.total_steps)
        self._warned: set[str] = set()
        self.expected_change = ""  # a planned input change (resolution stage): logged as info, not warned
        self.current_plan: CallPlan | None = None  # the model call in progress (set by the adapter)
        self.backtest_error: float | None = None  # probed feature's forecast error at the newest full step

    # ---------------------------------------------------------------- decisions
    def begin_call(
        self,
        sigma: float,
        branch_keys: Sequence[Hashable],
        n_target: int,
        batch: int,
        dtype: torch.dtype,
        device: torch.device,
        grid: TokenGrid | None = None,
    ) -> CallPlan:
        info = self.tracker.locate(sigma)
        keys = list(branch_keys) or [0]
        per_branch = batch // len(keys) if batch % len(keys) == 0 else batch
        if batch % len(keys) != 0:
            keys = [tuple(keys)]  # unexpected layout: one shared history for the whole batch
        signature = (per_branch, n_target, dtype, str(device))
        scheduled_full, probe = self._schedule(info.step)
        compute = scheduled_full
        reset = False
        for key in keys:
            branch = self.branches.get(key)
            if branch is not None and branch.signature != signature:
                reset = True
                if self.expected_change:
                    if f"expected:{self.expected_change}" not in self._warned:
                        self._warned.add(f"expected:{self.expected_change}")
                        log.info("DiT Accel: %s (%s -> %s); cache restarts.", self.expected_change,
                                 branch.signature[:2], signature[:2])
                else:
                    self._warn_once(
                        "reset",  # one warning per run, however many CFG branches reset
                        f"DiT Accel: input changed within a run ({branch.signature[:2]} -> {signature[:2]}, "
                        f"{branch.signature[2]} -> {dtype}); cache reset for this branch.",
                    )
                self.stats.resets += 1
                branch = None
            if branch is None:
                branch = self.branches[key] = _Branch(signature)
            if not scheduled_full and branch.anchors < _MIN_ANCHORS.get(self.config.method, 1):
                compute = True
        if not reset:
            self.expected_change = ""  # every branch has moved on: later changes are warned again
        if compute and not scheduled_full:
            self.stats.fallbacks += 1
        time = info.sigma if self.config.time_axis == "sigma" else info.step_time
        plan = CallPlan(info=info, compute=compute, time=time, branch_keys=keys, n_target=n_target, grid=grid,
                        probe=probe and not compute, threshold=self.threshold(info.step))
        self.stats.calls += 1
        self.stats.evaluations += len(keys)
        if compute:
            self.stats.computed_calls += 1
            self.stats.computed_evaluations += len(keys)
        else:
            self.stats.forecast_calls += 1
        self.stats.timeline.append("C" if compute else "F")
        self.stats.call_steps.append(info.step)
        return plan

    def restart(self, sigma: float) -> None:
        """The model's function changes at `sigma` (see OutputCacheRun.restart): drop every branch's history,
        so the next call computes and later forecasts only use steps computed after the change."""
        self.stats.boundary_steps.append(self.tracker.locate(sigma).step)
        self.branches.clear()

    def _schedule(self, step: int) -> tuple[bool, bool]:
        """(full, probe) for a call at `step`. Without verification: the fixed plan. With it: full
        outside the caching window, on the step of the last full call (Heun's second call), after
        interval - 1 consecutive forecast steps, or when a rejection forced it; forecasts more than
        `min_forecasts` steps after the last full step are probed."""
        step = min(step, len(self.plan) - 1)
        if not self.verifying:
            return self.plan[step], False
        since = step - self._last_full_step
        if (not self.window[step] or self._last_full_step < 0 or since <= 0
                or since >= self.config.interval or self._force_compute):
            return True, False
        return False, since > self.config.min_forecasts

    def threshold(self, step: int) -> float:
        """tau(s) = max(tau0 * beta ** (s / T), floor); relative mode: m * backtest error * beta ** (s / T)."""
        c = self.config
        decay = c.verify_decay ** (step / max(1, self.tracker.total_steps))
        if c.verify_relative > 0:
            if self.backtest_error is None:
                return 0.0  # nothing measured on this model yet: no forecast is trusted
            return c.verify_relative * self.backtest_error * decay
        return max(c.verify_threshold * decay, c.verify_floor)

    # ---------------------------------------------------------------- verification
    def verify(self, plan: CallPlan, forecast: torch.Tensor, truth: torch.Tensor) -> bool:
        """Compare a probed block's forecast with its true output (target tokens, all branches
        batched). Any sample above the threshold rejects the whole call (one batch, one decision)."""
        errors = distributed.relative_error(forecast, truth, local=ops.OPS["relative_error"])  # over every rank's tokens
        worst = float(errors.max())
        accepted = worst <= plan.threshold
        stats = self.stats
        stats.verify.probes += 1
        stats.verify.probe_log.append((plan.info.step, round(worst, 5), round(plan.threshold, 5)))
        if accepted:
            stats.verify.accepted += 1
            return True
        stats.verify.rejected += 1
        stats.timeline[-1] = "R"
        if self.config.verify_mode == "next_step":
            self._force_compute = True
        return False

    def rollback(self, plan: CallPlan) -> None:
        """Switch a rejected forecast call to compute (rollback mode); counters follow."""
        plan.compute = True
        plan.probe = False
        self.stats.forecast_calls -= 1
        self.stats.computed_calls += 1
        self.stats.computed_evaluations += len(plan.branch_keys)
        self.stats.verify.rollbacks += 1

    def end_call(self, plan: CallPlan, completed: bool = True) -> None:
        """Close a call; a computed call that finished counts as an anchor for every branch."""
        if plan.compute and completed:
            for key in plan.branch_keys:
                self.branches[key].anchors += 1
            self._last_full_step = plan.info.step
            self._force_compute = False
        plan.h_in = None
        plan.scratch.clear()
        self._account_memory()

    # ---------------------------------------------------------------- final hidden state
    def capture_input(self, plan: CallPlan, img_target: torch.Tensor) -> None:
        """Keep the target image tokens entering the first block (cloned: host blocks write in place)."""
        plan.h_in = img_target.detach().clone()

    def record_final(self, plan: CallPlan, h_out_target: torch.Tensor) -> None:
        """Store the cumulative residual (last block output - first block input) per branch."""
        if plan.h_in is None:
            return
        backtest = self.verifying and self.config.verify == "last_block" and self.config.verify_relative > 0
        self.record_segment(plan, FINAL_SLOT, plan.h_in, h_out_target, backtest=backtest)

    def forecast_final(self, plan: CallPlan, h_in_target: torch.Tensor) -> torch.Tensor:
        """Forecast the last block's target-token output: current first-block input + forecast residual."""
        return self.forecast_segment(plan, FINAL_SLOT, h_in_target)

    # ---------------------------------------------------------------- per-block residuals
    def record_segment(self, plan: CallPlan, slot: str, x_in: torch.Tensor, x_out: torch.Tensor,
                       reuse: bool = False, backtest: bool = False) -> None:
        """Store a computed segment's residual per branch. `backtest`: this is the feature the
        verification probe compares; first measure how far its forecast would have been off
        (relative to the block output, the probe's own metric) for a relative threshold."""
        residual = x_out.detach().float() - x_in.detach().float()
        worst = None
        chunks = zip(plan.branch_keys, residual.chunk(len(plan.branch_keys), dim=0),
                     x_out.detach().float().chunk(len(plan.branch_keys), dim=0))
        for key, chunk, out_chunk in chunks:
            forecaster = self._forecaster(key, slot, reuse, plan.grid)
            if backtest and forecaster.ready:
                # Forecasting just before the update is safe for every forecaster: update() replaces
                # whatever state forecast() moved (FoCa's marching point).
                error = float(distributed.relative_error(forecaster.forecast(plan.time) - chunk + out_chunk,
                                                         out_chunk, local=ops.OPS["relative_error"]).max())
                worst = error if worst is None else max(worst, error)
            forecaster.update(plan.time, chunk.contiguous())
        if worst is not None:
            self.backtest_error = worst
            self.stats.backtest_log.append((plan.info.step, round(worst, 5), None))

    def forecast_segment(self, plan: CallPlan, slot: str, x_in: torch.Tensor, reuse: bool = False) -> torch.Tensor:
        forecasters = [self._forecaster(key, slot, reuse, plan.grid) for key in plan.branch_keys]
        if len(forecasters) == 1:
            return forecasters[0].forecast_add(plan.time, x_in)
        bases = x_in.chunk(len(forecasters), dim=0)
        return torch.cat([f.forecast_add(plan.time, b) for f, b in zip(forecasters, bases)], dim=0)

    def has_slot(self, plan: CallPlan, slot: str) -> bool:
        return all(slot in self.branches[key].forecasters and self.branches[key].forecasters[slot].ready
                   for key in plan.branch_keys)

    # ---------------------------------------------------------------- internals
    def _forecaster(self, key: Hashable, slot: str, reuse: bool, grid: TokenGrid | None = None) -> Forecaster:
        branch = self.branches[key]
        forecaster = branch.forecasters.get(slot)
        if forecaster is None:
            forecaster = ReuseForecaster(self.config) if reuse else make_forecaster(self.config)
            if not reuse and self.config.decomposition != "none" and (
                    slot == FINAL_SLOT or slot.endswith(TARGET_SLOT_SUFFIX)):
                decomposition = DECOMPOSITIONS.get(self.config.decomposition)(self.config)
                forecaster = DecomposedForecaster(self.config, forecaster, decomposition)
            branch.forecasters[slot] = forecaster
        if isinstance(forecaster, DecomposedForecaster):
            forecaster.grid = grid
        return forecaster

    def _account_memory(self) -> None:
        per_branch = {str(key): b.memory_bytes() for key, b in self.branches.items()}
        self.stats.branch_cache_bytes = {
            k: max(v, self.stats.branch_cache_bytes.get(k, 0)) for k, v in per_branch.items()
        }
        self.stats.peak_cache_bytes = max(self.stats.peak_cache_bytes, sum(per_branch.values()))

    def expect_input_change(self, reason: str) -> None:
        """The next change of input size is planned (e.g. a resolution stage): restart quietly."""
        self.expected_change = reason

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def close(self) -> RunStats:
        """Free every cached tensor; return the run's counters."""
        self.branches.clear()
        return self.stats
