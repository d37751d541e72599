"""One Progressive Resolution run's bookkeeping (host-free): the stage now running, the step a model
call belongs to, the work done against the uncached full-resolution run, and the anchor correction's
state. `nodes/resolution_hooks.py` drives it; a Forecast Cache on the same model reads only `steps` and
`summary()` (accel_core/cache_run.py)."""
from __future__ import annotations

import collections

import torch

from ..tokens.work import block_flops
from .plan import ResolutionConfig, Stage


class ResolutionRun:
    """One sampling run's bookkeeping (plain numbers, no tensors kept after close).

    Work is counted per sampler step against what the uncached full-resolution run would do: every
    model call the host makes adds its image + other tokens (scaled by the part of the call a
    Forecast Cache on the same model really computed: CacheRun in accel_core/cache_run.py), and the baseline is
    the heaviest step's full-resolution equivalent times the number of steps, so steps a cache
    skipped entirely (no model call at all) still count in the baseline."""

    def __init__(self, config: ResolutionConfig, family: str, hidden: int, steps: int):
        self.config, self.family, self.hidden, self.steps = config, family, hidden, steps
        self.stage = Stage(1, 0, steps, 1.0, 0.0)  # the stage now running (read by count_work_wrapper)
        self.step = 0  # sampler step the next model call belongs to (advanced by the stage callback)
        self.calls_by_factor: dict = collections.Counter()  # spatial factor (video: "f/t frames")
        self.step_full_tokens: dict[int, float] = collections.Counter()  # full-res equivalent per step
        self.step_full_flops: dict[int, float] = collections.Counter()
        self.done_tokens = 0.0
        self.done_flops = 0.0
        self.cached_calls = 0  # calls a Forecast Cache answered without running the blocks
        self.info: dict = {"family": family, "tag": config.tag(), "steps": steps, "interrupted": False}
        self.anchor_target: torch.Tensor | None = None  # pooled full-resolution estimate at step 0
        self.correction: torch.Tensor | None = None  # anchor x (target - the sketch's first estimate)
        self.correct_stage: Stage | None = None  # the scale the correction applies to (first coarse stage)

    def add_call(self, image_tokens: int, other_tokens: int, batch: int, computed: float = 1.0) -> None:
        stage = self.stage
        full_img = image_tokens * stage.token_scale
        done, full = image_tokens + other_tokens, full_img + other_tokens
        self.calls_by_factor[stage.factor if stage.frames == 1 else f"{stage.factor}/{stage.frames}f"] += 1
        self.step_full_tokens[self.step] += full * batch
        self.step_full_flops[self.step] += block_flops(full, full, self.hidden) * batch
        self.done_tokens += done * batch * computed
        self.done_flops += block_flops(done, done, self.hidden) * batch * computed
        if computed < 1.0:
            self.cached_calls += 1

    def _baseline(self, per_step: dict[int, float]) -> float:
        """Uncached full-resolution work of the steps run so far (all of them once the run ends). Step -1
        (the anchor call) is extra work, never part of the uncached run."""
        heaviest = max((v for k, v in per_step.items() if k >= 0), default=0.0)
        return heaviest * max(1, min(self.step, self.steps))

    def summary(self) -> dict:
        out = dict(self.info)
        out["calls_by_factor"] = dict(self.calls_by_factor)
        out["token_ratio"] = self._baseline(self.step_full_tokens) / self.done_tokens if self.done_tokens else 1.0
        out["flops_ratio"] = self._baseline(self.step_full_flops) / self.done_flops if self.done_flops else 1.0
        out["cached_calls"] = self.cached_calls
        out["steps_without_calls"] = self.steps - len([k for k in self.step_full_tokens if k >= 0])
        return out
