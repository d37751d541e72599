"""Speed/fidelity curves of every method on every family's trained micro model, through real
ComfyUI sampling (KSampler euler / simple, 50 steps), PSNR against the uncached run.

Per family (flux, qwen_image, hunyuan_video): uncached baseline per case (seeds x prompts), then
each method at several full-step budgets (fixed-schedule methods) or thresholds (SpeCa, which
reports the budget it reached). Model evaluations are counted at the first transformer block, so
skipped calls never count; SpeCa's probe blocks are reported separately as their cost in full
calls. Wall-clock ratios are measured in the same process against the uncached run (single
thread; on this 2-core CPU with other jobs running they are indicative only).

Usage: .venv/bin/python bench/bench_methods.py [--families flux,qwen_image,hunyuan_video] [--seeds 2] [--prompts 2]
Writes bench/results/methods_<family>_cpu.{json,md} and bench/results/methods_curves.png.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
from bench.bench_forecast import IDENTICAL_DB, EvalCounter, psnr, schedule_for_budget  # noqa: E402

log = logging.getLogger("bench")

STEPS = 50
BUDGETS = (16, 12, 9, 7)  # full steps of 50: about 3x, 4x, 5.5x, 7x fewer evaluations

# name -> config fields (schedule fields are added per budget)
FIXED_METHODS: dict[str, dict] = {
    "reuse": dict(method="reuse", order=0),
    "taylorseer o1": dict(method="taylorseer", order=1),
    "foca (step axis)": dict(method="foca", order=1, time_axis="step"),
    "foca (sigma axis)": dict(method="foca", order=1),
    "freqca (paper: hermite o2 high band, fixed)": dict(method="hicache", order=2, decomposition="freq",
                                                        split_select="fixed"),
    "freqca adaptive + taylorseer o1": dict(method="taylorseer", order=1, decomposition="freq"),
    "freqca adaptive + foca": dict(method="foca", order=1, time_axis="step", decomposition="freq"),
    "svd-cache (fixed) + taylorseer o1": dict(method="taylorseer", order=1, decomposition="svd",
                                              split_select="fixed"),
    "svd-cache adaptive + taylorseer o1": dict(method="taylorseer", order=1, decomposition="svd"),
    "svd-cache adaptive + foca (sigma axis)": dict(method="foca", order=1, decomposition="svd"),
    "svd-cache adaptive + foca": dict(method="foca", order=1, time_axis="step", decomposition="svd"),
}
HYCA_PROFILES = {"flux": REPO / "tests" / "assets" / "hyca_micro_flux.safetensors",
                 "qwen_image": REPO / "tests" / "assets" / "hyca_micro_qwen_image.safetensors",
                 "hunyuan_video": REPO / "tests" / "assets" / "hyca_micro_hunyuan_video.safetensors"}
# SpeCa: the forecaster drafts, the probe decides; interval = longest forecast run.
SPECA_BASE = dict(method="foca", order=1, time_axis="step", interval=12, warmup_steps=3, final_full_steps=1,
                  min_forecasts=2, verify_decay=0.5, verify_floor=0.005)
SPECA_VARIANTS = {
    "speca last_block rollback": dict(verify="last_block", verify_mode="rollback"),
    "speca last_block next_step": dict(verify="last_block", verify_mode="next_step"),
    "speca first_block rollback": dict(verify="first_block", verify_mode="rollback"),
    "speca last_block rollback, svd-cache adaptive + foca draft": dict(verify="last_block", verify_mode="rollback",
                                                                       decomposition="svd"),
    "speca last_block rollback, taylorseer o1 draft": dict(verify="last_block", verify_mode="rollback",
                                                           method="taylorseer", time_axis="sigma"),
}
SPECA_THRESHOLDS = (0.02, 0.05, 0.1, 0.2)
FLUX_DEPTH = 57  # blocks of FLUX.1-dev: a probe costs 1/57 of a call there


class Family:
    """Model, conditioning, latent and decode of one family's trained micro model."""

    def __init__(self, name: str, prompts: int):
        import torch

        from scripts.harness import shapes_data, shapes_video
        from scripts.harness.assets import TRAINED_MODELS
        from scripts.harness.micro_models import load_micro_model
        from scripts.harness.training import encode_prompts

        self.name = name
        self.model = load_micro_model(TRAINED_MODELS[name][0])
        picks = list(shapes_data.PROMPTS[:: max(1, len(shapes_data.PROMPTS) // prompts)][:prompts])
        self.prompts = picks
        cond, pooled = encode_prompts(picks + [""], cache=REPO / ".cache" / f"bench_prompts_{name}.pt")

        def c(i, guidance=None):
            extras = {"pooled_output": pooled[i:i + 1]}
            if guidance is not None:
                extras["guidance"] = guidance
            return [[cond[i:i + 1], extras]]

        if name == "flux":
            self.cfg, self.latent = 1.0, torch.zeros(1, 16, 32, 32)
            self.positives = [c(i, 3.5) for i in range(len(picks))]
            self.negative = c(len(picks), 3.5)
            self.decode = shapes_data.decode
            self.sampling = "cfg 1, guidance 3.5, 32x32 latent (64x64 image)"
        elif name == "qwen_image":
            self.cfg, self.latent = 3.0, torch.zeros(1, 16, 1, 32, 32)
            self.positives = [c(i) for i in range(len(picks))]
            self.negative = c(len(picks))
            self.decode = lambda lat: shapes_data.decode(lat[:, :, 0])
            self.sampling = "true CFG 3 (empty negative prompt: two branches), 32x32 latent (64x64 image)"
        else:
            self.cfg, self.latent = 1.0, torch.zeros(1, 16, shapes_video.FRAMES, 16, 16)
            self.positives = [c(i, 6.0) for i in range(len(picks))]
            self.negative = c(len(picks), 6.0)
            self.decode = shapes_video.decode_frames
            self.sampling = f"guidance 6, {shapes_video.FRAMES} latent frames of 16x16 (32x32 frames)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="flux,qwen_image,hunyuan_video")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one budget, fewer methods (smoke run)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default="", help="method names to run, separated by semicolons (default: all)")
    parser.add_argument("--append", action="store_true",
                        help="merge into the existing results file (rows of the same method and setting replaced)")
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from scripts.harness.comfy_env import bootstrap, load_custom_nodes

    base = bootstrap()
    load_custom_nodes()
    import torch

    torch.set_num_threads(args.threads)
    logging.getLogger("DiTAccel").setLevel(logging.WARNING)
    import comfy.samplers
    import comfy.utils
    import nodes

    from accel_core import ForecastCacheConfig
    from scripts.harness.assets import ensure_assets

    ensure_assets(base)
    comfy.utils.PROGRESS_BAR_ENABLED = False
    adapter = next(m for n, m in sys.modules.items() if n.endswith("nodes.adapter") and hasattr(m, "apply_forecast_cache"))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    budgets = (9,) if args.quick else BUDGETS
    all_rows = {}
    for family_name in args.families.split(","):
        fam = Family(family_name, args.prompts)
        cases = [(seed, p) for seed in range(args.seeds) for p in range(len(fam.prompts))]

        def run(m):
            images, evals, seconds, stats = [], 0, 0.0, []
            for seed, p in cases:
                counter = EvalCounter(m)
                start = time.perf_counter()
                out = nodes.KSampler().sample(m, 1000 + seed, STEPS, fam.cfg, "euler", "simple", fam.positives[p],
                                              fam.negative, {"samples": fam.latent}, denoise=1.0)[0]["samples"]
                seconds += time.perf_counter() - start
                counter.handle.remove()
                evals += counter.count
                images.append(fam.decode(out))
                if m is not fam.model:
                    stats.append(adapter.RECENT_RUNS[-1])
                    if "-vf" in stats[-1]["tag"]:
                        # An accepted first-block probe runs block 0 without a model evaluation; a rolled-back
                        # one becomes the first block of the computed call, which is one.
                        evals -= stats[-1]["probes"] - stats[-1]["rollbacks"]
            return images, evals / len(cases), seconds, stats

        run(fam.model)  # warm-up
        base_images, base_evals, base_seconds, _ = run(fam.model)
        base_seconds = min(base_seconds, run(fam.model)[2])
        sigmas = comfy.samplers.calculate_sigmas(fam.model.get_model_object("model_sampling"), "simple", STEPS).tolist()
        rows = []

        def record(name, label, config, result):
            images, evals, seconds, stats = result
            scores = [psnr(a, b) for a, b in zip(images, base_images)]
            probes = sum(s.get("probes", 0) for s in stats) / max(1, len(stats))
            probe_calls = sum(s.get("probe_cost_calls", 0.0) for s in stats) / max(1, len(stats))
            row = {"method": name, "setting": label, "tag": config.tag(), "evaluations": evals,
                   "evaluation_ratio": base_evals / evals, "wall_ratio": base_seconds / seconds,
                   "psnr_mean": sum(scores) / len(scores), "psnr_min": min(scores),
                   "probes": probes, "probe_cost_calls": probe_calls,
                   "effective_ratio_flux_depth": base_evals / (evals + probes / FLUX_DEPTH),
                   "rejected": sum(s.get("rejected", 0) for s in stats) / max(1, len(stats)),
                   "cache_bytes_per_branch": max((max(s["branch_cache_bytes"].values(), default=0) for s in stats),
                                                 default=0)}
            rows.append(row)
            log.info("%-14s %-44s %-16s evals %5.1f x%.2f  wall x%.2f  PSNR %6.2f (min %6.2f)%s", family_name, name,
                     label, evals, row["evaluation_ratio"], row["wall_ratio"], row["psnr_mean"], row["psnr_min"],
                     f"  probes {probes:.1f} (= {probe_calls:.2f} calls), rejected {row['rejected']:.1f}"
                     if probes else "")

        methods = dict(FIXED_METHODS)
        if family_name == "hunyuan_video":  # the 3-D vs per-frame choice of the video transform, measured
            methods["freqca (paper) per-frame 2d"] = dict(FIXED_METHODS["freqca (paper: hermite o2 high band, fixed)"],
                                                          video_transform="2d")
            methods["freqca adaptive + foca, per-frame 2d"] = dict(FIXED_METHODS["freqca adaptive + foca"],
                                                                   video_transform="2d")
        if HYCA_PROFILES[family_name].is_file():
            from accel_core.learned import register_profile_dir

            register_profile_dir(HYCA_PROFILES[family_name].parent)  # profiles are read from registered folders
            # Profiles are calibrated on the step axis (see the profile metadata).
            methods["hyca (calibrated profile)"] = dict(method="hyca", time_axis="step",
                                                        hyca_profile=str(HYCA_PROFILES[family_name]))
        speca = dict(SPECA_VARIANTS)
        if args.quick:
            methods = {k: methods[k] for k in list(methods)[:2]}
        if args.only:
            wanted = {name.strip() for name in args.only.split(";")}
            methods = {k: v for k, v in methods.items() if k in wanted}
            speca = {k: v for k, v in speca.items() if k in wanted}
        for budget in budgets:
            warmup, interval, final = schedule_for_budget(sigmas, budget)
            for name, settings in methods.items():
                config = ForecastCacheConfig(warmup_steps=warmup, interval=interval, final_full_steps=final, **settings)
                record(name, f"~{budget}/{STEPS} (w{warmup} i{interval} f{final})", config,
                       run(adapter.apply_forecast_cache(fam.model, config)))
        thresholds = SPECA_THRESHOLDS[1:2] if args.quick else SPECA_THRESHOLDS
        for name, variant in speca.items():
            for tau in thresholds:
                config = ForecastCacheConfig(**{**SPECA_BASE, **variant}, verify_threshold=tau)
                record(name, f"tau0 {tau:g}", config, run(adapter.apply_forecast_cache(fam.model, config)))

        meta = {
            "family": family_name,
            "model": f"trained micro {family_name} (tests/assets/micro_{family_name}_trained.safetensors), "
                     "ComfyUI's own model class",
            "device": f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, 1 thread",
            "sampler": f"KSampler euler / simple, {STEPS} steps, {fam.sampling}",
            "cases": f"{args.seeds} seeds x {len(fam.prompts)} prompts: {fam.prompts}",
            "baseline": {"evaluations": base_evals, "seconds_total": base_seconds},
            "metric": "PSNR (dB) of the decoded image (video: all frames) vs the uncached run, mean and min "
                      f"over cases ({IDENTICAL_DB:.0f} = identical)",
            "command": f".venv/bin/python bench/bench_methods.py --families {family_name} --seeds {args.seeds} "
                       f"--prompts {args.prompts}",
        }
        out = args.out_dir / f"methods_{family_name}_cpu"
        if args.append and out.with_suffix(".json").is_file():
            new_keys = {(r["method"], r["setting"]) for r in rows}
            old = json.loads(out.with_suffix(".json").read_text())
            rows = [r for r in old["rows"] if (r["method"], r["setting"]) not in new_keys] + rows
            meta["command"] = old["meta"]["command"] + f"; then {meta['command']} --only '{args.only}' --append"
            meta["appended_baseline"] = meta.pop("baseline")
            meta["baseline"] = old["meta"]["baseline"]
        out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        out.with_suffix(".md").write_text(to_markdown(meta, rows))
        all_rows[family_name] = rows
        log.info("wrote %s.{json,md}", out)
    return 0


def to_markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"# Methods on the trained micro {meta['family']} (CPU)", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k != "family"]
    lines += ["", "| method | setting | evaluations | eval ratio | wall ratio | PSNR mean | PSNR min | probes "
              "(cost in calls) | cache per branch |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        probes = f"{r['probes']:.1f} ({r['probe_cost_calls']:.2f}), {r['rejected']:.1f} rejected" if r["probes"] else ""
        lines.append(f"| {r['method']} | {r['setting']} | {r['evaluations']:.1f} | {r['evaluation_ratio']:.2f}x | "
                     f"{r['wall_ratio']:.2f}x | {r['psnr_mean']:.2f} | {r['psnr_min']:.2f} | {probes} | "
                     f"{r['cache_bytes_per_branch'] / 1024:.0f} KiB |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
