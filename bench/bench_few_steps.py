"""Short schedules (few-step and distilled-style runs): what the presets do at 4-12 steps on the zoo.

For each model and step count: PSNR of the decoded image vs the uncached run of the same step count, and
the evaluation ratio, for the presets and output reuse every 2. Used to choose how Forecast Cache treats
short schedules (accel_core/output/run.py MIN_CACHED_STEPS), on tune models only.

Usage: .venv/bin/python bench/bench_few_steps.py --role tune [--steps 4,6,8,10,12]
Writes bench/results/few_steps_<role>.json
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
from bench.bench_forecast import psnr  # noqa: E402
from bench.bench_zoo import load_model, output_reuse_every, sample_cases, setup_comfy  # noqa: E402

log = logging.getLogger("bench")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", default="tune", choices=("tune", "validate"))
    ap.add_argument("--steps", default="4,6,8,10,12")
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    nodes, adapter = setup_comfy(1)
    from accel_core import preset
    from scripts.harness.zoo import names

    rows = []
    for name in names(args.role):
        zm = load_model(name)
        cases = zm.cases(args.prompts, args.seeds)
        for steps in [int(s) for s in args.steps.split(",")]:
            def run(m):
                r = sample_cases(nodes, adapter, zm, m, cases, steps)
                return r.images, r.evaluations

            base, base_evals = run(zm.model)
            variants = [(f"preset {p}", adapter.apply_forecast_cache(zm.model, preset(p, zm.family)))
                        for p in ("quality", "balanced", "fast")]
            variants.append(("output reuse every 2", output_reuse_every(zm.model, 2)))
            for label, m in variants:
                images, evals = run(m)
                scores = [psnr(a, b) for a, b in zip(images, base)]
                rows.append({"model": name, "role": zm.role, "steps": steps, "row": label,
                             "evaluation_ratio": base_evals / evals, "psnr_mean": statistics.fmean(scores),
                             "psnr_min": min(scores)})
                log.info("%-20s %2d steps %-22s x%.2f PSNR %.2f (min %.2f)", name, steps, label,
                         rows[-1]["evaluation_ratio"], rows[-1]["psnr_mean"], rows[-1]["psnr_min"])
    out = REPO / "bench" / "results" / f"few_steps_{args.role}.json"
    out.write_text(json.dumps({"rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
