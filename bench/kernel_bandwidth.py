"""Achieved memory bandwidth of each op (kernel and torch reference) against the device's copy bandwidth.

Used by bench/bench_gpu.py. Bytes are the op's compulsory traffic (every input read once, every
output written once); achieved bandwidth = bytes / median time. The copy bandwidth is a plain
`dst.copy_(src)` of a buffer far larger than the L2 cache, counted as read + write.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

TARGET_FRACTION = 0.80  # issue 4: kernels >= 80 % of measured copy bandwidth at FLUX size


def time_ms(fn: Callable, device: torch.device, reps: int = 5) -> float:
    """Median wall time of fn() in ms (CUDA: triton.testing.do_bench, which flushes the L2 cache)."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def copy_bandwidth(device: torch.device, nbytes: int) -> dict:
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device)
    return {"bytes": 2 * nbytes, "ms": ms, "gbps": 2 * nbytes / ms / 1e6}


def op_cases(tokens: int, channels: int, device: torch.device) -> list[dict]:
    """(name, args, bytes) per op at [1, tokens, channels]; bf16 hidden states, fp32 history."""
    gen = torch.Generator(device=device).manual_seed(0)

    def rand(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=gen, device=device, dtype=torch.float32).to(dtype)

    E = tokens * channels
    shape = (1, tokens, channels)
    hist3 = [rand(*shape) for _ in range(3)]
    base = rand(*shape, dtype=torch.bfloat16)
    coeffs = [1.0, -0.31, 0.047]
    picked = max(1, tokens // 4)
    index = torch.stack([torch.randperm(tokens, device=device)[:picked]])
    src = rand(1, picked, channels, dtype=torch.bfloat16)
    clusters = 16
    fresh = rand(1, clusters, channels, dtype=torch.bfloat16)
    assign = torch.randint(0, clusters, (1, tokens), device=device)
    return [
        {"op": "forecast_residual_add", "case": "order 2, fp32 history, bf16 hidden",
         "args": (base, hist3, coeffs), "bytes": 3 * 4 * E + 2 * E + 2 * E},
        {"op": "forecast_residual_add", "case": "order 0 (FoCa/reuse output), bf16 hidden",
         "args": (base, hist3[:1], [1.0]), "bytes": 4 * E + 2 * E + 2 * E},
        {"op": "forecast_combine", "case": "3 terms (FoCa), fp32",
         "args": (hist3, coeffs), "bytes": 3 * 4 * E + 4 * E},
        {"op": "ladder_update", "case": "order 2, fp32 storage",
         "args": (hist3[0], hist3[1:], [-0.05, -0.21], None), "bytes": 3 * 4 * E + 3 * 4 * E},
        {"op": "ladder_update", "case": "order 2, bf16 storage",
         "args": (hist3[0], [h.to(torch.bfloat16) for h in hist3[1:]], [-0.05, -0.21], torch.bfloat16),
         "bytes": 4 * E + 2 * 2 * E + 3 * 2 * E},
        {"op": "relative_error", "case": "l2, bf16",
         "args": (base, base * 1.01, "l2"), "bytes": 2 * 2 * E},
        {"op": "token_gather", "case": f"{picked} of {tokens} tokens, bf16",
         "args": (base, index), "bytes": 2 * 2 * picked * channels + 8 * picked},
        {"op": "token_scatter", "case": f"{picked} of {tokens} tokens into a copy, bf16",
         "args": (base, index, src), "bytes": 2 * 2 * E + 2 * 2 * picked * channels + 8 * picked},
        {"op": "cluster_propagate", "case": f"{clusters} clusters, bf16",
         "args": (base, fresh, assign, 0.005), "bytes": 2 * 2 * E + 8 * tokens + 2 * clusters * channels},
    ]


def measure(ops_module, kernel_table: dict | None, tokens: int, channels: int, device: torch.device,
            copy_bytes: int) -> dict:
    """Bandwidth rows for every op case; kernel columns only when `kernel_table` is given."""
    copy = copy_bandwidth(device, copy_bytes)
    rows = []
    for case in op_cases(tokens, channels, device):
        name, args = case["op"], case["args"]
        ref_ms = time_ms(lambda: ops_module.REFERENCES[name](*args), device)
        row = {"op": name, "case": case["case"], "bytes": case["bytes"], "reference_ms": ref_ms,
               "reference_gbps": case["bytes"] / ref_ms / 1e6}
        if kernel_table is not None:
            kernel = kernel_table[name]
            row["kernel_supported"] = bool(kernel.supports(*args))
            if row["kernel_supported"]:
                ms = time_ms(lambda: kernel.launcher(*args), device)
                row.update(kernel_ms=ms, kernel_gbps=case["bytes"] / ms / 1e6,
                           fraction_of_copy=case["bytes"] / ms / 1e6 / copy["gbps"],
                           speedup_vs_reference=ref_ms / ms)
                row["meets_target"] = row["fraction_of_copy"] >= TARGET_FRACTION and ms <= ref_ms
        rows.append(row)
    return {"tokens": tokens, "channels": channels, "copy": copy, "target_fraction": TARGET_FRACTION, "rows": rows}
