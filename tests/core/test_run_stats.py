"""RunStats: core counters plus one section per feature, flattened for the panel and the log line.

The panel (web/js/), RECENT_RUNS and scripts/check_identical.py read `as_dict()`'s flat keys and the summary
line: a section may move a field, never rename or reorder what they read."""
from __future__ import annotations

import dataclasses

from accel_core.stats import (GuardStats, LearnedStats, OutputStats, ResolutionStats, RunStats, TokenStats,
                              VerifyStats)

FLAT_KEYS = [
    "family", "tag", "total_steps", "calls", "computed_calls", "forecast_calls", "evaluations",
    "computed_evaluations", "evaluation_speedup", "fallbacks", "resets", "boundary_steps", "continued",
    "peak_cache_bytes", "branch_cache_bytes", "timeline", "timeline_legend", "call_steps", "wall_seconds",
    "interrupted", "probes", "accepted", "rejected", "rollbacks", "probe_blocks", "blocks_per_call",
    "probe_cost_calls", "probe_log", "budget", "backtest_log", "blend_weights", "cfg_layouts", "schedule_note",
    "partial_calls", "token_method", "token_work", "token_gain", "token_note", "token_trust", "learned_forecasts",
    "learned_outside", "stages", "guarded", "wall_speedup_estimate",
]


def _filled() -> RunStats:
    s = RunStats(family="flux", tag="t", total_steps=20)
    s.calls, s.computed_calls, s.forecast_calls, s.evaluations, s.computed_evaluations = 20, 8, 12, 40, 16
    s.fallbacks, s.resets, s.boundary_steps = 1, 2, [3, 9]
    s.peak_cache_bytes, s.branch_cache_bytes = 123456, {"cond": 1000, "uncond": 2000}
    s.timeline, s.call_steps, s.wall_seconds, s.interrupted = list("CFFPR"), [0, 1, 2, 3, 4], 2.5, True
    s.backtest_log, s.full_call_seconds = [(1, 0.1, 0.2), (2, 0.3, None)], [0.9, 0.2, 0.3]
    s.verify = VerifyStats(probes=5, accepted=3, rejected=2, rollbacks=1, blocks_per_call=57, probe_log=[(3, 0.1, 0.2)])
    s.output = OutputStats(budget=8, blend_weights=[0.5, 0.5], cfg_layouts={"guided": 3}, schedule_note="note",
                           continued=True)
    s.tokens = TokenStats(partial_calls=4, method="clusters", work={"token_ratio": 1.5, "flops_ratio": 1.4},
                          gain=0.7, trust=0.9)
    s.learned = LearnedStats(forecasts=3, outside="sampler")
    s.resolution = ResolutionStats(stages={"plan": [[2, 0, 6], [1, 6, 20]], "token_ratio": 2.0, "flops_ratio": 2.5})
    s.guard = GuardStats(guarded=2)
    return s


def test_as_dict_keeps_the_flat_keys_in_their_order():
    assert list(RunStats(family="f", tag="t").as_dict()) == FLAT_KEYS
    d = _filled().as_dict()
    assert list(d) == FLAT_KEYS
    assert (d["continued"], d["budget"], d["schedule_note"], d["probes"], d["probe_blocks"], d["token_method"],
            d["token_note"], d["learned_forecasts"], d["learned_outside"], d["guarded"]) == (
        True, 8, "note", 5, 5, "clusters", "", 3, "sampler", 2)
    assert d["probe_log"] == [[3, 0.1, 0.2]] and d["stages"]["token_ratio"] == 2.0


def test_every_section_field_reaches_the_flat_dict():
    """A field added to a section without a flat key would never reach the panel."""
    flat = set(FLAT_KEYS)
    renamed = {"steps": "resolution_steps", "method": "token_method", "work": "token_work", "gain": "token_gain", "note": "token_note",
               "trust": "token_trust", "forecasts": "learned_forecasts", "outside": "learned_outside"}
    flat.add("resolution_steps")  # ResolutionStats.steps: emitted only under Progressive Resolution
    for section in (OutputStats, VerifyStats, TokenStats, LearnedStats, ResolutionStats, GuardStats):
        for f in dataclasses.fields(section):
            assert renamed.get(f.name, f.name) in flat, (section.__name__, f.name)


def test_summary_line_is_assembled_from_the_sections():
    s = _filled()
    assert s.summary() == (
        "DiT Accel: flux t: 20 steps, 20 model calls: 8 computed, 12 forecast, 1 forecast fallbacks, 2 control / "
        "hook boundaries; 2.50x fewer model evaluations (note); 2 forecast(s) not finite or out of bounds, computed "
        "instead (finite-output guard); tokens clusters: 4 partial steps, 1.50x fewer token-blocks (1.40x fewer "
        "FLOPs), propagation gain 0.70, fresh-token trust 0.90; verify: 5 probes, 3 accepted, 2 rejected (1 "
        "recomputed), probe cost 5 blocks = 0.09 full calls; backtest error 0.200 (output reuse 0.200); resolution "
        "stages 1/2 steps 0-5, full 6-19: with the cache 2.00x fewer token-blocks (2.50x fewer FLOPs); cache 120.6 "
        "KiB peak (2.0 KiB per branch, 2 branch(es)); 2.50 s (interrupted), about 2.4x wall (estimated in this run)")
    s.tokens.note = "off reason"
    assert "; tokens clusters off (off reason); verify" in s.summary()
    assert RunStats(family="f", tag="t").summary() == (
        "DiT Accel: f t: 0 steps, 0 model calls: 0 computed, 0 forecast; 1.00x fewer model evaluations; cache 0 B "
        "peak (0 B per branch, 0 branch(es)); 0.00 s")


def test_sections_are_not_shared_between_runs():
    a, b = RunStats(family="f", tag="t"), RunStats(family="f", tag="t")
    a.verify.probe_log.append((1, 0.1, 0.2))
    a.output.cfg_layouts["guided"] = 1
    assert not b.verify.probe_log and not b.output.cfg_layouts and a.tokens is not b.tokens


def test_resolution_steps_appear_only_under_progressive_resolution_and_last():
    """The panel's stage band reads them; every other run's summary keeps its keys (identity hashes)."""
    s = _filled()
    assert "resolution_steps" not in s.as_dict()
    s.resolution.steps.extend([-1, 0, 0, 1])
    d = s.as_dict()
    assert list(d)[-1] == "resolution_steps" and d["resolution_steps"] == [-1, 0, 0, 1]
    assert list(d)[:-1] == FLAT_KEYS
