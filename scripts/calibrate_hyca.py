"""Calibrate a HyCa profile (per-channel solver map) on real, uncached ComfyUI runs.

Samples a micro model with ComfyUI's KSampler for a few prompts and seeds, recording per model call
the final-hidden residual the forecast cache stores (last block's image tokens minus the first
block's image-token input), then runs accel_core.learned.hyca_calibrate along the full-step plan of the
chosen schedule and saves the profile (the shared learned-profile format, method hyca, with the
weights' fingerprint). The same recording and closed loop run from the GUI: Calibrate Forecasts with
method hyca (docs/CALIBRATION.md); this script is for benchmarks. With --evaluate it also samples held-out prompts/seeds
through the Forecast Cache with the new profile and with each single solver at the same schedule,
and prints PSNR against the uncached images (the trained micro FLUX decodes exactly, see
scripts/harness/shapes_data.py).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/calibrate_hyca.py \
        [--family flux|qwen_image|hunyuan_video] [--model FILE] [--out tests/assets/hyca_micro_<family>.safetensors] \
        [--preset balanced] [--intervals 4 6 7 8 12] [--steps 50] [--seeds 0 1] [--prompts 8] [--clusters 8] \
        [--evaluate [--eval-intervals 7 12]]

Recording only reads the blocks (its own patches_replace["dit"] hooks on the first and last block),
so the run is the uncached one. Reference-token edits (Kontext, Qwen-Image-Edit) are not supported
here: calibrate on plain text-to-image runs.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # appended: the pack's nodes/ must not shadow ComfyUI's nodes

from scripts.harness import comfy_env  # noqa: E402

log = logging.getLogger("calibrate_hyca")

CALIBRATION_SEED_BASE = 5000  # calibration seeds differ from the bench/evaluation seeds (1000 + i)
EVAL_SEED_BASE = 1000


def pack_module(name: str):
    """A module of the pack as ComfyUI loaded it (its name depends on the custom_nodes folder)."""
    comfy_env.load_custom_nodes()
    return next(mod for key, mod in list(sys.modules.items())
                if key.endswith(f"nodes.{name}") and "dit_accel" in key)


# ------------------------------------------------------------------------------------ recording
def record_run(model, positive, negative, seed: int, steps: int, sampler: str, scheduler: str,
               latent: torch.Tensor, cfg: float = 1.0, max_tokens: int = 0) -> dict:
    """One uncached KSampler run, unchanged by the recording (the Calibrate node's hooks,
    nodes/hyca_calibration.py).

    Returns {"values": [T, B, N, C] (CFG branches stacked on B), "sigmas": [T], "sample_sigmas": [...],
    "samples": final latent, "family", "tokens": kept token indices or None, "branches"}. With
    max_tokens > 0 a fixed seeded subset of image tokens is kept (per-channel errors are token
    averages, so a subset estimates them without the memory of full-size models).
    """
    import nodes

    from accel_core import spec_for_class

    hyca_gui = pack_module("hyca_calibration")
    m = model.clone()
    spec = spec_for_class(type(m.model.diffusion_model).__name__)
    hyca_gui.install_hooks(m, spec, m.model.diffusion_model)
    recording = hyca_gui.HiddenRecording(seed, max_tokens)
    m.model_options.setdefault("transformer_options", {})[hyca_gui.HIDDEN_KEY] = recording
    out = nodes.KSampler().sample(m, seed, steps, cfg, sampler, scheduler, positive, negative,
                                  {"samples": latent}, denoise=1.0)[0]["samples"]
    values, sigmas, branches = recording.values()
    return {"values": values, "sigmas": sigmas, "sample_sigmas": recording.sample_sigmas, "samples": out,
            "family": spec.family, "tokens": recording.tokens, "branches": branches}


def to_trajectory(run: dict, time_axis: str):
    """A recorded run as a calibration Trajectory on the config's time axis (same mapping as the engine)."""
    from accel_core.learned.hyca_calibrate import trajectory_from_calls

    return trajectory_from_calls(run["values"], run["sigmas"], run["sample_sigmas"], time_axis)


# ------------------------------------------------------------------------------------ families
# Sampling settings of each family's trained micro model (as bench/bench_methods.py samples them).
FAMILIES = {
    "flux": dict(latent=(1, 16, 32, 32), cfg=1.0, guidance=3.5,
                 note="cfg 1, guidance 3.5, 32x32 latent"),
    "qwen_image": dict(latent=(1, 16, 1, 32, 32), cfg=3.0, guidance=None,
                       note="true CFG 3 with an empty negative prompt (two branches), 32x32 latent"),
    "hunyuan_video": dict(latent=(1, 16, 4, 16, 16), cfg=1.0, guidance=6.0,
                          note="guidance 6, 4 latent frames of 16x16"),
}


def decode(family: str, latent: torch.Tensor) -> torch.Tensor:
    from scripts.harness import shapes_data, shapes_video

    if family == "qwen_image":
        return shapes_data.decode(latent[:, :, 0])
    if family == "hunyuan_video":
        return shapes_video.decode_frames(latent)
    return shapes_data.decode(latent)


# ------------------------------------------------------------------------------------ evaluation
def evaluate(model, family: str, profile_path: Path, schedule: dict, cases, steps: int, sampler: str,
             scheduler: str, latent: torch.Tensor, negative, cfg: float) -> list[dict]:
    """PSNR (decoded image vs uncached) and full evaluations of HyCa and each single solver."""
    import nodes

    from accel_core import ForecastCacheConfig
    from accel_core.learned.hyca_profile import SOLVERS
    from accel_core.learned import register_profile_dir

    adapter = pack_module("adapter")
    register_profile_dir(Path(profile_path).parent)  # Forecast Cache reads profiles from registered folders only
    methods = [("hyca", dict(method="hyca", hyca_profile=str(profile_path)))]
    methods += [(name, dict(method=m, order=o)) for name, (m, o) in SOLVERS.items()]

    def images(m):
        out = []
        for positive, seed in cases:
            lat = nodes.KSampler().sample(m, seed, steps, cfg, sampler, scheduler, positive, negative,
                                          {"samples": latent}, denoise=1.0)[0]["samples"]
            out.append(decode(family, lat))
        return out

    base = images(model)
    rows = []
    for name, settings in methods:
        config = ForecastCacheConfig(**schedule, **settings)
        got = images(adapter.apply_forecast_cache(model, config))
        runs = list(adapter.RECENT_RUNS)[-len(cases):]  # one summary per run (a bounded deque)
        scores = [_psnr(a, b) for a, b in zip(got, base)]
        computed = sum(r.get("computed_evaluations", 0) for r in runs) / max(1, len(runs))
        rows.append({"method": name, "psnr_mean": sum(scores) / len(scores), "psnr_min": min(scores),
                     "full_evaluations": computed, "psnr": [round(x, 2) for x in scores]})
        log.info("%-14s PSNR %.2f dB (min %.2f), %.1f full evaluations", name, rows[-1]["psnr_mean"],
                 rows[-1]["psnr_min"], computed)
    return rows


def closed_loop(model, profile, result, schedule: dict, cases, args, latent, negative, cfg: float):
    """Per-cluster solvers chosen by sampling on calibration cases (MSE of the final latent vs uncached)."""
    import dataclasses

    import nodes

    from accel_core import ForecastCacheConfig
    from accel_core.learned.hyca_closed_loop import closed_loop_search
    from accel_core.learned.hyca_profile import in_memory

    adapter = pack_module("adapter")

    def latents(m):
        return [nodes.KSampler().sample(m, seed, args.steps, cfg, args.sampler, args.scheduler, positive, negative,
                                        {"samples": latent}, denoise=1.0)[0]["samples"] for positive, seed in cases]

    truth = latents(model)

    def score(choice):
        candidate = dataclasses.replace(profile, solver_index=torch.tensor(choice)[profile.cluster_index.long()])
        with in_memory(candidate) as name:  # lent to Forecast Cache, no file written
            config = ForecastCacheConfig(**schedule, method="hyca", hyca_profile=name)
            got = latents(adapter.apply_forecast_cache(model, config))
        return [float(((a.float() - b.float()) ** 2).mean()) for a, b in zip(got, truth)]

    started = time.perf_counter()
    found = closed_loop_search(score, result.solvers, result.cluster_sizes, open_loop=result.cluster_solver,
                               progress=lambda d, t: log.info("closed loop: %d / %d candidates", d, t))
    info = dict(profile.info)
    info["closed_loop"] = {
        "start": found.start, "mean_mse": found.mean, "worst_mse": found.worst, "candidates": found.evaluations,
        "cases": len(cases), "seconds": round(time.perf_counter() - started, 1),
        "cluster_solvers_open_loop": [result.solvers[s] for s in result.cluster_solver],
        "cluster_solvers": [result.solvers[s] for s in found.cluster_solver],
        "metric": "MSE of the final latent vs the uncached run, calibration cases",
    }
    info["cluster_solvers"] = info["closed_loop"]["cluster_solvers"]
    index = found.solver_index(profile.cluster_index)
    info["channel_counts"] = {name: int((index == k).sum()) for k, name in enumerate(result.solvers)}
    log.info("closed loop chose %s (start %s) in %.1f s", info["cluster_solvers"], found.start,
             info["closed_loop"]["seconds"])
    return dataclasses.replace(profile, solver_index=index, info=info)


def file_digest(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256: tells whether a profile matches the weights it ships with."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 100.0 if mse == 0 else min(100.0, 10 * math.log10(1.0 / mse))


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=sorted(FAMILIES), default="flux")
    ap.add_argument("--model", type=Path, default=None, help="micro model file (default: the family's trained one)")
    ap.add_argument("--out", type=Path, default=None,
                    help="profile to write (default tests/assets/hyca_micro_<family>.safetensors)")
    ap.add_argument("--preset", default="balanced", help="schedule (interval, warm-up, final steps, time axis) "
                                                         "taken from this Forecast Cache preset")
    ap.add_argument("--intervals", type=int, nargs="+", default=None,
                    help="calibrate for these intervals together (one profile for several full-step budgets; "
                         "default: the preset's interval)")
    ap.add_argument("--time-axis", choices=("sigma", "step"), default=None, help="override the preset's axis")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--scheduler", default="simple")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="calibration seeds (offset by 5000)")
    ap.add_argument("--prompts", type=int, default=8, help="calibration prompts from the shapes prompt set")
    ap.add_argument("--clusters", type=int, default=8)
    ap.add_argument("--kmeans-seed", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=0, help="keep a seeded subset of image tokens (0 = all)")
    ap.add_argument("--evaluate", action="store_true", help="also compare HyCa with each single solver on "
                                                              "held-out prompts and seeds (closed loop, PSNR)")
    ap.add_argument("--eval-seeds", type=int, default=3)
    ap.add_argument("--eval-intervals", type=int, nargs="+", default=None,
                    help="intervals to evaluate at (default: the preset's)")
    ap.add_argument("--closed-loop", action="store_true",
                    help="choose each cluster's solver by sampling for real on calibration cases (closed loop) "
                         "instead of by open-loop forecast error (accel_core/learned/hyca_closed_loop.py)")
    ap.add_argument("--closed-loop-cases", type=int, default=4, help="calibration cases the closed loop samples")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    base = comfy_env.bootstrap()
    torch.set_num_threads(args.threads)
    import comfy.utils

    from accel_core import plan_full_steps, preset
    from accel_core.learned.hyca_calibrate import calibrate
    from accel_core.learned.hyca_profile import save_profile
    from accel_core.learned import model_fingerprint
    from scripts.harness import shapes_data
    from scripts.harness.assets import TRAINED_MODELS, ensure_assets
    from scripts.harness.micro_models import load_micro_model
    from scripts.harness.training import encode_prompts, rel

    ensure_assets(base)
    comfy.utils.PROGRESS_BAR_ENABLED = False
    logging.getLogger("DiTAccel").setLevel(logging.WARNING)
    fam = FAMILIES[args.family]
    model_path = args.model or TRAINED_MODELS[args.family][0]
    out_path = args.out or REPO / "tests" / "assets" / f"hyca_micro_{args.family}.safetensors"
    model = load_micro_model(model_path)

    config = preset(args.preset)
    if args.time_axis:
        config = config.replace(time_axis=args.time_axis)
    intervals = args.intervals or [config.interval]
    schedule = {"warmup_steps": config.warmup_steps, "final_full_steps": config.final_full_steps,
                "time_axis": config.time_axis}

    # Calibration prompts avoid the evaluation/bench prompts (PROMPTS[::30]).
    all_prompts = list(shapes_data.PROMPTS)
    eval_prompts = all_prompts[:: max(1, len(all_prompts) // 2)][:2]
    spread = all_prompts[5::15] + all_prompts[10::15] + all_prompts[1::15]  # shapes and colours mixed
    calib_prompts = [p for p in spread if p not in eval_prompts][: args.prompts]
    cond, pooled = encode_prompts(calib_prompts + eval_prompts + [""], cache=REPO / ".cache" / "hyca_prompts.pt")

    def conditioning(i):
        extras = {"pooled_output": pooled[i:i + 1]}
        if fam["guidance"] is not None:
            extras["guidance"] = fam["guidance"]
        return [[cond[i:i + 1], extras]]

    conds = [conditioning(i) for i in range(len(cond))]
    negative = conds[-1]
    latent = torch.zeros(fam["latent"])

    started = time.perf_counter()
    runs = []
    for p, text in enumerate(calib_prompts):
        for seed in args.seeds:
            runs.append(record_run(model, conds[p], negative, CALIBRATION_SEED_BASE + seed, args.steps,
                                   args.sampler, args.scheduler, latent, cfg=fam["cfg"], max_tokens=args.max_tokens))
            log.info("recorded %r seed %d: %s", text, CALIBRATION_SEED_BASE + seed, tuple(runs[-1]["values"].shape))
    record_s = time.perf_counter() - started
    sample_sigmas = runs[0]["sample_sigmas"]
    plans = [plan_full_steps(sample_sigmas, config.replace(interval=i)) for i in intervals]
    started = time.perf_counter()
    result = calibrate([to_trajectory(r, config.time_axis) for r in runs], plans, config,
                       clusters=args.clusters, seed=args.kmeans_seed)
    fit_s = time.perf_counter() - started
    info = {  # the shared profile header (accel_core/learned/profile.py) plus this script's record
        "fingerprint": model_fingerprint(model.model.diffusion_model.state_dict()),
        "sigmas": [round(x, 6) for x in sample_sigmas],
        "budget": {"preset": args.preset, "intervals": intervals,
                   "full_steps": [i for i, f in enumerate(plans[0]) if f]},
        "validation": {"metric": "relative L2 of the open-loop forecast, leave one trajectory out", **result.holdout},
        "model_file": rel(model_path), "model_sha256": file_digest(model_path),
        "steps": args.steps, "sampler": args.sampler, "scheduler": args.scheduler,
        "sampling": fam["note"], "cfg": fam["cfg"], "preset": args.preset,
        "schedule": {**schedule, "intervals": intervals, "full_steps": [sum(p) for p in plans]},
        "prompts": calib_prompts, "seeds": [CALIBRATION_SEED_BASE + s for s in args.seeds],
        "clusters": args.clusters, "kmeans_seed": args.kmeans_seed, "max_tokens": args.max_tokens,
        "quantity": "final-hidden residual (last block image tokens - first block image-token input)",
        "error": "relative L2 of the open-loop forecast over forecast steps",
    }
    profile = result.to_profile(runs[0]["family"], info)
    if args.closed_loop:
        cases = [(conds[p], CALIBRATION_SEED_BASE + seed) for p in range(len(calib_prompts))
                 for seed in args.seeds][: args.closed_loop_cases]
        profile = closed_loop(model, profile, result, {**schedule, "interval": intervals[0]}, cases, args, latent,
                              negative, fam["cfg"])
    path = save_profile(out_path, profile)
    log.info("recorded %d runs in %.1f s, calibrated in %.1f s; wrote %s (%d bytes)", len(runs), record_s, fit_s,
             path, path.stat().st_size)
    sys.stdout.write(f"\nHyCa calibration: {runs[0]['family']} ({fam['note']}), {args.steps} {args.sampler}/"
                     f"{args.scheduler} steps, schedule {schedule} at intervals {intervals} "
                     f"({[sum(p) for p in plans]} full steps), {len(runs)} runs x {runs[0]['branches']} branch(es), "
                     f"{result.forecast_steps} forecast steps each\n\n{result.table()}\n")
    if args.evaluate:
        cases = [(conds[len(calib_prompts) + p], EVAL_SEED_BASE + s)
                 for s in range(args.eval_seeds) for p in range(len(eval_prompts))]
        for interval in args.eval_intervals or [config.interval]:
            rows = evaluate(model, args.family, path, {**schedule, "interval": interval}, cases, args.steps,
                            args.sampler, args.scheduler, latent, negative, fam["cfg"])
            lines = ["", f"Closed loop at interval {interval}, held-out prompts {eval_prompts} x seeds "
                         f"{[EVAL_SEED_BASE + s for s in range(args.eval_seeds)]}: PSNR of the decoded output vs "
                         "uncached", "", "| method | full evaluations | PSNR mean (dB) | PSNR min (dB) |",
                     "|---|---|---|---|"]
            lines += [f"| {r['method']} | {r['full_evaluations']:.1f} | {r['psnr_mean']:.2f} | "
                      f"{r['psnr_min']:.2f} |" for r in rows]
            sys.stdout.write("\n".join(lines) + "\n\n" + json.dumps(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
