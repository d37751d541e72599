"""Summary of bench_methods.py results, the source of docs/RESULTS.md's hidden-state tables: per family,
every method at ~9/50 full steps (5.6x), and SpeCa's adaptive budgets. Prints markdown.

Usage: .venv/bin/python bench/summarize_methods.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def main() -> int:
    for f in sorted(RESULTS.glob("methods_*_cpu.json")):
        data = json.loads(f.read_text())
        fam = data["meta"]["family"]
        print(f"\n**{fam}** ({data['meta']['sampler']}; {data['meta']['cases']}):\n")
        print("| method | setting | eval ratio | at FLUX depth* | PSNR mean / min (dB) | verification |")
        print("|---|---|---|---|---|---|")
        for r in data["rows"]:
            if not (r["setting"].startswith("~9/50") or r["method"].startswith("speca")):
                continue
            probes = (f"{r['probes']:.0f} probes ({r['probe_cost_calls']:.2f} micro calls), {r['rejected']:.1f} "
                      "rejected" if r["probes"] else "")
            eff = f"{r.get('effective_ratio_flux_depth', r['evaluation_ratio']):.2f}x" if r["probes"] else ""
            print(f"| {r['method']} | {r['setting']} | {r['evaluation_ratio']:.2f}x | {eff} | "
                  f"{r['psnr_mean']:.2f} / {r['psnr_min']:.2f} | {probes} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
