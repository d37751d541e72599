"""Which setting each preset uses, chosen on the zoo's *tune* models only, by the worst model's margin.

A preset is a share of evaluations (quality 1/3, balanced 1/5, fast 1/7). Its candidates are the
"output backtest {budget|adaptive} 1/k wW fF[ h..][ b2]" rows of bench/bench_zoo.py --rows explore. A
candidate's margin on one model and scenario is its PSNR over output reuse every k at the same budget,
on the mean and on the worst case: min(mean - reuse mean, worst - reuse worst). Its margin on a model is
the smallest over the scenarios (euler 50, cfg 3). The preset takes the candidate with the best
*worst-model* margin; the mean margin over models breaks ties (within 0.25 dB). A setting that wins on
average and loses badly on one recipe is never chosen (issue 18: one recipe's +1 dB was another's -13).

Validation models are never read here (a non-tune row is an error).

Usage: .venv/bin/python bench/choose_presets.py [--results bench/results/zoo_tune.json]
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
SHARES = {"quality": 3, "balanced": 5, "fast": 7}
_ROW = re.compile(r"output backtest (budget|adaptive) 1/(\d+) w(\d+)(?:s([\d.]+))? f(\d+)((?: h[\d.]+)?(?: b2)?)$")
TIE_DB = 0.25


def settings_of(row: str) -> dict:
    """The config fields a candidate row name stands for (bench_zoo.explore_name, read back)."""
    m = _ROW.match(row)
    if not m:
        raise ValueError(f"not a candidate row: {row!r}")
    extra = m.group(6)
    horizon = re.search(r"h([\d.]+)", extra)
    return {"schedule": m.group(1), "interval": int(m.group(2)), "warmup_steps": int(m.group(3)),
            "warmup_sigma": float(m.group(4) or 0.0), "final_full_steps": int(m.group(5)),
            "horizon_match": float(horizon.group(1)) if horizon else 1.5, "blend_bands": 2 if "b2" in extra else 1}


def margins(rows: list[dict]) -> dict[tuple, dict[str, float]]:
    """{candidate row name: {model: margin over output reuse (dB), the worst over scenarios}}."""
    reuse = {(r["model"], r["scenario"], int(r["row"].rsplit(" ", 1)[1])): r for r in rows
             if r["row"].startswith("output reuse every ")}
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.get("role") != "tune":
            raise ValueError(f"choose_presets read a non-tune row ({r['model']}): presets are chosen on tune models only")
        m = _ROW.match(r["row"])
        if not m:
            continue
        base = reuse.get((r["model"], r["scenario"], int(m.group(2))))
        if base is None:
            continue
        margin = min(r["psnr_mean"] - base["psnr_mean"], r["psnr_min"] - base["psnr_min"])
        per_model = out.setdefault(r["row"], {})
        per_model[r["model"]] = min(per_model.get(r["model"], margin), margin)
    return out


def choose(rows: list[dict]) -> dict[str, dict]:
    """{preset: {"row", "interval", "worst", "mean", "margins"}} from tune rows."""
    table = margins(rows)
    # The models the candidates ran on (rows of other scenarios, e.g. step counts, may hold more models).
    models = {r["model"] for r in rows if _ROW.match(r["row"])}
    picks = {}
    for name, k in SHARES.items():
        options = {row: m for row, m in table.items() if _ROW.match(row).group(2) == str(k) and set(m) == models}
        if not options:
            continue
        scored = {row: (min(m.values()), statistics.fmean(m.values())) for row, m in options.items()}
        best_worst = max(w for w, _ in scored.values())
        # Best worst-model margin; candidates within TIE_DB of it are ranked by their mean margin.
        best = max((row for row, (w, _) in scored.items() if w >= best_worst - TIE_DB), key=lambda r: scored[r][1])
        picks[name] = {"row": best, "interval": k, "worst": scored[best][0], "mean": scored[best][1],
                       "margins": options[best], "all": scored}
    return picks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS / "zoo_tune.json")
    args = parser.parse_args()
    rows = json.loads(args.results.read_text())["rows"]
    for name, pick in choose(rows).items():
        print(f"{name} (1/{pick['interval']}): {pick['row']}  worst-model margin {pick['worst']:+.2f} dB, "
              f"mean {pick['mean']:+.2f} dB over output reuse every {pick['interval']}")
        for model, margin in sorted(pick["margins"].items(), key=lambda kv: kv[1]):
            print(f"    {model:24s} {margin:+6.2f} dB")
        print("  every candidate (worst / mean margin):")
        for row, (worst, mean) in sorted(pick["all"].items(), key=lambda kv: -kv[1][0]):
            print(f"    {row:48s} {worst:+6.2f} / {mean:+6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
