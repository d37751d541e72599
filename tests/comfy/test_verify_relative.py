"""Verify Forecasts with a threshold relative to the error measured on the model (real ComfyUI)."""
from __future__ import annotations

import pytest
import torch
from helpers import conditioning, recent_runs, sample


def _verified(model, mode: str, probe: str, relative: float, cache_mode: str = "final_hidden"):
    import nodes

    verify = nodes.NODE_CLASS_MAPPINGS["DiTAccelVerifyOptions"].execute(
        probe, "rollback", 0.1, 1.0, 0.0, 1, "relative" if relative > 0 else "absolute", relative or 1.0)[0]
    node = nodes.NODE_CLASS_MAPPINGS["DiTAccelForecastCache"]
    return node.execute(model, "balanced", "taylorseer", cache_mode, 6, 1, 2, 1, 0.0, 1.0, verify=verify)[0]


@pytest.mark.parametrize("probe", ["first_block", "last_block"])
@pytest.mark.parametrize("cache_mode", ["final_hidden", "per_block"])
def test_relative_threshold_follows_the_measured_error(micro, probe, cache_mode):
    latent = torch.zeros(1, 16, 16, 16)
    pos, neg = conditioning(1), conditioning(2)
    loose = sample(_verified(micro["flux"], "relative", probe, 100.0, cache_mode), latent, pos, neg, steps=20)
    run = recent_runs()[-1]
    assert torch.isfinite(loose).all() and run["probes"] > 0
    assert run["backtest_log"] and all(entry[1] > 0 for entry in run["backtest_log"])
    # A probe's threshold is the multiple of the newest backtest error (decay 1 here).
    assert any(tau > 0 for _, _, tau in run["probe_log"])
    loose_rejected = run["rejected"]
    sample(_verified(micro["flux"], "relative", probe, 0.05, cache_mode), latent, pos, neg, steps=20)
    strict = recent_runs()[-1]
    assert strict["rejected"] > loose_rejected
    assert strict["computed_calls"] > run["computed_calls"]


def test_absolute_mode_keeps_the_old_threshold(micro):
    sample(_verified(micro["flux"], "absolute", "last_block", 0.0), torch.zeros(1, 16, 16, 16), conditioning(1),
           conditioning(2), steps=12)
    run = recent_runs()[-1]
    assert run["probes"] > 0 and all(abs(tau - 0.1) < 1e-9 for _, _, tau in run["probe_log"])
    assert "-vl0.1rb" in run["tag"]
