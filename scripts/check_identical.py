"""Bit-identity check for refactors: sample a few zoo models through ComfyUI's KSampler with the pack's
nodes and write the sha256 of every output latent to a JSON; compare against an earlier JSON.

A code move must not change a single bit of what the nodes produce. This samples three tune models
(FLUX, Qwen-Image at cfg 3 so both CFG branches are forecast, HunyuanVideo) with: no pack node, the three
Forecast Cache presets, the hidden-state modes (final_hidden, per_block, Verify, Frequency Split), Cluster
Tokens + balanced, and Progressive Resolution alone and with balanced (the two runs of one sampling run working together), one case each at
16 euler steps (above the few-step rule, so every preset really forecasts). The nodes are applied through
ComfyUI's node mappings (node ids, not module paths), so the script itself survives the moves it checks.
Besides the latents it hashes the runs' summaries (the pack's RECENT_RUNS of both the cache and Progressive
Resolution, wall-clock fields left out): evaluations, timelines and work ratios must not move either.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/check_identical.py --out bench/results/identity_before.json
    OMP_NUM_THREADS=1 .venv/bin/python scripts/check_identical.py --against bench/results/identity_before.json

Exit status 1 when --against is given and any hash differs (each difference is logged). About a minute of CPU.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # appended: the pack's nodes/ must not shadow ComfyUI's nodes

log = logging.getLogger("check_identical")

STEPS = 16
# (zoo model, cfg or None for the model's default)
MODELS = (("micro_flux", None), ("micro_qwen_image", 3.0), ("micro_hunyuan_video", None))
CONFIGS = ("uncached", "preset quality", "preset balanced", "preset fast", "final_hidden balanced",
           "per_block balanced", "verify + balanced", "frequency split + balanced", "cluster tokens + balanced", "progressive resolution", "progressive resolution + balanced")


def latent_sha256(latent) -> str:
    """sha256 of the latent's bytes, with its dtype and shape (a reshape must not hash the same)."""
    import torch

    t = latent.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


def build_model(mappings, name: str, model):
    """The model with the config's nodes applied, the way a graph applies them (node ids)."""
    forecast = mappings["DiTAccelForecastCache"]

    def cache(m, preset: str, cache_mode: str = "preset", **options):
        return forecast.execute(m, preset, "preset", cache_mode, 0, -1, -1, -1, 0.0, 1.0, **options)[0]

    if name == "uncached":
        return model
    if name.startswith("preset "):
        return cache(model, name.split()[1])
    if name == "final_hidden balanced":
        return cache(model, "balanced", "final_hidden")
    if name == "per_block balanced":
        return cache(model, "balanced", "per_block")
    if name == "verify + balanced":  # the node's defaults
        verify = mappings["DiTAccelVerifyOptions"].execute("last_block", "rollback", 0.1, 0.5, 0.02, 1,
                                                           "relative", 1.0)[0]
        return cache(model, "balanced", verify=verify)
    if name == "frequency split + balanced":
        return cache(model, "balanced", split=mappings["DiTAccelFrequencyOptions"].execute(0.1, "3d")[0])
    if name == "cluster tokens + balanced":
        # partial_from 0 and flat weights: the behaviour before round 5 (the node's defaults are 0.5 / scaled
        # since), so that this case keeps checking that the round-5 knobs at their old values change nothing
        tokens = mappings["DiTAccelClusterTokens"].execute(16, 2, 0.5, "cached", "off", partial_from=0.0,
                                                           gap_weighting="flat")[0]
        return cache(model, "balanced", tokens=tokens)
    if name.startswith("progressive resolution"):
        staged = mappings["DiTAccelProgressiveResolution"].execute(model, factor=2, low_res_share=0.4)[0]
        return cache(staged, "balanced") if name.endswith("+ balanced") else staged
    raise ValueError(f"unknown config {name!r}")


def _summaries_sha256(runs: list[dict]) -> str:
    """sha256 of run summaries without what differs run to run: wall-clock fields, and the conds' per-run
    uuids that key per-branch entries (their values are kept, sorted)."""
    uuid = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

    def clean(value):
        if isinstance(value, dict) and value and all(uuid.match(str(k)) for k in value):
            return sorted(clean(v) for v in value.values())
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items() if "seconds" not in str(k) and "wall" not in str(k)}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return hashlib.sha256(json.dumps(clean(runs), sort_keys=True, default=repr).encode()).hexdigest()


def _recent_runs() -> list:
    """The pack's RECENT_RUNS deques (Forecast Cache, Progressive Resolution), found by what they hold."""
    return [m.RECENT_RUNS for n, m in sorted(sys.modules.items())
            if n.endswith(("nodes.adapter", "nodes.resolution_hooks")) and hasattr(m, "RECENT_RUNS")]


def run_all() -> dict[str, str]:
    from bench.bench_zoo import setup_comfy
    from scripts.harness.zoo import ZooModel

    nodes, _ = setup_comfy(1)
    mappings = nodes.NODE_CLASS_MAPPINGS
    hashes: dict[str, str] = {}
    deques = _recent_runs()
    for model_name, cfg in MODELS:
        zm = ZooModel(model_name)
        case = zm.cases(1, 1, cfg=cfg if cfg is not None else zm.default_cfg)[0]
        for config in CONFIGS:
            start = time.perf_counter()
            for runs in deques:
                runs.clear()
            m = build_model(mappings, config, zm.model)
            out = nodes.KSampler().sample(m, case.seed, STEPS, case.cfg, "euler", "simple", case.positive,
                                          case.negative, case.latent, denoise=1.0)[0]["samples"]
            key = f"{model_name} | {config}"
            hashes[key] = latent_sha256(out)
            hashes[f"{key} | summaries"] = _summaries_sha256([list(runs) for runs in deques])
            log.info("%-60s %s  (%.1f s)", key, hashes[key][:16], time.perf_counter() - start)
    return hashes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write {case: sha256} here")
    parser.add_argument("--against", type=Path, default=None, help="compare with this earlier JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    hashes = run_all()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"steps": STEPS, "hashes": hashes}, indent=1) + "\n")
        log.info("wrote %s", args.out)
    if args.against:
        old = json.loads(args.against.read_text())["hashes"]
        bad = [k for k in sorted(set(old) | set(hashes)) if old.get(k) != hashes.get(k)]
        for k in bad:
            log.error("DIFFERS: %s: before %s, now %s", k, old.get(k), hashes.get(k))
        log.info("%d of %d cases bit-identical to %s", len(old) - len(bad), len(old), args.against)
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
