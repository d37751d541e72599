"""Speed/fidelity plot of bench_methods.py results (PIL only: no plotting library in the runtime).

One panel per family: x = fewer model evaluations (x), y = PSNR mean vs uncached (dB); a line per
fixed-schedule method across budgets, markers for SpeCa thresholds.

Usage: .venv/bin/python bench/plot_curves.py  (reads bench/results/methods_*_cpu.json)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PANEL_W, PANEL_H, MARGIN = 520, 380, 56
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#000000", "#aa3377", "#228833", "#ccbb44"]
SHOWN = ("reuse", "taylorseer o1", "foca (step axis)", "freqca (paper: hermite o2 high band, fixed)",
         "freqca adaptive + foca", "svd-cache adaptive + foca", "hyca (calibrated profile)",
         "speca last_block rollback", "speca last_block next_step", "speca first_block rollback")


def panel(rows: list[dict], title: str, font) -> Image.Image:
    img = Image.new("RGB", (PANEL_W, PANEL_H), "white")
    d = ImageDraw.Draw(img)
    pts = [(r["evaluation_ratio"], r["psnr_mean"]) for r in rows if r["method"] in SHOWN]
    x0, x1 = 1.0, max(p[0] for p in pts) * 1.05
    y0, y1 = min(p[1] for p in pts) - 1, min(60.0, max(p[1] for p in pts) + 1)
    plot = (MARGIN, 24, PANEL_W - 170, PANEL_H - MARGIN)

    def xy(x, y):
        return (plot[0] + (x - x0) / (x1 - x0) * (plot[2] - plot[0]),
                plot[3] - (min(y, y1) - y0) / (y1 - y0) * (plot[3] - plot[1]))

    d.rectangle(plot, outline="black")
    d.text((plot[0], 4), title, fill="black", font=font)
    for i in range(6):
        x = x0 + i * (x1 - x0) / 5
        px, _ = xy(x, y0)
        d.text((px - 8, plot[3] + 4), f"{x:.1f}x", fill="black", font=font)
        y = y0 + i * (y1 - y0) / 5
        _, py = xy(x0, y)
        d.text((4, py - 6), f"{y:.0f}", fill="black", font=font)
        d.line((plot[0], py, plot[2], py), fill="#eeeeee")
    d.text((plot[0] + 60, PANEL_H - 20), "fewer model evaluations (x)   vs   PSNR dB", fill="black", font=font)
    legend_y = 30
    for k, name in enumerate(SHOWN):
        series = sorted((r["evaluation_ratio"], r["psnr_mean"]) for r in rows if r["method"] == name)
        if not series:
            continue
        colour = COLOURS[k % len(COLOURS)]
        pixels = [xy(*p) for p in series]
        if not name.startswith("speca") and len(pixels) > 1:
            d.line(pixels, fill=colour, width=2)
        for px, py in pixels:
            d.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour)
        d.rectangle((plot[2] + 8, legend_y, plot[2] + 18, legend_y + 8), fill=colour)
        d.text((plot[2] + 22, legend_y - 2), name[:26], fill="black", font=font)
        legend_y += 16
    return img


def main() -> int:
    files = sorted(RESULTS.glob("methods_*_cpu.json"))
    if not files:
        print("no results; run bench/bench_methods.py first", file=sys.stderr)
        return 1
    font = ImageFont.load_default()
    panels = []
    for f in files:
        data = json.loads(f.read_text())
        panels.append(panel(data["rows"], f"micro {data['meta']['family']}: PSNR vs uncached", font))
    out = Image.new("RGB", (PANEL_W * len(panels), PANEL_H), "white")
    for i, p in enumerate(panels):
        out.paste(p, (i * PANEL_W, 0))
    target = RESULTS / "methods_curves.png"
    out.save(target)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
