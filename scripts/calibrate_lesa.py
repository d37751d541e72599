"""Calibrate LESA (stage-aware KAN experts over L2P's forecast coefficients, output level) for a zoo model
in a real ComfyUI.

Records the same uncached calibration runs as scripts/calibrate_l2p.py (calibration prompts, seeds from
5000; plain-CFG runs as the guided series), fits the L2P base per preset (history and ridge chosen on
held-back runs, accel_core/learned/calibrate.py), trains the experts (teacher forcing, then closed loop,
accel_core/learned/lesa.py) and saves <out>/lesa_<model>_<preset>.safetensors (method "lesa").

  .venv/bin/python scripts/calibrate_lesa.py --model micro_flux [--presets balanced,fast]
  .venv/bin/python scripts/calibrate_lesa.py --model micro_flux --grid "3,8,200,200;1,8,200,200;3,8,200,0"

--grid (tune models only) scores settings "stages,width,teacher_epochs,closed_epochs" on the held-back
calibration runs and saves nothing.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))

from scripts.calibrate_l2p import (CALIBRATION_SEED_OFFSET, DEFAULT_OUT, calibration_parser,  # noqa: E402
                                   record_trajectories)

log = logging.getLogger("calibrate_lesa")


def guided(trajectories):
    from accel_core.learned import SplitTrajectory

    return [t.series("guided") if isinstance(t, SplitTrajectory) else t for t in trajectories]


def record(nodes, zm, prompts: int, seeds: int, steps: int, sampler: str, scheduler: str):
    picks = zm.calibration_prompts(prompts)
    if set(zm.pick_prompts(prompts)) & set(picks):
        raise RuntimeError(f"calibrate_lesa: {zm.name} has too few prompts to keep calibration and bench prompts apart")
    cases = zm.cases(prompts, seeds, prompts=picks, seed_offset=CALIBRATION_SEED_OFFSET)
    return guided(record_trajectories(nodes, zm, cases, steps, sampler, scheduler)), cases, picks


def fit_lesa(trajectories, plan, **kw):
    """(L2P table on all runs, L2P validation, LESA model, LESA validation)."""
    from accel_core.learned import fit
    from accel_core.learned.calibrate import choose_and_fit
    from accel_core.learned.lesa import choose_and_fit_lesa

    table, l2p_val = choose_and_fit(trajectories, plan)
    held = l2p_val["held_back_trajectories"]
    table_train = fit(trajectories[:-held], plan, l2p_val["history"], l2p_val["ridge"])
    model, val = choose_and_fit_lesa(trajectories, table_train, table, **kw)
    return table, l2p_val, model, val


def calibrate(nodes, zm, presets=("balanced", "fast"), prompts: int = 4, seeds: int = 2, steps: int = 50,
              sampler: str = "euler", scheduler: str = "simple", out_dir: Path = DEFAULT_OUT) -> dict[str, dict]:
    from accel_core.learned import model_fingerprint
    from accel_core.learned.calibrate import budget_header
    from accel_core.learned.lesa import save_lesa

    started = time.perf_counter()
    trajectories, cases, picks = record(nodes, zm, prompts, seeds, steps, sampler, scheduler)
    recorded = time.perf_counter() - started
    fingerprint = model_fingerprint(zm.model.model.diffusion_model.state_dict())
    sigmas = trajectories[0].sigmas
    results = {}
    for name in presets:
        t0 = time.perf_counter()
        plan, budget = budget_header(name, sigmas)
        table, l2p_val, model, val = fit_lesa(trajectories, plan)
        fit_seconds = time.perf_counter() - t0
        header = {"family": zm.family, "fingerprint": fingerprint, "model": zm.name, "sampler": sampler,
                  "scheduler": scheduler, "sigmas": [round(s, 6) for s in sigmas], "cfg": cases[0].cfg,
                  "budget": budget, "validation": {**val, "l2p": l2p_val},
                  "calibration": {"prompts": picks, "seeds": [CALIBRATION_SEED_OFFSET + s for s in range(seeds)],
                                  "trajectories": len(trajectories)}}
        path = save_lesa(Path(out_dir) / f"lesa_{zm.name}_{name}.safetensors", model, table, header)
        results[name] = {"path": str(path), "bytes": path.stat().st_size, "fit_seconds": round(fit_seconds, 2),
                         "record_seconds": round(recorded, 2), "validation": val}
        log.info("%s %s LESA: held-back step error %.4f (L2P %.4f, reuse %.4f), state error %.4f (L2P %.4f, reuse "
                 "%.4f); fit %.1f s, %d bytes", zm.name, name, val["lesa_rel_error"], val["l2p_rel_error"],
                 val["reuse_rel_error"], val["lesa_state_error"], val["l2p_state_error"], val["reuse_state_error"],
                 fit_seconds, path.stat().st_size)
    return results


def grid(nodes, zm, settings, presets, prompts, seeds, steps, sampler, scheduler) -> None:
    from accel_core.learned.calibrate import budget_header

    trajectories, _, _ = record(nodes, zm, prompts, seeds, steps, sampler, scheduler)
    for name in presets:
        plan, _ = budget_header(name, trajectories[0].sigmas)
        for stages, width, te, ce in settings:
            t0 = time.perf_counter()
            _, _, _, val = fit_lesa(trajectories, plan, stages=stages, width=width, teacher_epochs=te,
                                    closed_epochs=ce)
            print(f"{zm.name} {name} stages {stages} width {width} epochs {te}+{ce}: step {val['lesa_rel_error']:.4f} "
                  f"(L2P {val['l2p_rel_error']:.4f}) state {val['lesa_state_error']:.4f} (L2P "
                  f"{val['l2p_state_error']:.4f}) {time.perf_counter() - t0:.1f} s", flush=True)


def main() -> int:
    parser = calibration_parser(__doc__.splitlines()[0])
    parser.add_argument("--grid", default="", help="stages,width,teacher_epochs,closed_epochs;... (scores only)")
    parser.add_argument("--ablate-norms", action="store_true",
                        help="with --grid: the experts see only time and gap (the history-norm features are 0)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from bench.bench_zoo import load_model, setup_comfy

    nodes, _ = setup_comfy(args.threads)
    zm = load_model(args.model)
    presets = tuple(args.presets.split(","))
    if args.grid:
        if args.ablate_norms:
            import accel_core.learned.lesa as lesa_mod

            full = lesa_mod.features

            def no_norms(*a):
                f = full(*a).clone()
                f[:, 2:] = 0.0
                return f

            lesa_mod.features = no_norms
        settings = [tuple(int(v) for v in s.split(",")) for s in args.grid.split(";")]
        grid(nodes, zm, settings, presets, args.prompts, args.seeds, args.steps, args.sampler, args.scheduler)
        return 0
    results = calibrate(nodes, zm, presets, args.prompts, args.seeds, args.steps, args.sampler, args.scheduler,
                        args.out)
    for name, r in results.items():
        print(f"{args.model} {name}: {r['path']} ({r['bytes']} bytes), fit {r['fit_seconds']:.1f} s, record "
              f"{r['record_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
