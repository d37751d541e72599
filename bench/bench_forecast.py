"""Speed/fidelity table of the forecast cache on the trained micro FLUX, through real ComfyUI sampling.

For each method x full-step budget (about 25, 17, 10 and 8 of 50 euler steps) and for the built-in
EasyCache at several thresholds, over several seeds and prompts:
- model evaluations (counted at the first transformer block, so skipped calls never count),
- the model-evaluation ratio and the wall-clock ratio against the uncached run (same process,
  seed, sampler, device),
- PSNR of the decoded 64x64 image against the uncached image.

EasyCache adds its cached residual into its input in place, which corrupts fp32 runs (the CPU
case: denoised becomes (1 - sigma) * output). It is measured behind an outer DIFFUSION_MODEL
wrapper that hands it a copy of the input, and the table says so.

Usage: .venv/bin/python bench/bench_forecast.py [--seeds 3] [--prompts 2] [--steps 50]
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))

log = logging.getLogger("bench")

BUDGETS = (25, 17, 10, 8)
METHODS = (
    ("reuse", dict(method="reuse", order=0)),
    ("taylorseer o1", dict(method="taylorseer", order=1)),
    ("taylorseer o2", dict(method="taylorseer", order=2)),
    ("taylorseer o2 (step axis)", dict(method="taylorseer", order=2, time_axis="step")),
    ("hicache o2", dict(method="hicache", order=2)),
    ("foca", dict(method="foca", order=1)),
    ("foca (step axis)", dict(method="foca", order=1, time_axis="step")),
)
EASYCACHE_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.8)


def schedule_for_budget(sigmas: list[float], budget: int):
    """(warmup, interval, final) whose plan computes closest to `budget` steps.

    Warm-up 2-3 and 1-2 final full steps (the trajectory changes fastest at both ends); among
    equally close plans the first found wins (warm-up 3, final 1 preferred).
    """
    from accel_core import ForecastCacheConfig, plan_full_steps

    best = None
    for warmup in (3, 2):
        for final in (1, 2):
            for interval in range(2, 21):
                cfg = ForecastCacheConfig(interval=interval, warmup_steps=warmup, final_full_steps=final)
                gap = abs(sum(plan_full_steps(sigmas, cfg)) - budget)
                if best is None or gap < best[0]:
                    best = (gap, (warmup, interval, final))
    return best[1]


IDENTICAL_DB = 100.0  # PSNR reported for bit-identical images (MSE 0), so the JSON stays finite


def psnr(a, b) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return IDENTICAL_DB if mse == 0 else min(IDENTICAL_DB, 10 * math.log10(1.0 / mse))


class EvalCounter:
    """Counts real transformer evaluations with a forward pre-hook on the first block."""

    def __init__(self, model):
        self.count = 0
        dm = model.model.diffusion_model
        blocks = getattr(dm, "double_blocks", None) or dm.transformer_blocks  # Flux / HunyuanVideo, Qwen-Image
        self.handle = blocks[0].register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.count += 1


def copy_input_wrapper(executor, *args, **kwargs):
    """Hand the inner wrappers a copy of x: EasyCache writes into its input (fp32 aliasing bug)."""
    return executor(args[0].clone(), *args[1:], **kwargs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 avoids OpenMP oversubscription stalls on a busy machine)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "micro_flux_forecast_cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from scripts.harness.comfy_env import bootstrap, load_custom_nodes

    base = bootstrap()
    load_custom_nodes()
    import torch

    torch.set_num_threads(args.threads)
    logging.getLogger("DiTAccel").setLevel(logging.WARNING)  # one summary line per run would drown the table
    log.setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.INFO)

    import comfy.patcher_extension
    import comfy.samplers
    import comfy.utils
    import nodes
    import torch
    from comfy_extras.nodes_easycache import EasyCacheNode

    from accel_core import ForecastCacheConfig
    from scripts.harness import shapes_data
    from scripts.harness.assets import TRAINED_FLUX, ensure_assets
    from scripts.harness.micro_models import load_micro_model
    from scripts.train_micro_flux import encode_prompts

    ensure_assets(base)
    comfy.utils.PROGRESS_BAR_ENABLED = False  # tqdm output would drown the table
    adapter = next(m for n, m in sys.modules.items() if n.endswith("nodes.adapter") and hasattr(m, "apply_forecast_cache"))
    model = load_micro_model(TRAINED_FLUX)
    prompts = list(shapes_data.PROMPTS[:: max(1, len(shapes_data.PROMPTS) // args.prompts)][: args.prompts])
    cond, pooled = encode_prompts(prompts + [""], cache=REPO / ".cache" / "bench_prompts.pt")
    positives = [[[cond[i:i + 1], {"pooled_output": pooled[i:i + 1], "guidance": 3.5}]] for i in range(len(prompts))]
    negative = [[cond[-1:], {"pooled_output": pooled[-1:], "guidance": 3.5}]]
    latent = torch.zeros(1, 16, 32, 32)
    cases = [(seed, p) for seed in range(args.seeds) for p in range(len(prompts))]

    def run(m):
        images, evals, seconds = [], 0, 0.0
        for seed, p in cases:
            counter = EvalCounter(m)
            start = time.perf_counter()
            out = nodes.KSampler().sample(m, 1000 + seed, args.steps, 1.0, "euler", "simple", positives[p], negative,
                                          {"samples": latent}, denoise=1.0)[0]["samples"]
            seconds += time.perf_counter() - start
            counter.handle.remove()
            evals += counter.count
            images.append(shapes_data.decode(out))
        return images, evals / len(cases), seconds

    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", args.steps).tolist()
    run(model)  # warm-up (allocator, first-call costs) so the baseline timing is fair
    base_images, base_evals, base_seconds = run(model)
    _, _, again_seconds = run(model)
    base_seconds = min(base_seconds, again_seconds)
    rows = []

    def record(name, budget_label, images, evals, seconds, note=""):
        scores = [psnr(a, b) for a, b in zip(images, base_images)]
        row = {
            "method": name, "budget": budget_label, "evaluations": evals,
            "evaluation_ratio": base_evals / evals, "wall_ratio": base_seconds / seconds,
            "psnr_mean": sum(scores) / len(scores), "psnr_min": min(scores), "note": note,
        }
        rows.append(row)
        log.info("%-28s %-18s evals %5.1f  x%.2f evals  x%.2f wall  PSNR %.2f dB (min %.2f)", name, budget_label,
                 evals, row["evaluation_ratio"], row["wall_ratio"], row["psnr_mean"], row["psnr_min"])

    for budget in BUDGETS:
        warmup, interval, final = schedule_for_budget(sigmas, budget)
        for name, settings in METHODS:
            config = ForecastCacheConfig(warmup_steps=warmup, interval=interval, final_full_steps=final, **settings)
            images, evals, seconds = run(adapter.apply_forecast_cache(model, config))
            record(name, f"~{budget}/{args.steps} (w{warmup} i{interval} f{final})", images, evals, seconds)

    for threshold in EASYCACHE_THRESHOLDS:
        guarded = model.clone()
        guarded.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "bench_copy_input",
                                     copy_input_wrapper)
        easy = EasyCacheNode.execute(guarded, threshold, 0.15, 0.95, False)[0]
        images, evals, seconds = run(easy)
        record("EasyCache (input-copy guard)", f"threshold {threshold}", images, evals, seconds,
               note="built-in EasyCache behind an input-copying wrapper (its in-place add corrupts fp32 runs)")

    meta = {
        "model": "trained micro FLUX (tests/assets/micro_flux_trained.safetensors), ComfyUI Flux class",
        "device": f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
                  f"{torch.get_num_threads()} threads",
        "sampler": f"KSampler euler / simple, {args.steps} steps, cfg 1, guidance 3.5, 32x32 latent (64x64 image)",
        "cases": f"{args.seeds} seeds x {len(prompts)} prompts: {prompts}",
        "baseline": {"evaluations": base_evals, "seconds_total": base_seconds},
        "metric": "PSNR (dB) of the decoded image vs the uncached image, mean and min over cases "
                  f"({IDENTICAL_DB:.0f} = bit-identical)",
        "command": "make bench  (.venv/bin/python bench/bench_forecast.py)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    args.out.with_suffix(".md").write_text(to_markdown(meta, rows))
    log.info("wrote %s.{json,md}", args.out)
    return 0


def to_markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"Model: {meta['model']}  ", f"Device: {meta['device']}  ", f"Sampling: {meta['sampler']}  ",
             f"Cases: {meta['cases']}  ", f"Metric: {meta['metric']}  ", f"Command: `{meta['command']}`", "",
             "| method | full-step budget | evaluations | eval ratio | wall ratio | PSNR mean (dB) | PSNR min (dB) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['budget']} | {r['evaluations']:.1f} | {r['evaluation_ratio']:.2f}x | "
                     f"{r['wall_ratio']:.2f}x | {r['psnr_mean']:.2f} | {r['psnr_min']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
