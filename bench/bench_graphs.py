"""What works with what: the graphs of scripts/harness/graph_cases.py (ControlNet, split and chained
sampling, scheduled hook LoRA, CFG branches run apart, Qwen-Image model-patch ControlNet), each run
uncached and through Forecast Cache, scored by image PSNR against its own uncached run, next to the plain
KSampler figure of the same case and preset (the issue's target: no worse than 3 dB below it).

Usage: .venv/bin/python bench/bench_graphs.py --role tune|validate [--prompts 2 --seeds 2 --preset balanced]
Writes bench/results/graphs_<role>.json and .md (CPU, 28 euler steps; figures are the mean over cases).
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
from bench.bench_zoo import setup_comfy  # noqa: E402

log = logging.getLogger("bench")

# Graphs per model family: FLUX models are guidance-distilled (cfg 1: one CFG branch, nothing to split);
# Qwen-Image runs true CFG, and its model-patch ControlNet is Qwen-only.
FAMILY_GRAPHS = {
    "flux": ("controlnet", "ksampler_advanced_pair", "split_sigmas", "upscale_pass", "hook_keyframes"),
    "qwen_image": ("split_branches", "qwen_model_patch_controlnet", "ksampler_advanced_pair"),
}
MODELS = {"tune": ("micro_flux", "micro_qwen_image"), "validate": ("flux_glyphs", "qwen_image_edit")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", default="tune", choices=tuple(MODELS))
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--preset", default="balanced", choices=("quality", "balanced", "fast"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    setup_comfy(1)
    from scripts.harness import graph_cases as gc
    from scripts.harness.zoo import ZooModel

    rows = []
    for name in MODELS[args.role]:
        zoo = ZooModel(name)
        extras = gc.extras_for(zoo)
        cases = zoo.cases(args.prompts, args.seeds)
        for graph in FAMILY_GRAPHS[zoo.family]:
            scores = [gc.compare(zoo, case, gc.GRAPHS[graph], extras, args.preset) for case in cases]
            computed = sum(r["computed_calls"] for r in scores[0].runs)
            calls = sum(r["calls"] for r in scores[0].runs)
            row = {"model": name, "role": zoo.role, "family": zoo.family, "graph": graph, "preset": args.preset,
                   "psnr_mean": statistics.fmean(s.psnr for s in scores), "psnr_min": min(s.psnr for s in scores),
                   "plain_mean": statistics.fmean(s.plain for s in scores),
                   "margin_mean": statistics.fmean(s.margin for s in scores),
                   "margin_min": min(s.margin for s in scores),
                   "computed_calls": computed, "calls": calls, "cases": len(cases)}
            rows.append(row)
            log.info("%-16s %-28s PSNR %.2f (min %.2f) plain %.2f margin %+.2f (worst %+.2f) %d/%d computed",
                     name, graph, row["psnr_mean"], row["psnr_min"], row["plain_mean"], row["margin_mean"],
                     row["margin_min"], computed, calls)
    out = REPO / "bench" / "results" / f"graphs_{args.role}.json"
    command = (f".venv/bin/python bench/bench_graphs.py --role {args.role} --prompts {args.prompts} "
               f"--seeds {args.seeds} --preset {args.preset}")
    out.write_text(json.dumps({"command": command, "device": "cpu", "steps": gc.STEPS, "rows": rows}, indent=1))
    lines = [f"Command: `{command}` (CPU, euler, {gc.STEPS} steps, {args.prompts} prompts x {args.seeds} seeds)", "",
             "| model | graph | PSNR vs own uncached (mean / min) | plain KSampler | margin (mean / worst) "
             "| computed |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['graph']} | {r['psnr_mean']:.2f} / {r['psnr_min']:.2f} | {r['plain_mean']:.2f} | "
              f"{r['margin_mean']:+.2f} / {r['margin_min']:+.2f} | {r['computed_calls']}/{r['calls']} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
