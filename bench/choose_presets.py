"""Which schedule each preset uses, chosen on the zoo's *tune* models only (bench/results/zoo_tune.json).

A preset is a share of evaluations (quality 1/3, balanced 1/5, fast 1/7). Its candidates are the
"output backtest {budget|adaptive} 1/k wW fF" rows (even or error-adaptive spacing; warm-up W and
final F full steps inside the budget). Score of a
candidate = mean over tune models and scenarios of (mean PSNR + worst PSNR) / 2: a preset must be good on
average and never fall apart on one prompt or seed. Validation models are never read here.

Usage: .venv/bin/python bench/choose_presets.py
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
SHARES = {"quality": 3, "balanced": 5, "fast": 7}
_ROW = re.compile(r"output backtest (budget|adaptive) 1/(\d+) w(\d+) f(\d+)$")


def choose(rows: list[dict]) -> dict[str, dict]:
    """{preset: {"warmup", "final", "score", "interval"}} from tune rows."""
    scores: dict[tuple, list[float]] = {}
    for r in rows:
        if r.get("role") != "tune":
            raise ValueError(f"choose_presets read a non-tune row ({r['model']}): presets are chosen on tune models only")
        m = _ROW.match(r["row"])
        if m:
            key = (int(m.group(2)), int(m.group(3)), int(m.group(4)), m.group(1))
            scores.setdefault(key, []).append((r["psnr_mean"] + r["psnr_min"]) / 2)
    picks = {}
    for name, k in SHARES.items():
        options = {key: statistics.fmean(v) for key, v in scores.items() if key[0] == k}
        if options:
            best = max(options, key=options.get)
            picks[name] = {"interval": k, "warmup": best[1], "final": best[2], "schedule": best[3],
                           "score": options[best]}
    return picks


def main() -> int:
    rows = json.loads((RESULTS / "zoo_tune.json").read_text())["rows"]
    for name, pick in choose(rows).items():
        print(f"{name:9s} 1/{pick['interval']} {pick['schedule']}: warm-up {pick['warmup']}, final {pick['final']} "
              f"(score {pick['score']:.2f} dB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
