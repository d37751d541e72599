"""L2P (learned linear predictor, output level) against the training-free presets and output reuse,
on prompts / seeds held out from calibration, through real ComfyUI sampling (KSampler).

Per model: calibrate L2P for the balanced (1/5) and fast (1/7) budgets on calibration prompts / seeds
(scripts/calibrate_l2p.py; unless --reuse-profiles finds them), then on the bench cases (the zoo
tables' prompts and seeds 1000+, none used for calibrating) measure PSNR of the decoded image (video:
all frames) against the uncached run for: L2P at each budget, the preset at the same budget (backtest
blend, training-free) and output reuse every k (bench_zoo's baseline, independent of the pack).
Models with true CFG (cfg != 1) get both L2P layouts, "split" (uncond + guidance as two series) and
"guided" (the guided output as one series), from one recording; the others the one-series profile.

  .venv/bin/python bench/bench_l2p.py --models micro_flux,micro_qwen_image,flux_glyphs,qwen_image_edit,hunyuan_video_glyphs

Writes bench/results/l2p_<model>.json and regenerates docs/L2P.md's results table from all of them.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
from bench.bench_forecast import psnr  # noqa: E402
from bench.bench_zoo import load_model, output_reuse_every, sample_cases, setup_comfy  # noqa: E402

log = logging.getLogger("bench_l2p")

RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "L2P.md"
BUDGETS = {"balanced": 5, "fast": 7}
TABLE_BEGIN, TABLE_END = "<!-- l2p-table:begin -->", "<!-- l2p-table:end -->"


def row_entry(row: str, budget: str, setting: str, result, base_images, base_evals: float, base_seconds: float) -> dict:
    """One table row: PSNR of `result` (images, evaluations, seconds, run summaries) against the uncached run,
    with the learned-profile use the runs reported."""
    images, evals, seconds, stats = result
    scores = [psnr(a, b) for a, b in zip(images, base_images)]
    entry = {"row": row, "budget": budget, "setting": setting, "evaluations": evals,
             "evaluation_ratio": base_evals / evals, "wall_ratio": base_seconds / seconds,
             "psnr_mean": statistics.fmean(scores), "psnr_min": min(scores),
             "psnr_all": [round(s, 3) for s in scores]}
    if stats and "learned_forecasts" in stats[0]:
        entry["learned_forecasts"] = [s["learned_forecasts"] for s in stats]
        entry["learned_outside"] = sorted({s["learned_outside"] for s in stats})
    return entry


class ModelRows:
    """One model's bench: runs the held-out cases through a model and scores rows against the uncached run
    (computed once, first)."""

    def __init__(self, nodes, adapter, zm, cases, steps: int, sampler: str, scheduler: str, label_width: int = 34):
        self.nodes, self.adapter, self.zm, self.cases = nodes, adapter, zm, cases
        self.steps, self.sampler, self.scheduler, self.label_width = steps, sampler, scheduler, label_width
        self.rows: list[dict] = []
        self.base_images, self.base_evals, self.base_seconds, _ = self.run(zm.model)

    def run(self, model, stats: bool = True):
        """(images, evaluations per case, seconds, run summaries) of the cases through `model`."""
        r = sample_cases(self.nodes, self.adapter, self.zm, model, self.cases, self.steps, self.sampler,
                         self.scheduler)
        return r.images, r.evaluations, r.seconds, r.stats if stats else []

    def record(self, row: str, budget: str, setting: str, result) -> dict:
        entry = row_entry(row, budget, setting, result, self.base_images, self.base_evals, self.base_seconds)
        self.rows.append(entry)
        log.info("%-22s %-*s evals %5.1f x%.2f  PSNR %6.2f (min %6.2f)", self.zm.name, self.label_width, row,
                 entry["evaluations"], entry["evaluation_ratio"], entry["psnr_mean"], entry["psnr_min"])
        return entry


def learned_bench_args(description: str) -> argparse.Namespace:
    """Command line of the learned-forecaster benches (bench_l2p, bench_lesa); sets up logging."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--models",
                        default="micro_flux,micro_qwen_image,flux_glyphs,qwen_image_edit,hunyuan_video_glyphs")
    parser.add_argument("--prompts", type=int, default=4, help="bench prompts (and calibration prompts)")
    parser.add_argument("--seeds", type=int, default=2, help="bench seeds (and calibration seeds)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reuse-profiles", action="store_true", help="use existing profiles instead of calibrating")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return args


def main() -> int:
    args = learned_bench_args(__doc__.splitlines()[0])

    nodes, adapter = setup_comfy(args.threads)
    import torch

    from accel_core import preset
    from accel_core.learned import register_profile_dir
    from scripts.calibrate_l2p import DEFAULT_OUT, calibrate, profile_key

    register_profile_dir(DEFAULT_OUT)
    sampler, scheduler = "euler", "simple"
    for name in args.models.split(","):
        zm = load_model(name)
        cases = zm.cases(args.prompts, args.seeds)
        layouts = ("split", "guided") if abs(cases[0].cfg - 1.0) > 1e-6 else ("auto",)
        keys = [(b, layout, profile_key(b, layout)) for b in BUDGETS for layout in layouts]
        paths = {key: DEFAULT_OUT / f"l2p_{name}_{key}.safetensors" for _, _, key in keys}
        if args.reuse_profiles and all(p.is_file() for p in paths.values()):
            calibration = {key: {"path": str(p), "reused": True} for key, p in paths.items()}
        else:
            calibration = calibrate(nodes, zm, tuple(BUDGETS), args.prompts, args.seeds, args.steps, sampler,
                                    scheduler, DEFAULT_OUT, layouts)
        bench = ModelRows(nodes, adapter, zm, cases, args.steps, sampler, scheduler)
        run, record, rows = bench.run, bench.record, bench.rows

        for budget, k in BUDGETS.items():
            config = preset(budget)
            for b, layout, key in keys:
                if b != budget:
                    continue
                learned = config.replace(learned_profile=Path(paths[key]).name)
                row = f"L2P {budget}" if layout == "auto" else f"L2P {layout} {budget}"
                record(row, budget, learned.tag(), run(adapter.apply_forecast_cache(zm.model, learned)))
            record(f"preset {budget}", budget, config.tag(), run(adapter.apply_forecast_cache(zm.model, config)))
            record(f"output reuse every {k}", budget, f"steps 0, {k}, {2 * k}, ...", run(output_reuse_every(zm.model, k), stats=False))
        doc = {
            "meta": {"model": name, "role": zm.role, "family": zm.family, "steps": args.steps, "sampler": sampler,
                     "scheduler": scheduler, "cfg": cases[0].cfg,
                     "cases": f"{args.prompts} prompts x {args.seeds} seeds (zoo bench cases, held out from "
                              "calibration)",
                     "device": f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
                               f"{torch.get_num_threads()} thread(s)",
                     "metric": "PSNR (dB) of the decoded image (video: every frame) vs the uncached run"},
            "calibration": calibration, "rows": rows,
        }
        (RESULTS / f"l2p_{name}.json").write_text(json.dumps(doc, indent=1))
        write_table()
    return 0


def write_table() -> None:
    """docs/L2P.md's results table from every bench/results/l2p_*.json."""
    lines = ["| model | role | budget | row | evaluations | eval ratio | PSNR mean | PSNR worst |",
             "|---|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("l2p_*.json")):
        doc = json.loads(path.read_text())
        m = doc["meta"]
        for r in doc["rows"]:
            lines.append(f"| {m['model']} | {m['role']} | {r['budget']} | {r['row']} | {r['evaluations']:.1f} | "
                         f"{r['evaluation_ratio']:.2f}x | {r['psnr_mean']:.2f} | {r['psnr_min']:.2f} |")
    table = "\n".join(lines)
    text = DOC.read_text() if DOC.is_file() else f"# L2P\n\n{TABLE_BEGIN}\n{TABLE_END}\n"
    head, _, rest = text.partition(TABLE_BEGIN)
    _, _, tail = rest.partition(TABLE_END)
    DOC.write_text(f"{head}{TABLE_BEGIN}\n{table}\n{TABLE_END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
