"""Prompt-following and motion quality of the trained micro Qwen-Image / HunyuanVideo, sampled
through ComfyUI's KSampler exactly as a workflow would (CLIP-L conditioning, real schedules).

qwen_image: every training prompt at cfg 1 (no guidance) and at true CFG (cfg 3, empty negative
prompt); colours read with shapes_data.colour_analysis. hunyuan_video: 4-frame clips at guidance
6 (ComfyUI's default); per frame colours, and the shape's centroid track (speed and deviation
from a straight constant-velocity path). Both compared with the untrained micro model.

    .venv/bin/python scripts/eval_micro.py --family qwen_image [--seeds 2] [--out out/eval_qwen.json]
    .venv/bin/python scripts/eval_micro.py --family hunyuan_video [--seeds 2]
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))  # appended: the pack's nodes/ must not shadow ComfyUI's nodes

from scripts.harness import comfy_env, shapes_data, shapes_video  # noqa: E402
from scripts.harness.assets import TRAINED_MODELS, ensure_assets  # noqa: E402
from scripts.harness.micro_models import build_micro_model, load_micro_model  # noqa: E402

log = logging.getLogger("eval_micro")

# Recommended sampling settings (what the numbers in the JSON sidecars were measured with).
QWEN_LATENT = (1, 16, 1, 32, 32)
HV_LATENT = (1, 16, shapes_video.FRAMES, 16, 16)
QWEN_CFG = 3.0
HV_GUIDANCE = 6.0
STEPS = 20


def conditioning(cond: torch.Tensor, pooled: torch.Tensor, guidance: float | None = None) -> list:
    """ComfyUI CONDITIONING for one prompt row (as CLIPTextEncode [+ FluxGuidance] produce it)."""
    extras = {"pooled_output": pooled.reshape(1, -1)}
    if guidance is not None:
        extras["guidance"] = guidance
    return [[cond.reshape(1, *cond.shape[-2:]), extras]]


def ksample(model, positive, negative, latent_shape, cfg: float, seed: int, steps: int = STEPS) -> torch.Tensor:
    import nodes

    out = nodes.KSampler().sample(model, seed, steps, cfg, "euler", "simple", positive, negative,
                                  {"samples": torch.zeros(latent_shape)}, denoise=1.0)
    return out[0]["samples"]


def image_row(image: torch.Tensor, fg: str, bg: str) -> dict:
    got = shapes_data.colour_analysis(image)
    # Continuous companion of bg_ok: RGB distance of the border median from the prompted colour.
    bg_dist = float((torch.tensor(got["bg_rgb"]) - torch.tensor(shapes_data.PALETTE[bg])).norm())
    return {"bg_ok": got["background"] == bg, "fg_ok": got["foreground"] == fg and got["fg_fraction"] > 0.02,
            "fg_fraction": round(got["fg_fraction"], 3), "bg_dist": round(bg_dist, 4)}


def summarise(rows: list[dict]) -> dict:
    n = max(1, len(rows))
    return {"samples": len(rows), "background_acc": sum(r["bg_ok"] for r in rows) / n,
            "foreground_acc": sum(r["fg_ok"] for r in rows) / n,
            "both_acc": sum(r["bg_ok"] and r["fg_ok"] for r in rows) / n,
            "mean_bg_dist": sum(r["bg_dist"] for r in rows) / n}


def eval_qwen(model, cond, pooled, seeds: int, cfg: float) -> dict:
    empty = conditioning(cond[-1], pooled[-1])
    out = {}
    for label, scale in (("cfg1", 1.0), (f"cfg{cfg:g}", cfg)):
        rows = []
        for i, (shape, fg, bg) in enumerate(shapes_data.COMBOS):
            pos = conditioning(cond[i], pooled[i])
            for seed in range(seeds):
                lat = ksample(model, pos, empty if scale != 1.0 else pos, QWEN_LATENT, scale, seed)
                rows.append({"prompt": shapes_data.PROMPTS[i], "seed": seed,
                             **image_row(shapes_data.decode(lat)[0], fg, bg)})
        out[label] = {**summarise(rows), "failures": [r for r in rows if not (r["bg_ok"] and r["fg_ok"])]}
    return out


def clip_row(frames: torch.Tensor, fg: str, bg: str) -> dict:
    m = shapes_video.motion_analysis(frames)
    rows = [image_row(f, fg, bg) for f in frames]
    speed = math.hypot(*m["velocity"]) if all(math.isfinite(v) for v in m["velocity"]) else float("nan")
    return {"bg_ok": all(r["bg_ok"] for r in rows), "fg_ok": all(r["fg_ok"] for r in rows),
            "bg_dist": sum(r["bg_dist"] for r in rows) / len(rows), "speed_px_per_frame": round(speed, 3), "path_residual_px": round(m["path_residual"], 3)}


def eval_hv(model, cond, pooled, seeds: int, guidance: float, prompt_stride: int) -> dict:
    rows = []
    for i in range(0, len(shapes_data.COMBOS), prompt_stride):
        shape, fg, bg = shapes_data.COMBOS[i]
        pos = conditioning(cond[i], pooled[i], guidance)
        for seed in range(seeds):
            lat = ksample(model, pos, pos, HV_LATENT, 1.0, seed)
            rows.append({"prompt": shapes_data.PROMPTS[i], "seed": seed,
                         **clip_row(shapes_video.decode_frames(lat)[0], fg, bg)})
    res = summarise(rows)
    finite = [r for r in rows if math.isfinite(r["path_residual_px"])]
    res["tracked_clips"] = len(finite)
    if finite:
        res["median_path_residual_px"] = sorted(r["path_residual_px"] for r in finite)[len(finite) // 2]
        res["median_speed_px_per_frame"] = sorted(r["speed_px_per_frame"] for r in finite)[len(finite) // 2]
        res["moving_fraction"] = sum(r["speed_px_per_frame"] > 0.75 for r in finite) / len(rows)
    res["rows"] = rows
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", required=True, choices=("qwen_image", "hunyuan_video"))
    ap.add_argument("--model", type=Path, default=None, help="default: the committed trained model")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--cfg", type=float, default=QWEN_CFG, help="qwen_image: true-CFG scale")
    ap.add_argument("--guidance", type=float, default=HV_GUIDANCE, help="hunyuan_video: embedded guidance")
    ap.add_argument("--prompt-stride", type=int, default=3, help="hunyuan_video: every n-th prompt")
    ap.add_argument("--untrained", action="store_true", help="also evaluate the untrained (seed 0) model")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--record", action="store_true",
                    help="write the summary figures (no per-sample rows) into the model's JSON sidecar")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ensure_assets(comfy_env.bootstrap())
    from scripts.train_micro import load_conditioning

    _, cond, pooled = load_conditioning()
    models = {"trained": load_micro_model(args.model or TRAINED_MODELS[args.family][0])}
    if args.untrained:
        models["untrained"] = build_micro_model(args.family, seed=0)
    res = {}
    for name, model in models.items():
        if args.family == "qwen_image":
            r = eval_qwen(model, cond, pooled, args.seeds, args.cfg)
            for label, v in r.items():
                log.info("%s %s: background %.2f, foreground %.2f, both %.2f over %d samples; mean bg RGB "
                         "distance %.3f", name, label, v["background_acc"], v["foreground_acc"], v["both_acc"],
                         v["samples"], v["mean_bg_dist"])
        else:
            r = eval_hv(model, cond, pooled, args.seeds, args.guidance, args.prompt_stride)
            log.info("%s: background %.2f, foreground %.2f (all frames), both %.2f over %d clips; mean bg RGB "
                     "distance %.3f; median path residual %s px, median speed %s px/frame, moving %.2f", name,
                     r["background_acc"], r["foreground_acc"], r["both_acc"], r["samples"], r["mean_bg_dist"],
                     r.get("median_path_residual_px"),
                     r.get("median_speed_px_per_frame"), r.get("moving_fraction", 0.0))
        res[name] = r
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    if args.record:
        record(args.model or TRAINED_MODELS[args.family][0], res, argv)
    return 0


def record(model_path: Path, res: dict, argv: list[str] | None) -> None:
    """Store the summary in the sidecar, so the figures travel with the weights they describe."""
    def strip(d):
        return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items() if k not in ("rows", "failures")}

    sidecar = Path(model_path).with_suffix(".json")
    data = json.loads(sidecar.read_text())
    data["eval"] = {**strip(res), "command": "scripts/eval_micro.py " + " ".join(sys.argv[1:] if argv is None else argv),
                    "steps": STEPS, "sampler": "euler", "scheduler": "simple"}
    sidecar.write_text(json.dumps(data, indent=1) + "\n")
    log.info("recorded the summary in %s", sidecar)


if __name__ == "__main__":
    raise SystemExit(main())
