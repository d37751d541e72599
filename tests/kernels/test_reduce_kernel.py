"""relative_error kernel (verification probe) against its torch reference (interpret mode)."""
from __future__ import annotations

import pytest
import torch
from kernel_helpers import assert_close_verbose, randn

from accel_core import ops

# [B, ...] shapes; 5000 and 9001 elements per sample span several BLOCKs and several programs.
SHAPES = [(1, 1), (3, 5, 7), (2, 5000), (1, 3, 3000, 1), (4, 9001)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_relative_error_matches_reference(kernel_table, poison, shape, dtype, norm):
    truth = randn(shape, dtype, 1)
    forecast = (truth.double() + randn(shape, torch.float64, 2, scale=0.05)).to(dtype)
    kernel = kernel_table["relative_error"]
    assert kernel.supports(forecast, truth, norm)
    got = kernel.launcher(forecast, truth, norm)
    want = ops.relative_error_ref(forecast.double(), truth.double(), norm)
    assert got.dtype == torch.float32 and got.shape == (shape[0],)
    assert_close_verbose(got, want, 1e-6, 1e-4)  # fp32 sums of up to 9001 terms


def test_per_sample_errors_are_independent(kernel_table):
    truth = torch.ones(3, 4000)
    forecast = truth.clone()
    forecast[1] *= 1.5  # only sample 1 is wrong, by 50 %
    got = kernel_table["relative_error"].launcher(forecast, truth, "l1")
    assert_close_verbose(got, torch.tensor([0.0, 0.5, 0.0]), 1e-7, 1e-6)


def test_zero_truth_does_not_divide_by_zero(kernel_table):
    got = kernel_table["relative_error"].launcher(torch.ones(2, 10), torch.zeros(2, 10), "l2")
    assert torch.isfinite(got).all()
    assert_close_verbose(got, ops.relative_error_ref(torch.ones(2, 10), torch.zeros(2, 10)), 0, 1e-6)


def test_supports_rejects_unknown_norm(kernel_table):
    x = torch.zeros(2, 3)
    assert not kernel_table["relative_error"].supports(x, x, "linf")
