"""Compact preset-vs-baseline tables from bench/results/zoo_<role>.json (docs/RESULTS.md and the README).

For every model and scenario: each preset's evaluations and PSNR mean / worst, output reuse every k at
the preset's share (k = 3 / 5 / 7) and the margin, hidden reuse, and the EasyCache threshold whose
evaluation count is closest to the preset's.

Usage: .venv/bin/python bench/summarize_zoo.py --role validate [--scenarios euler50,cfg3]
       .venv/bin/python bench/summarize_zoo.py --docs   # rewrite the generated blocks of docs/RESULTS.md
                                                        # (zoo, validate, targets, tune) and README.md (one table)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
RESULTS_DOC = REPO / "docs" / "RESULTS.md"
README = REPO / "README.md"
SHARES = {"quality": 3, "balanced": 5, "fast": 7}


def _fmt(row) -> str:
    return f"{row['psnr_mean']:.1f} / {row['psnr_min']:.1f}" if row else "-"


def tables(rows: list[dict], scenarios: list[str]) -> str:
    out = []
    by = {(r["model"], r["scenario"], r["row"]): r for r in rows}
    models = sorted({r["model"] for r in rows})
    for scenario in scenarios:
        present = [m for m in models if (m, scenario, "preset balanced") in by]
        if not present:
            continue
        out += [f"**{scenario}** (PSNR mean / worst, dB; evaluations of the uncached run's calls)", "",
                "| model | preset | evals | preset | output reuse (same share) | margin mean / worst | hidden reuse | "
                "hidden-state recipe (same budget) | EasyCache (closest budget) |", "|---|---|---|---|---|---|---|---|---|"]
        margins: dict[str, list[float]] = {p: [] for p in SHARES}
        for model in present:
            easy = [r for (m, s, name), r in by.items() if m == model and s == scenario and name.startswith("EasyCache")]
            for pname, k in SHARES.items():
                p = by.get((model, scenario, f"preset {pname}"))
                base = by.get((model, scenario, f"output reuse every {k}"))
                hidden = by.get((model, scenario, f"hidden reuse every {k}"))
                recipe = by.get((model, scenario, f"hidden-state {pname}"))
                if p is None:
                    continue
                close = min(easy, key=lambda r: abs(r["evaluations"] - p["evaluations"])) if easy else None
                margin = "-"
                if base:
                    dm, dw = p["psnr_mean"] - base["psnr_mean"], p["psnr_min"] - base["psnr_min"]
                    margins[pname].append(dm)
                    margin = f"{dm:+.1f} / {dw:+.1f}"
                easy_txt = f"{close['row'].split()[-1]} @ {close['evaluations']:.1f}: {_fmt(close)}" if close else "-"
                out.append(f"| {model} | {pname} | {p['evaluations']:.1f} ({p['evaluation_ratio']:.2f}x) | {_fmt(p)} | "
                           f"{_fmt(base)} | {margin} | {_fmt(hidden)} | {_fmt(recipe)} | {easy_txt} |")
        out.append("")
        out.append("Mean margin over output reuse: " + ", ".join(
            f"{p} {statistics.fmean(v):+.2f} dB" for p, v in margins.items() if v))
        out.append("")
    return "\n".join(out)


def cfg_table(rows: list[dict]) -> str:
    """cfg 3 against cfg 1 at the same budget, and how often the accelerated cfg-3 image is closer to the
    uncached cfg-3 image than an uncached cfg-1 image is (per case)."""
    by = {(r["model"], r["scenario"], r["row"]): r for r in rows}
    out = ["| model | preset | PSNR cfg 1 | PSNR cfg 3 | cfg 3 - cfg 1 | cases where cfg-3 result is closer than the "
           "uncached cfg-1 image |", "|---|---|---|---|---|---|"]
    for model in sorted({r["model"] for r in rows}):
        ref = by.get((model, "cfg3", "uncached cfg 1 (guidance reference)"))
        if ref is None or by.get((model, "euler50", "uncached cfg 1 (guidance reference)")):
            continue  # true-CFG models run at their own scale in euler50: no separate cfg-1 comparison
        for pname in SHARES:
            one, three = by.get((model, "euler50", f"preset {pname}")), by.get((model, "cfg3", f"preset {pname}"))
            if not (one and three):
                continue
            closer = sum(a > b for a, b in zip(three["psnr_all"], ref["psnr_all"]))
            out.append(f"| {model} | {pname} | {one['psnr_mean']:.1f} | {three['psnr_mean']:.1f} | "
                       f"{three['psnr_mean'] - one['psnr_mean']:+.1f} | {closer} / {len(ref['psnr_all'])} |")
    return "\n".join(out)


def zoo_table() -> str:
    """The zoo as a table (from tests/assets/zoo/manifest.json)."""
    manifest = json.loads((RESULTS.parents[1] / "tests" / "assets" / "zoo" / "manifest.json").read_text())
    out = ["| model | role | family | hidden / blocks (double + single) / heads / patch | data | sizes (px) | "
           "guidance | training | held-out loss (untrained, or the starting model's) |", "|---|---|---|---|---|---|---|---|---|"]
    for e in manifest["models"]:
        c = e.get("config_summary", {})
        blocks = f"{c.get('double', c.get('depth', '?'))} + {c.get('single', 0)}"
        data = ", ".join(f"{k} {v:g}" for k, v in (e.get("data") or {}).items()) if isinstance(e.get("data"), dict) \
            else str(e.get("data", ""))
        sizes = " ".join(f"{h}x{w}" for h, w in e.get("resolutions", []))
        cfg = e["cfg"]
        guidance = f"distilled {cfg['guidance']:g}" if cfg["kind"] == "guidance" else f"true CFG {cfg['scale']:g}"
        t = e.get("training", {})
        loss = t.get("heldout_loss")
        loss_txt = f"{loss:.3f} ({t.get('heldout_loss_untrained', float('nan')):.2f})" if loss else "-"
        if t.get("init"):  # a fine-tune: the bracket is the starting model's loss at the new sizes
            loss_txt += f" from {Path(t['init']).stem}"
        out.append(f"| {e['name']} | {e['role']} | {e['family']}{' (edit)' if e.get('edit') else ''} | "
                   f"{c.get('hidden', '?')} / {blocks} / {c.get('heads', '?')} / {c.get('patch', '?')} | {data} | "
                   f"{sizes} | {guidance} | {t.get('minutes', 0):.0f} min, {t.get('steps', '?')} steps | "
                   f"{loss_txt} |")
    return "\n".join(out)


def targets(validate: list[dict], tune: list[dict]) -> str:
    """Issue 18's targets, checked on the validation rows, with each model's recipe (tune rows: the agreement)."""
    from bench.zoo_margins import recipes

    recipe_of = recipes()
    by = {(r["model"], r["scenario"], r["row"]): r for r in validate}
    models = sorted({r["model"] for r in validate})
    lines = []

    def margin_check(pname, k, scenario, need_mean, need_worst):
        ok, notes = True, []
        for m in models:
            p, b = by.get((m, scenario, f"preset {pname}")), by.get((m, scenario, f"output reuse every {k}"))
            if not (p and b):
                continue
            dm, dw = p["psnr_mean"] - b["psnr_mean"], p["psnr_min"] - b["psnr_min"]
            good = dm >= need_mean and (need_worst is None or dw >= need_worst)
            ok &= good
            notes.append(f"{m} ({recipe_of.get(m, '?')}) {dm:+.1f} / {dw:+.1f}{'' if good else ' (miss)'}")
        return ok and bool(notes), ", ".join(notes)

    for scenario in ("euler50", "cfg3"):
        for pname, k, need in (("balanced", 5, 3.0), ("quality", 3, 3.0), ("fast", 7, 2.0)):
            ok, notes = margin_check(pname, k, scenario, need, 0.0)
            extra = "; reuse every 7 computes 8 of 50, fast 7" if pname == "fast" else ""
            lines.append(f"- {pname} >= output reuse every {k} + {need:g} dB mean, worst >= its worst ({scenario}{extra}): "
                         f"{'met' if ok else 'missed'} - {notes}")
    for scenario in ("euler20", "euler28"):
        for pname, k in SHARES.items():
            ok, notes = margin_check(pname, k, scenario, 1.5, 0.0)
            lines.append(f"- {scenario}: {pname} >= output reuse at the same share + 1.5 dB mean, worst not below: "
                         f"{'met' if ok else 'missed'} - {notes}")
    lines.append("- tune and validate margins per recipe: `bench/results/zoo_margins.md` (bench/zoo_margins.py)")
    return "\n".join(lines)


def readme_table(rows: list[dict], scenario: str = "euler50") -> str:
    """The README's one table: per preset, the mean over the validation models of the preset, output reuse
    at the same share and EasyCache at the threshold whose evaluation count is closest (it cannot go lower
    than about 15 of 50 on these models)."""
    by = {(r["model"], r["scenario"], r["row"]): r for r in rows}
    models = sorted({m for (m, sc, row) in by if sc == scenario and row == "preset balanced"})
    steps = round(statistics.fmean(by[(m, scenario, "preset balanced")]["evaluations"] *
                                   by[(m, scenario, "preset balanced")]["evaluation_ratio"] for m in models))
    out = [f"| preset | model calls computed (of {steps}) | Forecast Cache | output reuse, same share | "
           "EasyCache (ComfyUI), closest number of calls |", "|---|---|---|---|---|"]
    for pname, k in SHARES.items():
        presets = [by[(m, scenario, f"preset {pname}")] for m in models if (m, scenario, f"preset {pname}") in by]
        reuse = [by[(m, scenario, f"output reuse every {k}")] for m in models
                 if (m, scenario, f"output reuse every {k}") in by]
        easy = []
        for p in presets:
            mine = [r for (m, sc, name), r in by.items() if m == p["model"] and sc == scenario
                    and name.startswith("EasyCache")]
            if mine:
                easy.append(min(mine, key=lambda r: abs(r["evaluations"] - p["evaluations"])))
        evals = statistics.fmean(p["evaluations"] for p in presets)
        ratio = statistics.fmean(p["evaluation_ratio"] for p in presets)
        mean = statistics.fmean(p["psnr_mean"] for p in presets)
        lo, hi = min(p["psnr_mean"] for p in presets), max(p["psnr_mean"] for p in presets)
        reuse_txt = (f"{statistics.fmean(r['psnr_mean'] for r in reuse):.1f} dB (every {k} steps: "
                     f"{statistics.fmean(r['evaluations'] for r in reuse):.0f} calls)" if reuse else "-")
        easy_txt = (f"{statistics.fmean(r['psnr_mean'] for r in easy):.1f} dB at "
                    f"{statistics.fmean(r['evaluations'] for r in easy):.1f} calls" if easy else "-")
        out.append(f"| `{pname}` | {evals:.0f} ({ratio:.2f}x fewer) | **{mean:.1f} dB** ({lo:.1f}-{hi:.1f}) | "
                   f"{reuse_txt} | {easy_txt} |")
    cases = len(by[(models[0], scenario, "preset balanced")]["psnr_all"])
    out += ["", f"PSNR of the result against the uncached result of the same seed (higher is closer; above ~35 dB "
            f"differences are hard to see), mean over the {len(models)} validation models of the zoo, which no "
            f"setting was chosen on (range over the models in brackets), {cases} cases each, euler, {steps} steps. "
            "They are micro models trained here, not real FLUX / Qwen / HunyuanVideo weights."]
    return "\n".join(out)


def _tune_rows() -> list[dict]:
    """Tune rows with the candidates the presets chose shown as "preset <name>" rows."""
    from accel_core.config import PRESETS

    rows = merge("tune", write=False)
    chosen = {f"output backtest {c.schedule} 1/{c.interval} w{c.warmup_steps} f{c.final_full_steps}": name
              for name, c in PRESETS.items() if c.enabled}
    return rows + [{**r, "row": f"preset {chosen[r['row']]}"} for r in rows if r["row"] in chosen]


MARK = "bench/summarize_zoo.py --docs"


def replace_block(text: str, name: str, body: str, source: str = MARK) -> str:
    """`text` with the block between <!-- NAME:START (source) --> and <!-- NAME:END --> set to `body`."""
    start, end = f"<!-- {name}:START ({source}) -->", f"<!-- {name}:END -->"
    if start not in text or end not in text:
        raise SystemExit(f"no {start} ... {end} block to write")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    return f"{head}{start}\n{body}\n{end}{tail}"


def render_docs(results_doc: str, readme: str) -> tuple[str, str]:
    """docs/RESULTS.md and README.md with their generated blocks rewritten from bench/results (pure)."""
    validate = merge("validate", write=False)
    tune = _tune_rows()
    results_doc = replace_block(results_doc, "ZOO_TABLE", zoo_table())
    results_doc = replace_block(results_doc, "VALIDATE_TABLES", tables(validate, [
        "euler50", "cfg3", "euler20", "euler28", "heun20", "dpm2_20"]) + "\n**CFG** (guidance-distilled "
        "models: cfg 3 on top of the embedded guidance)\n\n" + cfg_table(validate))
    results_doc = replace_block(results_doc, "TUNE_TABLES", tables(tune, ["euler50", "cfg3"]))
    results_doc = replace_block(results_doc, "TARGETS", targets(validate, tune))
    readme = replace_block(readme, "README_TABLE", readme_table(validate))
    return results_doc, readme


def write_docs() -> None:
    merge("validate"), merge("tune")  # per-model files folded into zoo_<role>.json, as before
    results_doc, readme = render_docs(RESULTS_DOC.read_text(), README.read_text())
    RESULTS_DOC.write_text(results_doc)
    README.write_text(readme)


def merge(role: str, write: bool = True) -> list[dict]:
    """zoo_<role>.json plus any per-model zoo_<role>_<model>.json (benches run side by side write apart);
    with `write`, the merged rows are written back to zoo_<role>.json (newest file wins per model, scenario
    and row)."""
    main_file = RESULTS / f"zoo_{role}.json"
    data = json.loads(main_file.read_text()) if main_file.is_file() else {"meta": {}, "rows": []}
    merged = {(r["model"], r["scenario"], r["row"]): r for r in data["rows"]}
    for part in sorted(RESULTS.glob(f"zoo_{role}_*.json")):
        extra = json.loads(part.read_text())
        data["meta"] = data["meta"] or extra.get("meta", {})
        merged.update({(r["model"], r["scenario"], r["row"]): r for r in extra["rows"] if "scenario" in r})
    data["rows"] = list(merged.values())
    if write:
        main_file.write_text(json.dumps(data, indent=1))
    return data["rows"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", default="validate")
    ap.add_argument("--scenarios", default="euler50,cfg3,euler20,euler28,heun20,dpm2_20")
    ap.add_argument("--zoo", action="store_true", help="print the zoo table (from the manifest) and stop")
    ap.add_argument("--docs", action="store_true",
                    help="rewrite the generated blocks of docs/RESULTS.md (zoo, validate, targets, tune) and the "
                    "README's table")
    args = ap.parse_args()
    if args.zoo:
        print(zoo_table())
        return 0
    if args.docs:
        write_docs()
        return 0
    merge(args.role)
    rows = _tune_rows() if args.role == "tune" else merge(args.role, write=False)
    text = tables(rows, args.scenarios.split(",")) + "\n**CFG**\n\n" + cfg_table(rows)
    (RESULTS / f"zoo_{args.role}_summary.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
