"""Calibrate L2P (learned linear predictor, output level) for a zoo model in a real ComfyUI.

Records uncached KSampler runs (every step's x, sigma and guided denoised output) on calibration
prompts / seeds that the benches hold out (ZooModel.calibration_prompts, seeds from 5000), simulates
each preset's full-step plan, chooses the history length and ridge by the held-back error (a quarter
of the trajectories left out), refits on all of them and saves one profile per preset:

  .venv/bin/python scripts/calibrate_l2p.py --model micro_flux [--presets balanced,fast --prompts 4 --seeds 2]

Writes <out>/l2p_<model>_<preset>.safetensors (default out: bench/results/l2p_profiles).
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


def record_trajectories(nodes, zm, cases, steps: int, sampler: str, scheduler: str):
    """Uncached runs of `cases`; returns one Trajectory per case (every step's model call)."""
    import comfy.patcher_extension
    import torch

    from accel_core.learned import Trajectory

    calls: list[tuple[float, torch.Tensor, torch.Tensor]] = []
    state: dict = {}

    def outer(executor, *args, **kwargs):
        sigmas = args[3] if len(args) > 3 else kwargs["sigmas"]
        state["sigmas"] = [float(s) for s in sigmas.flatten()]
        return executor(*args, **kwargs)

    def predict(executor, x, timestep, model_options, seed, *args, **kwargs):
        out = executor(x, timestep, model_options, seed, *args, **kwargs)
        calls.append((float(timestep.flatten().max()), x.detach().float().clone(), out.detach().float().clone()))
        return out

    model = zm.model.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "calibrate_l2p", outer)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "calibrate_l2p", predict)
    out = []
    for case in cases:
        calls.clear()
        nodes.KSampler().sample(model, case.seed, steps, case.cfg, sampler, scheduler, case.positive, case.negative,
                                case.latent, denoise=1.0)
        if len(calls) != steps:
            raise RuntimeError(f"calibrate_l2p: {len(calls)} model calls for {steps} steps; L2P calibration needs a "
                               f"one-call-per-step sampler (euler-type), not {sampler!r}")
        out.append(Trajectory(state["sigmas"], torch.stack([c[1] for c in calls]), torch.stack([c[2] for c in calls])))
    return out


def calibrate(nodes, zm, presets=("balanced", "fast"), prompts: int = 4, seeds: int = 2, steps: int = 50,
              sampler: str = "euler", scheduler: str = "simple", out_dir: Path = DEFAULT_OUT) -> dict[str, dict]:
    """Record, fit and save one profile per preset; returns {preset: {"path", "seconds", "validation", ...}}."""
    from accel_core.learned import model_fingerprint, save_l2p

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
        t0 = time.perf_counter()
        plan, budget = budget_header(name, sigmas)
        table, validation = choose_and_fit(trajectories, plan)
        header = {"family": zm.family, "fingerprint": fingerprint, "model": zm.name, "sampler": sampler,
                  "scheduler": scheduler, "sigmas": [round(s, 6) for s in sigmas], "cfg": cases[0].cfg,
                  "budget": budget,
                  "validation": validation,
                  "calibration": {"prompts": picks, "seeds": [CALIBRATION_SEED_OFFSET + s for s in range(seeds)],
                                  "trajectories": len(trajectories)}}
        path = save_l2p(Path(out_dir) / f"l2p_{zm.name}_{name}.safetensors", table, header)
        seconds = recorded + time.perf_counter() - t0
        results[name] = {"path": str(path), "bytes": path.stat().st_size, "seconds": round(seconds, 2),
                         "record_seconds": round(recorded, 2), "validation": validation}
        log.info("%s %s: %d evaluations, history %d, ridge %g, held-back error %.4f (output reuse %.4f), %d bytes, "
                 "%.1f s", zm.name, name, sum(plan), validation["history"], validation["ridge"],
                 validation["l2p_rel_error"], validation["reuse_rel_error"], path.stat().st_size, seconds)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="zoo model name (scripts/harness/zoo.py)")
    parser.add_argument("--presets", default="balanced,fast")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--scheduler", default="simple")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from bench.bench_zoo import load_model, setup_comfy

    started = time.perf_counter()
    nodes, _ = setup_comfy(args.threads)
    setup = time.perf_counter() - started
    results = calibrate(nodes, load_model(args.model), tuple(args.presets.split(",")), args.prompts, args.seeds,
                        args.steps, args.sampler, args.scheduler, args.out)
    for name, r in results.items():
        print(f"{args.model} {name}: {r['path']} ({r['bytes']} bytes), calibration {r['seconds']:.1f} s "
              f"(+ {setup:.1f} s ComfyUI start), held-back error {r['validation']['l2p_rel_error']:.4f} vs output "
              f"reuse {r['validation']['reuse_rel_error']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
