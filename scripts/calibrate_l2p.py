"""Calibrate L2P (learned linear predictor, output level) for a zoo model in a real ComfyUI.

Records uncached KSampler runs (every step's slope (x - denoised) / sigma; with plain CFG the
unconditional slope and the guidance slope (uncond - cond) / sigma, from a post-CFG hook) on calibration
prompts / seeds that the benches hold out (ZooModel.calibration_prompts, seeds from 5000), simulates
each preset's full-step plan, chooses the history length and ridge by the held-back error (a quarter
of the trajectories left out), refits on all of them and saves one profile per preset:

  .venv/bin/python scripts/calibrate_l2p.py --model micro_flux [--presets balanced,fast --prompts 4 --seeds 2]
  .venv/bin/python scripts/calibrate_l2p.py --model micro_qwen_image --layouts auto,guided,split

Writes <out>/l2p_<model>_<preset>.safetensors (layout "auto": split with plain CFG when
L2PFit.cfg_layout in accel_core/learned/calibrate.py says so, else guided) and
<out>/l2p_<model>_<preset>_<layout>.safetensors for an explicit layout (default out: bench/results/l2p_profiles).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))

from accel_core.learned.calibrate import HISTORIES, RIDGES, budget_header, choose_and_fit  # noqa: E402,F401

log = logging.getLogger("calibrate_l2p")

DEFAULT_OUT = REPO / "bench" / "results" / "l2p_profiles"
CALIBRATION_SEED_OFFSET = 5000  # the benches use seeds from 1000 (zoo.SEED_OFFSET)


def profile_key(preset: str, layout: str) -> str:
    """Result key and file-name suffix: "balanced" for the default layout, "balanced_split" otherwise."""
    return preset if layout == "auto" else f"{preset}_{layout}"


def record_trajectories(nodes, zm, cases, steps: int, sampler: str, scheduler: str):
    """Uncached runs of `cases`; one trajectory per case: a SplitTrajectory (uncond and guidance slopes)
    when every step had plain CFG, else a SlopeTrajectory (guided slope)."""
    import comfy.patcher_extension
    import torch

    from accel_core.learned import SlopeTrajectory, SplitTrajectory
    from accel_core.output.run import is_plain_cfg

    calls: list[tuple] = []  # (sigma, guided slope, (uncond slope, guidance slope, scale) or None)
    state: dict = {}

    def outer(executor, *args, **kwargs):
        sigmas = args[3] if len(args) > 3 else kwargs["sigmas"]
        state["sigmas"] = [float(s) for s in sigmas.flatten()]
        return executor(*args, **kwargs)

    def post_cfg(args):
        if args.get("uncond_denoised") is not None:
            state["branches"] = (args["cond_denoised"].detach(), args["uncond_denoised"].detach(),
                                 float(args["cond_scale"]))
        return args["denoised"]

    def predict(executor, x, timestep, model_options, seed, *args, **kwargs):
        state["branches"] = None
        out = executor(x, timestep, model_options, seed, *args, **kwargs)
        sigma = float(timestep.flatten().max())
        xf = x.detach().float()
        split = None
        if is_plain_cfg(out.detach(), state["branches"]):
            cond, uncond, scale = state["branches"]
            split = ((xf - uncond.float()) / sigma, (uncond.float() - cond.float()) / sigma, scale)
        calls.append((sigma, (xf - out.detach().float()) / sigma, split))
        return out

    model = zm.model.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "calibrate_l2p", outer)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "calibrate_l2p", predict)
    model.set_model_sampler_post_cfg_function(post_cfg)
    out = []
    for case in cases:
        calls.clear()
        nodes.KSampler().sample(model, case.seed, steps, case.cfg, sampler, scheduler, case.positive, case.negative,
                                case.latent, denoise=1.0)
        if len(calls) != steps:
            raise RuntimeError(f"calibrate_l2p: {len(calls)} model calls for {steps} steps; L2P calibration needs a "
                               f"one-call-per-step sampler (euler-type), not {sampler!r}")
        scales = {c[2][2] for c in calls if c[2] is not None}
        if all(c[2] is not None for c in calls) and len(scales) == 1:
            out.append(SplitTrajectory(state["sigmas"], torch.stack([c[2][0] for c in calls]),
                                       torch.stack([c[2][1] for c in calls]), scales.pop()))
        else:
            out.append(SlopeTrajectory(state["sigmas"], torch.stack([c[1] for c in calls])))
    return out


def calibrate(nodes, zm, presets=("balanced", "fast"), prompts: int = 4, seeds: int = 2, steps: int = 50,
              sampler: str = "euler", scheduler: str = "simple", out_dir: Path = DEFAULT_OUT,
              layouts=("auto",)) -> dict[str, dict]:
    """Record, fit and save one profile per preset and layout; returns {profile_key(preset, layout): {"path",
    "seconds", "validation", "layout", ...}}. An explicit layout the runs cannot give (split without CFG) is
    skipped with a log line."""
    from accel_core.learned import model_fingerprint, save_l2p
    from accel_core.learned.calibrate import fit_layout, resolve_layout

    started = time.perf_counter()
    picks = zm.calibration_prompts(prompts)
    held_out = set(zm.pick_prompts(prompts))
    if held_out & set(picks):
        raise RuntimeError(f"calibrate_l2p: {zm.name} has too few prompts to keep calibration and bench prompts apart")
    cases = zm.cases(prompts, seeds, prompts=picks, seed_offset=CALIBRATION_SEED_OFFSET)
    trajectories = record_trajectories(nodes, zm, cases, steps, sampler, scheduler)
    recorded = time.perf_counter() - started
    fingerprint = model_fingerprint(zm.model.model.diffusion_model.state_dict())
    sigmas = trajectories[0].sigmas
    results = {}
    for name in presets:
        plan, budget = budget_header(name, sigmas)
        for layout in layouts:
            t0 = time.perf_counter()
            try:
                resolve_layout(trajectories, layout)
            except ValueError as e:
                log.info("%s %s: layout %s skipped (%s)", zm.name, name, layout, e)
                continue
            tables, validation, used = fit_layout(trajectories, plan, layout)
            header = {"family": zm.family, "fingerprint": fingerprint, "model": zm.name, "sampler": sampler,
                      "scheduler": scheduler, "sigmas": [round(s, 6) for s in sigmas], "cfg": cases[0].cfg,
                      "budget": budget,
                      "validation": validation,
                      "calibration": {"prompts": picks, "seeds": [CALIBRATION_SEED_OFFSET + s for s in range(seeds)],
                                      "trajectories": len(trajectories)}}
            key = profile_key(name, layout)
            first = tables.get("guided", tables.get("uncond"))
            path = save_l2p(Path(out_dir) / f"l2p_{zm.name}_{key}.safetensors", first, header,
                            guidance=tables.get("guidance"))
            seconds = recorded + time.perf_counter() - t0
            results[key] = {"path": str(path), "bytes": path.stat().st_size, "seconds": round(seconds, 2),
                            "record_seconds": round(recorded, 2), "layout": used, "validation": validation}
            log.info("%s %s: %s layout, %d evaluations, history %s, ridge %s, held-back error %.4f (output reuse "
                     "%.4f), %d bytes, %.1f s", zm.name, key, used, sum(plan), validation["history"],
                     validation["ridge"], validation["l2p_rel_error"], validation["reuse_rel_error"],
                     path.stat().st_size, seconds)
    return results


def calibration_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every learned-forecaster calibration script takes (L2P, LESA)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True, help="zoo model name (scripts/harness/zoo.py)")
    parser.add_argument("--presets", default="balanced,fast")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--scheduler", default="simple")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser


def main() -> int:
    parser = calibration_parser(__doc__.splitlines()[0])
    parser.add_argument("--layouts", default="auto", help="comma list of auto, guided, split (CFG layout)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from bench.bench_zoo import load_model, setup_comfy

    started = time.perf_counter()
    nodes, _ = setup_comfy(args.threads)
    setup = time.perf_counter() - started
    results = calibrate(nodes, load_model(args.model), tuple(args.presets.split(",")), args.prompts, args.seeds,
                        args.steps, args.sampler, args.scheduler, args.out, tuple(args.layouts.split(",")))
    for name, r in results.items():
        print(f"{args.model} {name} ({r['layout']}): {r['path']} ({r['bytes']} bytes), calibration {r['seconds']:.1f} s "
              f"(+ {setup:.1f} s ComfyUI start), held-back error {r['validation']['l2p_rel_error']:.4f} vs output "
              f"reuse {r['validation']['reuse_rel_error']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
