"""One rank of the two-process gloo tests (tests/distributed/test_rank_agreement.py). Run as a script:

    python tests/distributed/gloo_worker.py SCENARIO RANK WORLD PORT OUT_JSON

Scenarios:
- core: accel_core decisions on token shards (backtest, relative error, k-means, top-k, trust) against
  the same call on the whole tensor;
- comfy: the real ComfyUI micro FLUX with the image tokens sharded as sequence parallelism does (each
  rank samples half of the latent rows; an attention override all-gathers the image keys / values, so
  the model equals the single-process one), Forecast Cache with backtest + adaptive schedule + Cluster
  Tokens, and with verification; then rank 0 runs the same graphs unsharded (agreement off) as the
  single-process reference; last, the verified run again with agreement OFF (the check that the test
  can fail), on its own process group with a short timeout (diverged ranks hang in the model's
  all-gather).
Each rank writes what it saw to OUT_JSON; the test compares the ranks.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO))  # appended: the pack's nodes/ must not shadow ComfyUI's nodes module

from accel_core import distributed  # noqa: E402

STEPS = 50
LATENT = (1, 16, 16, 16)  # 8 x 8 = 64 image tokens; each rank holds 32 (4 token rows)
TXT = 8  # text tokens (the conditioning's context length)
DECISION_KEYS = ("timeline", "call_steps", "probe_log", "backtest_log", "cfg_layouts", "token_trust",
                 "token_note", "partial_calls", "computed_calls", "rejected", "accepted", "budget")


def _shard(t: torch.Tensor, rank: int, world: int, dim: int) -> torch.Tensor:
    return t.chunk(world, dim=dim)[rank].contiguous()


def _gather(t: torch.Tensor, dim: int, group=None) -> torch.Tensor:
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, t.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


# ---------------------------------------------------------------------------------------------- core
def scenario_core(rank: int, world: int) -> dict:
    from accel_core.output.predictor import OutputPredictor
    from accel_core.tokens.kmeans import kmeans
    from accel_core.tokens.selection import cluster_members, dynamics_top

    out: dict = {}
    g = torch.Generator().manual_seed(0)
    # A trajectory [B, C, H, W]: tokens sharded along H (rows), as sequence parallelism shards image tokens.
    xs = [torch.randn(2, 4, 8, 8, generator=g) for _ in range(5)]
    ds = [x * (0.6 + 0.1 * i) + 0.05 * torch.randn(2, 4, 8, 8, generator=g) for i, x in enumerate(xs)]
    sigmas = [1.0, 0.8, 0.6, 0.4, 0.2]

    def fit(shard: bool):
        p = OutputPredictor()
        results = [p.add(s, _shard(x, rank, world, 2) if shard else x, _shard(d, rank, world, 2) if shard else d)
                   for s, x, d in zip(sigmas, xs, ds)]
        return p.weights, [r.blend_error for r in results if r is not None]

    before = distributed.collectives()
    w_shard, e_shard = fit(True)
    out["backtest_collectives"] = distributed.collectives() - before  # 4 backtests (the first add has none)
    with distributed.agreement(False):
        w_full, e_full = fit(False)
        w_local, _ = fit(True)
    out["backtest_weights_match"] = bool(torch.allclose(w_shard, w_full, rtol=1e-4, atol=1e-5))
    out["backtest_errors_match"] = all(torch.allclose(a, b, rtol=1e-4) for a, b in zip(e_shard, e_full))
    out["backtest_weights_local_differ"] = not bool(torch.allclose(w_local, w_full, rtol=1e-4, atol=1e-5))
    w_rep, _ = fit(False)  # replicated tensors (every rank holds all tokens): the world-size factor cancels
    out["backtest_replicated_match"] = bool(torch.allclose(w_rep, w_full, rtol=1e-4, atol=1e-5))
    out["weights"] = w_shard.flatten().tolist()

    f, t = torch.randn(2, 64, 16, generator=g), torch.randn(2, 64, 16, generator=g)
    rel = distributed.relative_error(_shard(f, rank, world, 1), _shard(t, rank, world, 1))
    with distributed.agreement(False):
        rel_full = distributed.relative_error(f, t)
    out["relative_error_match"] = bool(torch.allclose(rel, rel_full, rtol=1e-5))

    # k-means on token shards: the same seeds, sums and counts as on the whole tensor.
    # Four blobs; row i near centre i % 5 % 4, so the two shards' cluster ids differ (bitwise equal shards
    # would count as replicated, see distributed.gather_rows).
    feats = torch.randn(64, 16, generator=g) + 3.0 * torch.randn(4, 16, generator=g)[torch.arange(64) % 5 % 4]
    assign, cents = kmeans(_shard(feats, rank, world, 0), 4, iterations=5, generator=torch.Generator().manual_seed(1))
    with distributed.agreement(False):
        assign_full, cents_full = kmeans(feats, 4, iterations=5, generator=torch.Generator().manual_seed(1))
    out["kmeans_assign_match"] = bool(torch.equal(assign, _shard(assign_full, rank, world, 0)))
    out["kmeans_centroids_match"] = bool(torch.allclose(cents, cents_full, atol=1e-5))
    out["centroids"] = cents.flatten().tolist()

    rows = cluster_members(assign, 2, torch.Generator().manual_seed(2))
    with distributed.agreement(False):
        rows_full = cluster_members(assign_full, 2, torch.Generator().manual_seed(2))
    offset = rank * (64 // world)
    mine = rows_full[(rows_full >= offset) & (rows_full < offset + 64 // world)] - offset
    out["cluster_members_match"] = bool(torch.equal(rows, mine))
    replicated = cluster_members(assign_full, 2, torch.Generator().manual_seed(2))
    out["cluster_members_replicated_match"] = bool(torch.equal(replicated, rows_full))

    change = torch.rand(64, generator=g)
    top = dynamics_top(_shard(change, rank, world, 0), 10)
    with distributed.agreement(False):
        top_full = dynamics_top(change, 10)
    out["topk_match"] = bool(torch.equal(top, top_full[(top_full >= offset) & (top_full < offset + 32)] - offset))
    out["topk_count"] = int(top.numel())
    out["topk_replicated_match"] = bool(torch.equal(dynamics_top(change, 10), top_full))

    # Progressive Resolution's promotion share and FreqCa / SVD-Cache's adaptive gain over token shards.
    from accel_core.hidden.decompositions.base import _gain
    from accel_core.resolution.promotion import converged_share, token_change

    prev, cur = torch.randn(1, 16, 8, 8, generator=g), torch.randn(1, 16, 8, 8, generator=g)
    with distributed.agreement(False):
        threshold = float(token_change(prev, cur, 0.1).median())  # about half of the tokens below it
    share = converged_share(token_change(_shard(prev, rank, world, 2), _shard(cur, rank, world, 2), 0.1), threshold)
    p_, t_ = torch.randn(2, 64, 8, generator=g), torch.randn(2, 64, 8, generator=g)
    gain = _gain(_shard(p_, rank, world, 1), _shard(p_ + t_, rank, world, 1))
    with distributed.agreement(False):
        share_full = converged_share(token_change(prev, cur, 0.1), threshold)
        gain_full = _gain(p_, p_ + t_)
    out["promotion_share_match"] = abs(share - share_full) < 1e-9 and 0.0 < share_full < 1.0
    out["gain_match"] = abs(gain - gain_full) < 1e-9

    # One collective per decision, none without one, none when agreement is off or single-rank.
    before = distributed.collectives()
    flag = distributed.agree_any(rank == 1)
    out["any_collectives"] = distributed.collectives() - before
    out["agree_any"] = flag
    out["agree_all"] = distributed.agree_all(rank == 1)
    out["agree_max"] = distributed.agree_max(float(rank))
    out["agree_tensor"] = distributed.agree_tensor(torch.tensor([float(rank) + 5.0])).tolist()
    before = distributed.collectives()
    with distributed.agreement(False):
        out["disabled_any"] = distributed.agree_any(rank == 1)
    out["disabled_collectives"] = distributed.collectives() - before

    # The host's group: a group of both ranks agrees; a rank alone in its group has nothing to agree.
    both = dist.new_group([0, 1])
    alone = [dist.new_group([r]) for r in range(world)][rank]
    with distributed.using_group(both):
        out["group_sum"] = distributed.agree_sum(float(rank + 1))
    before = distributed.collectives()
    with distributed.using_group(alone):
        out["alone_active"] = distributed.active()
        out["alone_sum"] = distributed.agree_sum(float(rank + 1))
    out["alone_collectives"] = distributed.collectives() - before
    return out


# --------------------------------------------------------------------------------------------- comfy
def _kv_gather_override(group, counter: list):
    """Sequence-parallel attention: each rank holds the text tokens and its shard of the image tokens
    ([txt, img] in FLUX's joint order); keys / values of every rank's image shard are gathered, so each
    query sees the whole sequence, as on one GPU."""
    def override(func, q, k, v, heads, *args, **kwargs):
        counter[0] += 1
        k = torch.cat([k[:, :, :TXT], _gather(k[:, :, TXT:], 2, group)], dim=2)
        v = torch.cat([v[:, :, :TXT], _gather(v[:, :, TXT:], 2, group)], dim=2)
        return func(q, k, v, heads, *args, **kwargs)
    return override


def _graphs():
    import nodes

    forecast = nodes.NODE_CLASS_MAPPINGS["DiTAccelForecastCache"]
    clusters = nodes.NODE_CLASS_MAPPINGS["DiTAccelClusterTokens"].execute(
        clusters=4, tokens_per_cluster=2, cluster_layer=0.5, attention_context="cached", propagation="measured")[0]
    verify = nodes.NODE_CLASS_MAPPINGS["DiTAccelVerifyOptions"].execute(
        "last_block", "rollback", 0.1, 1.0, 0.0, 1, "relative", 1.0)[0]
    return {
        # the balanced preset as shipped (output cache, budget schedule, online backtest)
        "preset": lambda m: forecast.execute(m, "balanced", "preset", "preset", 0, -1, -1, -1, 0.0, 1.0)[0],
        # output cache: online backtest, error-adaptive schedule (data-dependent compute steps), ClusCa tokens
        "backtest_clusters": lambda m: forecast.execute(m, "balanced", "preset", "output", 0, -1, -1, -1, 0.0, 1.0,
                                                        schedule="adaptive", tokens=clusters)[0],
        # hidden-state cache with verification against a threshold relative to the measured backtest error
        "verify": lambda m: forecast.execute(m, "balanced", "taylorseer", "final_hidden", 6, 1, 2, 1, 0.0, 1.0,
                                             verify=verify)[0],
    }


def _sample(model, noise, positive, negative, per_step: list | None = None):
    """Sample; `per_step` receives the pack's agreement collectives made in each sampler step."""
    import comfy.sample

    marks = [distributed.collectives()]

    def callback(step, x0, x, total):
        marks.append(distributed.collectives())

    latent = torch.zeros_like(noise)
    out = comfy.sample.sample(model, noise, STEPS, 3.0, "euler", "simple", positive, negative, latent,
                              disable_pbar=True, seed=0, callback=callback)
    if per_step is not None:
        per_step.extend(b - a for a, b in zip(marks, marks[1:]))
    return out


def _decisions(adapter) -> dict:
    run = adapter.RECENT_RUNS[-1]
    return {key: run.get(key) for key in DECISION_KEYS}


def scenario_comfy(rank: int, world: int) -> dict:
    from scripts.harness import comfy_env

    comfy_env.bootstrap(base_dir=Path(tempfile.mkdtemp(prefix=f"base{rank}_", dir=os.environ["GLOO_WORKER_TMP"])))
    comfy_env.load_custom_nodes()
    from scripts.harness.micro_models import build_micro_model

    adapter = next(m for name, m in list(sys.modules.items())
                   if name.endswith("nodes.adapter") and hasattr(m, "RECENT_RUNS") and "dit_accel" in name)
    model = build_micro_model("flux", seed=0)
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(LATENT, generator=g)
    positive = [[torch.randn(1, TXT, 768, generator=g), {"pooled_output": torch.randn(1, 768, generator=g),
                                                         "guidance": 3.5}]]
    negative = [[torch.randn(1, TXT, 768, generator=g), {"pooled_output": torch.randn(1, 768, generator=g),
                                                         "guidance": 3.5}]]
    rows_per_rank = LATENT[2] // world
    patch = 2

    def sharded(group, counter):
        m = model.clone()
        options = m.model_options.setdefault("transformer_options", {})
        options["optimized_attention_override"] = _kv_gather_override(group, counter)
        options["rope_options"] = {"shift_y": float(rank * rows_per_rank // patch)}  # global token rows
        return m

    out: dict = {"runs": {}}
    for name, build in _graphs().items():
        counter, per_step = [0], []
        t0 = time.time()
        result = _sample(build(sharded(None, counter)), _shard(noise, rank, world, 2), positive, negative, per_step)
        out["runs"][name] = {
            "decisions": _decisions(adapter),
            "collectives_per_step": per_step,
            "host_gathers": counter[0],
            "seconds": round(time.time() - t0, 2),
            "output": _gather(result, 2).flatten().tolist() if rank == 0 else None,
        }
        if rank != 0:
            _gather(result, 2)  # rank 0 collects the whole latent
    if rank == 0:  # the single-process reference: the same graphs on the whole latent, nothing agreed
        with distributed.agreement(False):
            for name, build in _graphs().items():
                result = _sample(build(model.clone()), noise, positive, negative)
                out["runs"][name]["reference"] = {"decisions": _decisions(adapter),
                                                  "output": result.flatten().tolist()}
    dist.barrier()
    # Without agreement: the same verified graph; a short timeout, since diverged ranks hang in all_gather.
    short = dist.new_group(timeout=timedelta(seconds=20))
    with distributed.agreement(False):
        counter = [0]
        try:
            _sample(_graphs()["verify"](sharded(short, counter)), _shard(noise, rank, world, 2), positive, negative)
            failure = ""
        except Exception as e:  # a diverged rank waits for a collective the other never makes
            failure = f"{type(e).__name__}: {str(e)[:200]}"
        out["disagreeing"] = {"decisions": _decisions(adapter), "failure": failure, "host_gathers": counter[0]}
    return out


def main() -> None:
    scenario, rank, world, port, out_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, GLOO_WORKER_TMP=str(Path(out_path).parent))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        result = {"scenario": scenario, "rank": rank,
                  **(scenario_core(rank, world) if scenario == "core" else scenario_comfy(rank, world))}
    except Exception:
        result = {"scenario": scenario, "rank": rank, "error": traceback.format_exc()}
    Path(out_path).write_text(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # no teardown collective: a diverged peer may never answer one


if __name__ == "__main__":
    main()
