"""Tune-time check of the CFG layouts: the unconditional output and the guidance direction as two series
("split", the shipped default), one guided series ("guided"), and the run-time choice between them by
backtest ("auto"), on the zoo's tune models at cfg 3, for each preset (ForecastCacheConfig.cfg_layout),
beside output reuse at the same share. Writes bench/results/zoo_tune_cfg_split.{json,md}.

Usage: .venv/bin/python bench/bench_cfg_split.py [--prompts 4 --seeds 2]
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
from bench.bench_zoo import PRESET_FRACTIONS, load_model, output_reuse_every, setup_comfy  # noqa: E402

log = logging.getLogger("bench")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    nodes, adapter = setup_comfy(1)
    from accel_core import preset
    from scripts.harness.zoo import names

    rows = []
    for name in names("tune"):
        zm = load_model(name)
        cases = zm.cases(args.prompts, args.seeds, cfg=3.0)

        def run(m):
            return [zm.decode(nodes.KSampler().sample(m, c.seed, 50, 3.0, "euler", "simple", c.positive, c.negative,
                                                      c.latent, denoise=1.0)[0]["samples"]) for c in cases]

        base = run(zm.model)

        def add(row, images):
            scores = [psnr(a, b) for a, b in zip(images, base)]
            rows.append({"model": name, "role": "tune", "row": row, "psnr_mean": statistics.fmean(scores),
                         "psnr_min": min(scores)})
            log.info("%-20s %-36s %.2f (%.2f)", name, row, rows[-1]["psnr_mean"], rows[-1]["psnr_min"])

        for pname, k in PRESET_FRACTIONS.items():
            for layout in ("auto", "split", "guided"):
                config = preset(pname).replace(cfg_layout=layout)
                add(f"preset {pname}, {layout}", run(adapter.apply_forecast_cache(zm.model, config)))
            add(f"output reuse every {k}", run(output_reuse_every(zm.model, k)))
    out = REPO / "bench" / "results" / "zoo_tune_cfg_split"
    out.with_suffix(".json").write_text(json.dumps({"command": "bench/bench_cfg_split.py", "rows": rows}, indent=1))
    lines = ["cfg 3, euler 50 steps, tune models, PSNR vs the uncached cfg-3 run (mean / worst, dB)", "",
             "| model | row | PSNR mean | worst |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['row']} | {r['psnr_mean']:.2f} | {r['psnr_min']:.2f} |" for r in rows]
    for label in ("auto", "split", "guided"):
        sel = [(r["psnr_mean"] + r["psnr_min"]) / 2 for r in rows if r["row"].endswith(label)]
        lines.append(f"\n{label}: mean (mean + worst) / 2 = {statistics.fmean(sel):.2f} dB")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
