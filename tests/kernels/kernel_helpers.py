"""Tolerances and comparison helpers shared by the kernel tests."""
from __future__ import annotations

import torch

# (dtype, atol, rtol) for outputs of that dtype; references run in fp64, kernels in fp32.
DTYPE_TOLERANCES = [
    (torch.float32, 1e-5, 1e-5),
    # A few bf16 ulps (2^-8): Triton's interpreter rounds fp32 -> bf16 toward zero (numpy has no
    # bf16; measured here: up to 1 ulp below torch's round-to-nearest), a GPU rounds to nearest.
    (torch.bfloat16, 2e-2, 1.6e-2),
    (torch.float16, 2e-3, 2e-3),
]
TOL = {dtype: (atol, rtol) for dtype, atol, rtol in DTYPE_TOLERANCES}
POISON = float("nan")


def assert_close_verbose(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> None:
    """allclose in fp64 that reports the mismatch count and the first mismatching indices (NaN never matches)."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.double(), expected.double()
    bad = ~((a - e).abs() <= atol + rtol * e.abs())
    if bad.any():
        idx = bad.nonzero()[:5].tolist()
        samples = [(i, a[tuple(i)].item(), e[tuple(i)].item()) for i in idx]
        raise AssertionError(f"{int(bad.sum())} of {bad.numel()} elements differ (atol {atol}, rtol {rtol}); "
                             f"first (index, kernel, reference): {samples}")


def randn(shape, dtype, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def up(tensors):
    """Reference inputs: upcast to fp64 (after rounding to the kernel's input dtype)."""
    return [t.double() for t in tensors]
