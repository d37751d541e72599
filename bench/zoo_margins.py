"""Per-model margins of the presets over output reuse at the same share, tune and validate apart, with
EasyCache beside them and issue 18's targets checked on the validate models (recipes named).

Reads bench/results/zoo_tune.json (the presets' chosen rows stand for them there) and zoo_validate.json;
writes bench/results/zoo_margins.md and prints it.

Usage: .venv/bin/python bench/zoo_margins.py
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
RESULTS = REPO / "bench" / "results"
SHARES = {"quality": 3, "balanced": 5, "fast": 7}
# Issue 18's targets: (mean margin wanted, worst margin wanted) over output reuse at the same share.
TARGETS_50 = {"quality": (3.0, 0.0), "balanced": (3.0, 0.0), "fast": (2.0, 0.0)}
TARGETS_SHORT = (1.5, 0.0)


def recipes() -> dict[str, str]:
    manifest = json.loads((REPO / "tests" / "assets" / "zoo" / "manifest.json").read_text())
    return {e["name"]: (e.get("recipe") or {}).get("name", "zoo") for e in manifest["models"]}


def preset_rows(rows: list[dict], role: str) -> list[dict]:
    """Rows named "preset <name>": on tune results, the explore row each preset chose stands for it."""
    if role != "tune":
        return rows
    from accel_core.config import PRESETS
    from bench.choose_presets import _ROW, settings_of

    chosen = {}
    for r in rows:
        if _ROW.match(r["row"]):
            settings = settings_of(r["row"])
            for name, config in PRESETS.items():
                if config.enabled and all(getattr(config, k) == v for k, v in settings.items()):
                    chosen[r["row"]] = name
    have = {(r["model"], r["scenario"], r["row"]) for r in rows}
    extra = [{**r, "row": f"preset {chosen[r['row']]}"} for r in rows if r["row"] in chosen
             and (r["model"], r["scenario"], f"preset {chosen[r['row']]}") not in have]
    return rows + extra


def margin_table(rows: list[dict], role: str, recipe_of: dict[str, str]) -> tuple[list[str], list[dict]]:
    by = {(r["model"], r["scenario"], r["row"]): r for r in rows}
    lines = [f"## {role} models", "",
             "| model | recipe | scenario | preset | evals | preset PSNR | output reuse (same share) | margin mean / worst "
             "| EasyCache (closest budget) |", "|---|---|---|---|---|---|---|---|---|"]
    records = []
    for (model, scenario, row), p in sorted(by.items()):
        if not row.startswith("preset "):
            continue
        pname = row.split()[1]
        k = SHARES[pname]
        base = by.get((model, scenario, f"output reuse every {k}"))
        if base is None:
            continue
        easy = [r for (m, s, name), r in by.items() if m == model and s == scenario and name.startswith("EasyCache")]
        close = min(easy, key=lambda r: abs(r["evaluations"] - p["evaluations"])) if easy else None
        dm, dw = p["psnr_mean"] - base["psnr_mean"], p["psnr_min"] - base["psnr_min"]
        records.append({"model": model, "recipe": recipe_of.get(model, "?"), "scenario": scenario, "preset": pname,
                        "mean": dm, "worst": dw})
        easy_txt = (f"{close['row'].split()[-1]} @ {close['evaluations']:.1f}: {close['psnr_mean']:.1f} / "
                    f"{close['psnr_min']:.1f}") if close else "-"
        lines.append(f"| {model} | {recipe_of.get(model, '?')} | {scenario} | {pname} | {p['evaluations']:.1f} | "
                     f"{p['psnr_mean']:.1f} / {p['psnr_min']:.1f} | {base['psnr_mean']:.1f} / {base['psnr_min']:.1f} "
                     f"({base['evaluations']:.0f}) | {dm:+.1f} / {dw:+.1f} | {easy_txt} |")
    return lines, records


def target_lines(records: list[dict]) -> list[str]:
    out = ["## Issue 18 targets on the validate models", ""]
    for scenario in sorted({r["scenario"] for r in records}):
        for pname in SHARES:
            sel = [r for r in records if r["scenario"] == scenario and r["preset"] == pname]
            if not sel:
                continue
            need_mean, need_worst = TARGETS_50[pname] if scenario in ("euler50", "cfg3") else TARGETS_SHORT
            misses = [r for r in sel if r["mean"] < need_mean or r["worst"] < need_worst]
            out.append(f"- {scenario}, {pname}: >= +{need_mean:g} dB mean and worst >= reuse's on every model: "
                       f"{'met' if not misses else f'missed on {len(misses)} of {len(sel)}'} (mean margin "
                       f"{statistics.fmean(r['mean'] for r in sel):+.1f}, smallest {min(r['mean'] for r in sel):+.1f}; "
                       f"worst-case margin smallest {min(r['worst'] for r in sel):+.1f})")
    return out


def agreement_lines(tune: list[dict], validate: list[dict]) -> list[str]:
    out = ["## Tune and validate margins per recipe (balanced, euler 50 and cfg 3; within 2 dB wanted)", ""]
    for recipe in sorted({r["recipe"] for r in tune + validate}):
        t = [r["mean"] for r in tune if r["recipe"] == recipe and r["preset"] == "balanced"
             and r["scenario"] in ("euler50", "cfg3")]
        v = [r["mean"] for r in validate if r["recipe"] == recipe and r["preset"] == "balanced"
             and r["scenario"] in ("euler50", "cfg3")]
        t_txt = f"{statistics.fmean(t):+.1f} dB" if t else "no tune model"
        v_txt = f"{statistics.fmean(v):+.1f} dB" if v else "no validate model"
        verdict = ("agree" if abs(statistics.fmean(t) - statistics.fmean(v)) <= 2 else "differ") if t and v else "-"
        out.append(f"- {recipe}: tune {t_txt}, validate {v_txt} ({verdict})")
    t_all = [r["mean"] for r in tune if r["preset"] == "balanced" and r["scenario"] in ("euler50", "cfg3")]
    v_all = [r["mean"] for r in validate if r["preset"] == "balanced" and r["scenario"] in ("euler50", "cfg3")]
    if t_all and v_all:
        out.append(f"- all recipes: tune {statistics.fmean(t_all):+.1f} dB, validate {statistics.fmean(v_all):+.1f} dB")
    return out


def main() -> int:
    recipe_of = recipes()
    text, records = ["# Preset margins over output reuse at the same share (PSNR dB, mean / worst case)", ""], {}
    for role in ("tune", "validate"):
        path = RESULTS / f"zoo_{role}.json"
        if not path.is_file():
            continue
        rows = preset_rows(json.loads(path.read_text())["rows"], role)
        lines, records[role] = margin_table(rows, role, recipe_of)
        text += lines + [""]
    if records.get("validate"):
        text += target_lines(records["validate"]) + [""]
    if records.get("tune") and records.get("validate"):
        text += agreement_lines(records["tune"], records["validate"]) + [""]
    out = "\n".join(text)
    (RESULTS / "zoo_margins.md").write_text(out)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
