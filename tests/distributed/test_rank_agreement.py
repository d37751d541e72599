"""Rank-consistent decisions under torch.distributed: two CPU processes on gloo, image tokens sharded
across the ranks as sequence parallelism does (tests/distributed/gloo_worker.py does the work).

Issue 13 target: 0 diverging decisions over a 50-step run with verification, backtest and clustering on.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from accel_core import distributed

WORKER = Path(__file__).resolve().parent / "gloo_worker.py"
WORLD = 2
RUN_TIMEOUT_S = 240  # a deadlock fails the test here instead of hanging CI


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _launch(scenario: str, tmp_path: Path) -> list[dict]:
    port = _free_port()
    outs = [tmp_path / f"{scenario}{r}.json" for r in range(WORLD)]
    env = {key: value for key, value in os.environ.items() if key != "DITACCEL_AGREE"} | {"OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), scenario, str(r), str(WORLD), port, str(outs[r])],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) for r in range(WORLD)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=RUN_TIMEOUT_S)[0].decode(errors="replace"))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"{scenario}: the ranks did not finish in {RUN_TIMEOUT_S} s (deadlock?)")
    results = []
    for r, out in enumerate(outs):
        assert out.is_file(), f"rank {r} wrote nothing; its log:\n{logs[r][-3000:]}"
        result = json.loads(out.read_text())
        assert "error" not in result, f"rank {r} failed:\n{result['error']}"
        results.append(result)
    return results


def _diverging(a: dict, b: dict) -> int:
    """Decisions that differ between two runs' records: per call compute / forecast / partial / rejected,
    plus probes whose accept / reject differs."""
    calls = sum(x != y for x, y in zip(a["timeline"], b["timeline"])) + abs(len(a["timeline"]) - len(b["timeline"]))
    verdict = lambda log: [(step, error <= tau) for step, error, tau in log]  # noqa: E731
    probes = len(set(map(tuple, verdict(a["probe_log"]))) ^ set(map(tuple, verdict(b["probe_log"]))))
    return calls + probes


def test_single_process_is_a_no_op():
    """Without an initialised process group every call returns its input and makes no collective."""
    assert not distributed.active()
    before = distributed.collectives()
    t = torch.arange(3.0)
    assert distributed.agree_sum(t) is t
    assert distributed.agree_sum(1.5, 2.5) == (1.5, 2.5)
    assert distributed.agree_max(0.25) == 0.25 and distributed.agree_any(False) is False
    assert distributed.agree_all(True) is True and distributed.agree_tensor(t) is t
    assert distributed.shard_offset(7) == (0, 7)
    assert distributed.topk_rows(torch.tensor([0.1, 0.9, 0.5]), 2).tolist() == [1, 2]
    assert distributed.collectives() == before


def test_core_decisions_on_token_shards_equal_the_whole_tensor(tmp_path):
    ranks = _launch("core", tmp_path)
    for r in ranks:
        for key in ("backtest_weights_match", "backtest_errors_match", "relative_error_match", "kmeans_assign_match",
                    "kmeans_centroids_match", "cluster_members_match", "topk_match", "backtest_replicated_match",
                    "cluster_members_replicated_match", "topk_replicated_match", "promotion_share_match",
                    "gain_match"):
            assert r[key], f"rank {r['rank']}: {key}"
        # Agreement is what makes them equal: the shard's own fit differs.
        assert r["backtest_weights_local_differ"]
        assert r["backtest_collectives"] == 4  # one per backtest (5 computed points, the first has none)
        assert r["any_collectives"] == 1 and r["disabled_collectives"] == 0
        assert r["agree_any"] is True and r["agree_all"] is False and r["agree_max"] == 1.0
        assert r["agree_tensor"] == [5.0]  # rank 0's value everywhere
        assert r["group_sum"] == 3.0  # agreed in the host's group of both ranks
        assert r["alone_active"] is False and r["alone_collectives"] == 0  # a one-rank group: nothing to agree
        assert r["alone_sum"] == r["rank"] + 1
    assert ranks[0]["weights"] == ranks[1]["weights"] and ranks[0]["centroids"] == ranks[1]["centroids"]
    assert ranks[0]["topk_count"] + ranks[1]["topk_count"] == 10
    assert ranks[0]["disabled_any"] is False and ranks[1]["disabled_any"] is True  # off: local answers


@pytest.fixture(scope="module")
def comfy_ranks(tmp_path_factory):
    """Both ranks' records of the ComfyUI scenario (run once: about 35 s on 2 CPU cores)."""
    return _launch("comfy", tmp_path_factory.mktemp("gloo_comfy"))


def test_sharded_comfy_flux_takes_the_same_decisions_on_every_rank(comfy_ranks):
    """Micro FLUX in the real ComfyUI, 50 steps at cfg 3, each rank holding half of the image tokens."""
    rank0, rank1 = comfy_ranks
    for name, run0 in rank0["runs"].items():
        run1 = rank1["runs"][name]
        d0, d1, ref = run0["decisions"], run1["decisions"], run0["reference"]["decisions"]
        print(f"{name}: {d0['timeline']} ({run0['seconds']} s/rank; agreement collectives "
              f"{sum(run0['collectives_per_step'])}, host all-gathers {run0['host_gathers']})")
        assert _diverging(d0, d1) == 0, name  # the target
        assert d0 == d1, name  # and every recorded figure (agreed errors are bitwise equal)
        assert _diverging(d0, ref) == 0, name  # the decisions one GPU takes
        out = torch.tensor(run0["output"])
        single = torch.tensor(run0["reference"]["output"])
        assert torch.isfinite(out).all()
        error = float((out - single).abs().max() / single.abs().max())
        print(f"{name}: max |sharded - single process| / max |single process| = {error:.2e}")
        assert error < 1e-4, name
        assert run0["collectives_per_step"] == run1["collectives_per_step"]
    # A forecast step of the output cache runs nothing of the model and makes one collective: the
    # finite-output guard's agreement that the forecast is finite and bounded on every rank (issue 21).
    preset = rank0["runs"]["preset"]
    timeline = preset["decisions"]["timeline"]
    per_step = preset["collectives_per_step"]
    assert len(per_step) == len(timeline) == 50
    assert all(n == 1 for n, kind in zip(per_step, timeline) if kind == "F")
    assert max(per_step) <= 4  # computed steps: CFG check, CFG layout backtest, one backtest per series
    assert "R" in rank0["runs"]["verify"]["decisions"]["timeline"]  # verification did reject and recompute
    assert rank0["runs"]["backtest_clusters"]["decisions"]["partial_calls"] > 0  # clustering did run


def test_without_agreement_the_ranks_diverge(comfy_ranks):
    """The same verified graph with agreement off: the ranks take different decisions (and then wait on
    each other's all-gather), so the test above can fail."""
    rank0, rank1 = comfy_ranks
    a, b = rank0["disagreeing"], rank1["disagreeing"]
    print(f"agreement off: rank 0 {a['decisions']['timeline']} {a['failure'] or 'finished'}; "
          f"rank 1 {b['decisions']['timeline']} {b['failure'] or 'finished'}")
    assert _diverging(a["decisions"], b["decisions"]) > 0
