"""Markdown tables of bench_tokens.py results: every token row beside the forecast alone at the same
work (interpolated on the measured 1/k curve) and output reuse, tune and validate models apart.

Usage: .venv/bin/python bench/summarize_tokens.py [--readme]
Reads bench/results/tokens_tune.json and tokens_validate.json; prints the tables, or with --readme
rewrites the README block between <!-- TOKENS_TABLE --> markers.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = {"tune": REPO / "bench/results/tokens_tune.json", "validate": REPO / "bench/results/tokens_validate.json"}
SHOWN = ("clusters K16 x2 +", "clusters K16 x2 propagation +", "region r2 +", "dynamics 0.1 +",
         "dynamics 0.1 drop +")


def same_work_psnr(curve: list[tuple[float, float]], ratio: float) -> float | None:
    """PSNR of the forecast alone at `ratio` x fewer evaluations, linear in log(ratio) between the
    measured budgets; None outside them (no extrapolation)."""
    pts = sorted(curve)
    for (r0, p0), (r1, p1) in zip(pts, pts[1:]):
        if r0 <= ratio <= r1:
            t = (math.log(ratio) - math.log(r0)) / (math.log(r1) - math.log(r0)) if r1 > r0 else 0.0
            return p0 + t * (p1 - p0)
    return None


def table(rows: list[dict]) -> list[str]:
    out = ["| model | row | work ratio (token-blocks) | FLUX-size cost ratio | PSNR mean / worst | forecast alone "
           "at the same work | difference | output reuse, same full steps |",
           "|---|---|---|---|---|---|---|---|"]
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        curve = [(r["evaluation_ratio"], r["psnr_mean"]) for r in mine if re.fullmatch(r"forecast 1/\d+", r["row"])]
        reuse = {r["row"].split()[-1]: r for r in mine if r["row"].startswith("output reuse every")}
        for r in sorted(mine, key=lambda r: r["row"]):
            if not any(r["row"].startswith(s) for s in SHOWN):
                continue
            k = r["row"].rsplit("1/", 1)[-1]
            same = same_work_psnr(curve, r["token_ratio"])
            diff = f"{r['psnr_mean'] - same:+.2f}" if same is not None else "n/a"
            base = reuse.get(k)
            base_text = "" if base is None else f"{base['psnr_mean']:.2f} (every {k})"
            edit = (f" (in {r['psnr_inside']:.1f}, out {r['psnr_outside']:.1f})" if "psnr_inside" in r else "")
            out.append(f"| {model} | {r['row']} | {r['token_ratio']:.2f}x | {r.get('flux_projected_ratio', 0):.2f}x | "
                       f"{r['psnr_mean']:.2f} / {r['psnr_min']:.2f}{edit} | "
                       f"{'n/a' if same is None else f'{same:.2f}'} | {diff} | "
                       f"{base_text} |")
    return out


def render() -> str:
    lines = []
    for role, path in FILES.items():
        if not path.is_file():
            continue
        rows = json.loads(path.read_text())["rows"]
        lines += [f"**{role} models** (50 euler steps, {len({r['model'] for r in rows})} models, PSNR of the decoded "
                  "image vs the uncached run, 2 prompts x 2 seeds):", ""] + table(rows) + [""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", action="store_true")
    args = ap.parse_args()
    text = render()
    if not args.readme:
        sys.stdout.write(text + "\n")
        return 0
    readme = REPO / "README.md"
    src = readme.read_text()
    start, end = "<!-- TOKENS_TABLE -->", "<!-- /TOKENS_TABLE -->"
    if start not in src:
        raise SystemExit(f"README.md has no {start} block")
    head, rest = src.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{text}\n{end}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
