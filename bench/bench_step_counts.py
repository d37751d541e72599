"""Tune-time choice of how a preset's warm-up adapts to short step counts (tune models only).

Runs the presets at 20 and 28 euler steps and heun / dpm_2 at 20 steps on the zoo's tune models with
the warm-up scaled to the step count (SCALE_WARMUP, the shipped rule) and kept at its 50-step value,
beside output reuse at the same share. Writes bench/results/zoo_tune_steps.{json,md}.

Usage: .venv/bin/python bench/bench_step_counts.py [--prompts 4 --seeds 2]
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
from bench.bench_zoo import PRESET_FRACTIONS, SCENARIOS, load_model, output_reuse_every, setup_comfy  # noqa: E402

log = logging.getLogger("bench")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--scenarios", default="euler20,euler28,heun20,dpm2_20")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    nodes, adapter = setup_comfy(1)
    import accel_core.output.run as output_run
    from accel_core import preset
    from scripts.harness.zoo import names

    rows = []
    for name in names("tune"):
        zm = load_model(name)
        for scen_name in args.scenarios.split(","):
            scen = SCENARIOS[scen_name]
            cfg = zm.default_cfg
            cases = zm.cases(args.prompts, args.seeds, cfg=cfg)

            def run(m):
                return [zm.decode(nodes.KSampler().sample(m, c.seed, scen.steps, cfg, scen.sampler, "simple",
                                                          c.positive, c.negative, c.latent, denoise=1.0)[0]["samples"])
                        for c in cases]

            base = run(zm.model)

            def add(row, images):
                scores = [psnr(a, b) for a, b in zip(images, base)]
                rows.append({"model": name, "role": "tune", "scenario": scen_name, "row": row,
                             "psnr_mean": statistics.fmean(scores), "psnr_min": min(scores)})
                log.info("%-20s %-8s %-36s %.2f (%.2f)", name, scen_name, row, rows[-1]["psnr_mean"], rows[-1]["psnr_min"])

            for pname, k in PRESET_FRACTIONS.items():
                for scale in (True, False):
                    output_run.SCALE_WARMUP = scale
                    add(f"preset {pname}, warm-up {'scaled' if scale else 'kept'}",
                        run(adapter.apply_forecast_cache(zm.model, preset(pname))))
                output_run.SCALE_WARMUP = True
                add(f"output reuse every {k}", run(output_reuse_every(zm.model, k)))
    out = REPO / "bench" / "results" / "zoo_tune_steps"
    out.with_suffix(".json").write_text(json.dumps({"command": "bench/bench_step_counts.py", "rows": rows}, indent=1))
    lines = ["| model | scenario | row | PSNR mean | worst |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['scenario']} | {r['row']} | {r['psnr_mean']:.2f} | {r['psnr_min']:.2f} |" for r in rows]
    for label in ("scaled", "kept"):
        sel = [(r["psnr_mean"] + r["psnr_min"]) / 2 for r in rows if r["row"].endswith(label)]
        lines.append(f"\nwarm-up {label}: mean (mean + worst) / 2 = {statistics.fmean(sel):.2f} dB")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    log.info("wrote %s.{json,md}", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
