"""Per-run forecast cache: step decisions, per-branch histories, forecasts. Host-free.

The adapter calls, per model call: `begin_call` (decide compute or forecast), then for the
final-hidden mode `record_final` / `forecast_final`, or for the per-block mode
`record_segment` / `forecast_segment` per block segment, then `end_call`. Tensors arrive with the
CFG branches concatenated along dim 0 (ComfyUI batches cond+uncond); each branch keeps its own
history, keyed by the host's stable per-cond id.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import torch

from .config import ForecastCacheConfig
from .forecasters import Forecaster, make_forecaster
from .forecasters.reuse import ReuseForecaster
from .models import ModelSpec
from .schedule import plan_full_steps
from .stats import RunStats
from .step import StepInfo, StepTracker

log = logging.getLogger(__name__)

FINAL_SLOT = "final"
# Forecasters that need two computed anchors before their first forecast.
_MIN_ANCHORS = {"foca": 2}


@dataclass
class CallPlan:
    """Decision and scratch data of one model call."""

    info: StepInfo
    compute: bool
    time: float
    branch_keys: list[Hashable]
    n_target: int
    h_in: torch.Tensor | None = None  # target image tokens entering the first block
    scratch: dict = field(default_factory=dict)  # adapter-side per-call values (token counts)


@dataclass
class _Branch:
    signature: tuple
    anchors: int = 0
    forecasters: dict[str, Forecaster] = field(default_factory=dict)

    def memory_bytes(self) -> int:
        return sum(f.memory_bytes() for f in self.forecasters.values())


class ForecastRun:
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
        self.branches: dict[Hashable, _Branch] = {}
        self.stats = RunStats(family=spec.family, tag=config.tag(), total_steps=self.tracker.total_steps)
        self._warned: set[str] = set()
        self.current_plan: CallPlan | None = None  # the model call in progress (set by the adapter)

    # ---------------------------------------------------------------- decisions
    def begin_call(
        self,
        sigma: float,
        branch_keys: Sequence[Hashable],
        n_target: int,
        batch: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> CallPlan:
        info = self.tracker.locate(sigma)
        keys = list(branch_keys) or [0]
        per_branch = batch // len(keys) if batch % len(keys) == 0 else batch
        if batch % len(keys) != 0:
            keys = [tuple(keys)]  # unexpected layout: one shared history for the whole batch
        signature = (per_branch, n_target, dtype, str(device))
        scheduled_full = self.plan[min(info.step, len(self.plan) - 1)]
        compute = scheduled_full
        for key in keys:
            branch = self.branches.get(key)
            if branch is not None and branch.signature != signature:
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
        if compute and not scheduled_full:
            self.stats.fallbacks += 1
        time = info.sigma if self.config.time_axis == "sigma" else info.step_time
        plan = CallPlan(info=info, compute=compute, time=time, branch_keys=keys, n_target=n_target)
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

    def end_call(self, plan: CallPlan, completed: bool = True) -> None:
        """Close a call; a computed call that finished counts as an anchor for every branch."""
        if plan.compute and completed:
            for key in plan.branch_keys:
                self.branches[key].anchors += 1
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
        residual = h_out_target.detach().float() - plan.h_in.float()
        for key, chunk in zip(plan.branch_keys, residual.chunk(len(plan.branch_keys), dim=0)):
            self._forecaster(key, FINAL_SLOT, reuse=False).update(plan.time, chunk.contiguous())

    def forecast_final(self, plan: CallPlan, h_in_target: torch.Tensor) -> torch.Tensor:
        """Forecast the last block's target-token output: current first-block input + forecast residual."""
        # forecast + residual add in one `forecast_residual_add` pass per CFG branch (fused kernel on GPU).
        forecasters = [self._forecaster(key, FINAL_SLOT, reuse=False) for key in plan.branch_keys]
        if len(forecasters) == 1:
            return forecasters[0].forecast_add(plan.time, h_in_target)
        bases = h_in_target.chunk(len(forecasters), dim=0)
        return torch.cat([f.forecast_add(plan.time, b) for f, b in zip(forecasters, bases)], dim=0)

    # ---------------------------------------------------------------- per-block residuals
    def record_segment(self, plan: CallPlan, slot: str, x_in: torch.Tensor, x_out: torch.Tensor,
                       reuse: bool = False) -> None:
        residual = x_out.detach().float() - x_in.detach().float()
        for key, chunk in zip(plan.branch_keys, residual.chunk(len(plan.branch_keys), dim=0)):
            self._forecaster(key, slot, reuse).update(plan.time, chunk.contiguous())

    def forecast_segment(self, plan: CallPlan, slot: str, x_in: torch.Tensor, reuse: bool = False) -> torch.Tensor:
        forecasters = [self._forecaster(key, slot, reuse) for key in plan.branch_keys]
        if len(forecasters) == 1:
            return forecasters[0].forecast_add(plan.time, x_in)
        bases = x_in.chunk(len(forecasters), dim=0)
        return torch.cat([f.forecast_add(plan.time, b) for f, b in zip(forecasters, bases)], dim=0)

    def has_slot(self, plan: CallPlan, slot: str) -> bool:
        return all(slot in self.branches[key].forecasters and self.branches[key].forecasters[slot].ready
                   for key in plan.branch_keys)

    # ---------------------------------------------------------------- internals
    def _forecaster(self, key: Hashable, slot: str, reuse: bool) -> Forecaster:
        branch = self.branches[key]
        forecaster = branch.forecasters.get(slot)
        if forecaster is None:
            forecaster = ReuseForecaster(self.config) if reuse else make_forecaster(self.config)
            branch.forecasters[slot] = forecaster
        return forecaster

    def _account_memory(self) -> None:
        per_branch = {str(key): b.memory_bytes() for key, b in self.branches.items()}
        self.stats.branch_cache_bytes = {
            k: max(v, self.stats.branch_cache_bytes.get(k, 0)) for k, v in per_branch.items()
        }
        self.stats.peak_cache_bytes = max(self.stats.peak_cache_bytes, sum(per_branch.values()))

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def close(self) -> RunStats:
        """Free every cached tensor; return the run's counters."""
        self.branches.clear()
        return self.stats
