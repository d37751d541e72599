"""Markdown tables of bench_tokens.py results: every token row beside the forecast alone at the same
work (interpolated on the measured 1/k curve) and output reuse, tune and validate models apart.

Usage: .venv/bin/python bench/summarize_tokens.py [--docs]
Reads bench/results/tokens_tune.json and tokens_validate.json; prints the tables, or with --docs
rewrites the TOKENS_TABLE block of docs/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DOC = REPO / "docs" / "RESULTS.md"
START, END = "<!-- TOKENS_TABLE:START (bench/summarize_tokens.py --docs) -->", "<!-- TOKENS_TABLE:END -->"
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


def render_doc(doc: str) -> str:
    """docs/RESULTS.md with its TOKENS_TABLE block rewritten from bench/results (pure)."""
    if START not in doc or END not in doc:
        raise SystemExit(f"docs/RESULTS.md has no {START} ... {END} block")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{render()}\n{END}{tail}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", action="store_true", help="rewrite the TOKENS_TABLE block of docs/RESULTS.md")
    args = ap.parse_args()
    if not args.docs:
        sys.stdout.write(render() + "\n")
        return 0
    RESULTS_DOC.write_text(render_doc(RESULTS_DOC.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
