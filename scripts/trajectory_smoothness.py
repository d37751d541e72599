"""How smooth is a micro FLUX's denoising trajectory? (trained vs random weights)

Samples with ComfyUI's KSampler (euler, 20 steps, cfg 1, 32x32 latent) and records, per step,
the final hidden state (last single block, image tokens), the first double block's image residual
(the FBCache-style signal) and the model output. Reports the relative L1 change between
consecutive steps, mean|h_t - h_{t-1}| / mean|h_{t-1}|: caching only pays off when it is small.

    .venv/bin/python scripts/trajectory_smoothness.py [--out tests/assets/micro_flux_trajectory.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))  # appended: the pack's nodes/ must not shadow ComfyUI's nodes

from scripts.harness import comfy_env  # noqa: E402
from scripts.harness.assets import CLIP_L_NAME, TRAINED_FLUX, ensure_assets  # noqa: E402
from scripts.harness.micro_models import build_micro_model, load_micro_model  # noqa: E402
from scripts.train_micro_flux import rel  # noqa: E402

log = logging.getLogger("trajectory_smoothness")

PROMPTS = ("a red circle on a blue background", "a yellow square on a black background")
SEEDS = (0, 1, 2)
STEPS = 20
KEY = "dit_accel_trajectory"


def rel_l1_changes(seq: list[torch.Tensor]) -> list[float]:
    return [float((b - a).abs().mean() / a.abs().mean().clamp_min(1e-12)) for a, b in zip(seq, seq[1:])]


def record_trajectory(model, positive, seed: int, steps: int = STEPS, size: int = 32) -> dict[str, list[float]]:
    """Sample once; return the per-step relative L1 changes of the three recorded signals."""
    import comfy.patcher_extension as pe
    import nodes

    rec: dict[str, list[torch.Tensor]] = {"final_hidden": [], "first_block_residual": [], "model_output": []}
    n_img = (size // 2) ** 2
    m = model.clone()
    n_single = len(m.model.diffusion_model.single_blocks)

    def first_double(args, extra):
        img_in = args["img"].clone()  # Flux blocks update img in place
        out = extra["original_block"](args)
        rec["first_block_residual"].append((out["img"] - img_in).float().clone())
        return out

    def last_single(args, extra):
        out = extra["original_block"](args)
        rec["final_hidden"].append(out["img"][:, -n_img:].float().clone())  # txt then img for Flux
        return out

    def dm_wrapper(executor, *args, **kwargs):
        out = executor(*args, **kwargs)
        rec["model_output"].append(out.float().clone())
        return out

    m.set_model_patch_replace(first_double, "dit", "double_block", 0)
    m.set_model_patch_replace(last_single, "dit", "single_block", n_single - 1)
    m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, KEY, dm_wrapper)
    latent = {"samples": torch.zeros(1, 16, size, size)}
    nodes.KSampler().sample(m, seed, steps, 1.0, "euler", "simple", positive, positive, latent, denoise=1.0)
    changes = {k: rel_l1_changes(v) for k, v in rec.items()}
    changes["final_hidden_direction"] = consecutive_direction(rec["final_hidden"])
    return changes


def consecutive_direction(seq: list[torch.Tensor]) -> list[float]:
    """Cosine between consecutive step differences: near 1 = a smooth path that forecasting can
    extrapolate; negative = a zig-zag that only reuse survives (what the micro FLUX did before its
    high-frequency timestep inputs were dropped)."""
    diffs = [(b - a).flatten() for a, b in zip(seq, seq[1:])]
    return [float(torch.nn.functional.cosine_similarity(d0, d1, dim=0)) for d0, d1 in zip(diffs, diffs[1:])]


def summarize(per_run: list[dict[str, list[float]]]) -> dict[str, dict]:
    out = {}
    for key in per_run[0]:
        runs = [r[key] for r in per_run]
        flat = [x for r in runs for x in r]
        per_step = [statistics.fmean(col) for col in zip(*runs)]
        out[key] = {"mean": statistics.fmean(flat), "median": statistics.median(flat),
                    "per_step_mean": [round(x, 4) for x in per_step]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=TRAINED_FLUX, help="trained micro FLUX file")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    base = comfy_env.bootstrap()
    ensure_assets(base)
    import nodes

    clip = nodes.CLIPLoader().load_clip(CLIP_L_NAME, type="stable_diffusion")[0]
    conds = [nodes.CLIPTextEncode().encode(clip, p)[0] for p in PROMPTS]
    models = {"trained": load_micro_model(args.model), "random": build_micro_model("flux", seed=0)}
    result = {"setup": {"sampler": "euler", "scheduler": "simple", "steps": STEPS, "cfg": 1.0,
                        "latent": [1, 16, 32, 32], "prompts": list(PROMPTS), "seeds": list(SEEDS),
                        "metric": "mean|h_t - h_{t-1}| / mean|h_{t-1}| over consecutive steps; "
                                  "final_hidden_direction: cosine of consecutive step differences",
                        "model_file": rel(args.model)}}
    for name, model in models.items():
        runs = [record_trajectory(model, c, s) for c in conds for s in SEEDS]
        result[name] = summarize(runs)
    for key in ("final_hidden", "first_block_residual", "model_output", "final_hidden_direction"):
        t, r = result["trained"][key], result["random"][key]
        log.info("%-21s trained %.3f (median %.3f) | random %.3f (median %.3f)", key, t["mean"], t["median"],
                 r["mean"], r["median"])
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
        log.info("wrote %s", args.out)
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
