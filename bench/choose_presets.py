"""Which measured configuration each preset should use, per family (reads bench/results/methods_*).

Presets map to budgets: quality ~16/50 full steps (3.1x), balanced ~9/50 (5.6x), fast ~7/50 (7.1x).
At each budget the fixed-schedule method with the best score = (mean PSNR + worst-case PSNR) / 2
wins: a preset must be good on average and never fall apart on one prompt or seed. HyCa is left
out (its profile is calibrated per model, so a preset cannot ship one).

Usage: .venv/bin/python bench/choose_presets.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
PRESET_BUDGETS = {"quality": "~16/50", "balanced": "~9/50", "fast": "~7/50"}


def choose(rows: list[dict]) -> dict[str, dict]:
    picks = {}
    for preset, budget in PRESET_BUDGETS.items():
        # HyCa needs a profile calibrated on the user's own model, so no preset can ship it.
        candidates = [r for r in rows if r["setting"].startswith(budget) and not r["tag"].startswith("hyca")]
        if candidates:
            picks[preset] = max(candidates, key=lambda r: (r["psnr_mean"] + r["psnr_min"]) / 2)
    return picks


def main() -> int:
    for f in sorted(RESULTS.glob("methods_*_cpu.json")):
        data = json.loads(f.read_text())
        print(f"{data['meta']['family']}:")
        for preset, r in choose(data["rows"]).items():
            print(f"  {preset:9s} {r['method']:44s} {r['setting']:18s} {r['tag']:48s} x{r['evaluation_ratio']:.2f} "
                  f"{r['psnr_mean']:.2f} / {r['psnr_min']:.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
