"""SpecEdit on the zoo's edit models: work (token-blocks, FLOPs), PSNR of the whole image and outside /
inside the edited region against the uncached run, beside output reuse and Forecast Cache alone.

The edited region is the edit_pairs ground truth: the pixels where the exact edit differs from the
reference image by more than 0.1 (bench_tokens.edit_mask), not dilated. "Outside" is everything
else: what a faithful edit must leave as the uncached run leaves it.

Rows per model (euler, 50 steps, the model's own guidance; same cases for every row):
- "output reuse every k": the guided output reused between full steps (bench_zoo.output_reuse_every);
- "forecast 1/k": Forecast Cache alone (balanced preset at interval k);
- "<specedit variant> + forecast 1/k": the same full steps, forecast steps partial on the marked tokens;
- "reference as output": the reference image itself scored against the uncached run (what locking
  every token to the input could reach outside the edit at best).
Each specedit row also reports how well the draft found the edit: recall (share of the ground-truth
edit tokens marked or in the rings) and the marked share of the image.

Usage:
  .venv/bin/python bench/bench_specedit.py --models kontext_edit_tune --variants r0,r1,"r1 input" --intervals 4,5,7
  .venv/bin/python bench/bench_specedit.py --table tune      # markdown table of bench/results/specedit_tune.json
Writes bench/results/specedit_<out>.json (rows merged by model and row name). The table puts output reuse
and Forecast Cache alone at the same work beside each SpecEdit row: their PSNR (whole / outside)
interpolated linearly in the work ratio between their measured budgets ("-" outside that range).
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
from bench.bench_tokens import edit_mask, masked_psnr  # noqa: E402
from bench.bench_zoo import SCENARIOS, load_model, output_reuse_every, sample_cases, setup_comfy  # noqa: E402

log = logging.getLogger("bench")

# name -> TokenSettings keywords (method specedit) over BASE: otsu, forecast lock, draft from step 0.
# The node's defaults are "r0" (chosen on kontext_edit_tune, docs/SPECEDIT.md).
VARIANTS = {
    "r0": {"rings": 0},
    "r1": {"rings": 1},
    "r2": {"rings": 2},
    "r1 input": {"rings": 1, "lock": "input"},
    "r0 input": {"rings": 0, "lock": "input"},
    "r1 max_share 0.25": {"rings": 1, "threshold": "max_share", "share": 0.25},
    "r1 max_share 0.1": {"rings": 1, "threshold": "max_share", "share": 0.1},
    "r1 draft 3": {"rings": 1, "draft_steps": 3},
    "r0 late": {"rings": 0, "partial_from": 0.5},  # round 5: partial steps in the later half of each gap
    "r1 late": {"rings": 1, "partial_from": 0.5},
}
BASE = {"lock": "forecast", "threshold": "otsu", "share": 0.25, "draft_steps": 1, "ring_decay": 1.0}
# Kontext / Qwen-Image-Edit at 1024 px: 4096 target + 4096 reference + 512 text tokens (FLUX.1 shape).
EDIT_SIZE = {"image": 8192, "txt": 512, "hidden": 3072, "blocks": 57, "target": 4096}


def region_recall(marked_rows, mask, grid) -> float:
    """Share of the ground-truth edit tokens (any pixel of the token in the region) among marked_rows."""
    from accel_core.tokens.patches import mask_to_tokens

    truth = (mask_to_tokens(mask, grid) > 0).nonzero().flatten().tolist()
    if not truth:
        return float("nan")
    return len(set(truth) & set(marked_rows)) / len(truth)


def at_work(curve: list[dict], ratio: float, key: str) -> float | None:
    """A baseline's `key` at work `ratio`, linear between its two nearest measured budgets."""
    pts = sorted((r["token_ratio"], r[key]) for r in curve)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= ratio <= x1:
            return y0 + (y1 - y0) * (ratio - x0) / (x1 - x0) if x1 > x0 else y0
    return None


def table(out: str) -> str:
    data = json.loads((REPO / "bench" / "results" / f"specedit_{out}.json").read_text())
    rows = data["rows"]
    lines = [f"cases {data['meta']['cases']} per model, 50 euler steps, region: {data['meta']['region']}", "",
             "| model | row | token-blocks | wall | FLOPs | edit-size FLOPs | PSNR whole (worst) | outside | inside | "
             "computed share / recall | output reuse same work: whole / outside | forecast alone same work: "
             "whole / outside |", "|" + "---|" * 12]

    def fmt(v):
        return "-" if v is None else f"{v:.2f}"

    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        reuse = [r for r in mine if r["row"].startswith("output reuse")]
        alone = [r for r in mine if r["row"].startswith("forecast 1/")]
        for r in mine:
            same = ""
            if r["row"].startswith("specedit"):
                same = (f"{fmt(at_work(reuse, r['token_ratio'], 'psnr_mean'))} / "
                        f"{fmt(at_work(reuse, r['token_ratio'], 'psnr_outside'))} | "
                        f"{fmt(at_work(alone, r['token_ratio'], 'psnr_mean'))} / "
                        f"{fmt(at_work(alone, r['token_ratio'], 'psnr_outside'))}")
            else:
                same = " | "
            share = f"{r['computed_share']:.2f} / {r['recall']:.2f}" if "recall" in r else ""
            ratio = "-" if r["row"] == "reference as output" else f"{r['token_ratio']:.2f}x"
            flops = "-" if r["row"] == "reference as output" else f"{r['flops_ratio']:.2f}x"
            edit = f"{r['edit_size_flops_ratio']:.2f}x" if "edit_size_flops_ratio" in r else ""
            wall = f"{r['wall_ratio']:.2f}x" if "wall_ratio" in r else "-"
            lines.append(f"| {model} ({r['role']}) | {r['row']} | {ratio} | {wall} | {flops} | {edit} | {r['psnr_mean']:.2f} "
                         f"({r['psnr_min']:.2f}) | {r['psnr_outside']:.2f} | {r['psnr_inside']:.2f} | {share} | {same} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", help="print the markdown table of specedit_<TABLE>.json and exit")
    parser.add_argument("--models")
    parser.add_argument("--scenario", default="euler50")
    parser.add_argument("--intervals", default="5,7,10", help="Forecast Cache budgets 1/k with and without SpecEdit")
    parser.add_argument("--reuse", default="3,4,5,6", help="output reuse every k")
    parser.add_argument("--variants", default="r0,r1")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", default="tune")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sdpa", action="store_true", help="torch SDPA attention (as on a GPU), not ComfyUI's CPU default")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return 0
    if not args.models:
        parser.error("--models is required (or --table)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    nodes, adapter = setup_comfy(args.threads, sdpa=args.sdpa)
    from accel_core import preset
    from accel_core.tokens.policies.specedit import SpecEditPolicy
    from accel_core.tokens.settings import TokenSettings
    from accel_core.tokens.state import TokenRun
    from accel_core.tokens.work import projected_ratio

    # What each run marked (TokenRun.close clears it): the bench's own record, no state in the pack.
    marks: list = []
    original_close = TokenRun.close

    def close(self):
        policy = self.policy
        if isinstance(policy, SpecEditPolicy):
            rows = (policy.rings >= 0).nonzero().flatten().tolist() if policy.rings is not None else []
            marks.append((rows, policy.grid, int(policy.marked.sum()) if policy.marked is not None else 0))
        return original_close(self)

    TokenRun.close = close
    out_path = REPO / "bench" / "results" / f"specedit_{args.out}.json"
    rows = json.loads(out_path.read_text())["rows"] if out_path.is_file() else []
    scen = SCENARIOS[args.scenario]
    for name in args.models.split(","):
        zm = load_model(name)
        cfg = scen.cfg if scen.cfg is not None else zm.default_cfg
        cases = zm.cases(args.prompts, args.seeds, cfg=cfg)
        masks = [edit_mask(c) for c in cases]

        def run(model):
            marks.clear()
            r = sample_cases(nodes, adapter, zm, model, cases, scen.steps, scen.sampler, cfg=cfg)
            return r, list(marks)

        base, _ = run(zm.model)

        def record(row_name, result, seen=()):
            r = result
            scores = [psnr(a, b) for a, b in zip(r.images, base.images)]
            row = {"model": name, "role": zm.role, "scenario": args.scenario, "row": row_name,
                   "evaluation_ratio": base.evaluations / r.evaluations if r.evaluations else float("inf"),
                   "psnr_mean": statistics.fmean(scores), "psnr_min": min(scores),
                   "psnr_outside": statistics.fmean(masked_psnr(a, b, m, False) for a, b, m in
                                                    zip(r.images, base.images, masks)),
                   "psnr_inside": statistics.fmean(masked_psnr(a, b, m, True) for a, b, m in
                                                   zip(r.images, base.images, masks)),
                   "region_share": statistics.fmean(float((m > 0.5).float().mean()) for m in masks)}
            if getattr(r, "seconds", 0):  # the sampler's wall time against the uncached run, same process
                row["wall_ratio"] = base.seconds / r.seconds
                row["cpu_ratio"] = base.cpu_seconds / r.cpu_seconds
            works = [s["token_work"] for s in r.stats if s.get("token_work")]
            row["token_ratio"] = statistics.fmean(w["token_ratio"] for w in works) if works else row["evaluation_ratio"]
            row["flops_ratio"] = statistics.fmean(w["flops_ratio"] for w in works) if works else row["evaluation_ratio"]
            if works:
                row["edit_size_flops_ratio"] = statistics.fmean(
                    projected_ratio(w["counts"], w["selected_share"] * EDIT_SIZE["target"], EDIT_SIZE) for w in works)
            if seen:
                row["computed_share"] = statistics.fmean(len(rws) / max(1, _count(g)) for rws, g, _ in seen)
                row["marked_share"] = statistics.fmean(n / max(1, _count(g)) for _, g, n in seen)
                row["recall"] = statistics.fmean(region_recall(rws, m, g) for (rws, g, _), m in zip(seen, masks))
            notes = {s.get("token_note") for s in r.stats if s.get("token_note")}
            if notes:
                row["token_note"] = sorted(notes)
            rows[:] = [x for x in rows if (x["model"], x["scenario"], x["row"]) != (name, args.scenario, row_name)]
            rows.append(row)
            extra = (f" computed {row['computed_share']:.2f} recall {row['recall']:.2f}" if "recall" in row else "")
            extra += f" edit-size FLOPs x{row['edit_size_flops_ratio']:.2f}" if "edit_size_flops_ratio" in row else ""
            extra += f" wall x{row['wall_ratio']:.2f} cpu x{row['cpu_ratio']:.2f}" if "wall_ratio" in row else ""
            log.info("%-18s %-34s tokens x%.2f flops x%.2f PSNR %6.2f (min %6.2f) out %6.2f in %6.2f%s", name,
                     row_name, row["token_ratio"], row["flops_ratio"], row["psnr_mean"], row["psnr_min"],
                     row["psnr_outside"], row["psnr_inside"], extra)

        class _Ref:  # the reference image scored as if it were the output
            images = [c.reference for c in cases]
            evaluations = 0.0
            stats: list = []

        record("reference as output", _Ref)
        for k in [int(v) for v in args.reuse.split(",") if v]:
            record(f"output reuse every {k}", run(output_reuse_every(zm.model, k))[0])
        for k in [int(v) for v in args.intervals.split(",") if v]:
            config = preset("balanced", zm.family).replace(interval=k)
            record(f"forecast 1/{k}", run(adapter.apply_forecast_cache(zm.model, config))[0])
            for variant in [v for v in args.variants.split(",") if v]:
                settings = TokenSettings(method="specedit", **(BASE | VARIANTS[variant]))
                model = adapter.apply_forecast_cache(zm.model, config, {"settings": settings, "mask": None})
                result, seen = run(model)
                record(f"specedit {variant} + forecast 1/{k}", result, seen)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps({"meta": {"scenario": vars(scen), "cases": f"{args.prompts}x{args.seeds}",
                                                 "attention": "sdpa" if args.sdpa else "comfy default",
                                                 "region": "edit_pairs ground truth (|edit - reference| > 0.1)"},
                                        "rows": rows}, indent=1))
    TokenRun.close = original_close
    return 0


def _count(grid) -> int:
    n = 1
    for d in grid or ():
        n *= d
    return n


if __name__ == "__main__":
    sys.exit(main())
