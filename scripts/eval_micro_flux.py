"""Prompt-following accuracy of the trained micro FLUX: sample every training prompt through
ComfyUI's KSampler, decode with the shapes decoder, and check background / foreground colours.

    .venv/bin/python scripts/eval_micro_flux.py [--seeds 2] [--model tests/assets/micro_flux_trained.safetensors]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))  # appended: the pack's nodes/ must not shadow ComfyUI's nodes

from scripts.harness import comfy_env, shapes_data  # noqa: E402
from scripts.harness.assets import TRAINED_FLUX, ensure_assets  # noqa: E402
from scripts.harness.micro_models import load_micro_model  # noqa: E402
from scripts.train_micro_flux import encode_prompts  # noqa: E402

log = logging.getLogger("eval_micro_flux")


def evaluate(model, seeds: int, steps: int = 20) -> dict:
    import nodes

    prompts = list(shapes_data.PROMPTS)
    # Same list and cache as training, so the encoded prompts are reused.
    cond, pooled = encode_prompts(prompts + [""], cache=REPO_ROOT / ".cache" / "shapes_conditioning.pt")
    rows = []
    for i, (shape, fg, bg) in enumerate(shapes_data.COMBOS):
        positive = [[cond[i:i + 1], {"pooled_output": pooled[i:i + 1]}]]
        for seed in range(seeds):
            latent = {"samples": torch.zeros(1, 16, 32, 32)}
            out = nodes.KSampler().sample(model, seed, steps, 1.0, "euler", "simple", positive, positive, latent)[0]
            got = shapes_data.colour_analysis(shapes_data.decode(out["samples"])[0])
            rows.append({"prompt": prompts[i], "seed": seed, "bg_ok": got["background"] == bg,
                         "fg_ok": got["foreground"] == fg and got["fg_fraction"] > 0.02,
                         "fg_fraction": round(got["fg_fraction"], 3)})
    n = len(rows)
    return {"samples": n, "steps": steps, "background_acc": sum(r["bg_ok"] for r in rows) / n,
            "foreground_acc": sum(r["fg_ok"] for r in rows) / n,
            "both_acc": sum(r["bg_ok"] and r["fg_ok"] for r in rows) / n,
            "failures": [r for r in rows if not (r["bg_ok"] and r["fg_ok"])]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=TRAINED_FLUX)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ensure_assets(comfy_env.bootstrap())
    res = evaluate(load_micro_model(args.model), args.seeds)
    log.info("background %.2f, foreground %.2f, both %.2f over %d samples", res["background_acc"],
             res["foreground_acc"], res["both_acc"], res["samples"])
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
