"""LESA (stage-aware KAN experts over L2P's coefficients) against L2P, the training-free preset and output
reuse, on the same held-out bench cases as bench/bench_l2p.py, through real ComfyUI sampling.

Per model: calibrate LESA per budget (scripts/calibrate_lesa.py, the L2P calibration runs), then on the bench
cases measure PSNR of the decoded output against the uncached run for LESA and for L2P (re-run here from
bench/results/l2p_profiles, the guided layout for plain-CFG models, as L2PFit.cfg_layout chooses). The preset and
output-reuse rows are copied from bench/results/l2p_<model>.json (same cases, same CPU build; the L2P row
re-run here reproduces that file's L2P row, which is checked and reported as "l2p_reproduced").

  .venv/bin/python bench/bench_lesa.py --models micro_flux,micro_qwen_image,flux_glyphs,qwen_image_edit,hunyuan_video_glyphs

Writes bench/results/lesa_<model>.json and docs/L2P.md's LESA table.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
from bench.bench_l2p import ModelRows, learned_bench_args  # noqa: E402
from bench.bench_zoo import load_model, setup_comfy  # noqa: E402

log = logging.getLogger("bench_lesa")

RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "L2P.md"
BUDGETS = {"balanced": 5, "fast": 7}
TABLE_BEGIN, TABLE_END = "<!-- lesa-table:begin -->", "<!-- lesa-table:end -->"


def main() -> int:
    args = learned_bench_args(__doc__.splitlines()[0])

    nodes, adapter = setup_comfy(args.threads)
    from accel_core import preset
    from accel_core.learned import register_profile_dir
    from scripts.calibrate_lesa import DEFAULT_OUT, calibrate

    register_profile_dir(DEFAULT_OUT)
    sampler, scheduler = "euler", "simple"
    for name in args.models.split(","):
        zm = load_model(name)
        cases = zm.cases(args.prompts, args.seeds)
        cfg = abs(cases[0].cfg - 1.0) > 1e-6
        lesa_paths = {b: DEFAULT_OUT / f"lesa_{name}_{b}.safetensors" for b in BUDGETS}
        l2p_paths = {b: DEFAULT_OUT / f"l2p_{name}_{b}{'_guided' if cfg else ''}.safetensors" for b in BUDGETS}
        if args.reuse_profiles and all(p.is_file() for p in lesa_paths.values()):
            calibration = {b: {"path": str(p), "reused": True} for b, p in lesa_paths.items()}
        else:
            calibration = calibrate(nodes, zm, tuple(BUDGETS), args.prompts, args.seeds, args.steps, sampler,
                                    scheduler, DEFAULT_OUT)
        old = json.loads((RESULTS / f"l2p_{name}.json").read_text())
        bench = ModelRows(nodes, adapter, zm, cases, args.steps, sampler, scheduler, label_width=26)
        run, record, rows = bench.run, bench.record, bench.rows

        reproduced = {}
        for budget, k in BUDGETS.items():
            config = preset(budget)
            for row, path in ((f"LESA {budget}", lesa_paths[budget]), (f"L2P {budget}", l2p_paths[budget])):
                learned = config.replace(learned_profile=path.name)
                entry = record(row, budget, learned.tag(), run(adapter.apply_forecast_cache(zm.model, learned)))
                if row.startswith("L2P"):
                    want = [r for r in old["rows"] if r["budget"] == budget and r["row"] in
                            (f"L2P {budget}", f"L2P guided {budget}")]
                    reproduced[budget] = bool(want) and abs(want[0]["psnr_mean"] - entry["psnr_mean"]) < 0.01
            for r in old["rows"]:
                if r["budget"] == budget and (r["row"].startswith("preset") or r["row"].startswith("output reuse")):
                    rows.append({**r, "copied_from": f"l2p_{name}.json"})
        doc = {"meta": {**old["meta"], "lesa": "stage-aware KAN experts over the L2P base (accel_core/learned/lesa.py)",
                        "l2p_reproduced": reproduced},
               "calibration": calibration, "rows": rows}
        (RESULTS / f"lesa_{name}.json").write_text(json.dumps(doc, indent=1))
        write_table()
    return 0


def write_table() -> None:
    lines = ["| model | role | budget | LESA | L2P | preset | output reuse | LESA - L2P |",
             "|---|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("lesa_*.json")):
        doc = json.loads(path.read_text())
        m = doc["meta"]
        for budget in BUDGETS:
            got = {}
            for r in doc["rows"]:
                if r["budget"] == budget:
                    key = r["row"].split(" ")[0] if not r["row"].startswith("output") else "reuse"
                    got[key] = r
            cell = {k: f"{r['psnr_mean']:.2f} / {r['psnr_min']:.2f}" for k, r in got.items()}
            diff = got["LESA"]["psnr_mean"] - got["L2P"]["psnr_mean"] if "LESA" in got and "L2P" in got else None
            lines.append(f"| {m['model']} | {m['role']} | {budget} | {cell.get('LESA', '-')} | {cell.get('L2P', '-')} | "
                         f"{cell.get('preset', '-')} | {cell.get('reuse', '-')} | "
                         f"{'-' if diff is None else f'{diff:+.2f}'} |")
    table = "\n".join(lines)
    text = DOC.read_text()
    if TABLE_BEGIN not in text:
        text += f"\n{TABLE_BEGIN}\n{TABLE_END}\n"
    head, _, rest = text.partition(TABLE_BEGIN)
    _, _, tail = rest.partition(TABLE_END)
    DOC.write_text(f"{head}{TABLE_BEGIN}\n{table}\n{TABLE_END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
