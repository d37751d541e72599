"""Progressive Resolution (Fresco) on the model zoo: PSNR of the decoded images (video: every
frame) against the uncached full-resolution run of the same seed, work ratio in token-blocks and
FLOPs (measured on the micro model, and projected to FLUX.1-dev 1024 px), beside output reuse
every k (bench_zoo.output_reuse_every) interpolated to the same work ratio.

Usage (one thread; tune first, then validate with the chosen setting):
  OMP_NUM_THREADS=1 .venv/bin/python bench/bench_resolution.py --role tune
  OMP_NUM_THREADS=1 .venv/bin/python bench/bench_resolution.py --role validate --configs chosen
Writes bench/results/resolution_<role>.json (rows merged by model and row name).
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
from bench.bench_forecast import IDENTICAL_DB, EvalCounter, psnr  # noqa: E402
from bench.bench_zoo import output_reuse_every, setup_comfy  # noqa: E402

log = logging.getLogger("bench")

STEPS = 50
REUSE_K = (2, 3, 4, 5, 7, 10)
# Candidates (name -> node kwargs; "cache" names a Forecast Cache preset applied after the node). Every row
# states its transition: FRESCO is round 1's (the sketch's estimate re-noised, low-res steps at the schedule's
# sigma), POOLED the pooled sigma with that re-noise, CARRY round 2's (pooled sigma, the sketch's state carried
# up); the anchor call is off unless a row sets it. The node's defaults are CARRY with anchor 0.7.
FRESCO = dict(coarse_sigma="schedule", transition="renoise", anchor=0.0)
POOLED = dict(coarse_sigma="pooled", transition="renoise", anchor=0.0)
CARRY = dict(coarse_sigma="pooled", transition="carry", anchor=0.0)
TUNE_CONFIGS = {
    "f2 low0.2": dict(factor=2, low_res_share=0.2, positions="coarse", **FRESCO),
    "f2 low0.4": dict(factor=2, low_res_share=0.4, positions="coarse", **FRESCO),
    "f2 low0.6": dict(factor=2, low_res_share=0.6, positions="coarse", **FRESCO),
    "f2 low0.8": dict(factor=2, low_res_share=0.8, positions="coarse", **FRESCO),
    "f2 low0.4 bilinear": dict(factor=2, low_res_share=0.4, positions="coarse", upsample="bilinear", **FRESCO),
    "f2 low0.4 full_res positions": dict(factor=2, low_res_share=0.4, positions="full_res", **FRESCO),
    "f2 low0.2-0.6 adaptive": dict(factor=2, low_res_share=0.2, max_low_res_share=0.6, positions="coarse",
                                   converge_threshold=0.5, converged_share=0.9, **FRESCO),
    "f2 low0.4 + balanced": dict(factor=2, low_res_share=0.4, cache="balanced", **FRESCO),
    "f2 low0.6 + balanced": dict(factor=2, low_res_share=0.6, cache="balanced", **FRESCO),
    "f4-2 low0.6": dict(factor=2, low_res_share=0.6, coarse_stages=2, **FRESCO),
    "f4-2 low0.6 + balanced": dict(factor=2, low_res_share=0.6, coarse_stages=2, cache="balanced", **FRESCO),
    "f2 low0.2 + balanced": dict(factor=2, low_res_share=0.2, cache="balanced", **FRESCO),
    "balanced alone": dict(cache="balanced", low_res_share=0.0),
    "f2 low0.4 pooled": dict(factor=2, low_res_share=0.4, **POOLED),
    "f2 low0.2 pooled": dict(factor=2, low_res_share=0.2, **POOLED),
    "f2 low0.6 pooled": dict(factor=2, low_res_share=0.6, **POOLED),
    "f4-2 low0.6 pooled": dict(factor=2, low_res_share=0.6, coarse_stages=2, **POOLED),
    "f2 low0.4 pooled + balanced": dict(factor=2, low_res_share=0.4, cache="balanced", **POOLED),
    "f2 low0.6 pooled + balanced": dict(factor=2, low_res_share=0.6, cache="balanced", **POOLED),
    "f4-2 low0.6 pooled + balanced": dict(factor=2, low_res_share=0.6, coarse_stages=2, cache="balanced", **POOLED),
    "f2 low0.2 carry": dict(factor=2, low_res_share=0.2, **CARRY),
    "f2 low0.4 carry": dict(factor=2, low_res_share=0.4, **CARRY),
    "f2 low0.6 carry": dict(factor=2, low_res_share=0.6, **CARRY),
    "f2 low0.8 carry": dict(factor=2, low_res_share=0.8, **CARRY),
    "f4-2 low0.6 carry": dict(factor=2, low_res_share=0.6, coarse_stages=2, **CARRY),
    "f2 low0.4 carry + balanced": dict(factor=2, low_res_share=0.4, cache="balanced", **CARRY),
    "f2 low0.6 carry + balanced": dict(factor=2, low_res_share=0.6, cache="balanced", **CARRY),
    "f4-2 low0.6 carry + balanced": dict(factor=2, low_res_share=0.6, coarse_stages=2, cache="balanced", **CARRY),
    "video temporal low0.4 carry": dict(factor=2, low_res_share=0.4, video_reduction="temporal", **CARRY),
    "video auto low0.4 carry": dict(factor=2, low_res_share=0.4, video_reduction="auto", **CARRY),
    "video temporal low0.4": dict(factor=2, low_res_share=0.4, video_reduction="temporal", **FRESCO),
    "video joint low0.4": dict(factor=2, low_res_share=0.4, video_reduction="joint", **FRESCO),
    "video auto low0.4": dict(factor=2, low_res_share=0.4, video_reduction="auto", **FRESCO),
    "video temporal low0.4 pooled": dict(factor=2, low_res_share=0.4, video_reduction="temporal", **POOLED),
    "video auto low0.4 pooled": dict(factor=2, low_res_share=0.4, video_reduction="auto", **POOLED),
    "video temporal low0.6 + balanced": dict(factor=2, low_res_share=0.6, video_reduction="temporal", cache="balanced",
                                             **FRESCO),
    "f2 low0.2 carry anchor0.5": dict(CARRY, factor=2, low_res_share=0.2, anchor=0.5),
    "f2 low0.2 carry anchor0.7": dict(CARRY, factor=2, low_res_share=0.2, anchor=0.7),
    "f2 low0.2 carry anchor1": dict(CARRY, factor=2, low_res_share=0.2, anchor=1.0),
    "f2 low0.4 carry anchor0.5": dict(CARRY, factor=2, low_res_share=0.4, anchor=0.5),
    "f2 low0.4 carry anchor0.7": dict(CARRY, factor=2, low_res_share=0.4, anchor=0.7),
    "f2 low0.4 carry anchor1": dict(CARRY, factor=2, low_res_share=0.4, anchor=1.0),
    "f2 low0.4 carry anchor0.7 + balanced": dict(CARRY, factor=2, low_res_share=0.4, cache="balanced", anchor=0.7),
    "f4-2 low0.6 carry anchor0.7": dict(CARRY, factor=2, low_res_share=0.6, coarse_stages=2, anchor=0.7),
    "f4-2 low0.6 carry anchor0.7 + balanced": dict(CARRY, factor=2, low_res_share=0.6, coarse_stages=2,
                                                   cache="balanced", anchor=0.7),
    "video temporal low0.4 carry anchor0.7": dict(CARRY, factor=2, low_res_share=0.4, video_reduction="temporal",
                                                  anchor=0.7),
}
CHOSEN = "f2 low0.4 carry anchor0.7"  # the node's defaults, chosen on the tune models (docs/RESOLUTION.md)


def interpolate_reuse(reuse: list[tuple[float, float]], ratio: float) -> float | None:
    """PSNR of output reuse at `ratio` by linear interpolation between the measured k rows
    (ratio, psnr); None outside their range."""
    pts = sorted(reuse)
    for (r0, p0), (r1, p1) in zip(pts, pts[1:]):
        if r0 <= ratio <= r1:
            return p0 + (p1 - p0) * (ratio - r0) / (r1 - r0) if r1 > r0 else p0
    return None


def table(paths: list[Path]) -> str:
    """Markdown table of result files (docs/RESOLUTION.md)."""
    lines = ["| role | model | row | token-blocks | FLOPs | wall (same process) | FLUX-1024 token / FLOPs / attention | "
             "switch step | PSNR mean | PSNR worst | output reuse at same work |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        if not path.is_file():
            continue
        for r in json.loads(path.read_text())["rows"]:
            if "flux1024_token_ratio" in r:
                proj = (f"{r['flux1024_token_ratio']:.2f}x / {r['flux1024_flops_ratio']:.2f}x / "
                        f"{r['flux1024_attention_ratio']:.2f}x")
            else:  # output reuse / cache alone: same ratio at any size; a cache over stages: not projected
                proj = "n/a (cache)" if r.get("plan") else "same"
            same = r.get("output_reuse_psnr_same_work")
            switch = r.get("switch_steps")
            wall = f"{r['wall_ratio']:.2f}x" if "wall_ratio" in r else "-"
            lines.append(f"| {r['role']} | {r['model']} | {r['row']} | {r['token_ratio']:.2f}x | {r['flops_ratio']:.2f}x | "
                         f"{wall} | {proj} | {sorted(set(switch)) if switch else ''} | {r['psnr_mean']:.2f} | {r['psnr_min']:.2f} | "
                         f"{'' if same is None else f'{same:.2f}'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="tune", choices=("tune", "validate"))
    parser.add_argument("--models", default="", help="comma-separated zoo names (default: every model of --role "
                        "in the three families)")
    parser.add_argument("--configs", default="all", help="'all' (TUNE_CONFIGS), 'chosen', or comma-separated names")
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sdpa", action="store_true", help="torch SDPA attention (as on a GPU), not ComfyUI's CPU default")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--table", action="store_true", help="print the markdown table of the result files and exit")
    parser.add_argument("--table-files", default="tune,validate",
                        help="with --table: comma-separated suffixes of bench/results/resolution_<suffix>.json")
    args = parser.parse_args()
    if args.table:
        print(table([REPO / "bench" / "results" / f"resolution_{r}.json" for r in args.table_files.split(",")]))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    nodes, _ = setup_comfy(args.threads, sdpa=args.sdpa)
    import torch

    from accel_core.resolution.plan import ResolutionConfig, steps_for_share
    from accel_core.resolution.work import flux_size_work
    from scripts.harness.zoo import ZooModel, load_manifest

    hooks = next(m for n, m in sys.modules.items() if n.endswith("nodes.resolution_hooks") and hasattr(m, "RECENT_RUNS"))
    node = nodes.NODE_CLASS_MAPPINGS["DiTAccelProgressiveResolution"]
    manifest = load_manifest()
    families = ("flux", "qwen_image", "hunyuan_video")
    default_models = {"tune": ["micro_flux", "micro_qwen_image", "micro_hunyuan_video"],
                      "validate": ["flux_glyphs", "qwen_image_edit", "hunyuan_video_glyphs"]}
    names = [n for n in args.models.split(",") if n] or default_models[args.role]
    configs = (TUNE_CONFIGS if args.configs == "all" else
               {CHOSEN: TUNE_CONFIGS[CHOSEN]} if args.configs == "chosen" else
               {n: TUNE_CONFIGS[n] for n in args.configs.split(",")})
    out_path = args.out or REPO / "bench" / "results" / f"resolution_{args.role}.json"
    old = json.loads(out_path.read_text()) if out_path.is_file() else {}
    rows: list[dict] = old.get("rows", [])

    for name in names:
        zm = ZooModel(name)
        assert zm.family in families, zm.family
        cases = zm.cases(args.prompts, args.seeds)

        def run(m, staged: bool):
            images, evals, seconds, stats, cpu = [], 0, 0.0, [], 0.0
            for case in cases:
                counter = EvalCounter(m)
                start, cpu_start = time.perf_counter(), time.process_time()  # cpu: see bench_zoo.CaseRuns
                out = nodes.KSampler().sample(m, case.seed, STEPS, case.cfg, "euler", "simple", case.positive,
                                              case.negative, case.latent, denoise=1.0)[0]["samples"]
                seconds += time.perf_counter() - start
                cpu += time.process_time() - cpu_start
                counter.handle.remove()
                evals += counter.count
                images.append(zm.decode(out))
                if staged:
                    stats.append(hooks.RECENT_RUNS[-1])
            return images, evals / len(cases), (seconds, cpu), stats

        base_images, base_evals, base_seconds, _ = run(zm.model, False)

        def add(row_name, setting, result, token_ratio, flops_ratio, extra=None):
            images, evals, seconds, _ = result
            scores = [psnr(a, b) for a, b in zip(images, base_images)]
            row = {"model": name, "role": zm.role, "family": zm.family, "row": row_name, "setting": setting,
                   "resolution": list(zm.resolution), "evaluations": evals, "token_ratio": token_ratio,
                   "flops_ratio": flops_ratio, "wall_ratio": base_seconds[0] / seconds[0],
                   "cpu_ratio": base_seconds[1] / seconds[1],
                   "psnr_mean": statistics.fmean(scores), "psnr_min": min(scores),
                   "psnr_all": [round(s, 3) for s in scores], **(extra or {})}
            rows[:] = [r for r in rows if (r["model"], r["row"]) != (name, row_name)]
            rows.append(row)
            log.info("%-22s %-34s token x%.2f flops x%.2f wall x%.2f cpu x%.2f PSNR %6.2f (min %6.2f)", name,
                     row_name, token_ratio, flops_ratio, row["wall_ratio"], row["cpu_ratio"], row["psnr_mean"],
                     row["psnr_min"])
            return row

        reuse = []
        for k in REUSE_K:
            result = run(output_reuse_every(zm.model, k), False)
            ratio = base_evals / result[1]
            row = add(f"output reuse every {k}", f"steps 0, {k}, {2 * k}, ...", result, ratio, ratio)
            reuse.append((ratio, row["psnr_mean"]))
        forecast = nodes.NODE_CLASS_MAPPINGS["DiTAccelForecastCache"]
        for row_name, kw in configs.items():
            kw = dict(kw)
            cache = kw.pop("cache", None)
            if not kw.get("low_res_share"):  # the cache alone: work = model evaluations
                result = run(forecast.execute(zm.model, cache, "preset", "preset", 0, -1, -1, -1, 0.0, 1.0)[0], False)
                ratio = base_evals / result[1]
                add(row_name, f"Forecast Cache {cache}", result, ratio, ratio,
                    {"output_reuse_psnr_same_work": interpolate_reuse(reuse, ratio)})
                continue
            config = ResolutionConfig(**kw)
            staged = node.execute(zm.model, **kw)[0]
            if cache:
                staged = forecast.execute(staged, cache, "preset", "preset", 0, -1, -1, -1, 0.0, 1.0)[0]
            result = run(staged, True)
            stats = result[3]
            token = statistics.fmean(s["token_ratio"] for s in stats)
            flops = statistics.fmean(s["flops_ratio"] for s in stats)
            switch = [s.get("switch_step") for s in stats]
            extra = {"switch_steps": switch, "plan": stats[0].get("plan"), "positions": stats[0].get("positions"),
                     "video_choices": [s["video_choice"] for s in stats if "video_choice" in s],
                     "planned_switch": steps_for_share(STEPS, config.low_res_share),
                     "output_reuse_psnr_same_work": interpolate_reuse(reuse, token)}
            if not cache:  # the FLUX-1024 projection of a plan (with a cache it depends on the cache's choices)
                plan = stats[0]["plan"]
                projected = flux_size_work([(p[0] * (p[3] ** 0.5 if len(p) > 3 else 1), p[2] - p[1]) for p in plan])
                extra.update(flux1024_token_ratio=projected.token_ratio, flux1024_flops_ratio=projected.flops_ratio,
                             flux1024_attention_ratio=projected.attention_ratio)
            add(row_name, config.tag() + (f" + Forecast Cache {cache}" if cache else ""), result, token, flops, extra)
        meta = {
            "device": f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
                      f"{torch.get_num_threads()} thread(s)",
            "metric": "PSNR (dB) of the decoded image (video: every frame) vs the uncached full-resolution run of the "
                      f"same seed; mean / worst over cases ({IDENTICAL_DB:.0f} = identical)",
            "sampling": f"KSampler euler {STEPS} steps, simple scheduler, the model's own cfg",
            "cases": f"{args.prompts} prompts x {args.seeds} seeds per model",
            "attention": "sdpa" if args.sdpa else "comfy default",
            "work": "token_ratio / flops_ratio: measured on the micro model's calls (image + text + reference "
                    "tokens); flux1024_*: the same plan at FLUX.1-dev 1024 px (4096 image + 512 text tokens)",
        }
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    log.info("wrote %s", out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
