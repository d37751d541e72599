"""token_gather / token_scatter / cluster_propagate kernels against their torch references (interpret mode)."""
from __future__ import annotations

import pytest
import torch
from kernel_helpers import TOL, assert_close_verbose, randn

from accel_core import ops

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
CASES = [(1, 1, 1, 1), (2, 37, 11, 70), (3, 64, 17, 129)]  # (B, N, M or K, C)


def _distinct(B, N, M, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(N, generator=g)[:M] for _ in range(B)]).to(dtype)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_gather_matches_reference(kernel_table, poison, case, dtype, index_dtype):
    B, N, M, C = case
    stream = randn((B, N + 5, C), dtype, 1)
    x = stream[:, 3:N + 3]  # strided rows, as a slice of a joint stream
    index = _distinct(B, N, M, index_dtype, 2)
    kernel = kernel_table["token_gather"]
    assert kernel.supports(x, index)
    got = kernel.launcher(x, index)
    assert torch.equal(got, ops.token_gather_ref(x, index))  # a pure copy: bit-exact


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_matches_reference(kernel_table, poison, case, dtype):
    B, N, M, C = case
    dst = randn((B, N, C), dtype, 3)
    src = randn((B, M, C), torch.float32, 4)
    index = _distinct(B, N, M, torch.int64, 5)
    kernel = kernel_table["token_scatter"]
    assert kernel.supports(dst, index, src)
    got = kernel.launcher(dst, index, src)
    want = ops.token_scatter_ref(dst, index, src)
    if dtype == torch.float32:
        assert torch.equal(got, want)  # a pure copy: bit-exact
    else:  # src is cast fp32 -> dtype: one rounding (see kernel_helpers.DTYPE_TOLERANCES)
        assert_close_verbose(got, want, *TOL[dtype])
    assert torch.equal(dst, randn((B, N, C), dtype, 3))  # dst untouched


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma", [0.005, 0.7])
def test_cluster_propagate_matches_reference(kernel_table, poison, case, dtype, gamma):
    B, N, K, C = case
    cache = randn((B, N, C), dtype, 6)
    fresh = randn((B, K, C), dtype, 7)
    g = torch.Generator().manual_seed(8)
    assign = torch.randint(0, K, (B, N), generator=g)
    kernel = kernel_table["cluster_propagate"]
    assert kernel.supports(cache, fresh, assign, gamma)
    got = kernel.launcher(cache, fresh, assign, gamma)
    want = ops.cluster_propagate_ref(cache.double(), fresh.double(), assign, gamma)
    assert got.dtype == dtype
    assert_close_verbose(got, want, *TOL[dtype])


def test_out_of_range_indices_are_masked_not_read(kernel_table):
    """Documented kernel contract (no host sync to validate indices): such rows read as zeros."""
    x = torch.ones(1, 4, 3)
    got = kernel_table["token_gather"].launcher(x, torch.tensor([[0, 9, -1]]))
    assert torch.equal(got, torch.tensor([[[1.0] * 3, [0.0] * 3, [0.0] * 3]]))


def test_supports_rejects_bad_layouts(kernel_table):
    x = torch.zeros(2, 5, 4)
    assert not kernel_table["token_gather"].supports(x, torch.zeros(2, 3))  # float index
    assert not kernel_table["token_gather"].supports(x, torch.zeros(3, 3, dtype=torch.long))  # batch mismatch
    assert not kernel_table["token_scatter"].supports(x, torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 2, 4))
