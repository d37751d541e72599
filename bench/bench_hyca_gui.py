"""Closed-loop HyCa through the GUI path: calibration time, and the profile against FoCa and output reuse.

Per model: the Calibrate Forecasts node (method hyca) on the zoo model, `--runs` uncached KSampler runs on
calibration prompts and seeds (5000+, prompts half a stride away from the bench's); the last run fits the
profile (closed loop, progress bar) inside its KSampler call, as in the GUI. Timed: every run's wall clock
(recording = the runs before the last; fit = the last run minus a recorded run). Then on the bench's
held-out cases (zoo prompts, seeds 1000+), PSNR of the decoded output against the uncached run for the
profile through HyCa Profile -> Forecast Cache, FoCa at the same hidden-state schedule, the training-free
preset and output reuse at the same budget.

  OMP_NUM_THREADS=1 .venv/bin/python bench/bench_hyca_gui.py --models micro_flux --runs 4 --steps 50

Writes bench/results/hyca_gui_<model>.json and the profile to bench/results/hyca_profiles/.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
from bench.bench_forecast import psnr  # noqa: E402
from bench.bench_zoo import PRESET_FRACTIONS, load_model, output_reuse_every, sample_cases, setup_comfy  # noqa: E402

log = logging.getLogger("bench_hyca_gui")

RESULTS = REPO / "bench" / "results"
CALIBRATION_SEED_OFFSET = 5000


def calibrate(nodes, zm, runs: int, steps: int, budget: str) -> dict:
    """The Calibrate node's GUI path on `runs` calibration cases; timings and the saved profile."""
    import folder_paths

    calibrate_node = nodes.NODE_CLASS_MAPPINGS["DiTAccelCalibrate"]
    mod = sys.modules[calibrate_node.__module__.rsplit(".", 1)[0] + ".calibrate_recorder"]  # its runs and reports
    name = f"bench_hyca_{zm.name}_{budget}"
    prompts = max(1, runs // 2)
    cases = zm.cases(prompts, -(-runs // prompts), prompts=zm.calibration_prompts(prompts),
                     seed_offset=CALIBRATION_SEED_OFFSET)[:runs]
    mod.clear_recorders()
    mod.REPORTS.clear()
    recording = calibrate_node.execute(zm.model, name, budget, runs, runs, "hyca")[0]
    walls, cpu = [], []  # wall clock, and CPU seconds of this process (the machine is shared)
    for case in cases:
        start, start_cpu = time.perf_counter(), time.process_time()
        nodes.KSampler().sample(recording, case.seed, steps, case.cfg, "euler", "simple", case.positive,
                                case.negative, case.latent, denoise=1.0)
        walls.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    report = mod.REPORTS[-1]
    if report["status"] != "saved":
        raise RuntimeError(f"calibration did not save a profile: {report}")
    folder_paths.filename_list_cache.pop("dit_accel", None)  # the new file must be listed
    record = statistics.mean(walls[:-1]) if len(walls) > 1 else 0.0
    return {"profile": f"{name}.safetensors", "path": report["path"], "message": report["message"],
            "validation": report["validation"], "run_seconds": [round(w, 2) for w in walls],
            "record_seconds": round(sum(walls[:-1]), 2), "fit_seconds": round(walls[-1] - record, 2),
            "total_seconds": round(sum(walls), 2), "run_cpu_seconds": [round(c, 2) for c in cpu],
            "total_cpu_seconds": round(sum(cpu), 2), "cases": [(c.prompt, c.seed) for c in cases]}


def hidden_full_steps(cal: dict) -> int:
    """Full steps of the HyCa profile's plan (its header's budget)."""
    from accel_core.learned.hyca_profile import load_profile

    path = Path(cal["path"])
    return len(load_profile(path.name, path.parent).info["budget"]["full_steps"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="micro_flux")
    parser.add_argument("--budget", default="balanced", choices=sorted(PRESET_FRACTIONS))
    parser.add_argument("--runs", type=int, default=4, help="runs_needed of the Calibrate node")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--prompts", type=int, default=2, help="held-out bench prompts")
    parser.add_argument("--seeds", type=int, default=2, help="held-out bench seeds (1000+)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    nodes, adapter = setup_comfy(args.threads)
    forecast = nodes.NODE_CLASS_MAPPINGS["DiTAccelForecastCache"]
    hyca_node = nodes.NODE_CLASS_MAPPINGS["DiTAccelHyCaProfile"]
    defaults = (0, -1, -1, -1, 0.0, 1.0)
    for name in args.models.split(","):
        zm = load_model(name)
        cal = calibrate(nodes, zm, args.runs, args.steps, args.budget)
        log.info("%s: %s", name, cal["message"])
        log.info("%s: runs %s s -> recording %.1f s, fit %.1f s, total %.1f s (CPU %s s, total %.1f s)", name,
                 cal["run_seconds"], cal["record_seconds"], cal["fit_seconds"], cal["total_seconds"],
                 cal["run_cpu_seconds"], cal["total_cpu_seconds"])
        hyca = hyca_node.execute(cal["profile"])[0]
        models = {
            "HyCa (GUI profile, closed loop)": forecast.execute(zm.model, args.budget, "preset", "preset", *defaults,
                                                                hyca=hyca)[0],
            "FoCa (same hidden-state schedule)": forecast.execute(zm.model, args.budget, "foca", "final_hidden",
                                                                  *defaults)[0],
            f"preset {args.budget} (training-free, output cache)": forecast.execute(zm.model, args.budget, "preset",
                                                                                    "preset", *defaults)[0],
            f"output reuse every {PRESET_FRACTIONS[args.budget]}": output_reuse_every(zm.model,
                                                                                      PRESET_FRACTIONS[args.budget]),
        }
        cases = zm.cases(args.prompts, args.seeds)
        base = sample_cases(nodes, adapter, zm, zm.model, cases, args.steps)
        # The hidden-state schedule computes more steps than the output preset: reuse at that count too.
        every = max(1, round(args.steps / hidden_full_steps(cal)))
        models[f"output reuse every {every} (the HyCa / FoCa budget)"] = output_reuse_every(zm.model, every)
        rows = []
        for label, m in models.items():
            r = sample_cases(nodes, adapter, zm, m, cases, args.steps)
            scores = [psnr(a, b) for a, b in zip(r.images, base.images)]
            rows.append({"method": label, "evaluations": r.evaluations, "psnr_mean": statistics.mean(scores),
                         "psnr_min": min(scores), "psnr": [round(s, 2) for s in scores]})
            log.info("%-55s %5.1f evals  PSNR %.2f (min %.2f)", label, r.evaluations, rows[-1]["psnr_mean"],
                     rows[-1]["psnr_min"])
        kept = RESULTS / "hyca_profiles" / f"hyca_gui_{name}_{args.budget}.safetensors"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(cal["path"], kept)
        Path(cal["path"]).unlink()
        out = {"command": "OMP_NUM_THREADS=1 .venv/bin/python bench/bench_hyca_gui.py " + " ".join(sys.argv[1:]),
               "model": name, "role": zm.role, "budget": args.budget, "steps": args.steps, "threads": args.threads,
               "calibration": {**cal, "path": str(kept.relative_to(REPO))},
               "held_out": {"prompts": args.prompts, "seeds": args.seeds, "uncached_evaluations": base.evaluations,
                            "rows": rows}}
        (RESULTS / f"hyca_gui_{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
