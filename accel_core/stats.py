"""Per-run counters and the one-line run summary.

`RunStats` holds the core counters every cache run keeps (calls, evaluations, timeline, memory, wall time)
and one small section per feature: `output` (the output-level cache's schedule and blend), `verify`
(SpeCa verification probes), `tokens` (token methods' partial steps), `guard` (the finite-output guard),
`learned` (learned profiles, L2P / LESA) and `resolution` (Progressive Resolution's stages). The sections
live here, not in their features' packages: those import this module (no import circles). `as_dict()` and
`summary()` flatten the sections: the panel (web/js/) and RECENT_RUNS read the flat keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field


def format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


TIMELINE_LEGEND = {
    "C": "computed", "F": "forecast",
    "P": "partial: a subset of the image tokens computed, the rest forecast (token methods)",
    "R": "forecast rejected by verification (recomputed in rollback mode; next call computed in next_step mode)",
}


def _stage_label(entry) -> str:
    """[factor, start, end(, frames)] of a resolution stage -> "1/2 steps 0-9" / "full 10-19"."""
    from .resolution.plan import Stage  # lazy: the resolution package imports modules that import this one

    factor, start, end = entry[:3]
    scale = Stage(factor, start, end, 0.0, 0.0, entry[3] if len(entry) > 3 else 1).label()
    return f"full {start}-{end - 1}" if scale == "full" else f"{scale} steps {start}-{end - 1}"


@dataclass
class OutputStats:
    """The output-level cache (accel_core/output/run.py)."""
    budget: int = 0  # full steps the schedule allowed
    blend_weights: list[float] = field(default_factory=list)  # final backtest-fitted weights (batch mean)
    cfg_layouts: dict[str, int] = field(default_factory=dict)  # forecasts per CFG layout
    schedule_note: str = ""  # why the schedule differs from the preset's (few-step runs)
    continued: bool = False  # the cache started with the history of the pass before (split sampling)


@dataclass
class VerifyStats:
    """Verification probes (SpeCa, accel_core/hidden/engine.py)."""
    probes: int = 0  # forecasts checked by a verification probe
    accepted: int = 0
    rejected: int = 0
    rollbacks: int = 0  # rejected forecasts recomputed at once (rollback mode)
    blocks_per_call: int = 0  # transformer blocks of one full model call (set by the adapter)
    probe_log: list[tuple] = field(default_factory=list)  # (step, worst relative error, threshold)

    @property
    def probe_blocks(self) -> int:
        """Transformer blocks run for verification: one per probe."""
        return self.probes

    @property
    def probe_cost_calls(self) -> float:
        """Verification cost in full model calls (blocks run for probes / blocks per call)."""
        return self.probe_blocks / self.blocks_per_call if self.blocks_per_call else 0.0

    def as_dict(self) -> dict:
        return {
            "probes": self.probes, "accepted": self.accepted, "rejected": self.rejected, "rollbacks": self.rollbacks,
            "probe_blocks": self.probe_blocks, "blocks_per_call": self.blocks_per_call,
            "probe_cost_calls": self.probe_cost_calls, "probe_log": [list(p) for p in self.probe_log],
        }

    def summary(self) -> str:
        if not self.probes:
            return ""
        return (f"; verify: {self.probes} probes, {self.accepted} accepted, {self.rejected} rejected"
                f"{f' ({self.rollbacks} recomputed)' if self.rollbacks else ''}, probe cost "
                f"{self.probe_blocks} blocks = {self.probe_cost_calls:.2f} full calls")


@dataclass
class TokenStats:
    """Token methods (accel_core/tokens/state.py: `TokenRun.fill_stats`; partial calls counted by the run)."""
    partial_calls: int = 0  # forecast steps that computed a token subset
    method: str = ""
    work: dict = field(default_factory=dict)  # TokenWork.as_dict(): token-block and FLOPs ratios
    gain: float | None = None  # mean propagation gain measured on partial steps (clusters)
    note: str = ""  # why token work was switched off, if it was
    trust: float | None = None  # measured weight of fresh tokens over the forecast (newest)

    def as_dict(self) -> dict:
        return {
            "partial_calls": self.partial_calls, "token_method": self.method,
            "token_work": dict(self.work), "token_gain": self.gain, "token_note": self.note,
            "token_trust": self.trust,
        }

    def summary(self) -> str:
        if not self.method:
            return ""
        if self.note:
            return f"; tokens {self.method} off ({self.note})"
        work = self.work
        if not work:
            return f"; tokens {self.method}: no partial steps"
        gain = f", propagation gain {self.gain:.2f}" if self.gain is not None else ""
        if self.trust is not None:
            gain += f", fresh-token trust {self.trust:.2f}"
        return (f"; tokens {self.method}: {self.partial_calls} partial steps, {work['token_ratio']:.2f}x fewer "
                f"token-blocks ({work['flops_ratio']:.2f}x fewer FLOPs){gain}")


@dataclass
class LearnedStats:
    """Learned profiles (L2P, LESA) forecasting for the output cache."""
    forecasts: int = 0  # output-cache forecasts made by a learned profile
    outside: str = ""  # why the learned profile was not used ("" = used or none set)

    def as_dict(self) -> dict:
        return {"learned_forecasts": self.forecasts, "learned_outside": self.outside}


@dataclass
class ResolutionStats:
    """Progressive Resolution on the same model (accel_core/cache_run.py: `CacheRun.show_stages`)."""
    stages: dict = field(default_factory=dict)  # plan and joint work
    # per call: the step of the resolution schedule the call belonged to (-1: the anchor call), so the panel
    # can tell which calls ran at which stage's scale; empty without Progressive Resolution on the model.
    # RunStats.as_dict emits it last, and only when set (other runs' summaries keep their keys)
    steps: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"stages": dict(self.stages)}

    def summary(self) -> str:
        """Resolution stages this cache ran under and the joint work ratio (cache + stages)."""
        st = self.stages
        if not st.get("plan"):
            return ""
        plan = ", ".join(_stage_label(entry) for entry in st["plan"])
        return (f"; resolution stages {plan}: with the cache {st['token_ratio']:.2f}x fewer token-blocks "
                f"({st['flops_ratio']:.2f}x fewer FLOPs)")


@dataclass
class GuardStats:
    """The finite-output guard (accel_core/output/guard.py)."""
    guarded: int = 0  # forecasts rejected by the guard and computed instead

    def as_dict(self) -> dict:
        return {"guarded": self.guarded}

    def summary(self) -> str:
        if not self.guarded:
            return ""
        return (f"; {self.guarded} forecast(s) not finite or out of bounds, computed instead (finite-output "
                "guard)")


@dataclass
class RunStats:
    family: str
    tag: str
    total_steps: int = 0
    calls: int = 0
    computed_calls: int = 0
    forecast_calls: int = 0
    evaluations: int = 0  # model evaluations a plain run would do (calls x CFG branches)
    computed_evaluations: int = 0
    fallbacks: int = 0  # scheduled forecasts computed because history was missing or reset
    resets: int = 0
    boundary_steps: list[int] = field(default_factory=list)  # steps where control / hooks changed: restarted
    peak_cache_bytes: int = 0
    branch_cache_bytes: dict[str, int] = field(default_factory=dict)
    timeline: list[str] = field(default_factory=list)  # per call: "C" computed, "F" forecast, "R" rejected
    call_steps: list[int] = field(default_factory=list)  # per call: the step index it was mapped to
    wall_seconds: float = 0.0
    interrupted: bool = False
    # (step, blend error, output-reuse error): the output cache's blend, or the hidden-state cache's probed
    # feature (reuse error None)
    backtest_log: list[tuple] = field(default_factory=list)
    full_call_seconds: list[float] = field(default_factory=list)  # wall time of each computed model call
    # one section per feature
    output: OutputStats = field(default_factory=OutputStats)
    verify: VerifyStats = field(default_factory=VerifyStats)
    tokens: TokenStats = field(default_factory=TokenStats)
    learned: LearnedStats = field(default_factory=LearnedStats)
    resolution: ResolutionStats = field(default_factory=ResolutionStats)
    guard: GuardStats = field(default_factory=GuardStats)

    def wall_summary(self) -> str:
        estimate = self.wall_speedup_estimate
        return f", about {estimate:.1f}x wall (estimated in this run)" if estimate else ""

    @property
    def wall_speedup_estimate(self) -> float | None:
        """Every call at the median computed call's wall time, over this run's sampling time: the wall
        speed-up measured in the run itself (partial steps, forecasts and the pack's own work included in
        the denominator; the uncached run is not timed, so it is an estimate). None before a run ends or
        with fewer than 2 computed calls (the first call carries one-time set-up)."""
        if self.wall_seconds <= 0 or len(self.full_call_seconds) < 2 or not self.calls:
            return None
        times = sorted(self.full_call_seconds)
        mid = len(times) // 2
        median = times[mid] if len(times) % 2 else 0.5 * (times[mid - 1] + times[mid])
        return self.calls * median / self.wall_seconds

    @property
    def evaluation_speedup(self) -> float:
        return self.evaluations / self.computed_evaluations if self.computed_evaluations else 1.0

    def summary(self) -> str:
        per_branch = max(self.branch_cache_bytes.values(), default=0)
        state = " (interrupted)" if self.interrupted else ""
        note = self.output.schedule_note
        return (
            f"DiT Accel: {self.family} {self.tag}: {self.total_steps} steps, {self.calls} model calls: "
            f"{self.computed_calls} computed, {self.forecast_calls} forecast"
            f"{f', {self.fallbacks} forecast fallbacks' if self.fallbacks else ''}"
            f"{f', {len(self.boundary_steps)} control / hook boundaries' if self.boundary_steps else ''}; "
            f"{self.evaluation_speedup:.2f}x fewer model evaluations"
            f"{f' ({note})' if note else ''}{self.guard.summary()}{self.tokens.summary()}{self.verify.summary()}"
            f"{self.backtest_summary()}{self.resolution.summary()}; cache "
            f"{format_bytes(self.peak_cache_bytes)} peak ({format_bytes(per_branch)} per branch, "
            f"{len(self.branch_cache_bytes)} branch(es)); {self.wall_seconds:.2f} s{state}"
            f"{self.wall_summary()}"
        )

    def as_dict(self) -> dict:
        """The flat summary the panel and RECENT_RUNS read: core counters with the sections' keys (in the
        order they have always had)."""
        output = self.output
        return {
            "family": self.family, "tag": self.tag, "total_steps": self.total_steps, "calls": self.calls,
            "computed_calls": self.computed_calls, "forecast_calls": self.forecast_calls,
            "evaluations": self.evaluations, "computed_evaluations": self.computed_evaluations,
            "evaluation_speedup": self.evaluation_speedup, "fallbacks": self.fallbacks, "resets": self.resets,
            "boundary_steps": list(self.boundary_steps), "continued": output.continued,
            "peak_cache_bytes": self.peak_cache_bytes, "branch_cache_bytes": dict(self.branch_cache_bytes),
            "timeline": "".join(self.timeline), "timeline_legend": TIMELINE_LEGEND,
            "call_steps": list(self.call_steps), "wall_seconds": self.wall_seconds, "interrupted": self.interrupted,
            **self.verify.as_dict(),
            "budget": output.budget, "backtest_log": [list(b) for b in self.backtest_log],
            "blend_weights": list(output.blend_weights), "cfg_layouts": dict(output.cfg_layouts),
            "schedule_note": output.schedule_note,
            **self.tokens.as_dict(),
            **self.learned.as_dict(),
            **self.resolution.as_dict(), **self.guard.as_dict(),
            "wall_speedup_estimate": self.wall_speedup_estimate,
            # only under Progressive Resolution (other runs' summaries keep their keys)
            **({"resolution_steps": list(self.resolution.steps)} if self.resolution.steps else {}),
        }

    def backtest_summary(self) -> str:
        if not self.backtest_log:
            return ""
        blend = sum(b[1] for b in self.backtest_log) / len(self.backtest_log)
        reuses = [b[2] for b in self.backtest_log if b[2] is not None]
        if not reuses:
            return f"; backtest error of the probed feature {blend:.3f}"
        return f"; backtest error {blend:.3f} (output reuse {sum(reuses) / len(reuses):.3f})"
