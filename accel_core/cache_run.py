"""What a step cache's per-run state offers the other runs of the same sampling (host-free).

Progressive Resolution stages one sampling run; a Forecast Cache on the same model runs around all of
its stages (one cache run) or inside each stage. The two never read each other's internals: the
resolution side talks to the cache only through `CacheRun` (both cache runs, `OutputCacheRun` and the
hidden-state `ForecastRun`, implement it), and the cache reads the resolution run only through its
public `steps` and `summary()`.

How a run begins a call is not part of the protocol: the output cache decides per guided-model call
(`begin(sigma, x)`) and the hidden-state cache per diffusion-model call (`begin_call(...)`), from
different inputs, and only the hooks that drive each kind call them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # hints only
    from .stats import RunStats

# Timeline letters (stats.TIMELINE_LEGEND) -> share of the call's blocks really run. Partial calls (token
# methods) and rejected forecasts count as computed: conservative, never flattering.
_COMPUTED_SHARE = {"C": 1.0, "R": 1.0, "P": 1.0, "F": 0.0}


class CacheRun(Protocol):
    stats: RunStats

    def restart(self, sigma: float) -> None:
        """The model's function changes at `sigma`: forget the history, compute the next call."""

    def expect_input_change(self, reason: str) -> None:
        """The next change of input size is planned (a resolution stage): restart quietly."""

    def close(self) -> RunStats:
        """Free every cached tensor; return the run's counters."""

    def calls_decided(self) -> int:
        """How many model calls this run has decided so far (a mark for `computed_share`)."""

    def decided_share(self) -> float | None:
        """Share of the blocks of the model call in progress that run, if this run has decided it already."""

    def computed_share(self, since: int) -> float:
        """Share of the blocks of the call decided after `since` calls that ran (1.0: none decided)."""

    def show_stages(self, stages: dict) -> None:
        """Show a resolution run's plan and joint work in this run's summary."""


class CacheRunCalls:
    """The call-accounting half of `CacheRun`, shared by both cache runs (which keep `stats`).

    A cache whose wrapper runs OUTSIDE the caller's has already decided the call in progress when the
    caller sees it (`decided_share`, from `current_plan`; a probe runs one block). One whose wrapper runs
    INSIDE decides during the call, so the caller takes `calls_decided()` before and asks
    `computed_share(mark)` after: the share of the call decided since then, or 1.0 when none was (an output
    cache's call that reaches the model computes; its forecasts never get there)."""

    current_plan = None  # the hidden-state run sets its call in progress here (the output cache never does)

    def calls_decided(self) -> int:
        return len(self.stats.timeline)

    def decided_share(self) -> float | None:
        """The call in progress, when this run has already decided it; else None."""
        plan = self.current_plan
        if plan is None:
            return None
        probe = 1.0 / max(1, self.stats.verify.blocks_per_call) if plan.probe else 0.0
        return 1.0 if plan.compute else probe

    def computed_share(self, since: int) -> float:
        timeline = self.stats.timeline
        if len(timeline) > since:
            return _COMPUTED_SHARE.get(timeline[-1], 1.0)
        return 1.0

    def show_stages(self, stages: dict) -> None:
        self.stats.resolution.stages = stages
