"""bench/bench_gpu.py in its --tiny CPU mode: the GPU script's whole code path runs and writes its report."""
from __future__ import annotations

import json


def test_bench_gpu_tiny_mode_runs_end_to_end(kernel_table, tmp_path):
    from bench.bench_gpu import main, run_configs

    out = tmp_path / "tiny"
    assert main(["--tiny", "--steps", "10", "--families", "flux", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["meta"]["tiny"] is True and result["meta"]["device"].startswith("CPU")
    ops_measured = {row["op"] for row in result["bandwidth"]["rows"]}
    assert ops_measured == {"forecast_combine", "forecast_residual_add", "ladder_update", "relative_error",
                            "token_gather", "token_scatter", "cluster_propagate"}
    assert all(row["reference_gbps"] > 0 for row in result["bandwidth"]["rows"])
    # This folder runs under TRITON_INTERPRET=1: the kernel columns come from the interpreted kernels.
    assert all(row["kernel_supported"] and row["kernel_gbps"] > 0 for row in result["bandwidth"]["rows"])
    (flux,) = result["models"]
    names = [r["config"] for r in flux["runs"]]
    assert names == [name for name, _ in run_configs(10)]
    for run in flux["runs"]:
        assert run["finite"] and run["calls"] == 10 == len(run["timeline"])
        if run["config"] == "uncached":
            assert run["evaluation_ratio"] == 1.0 and run["forecast_call_ms"] is None
        else:  # every cached config skips work on 10 steps and times its forecast calls
            assert run["evaluation_ratio"] > 1.0 and "F" in run["timeline"]
            assert 0 < run["forecast_call_ms"] and run["cache_peak_bytes"] > 0
    bf16 = next(r for r in flux["runs"] if "bf16" in r["config"])
    fp32 = next(r for r in flux["runs"] if r["config"] == "taylorseer-o2 fast schedule")
    assert bf16["cache_peak_bytes"] * 2 == fp32["cache_peak_bytes"]
    assert "| uncached |" in out.with_suffix(".md").read_text()
