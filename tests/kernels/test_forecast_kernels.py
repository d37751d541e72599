"""forecast_combine / forecast_residual_add kernels against their torch references (interpret mode)."""
from __future__ import annotations

import pytest
import torch
from kernel_helpers import TOL, assert_close_verbose, randn, up

from accel_core import ops

SHAPES = [(1, 1, 1), (2, 37, 70), (3, 5, 129), (1, 300, 33)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# Real DiT token counts at narrow width (the row/tile logic is what matters): FLUX 1024^2 image
# tokens, FLUX single-block stream (4096 + 512 text), Qwen-Image 1328^2, FLUX 768^2.
REAL_TOKENS = [4096, 4608, 6889, 2304]
COEFFS = [1.0, -0.37, 0.052, -0.0031]


def _history(shape, dtype, terms, seed=0):
    return [randn(shape, dtype, seed + i) for i in range(terms)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("terms", [1, 2, 3, 4])
def test_combine_matches_reference(kernel_table, poison, shape, dtype, terms):
    history = _history(shape, dtype, terms)
    coeffs = COEFFS[:terms] if terms % 2 else torch.tensor(COEFFS[:terms])  # scalars and in-memory both
    kernel = kernel_table["forecast_combine"]
    assert kernel.supports(history, coeffs)
    out = kernel.launcher(history, coeffs)
    expected = ops.forecast_combine_ref(up(history), COEFFS[:terms])
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert_close_verbose(out, expected, *TOL[torch.float32])


def test_combine_ignores_coefficients_beyond_the_history(kernel_table, poison):
    history = _history((2, 9, 11), torch.float32, 2)
    out = kernel_table["forecast_combine"].launcher(history, COEFFS)
    assert_close_verbose(out, ops.forecast_combine_ref(up(history), COEFFS[:2]), *TOL[torch.float32])


@pytest.mark.parametrize("base_dtype", DTYPES)
@pytest.mark.parametrize("history_dtype", [torch.float32, torch.bfloat16])
def test_residual_add_on_a_strided_slice(kernel_table, poison, base_dtype, history_dtype):
    """The final-hidden forecast adds into the image tokens sliced out of cat(txt, img)."""
    stream = randn((2, 53, 70), base_dtype, 10)
    base = stream[:, 11:48]  # batch stride 53*70, not 37*70
    assert not base.is_contiguous()
    history = _history(base.shape, history_dtype, 3)
    kernel = kernel_table["forecast_residual_add"]
    assert kernel.supports(base, history, COEFFS[:3])
    out = kernel.launcher(base, history, COEFFS[:3])
    expected = ops.forecast_residual_add_ref(base.double(), up(history), COEFFS[:3])
    assert out.dtype == base_dtype
    assert_close_verbose(out, expected, *TOL[base_dtype])
    assert torch.equal(stream[:, 11:48], base)  # inputs untouched


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_residual_add_matches_reference(kernel_table, poison, shape, dtype):
    base = randn(shape, dtype, 20)
    history = _history(shape, torch.float32, 2)
    coeffs = torch.tensor(COEFFS[:2])
    out = kernel_table["forecast_residual_add"].launcher(base, history, coeffs)
    assert_close_verbose(out, ops.forecast_residual_add_ref(base.double(), up(history), COEFFS[:2]), *TOL[dtype])


@pytest.mark.parametrize("tokens", REAL_TOKENS)
def test_real_token_counts(kernel_table, poison, tokens):
    base = randn((1, tokens, 8), torch.bfloat16, 30)
    history = _history((1, tokens, 8), torch.float32, 3)
    out = kernel_table["forecast_residual_add"].launcher(base, history, COEFFS[:3])
    assert_close_verbose(out, ops.forecast_residual_add_ref(base.double(), up(history), COEFFS[:3]),
                         *TOL[torch.bfloat16])


def test_empty_tensors(kernel_table):
    history = _history((2, 0, 5), torch.float32, 2)
    assert kernel_table["forecast_combine"].launcher(history, COEFFS).shape == (2, 0, 5)


def test_supports_rejects_what_the_kernel_cannot_do(kernel_table):
    supports = kernel_table["forecast_residual_add"].supports
    base = torch.zeros(2, 5, 8)
    hist = [torch.zeros(2, 5, 8)] * 2
    assert supports(base, hist, COEFFS[:2])
    assert not supports(base.double(), [h.double() for h in hist], COEFFS[:2])  # fp64 stays on the reference
    assert not supports(base, [torch.zeros(2, 5, 8)] * 5, COEFFS + [0.1])  # more than four terms
    assert not supports(base, [torch.zeros(2, 6, 8), torch.zeros(2, 5, 8)], COEFFS[:2])  # shape mismatch
    assert not supports(base, [torch.zeros(2, 8, 5).transpose(1, 2)] * 2, COEFFS[:2])  # non-contiguous history
    assert not supports(torch.zeros(2, 8, 5).transpose(1, 2), hist, COEFFS[:2])  # last dim not contiguous


def test_poison_fixture_poisons_allocations(poison):
    assert torch.empty(3, 4).isnan().all()
    assert (torch.empty(3, dtype=torch.int64) == -1).all()
