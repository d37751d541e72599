"""Clustering overhead at FLUX size (issue target: <= 3 % of a full step), from a FLOP count and a
CPU timing of the K-means the token methods run at every full step.

FLOPs: one FLUX.1-dev full step at 1024 x 1024 (4096 image + 512 text tokens, hidden 3072, 57 blocks)
against K-means on the 4096 x 3072 clustering features (K clusters, `iterations` Lloyd steps: one
[N, C] x [C, K] matmul and one index_add per step, plus the normalisation). The matmul is the only
term that grows with K; torch runs it on tensor cores, so no Triton assignment kernel is needed
(`kernels/` keeps gather / scatter / propagate kernels for the per-token merge).

Usage: .venv/bin/python bench/clustering_overhead.py [--k 16 --iterations 5]
Writes bench/results/clustering_overhead.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))

import torch  # noqa: E402

from accel_core.tokens import block_flops, kmeans  # noqa: E402
from accel_core.tokens.work import FLUX_SIZE  # noqa: E402


def kmeans_flops(n: int, c: int, k: int, iterations: int) -> float:
    # per Lloyd step: assignment matmul 2NKC + centroid norms 2KC + index_add NC + one more assignment at the end;
    # normalisation 3NC once.
    per_step = 2.0 * n * k * c + 2.0 * k * c + n * c
    return 3.0 * n * c + (iterations + 1) * per_step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=5)
    args = ap.parse_args()
    n, c = FLUX_SIZE["image"], FLUX_SIZE["hidden"]
    tokens = FLUX_SIZE["image"] + FLUX_SIZE["txt"]
    step = block_flops(tokens, tokens, c) * FLUX_SIZE["blocks"]
    clus = kmeans_flops(n, c, args.k, args.iterations)
    x = torch.randn(n, c)
    kmeans(x, args.k, iterations=1)  # warm-up
    start = time.perf_counter()
    kmeans(x, args.k, iterations=args.iterations, tol=0.0)
    seconds = time.perf_counter() - start
    result = {
        "device": f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} thread(s)",
        "flux_step_flops": step, "kmeans_flops": clus, "flop_share": clus / step,
        "kmeans_cpu_seconds": seconds, "k": args.k, "iterations": args.iterations,
        "note": "FLOP share of one full FLUX step; the CPU time is for the record only (no GPU here).",
    }
    out = REPO / "bench" / "results" / "clustering_overhead.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"K-means {clus / 1e9:.2f} GFLOP vs FLUX step {step / 1e12:.1f} TFLOP: {100 * clus / step:.4f} % "
          f"(CPU {seconds * 1000:.0f} ms, {result['device']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
