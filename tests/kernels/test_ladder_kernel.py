"""ladder_update kernel against its torch reference, and the Newton ladder running on it (interpret mode)."""
from __future__ import annotations

import pytest
import torch
from kernel_helpers import TOL, assert_close_verbose, randn, up

from accel_core import ops

SHAPES = [(1, 1, 1), (2, 37, 70), (1, 300, 33), (3, 7, 129)]
GAPS = [-0.07, -0.21, -0.45]  # sigma decreases: t_new - t_i < 0, of different sizes


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("old", [0, 1, 2, 3])
@pytest.mark.parametrize("storage", [torch.float32, torch.bfloat16])
def test_ladder_update_matches_reference(kernel_table, poison, shape, old, storage):
    value = randn(shape, torch.float32, 1)
    ladder = [randn(shape, storage, 10 + i, scale=3.0 ** i) for i in range(old)]
    gaps = GAPS[:old] if old % 2 else torch.tensor(GAPS[:old])
    kernel = kernel_table["ladder_update"]
    assert kernel.supports(value, ladder, gaps, storage)
    new = kernel.launcher(value, ladder, gaps, storage)
    expected = ops.ladder_update_ref(value.double(), up(ladder), GAPS[:old])
    assert len(new) == old + 1
    for level, (got, want) in enumerate(zip(new, expected)):
        assert got.dtype == storage and got.is_contiguous(), level
        assert_close_verbose(got, want, *TOL[storage])


@pytest.mark.parametrize("value_dtype", [torch.bfloat16, torch.float16])
def test_low_precision_value_into_fp32_storage(kernel_table, poison, value_dtype):
    value = randn((2, 9, 40), value_dtype, 2)
    ladder = [randn((2, 9, 40), torch.float32, 3)]
    new = kernel_table["ladder_update"].launcher(value, ladder, [0.3], torch.float32)
    expected = ops.ladder_update_ref(value.double(), up(ladder), [0.3])
    for got, want in zip(new, expected):
        assert_close_verbose(got, want, *TOL[torch.float32])


def test_outputs_never_alias_inputs(kernel_table):
    value = torch.randn(2, 5, 8)
    new = kernel_table["ladder_update"].launcher(value, [torch.randn(2, 5, 8)], [0.5], None)
    assert new[0].data_ptr() != value.data_ptr() and torch.equal(new[0], value)


def test_supports_limits(kernel_table):
    supports = kernel_table["ladder_update"].supports
    v = torch.zeros(2, 5, 8)
    assert supports(v, [v] * 3, [1.0] * 3)
    assert not supports(v, [v] * 4, [1.0] * 4)  # order > 3
    assert not supports(v, [v] * 2, [1.0])  # one gap per ladder entry
    assert not supports(v.double(), [v.double()], [1.0])


def test_newton_ladder_through_the_kernel_equals_the_reference(kernel_table, monkeypatch):
    """A TaylorSeer order-2 history built and evaluated by kernels, against the reference run.

    fp32 storage: with bf16 storage the two implementations may round an entry differently, and
    dividing by small time gaps on later updates amplifies that (covered per update above)."""
    from accel_core import ForecastCacheConfig, make_forecaster

    times = [1.0, 0.93, 0.85, 0.6, 0.41]
    values = [randn((2, 17, 24), torch.float32, 40 + i) for i in range(len(times))]

    def run():
        forecaster = make_forecaster(ForecastCacheConfig(method="taylorseer", order=2))
        for t, v in zip(times, values):
            forecaster.update(t, v)
        return forecaster.ladder.dd, forecaster.forecast(0.3)

    ops.use_references()
    ref_dd, ref_out = run()
    monkeypatch.setitem(ops.OPS, "ladder_update", kernel_table["ladder_update"].launcher)
    monkeypatch.setitem(ops.OPS, "forecast_combine", kernel_table["forecast_combine"].launcher)
    got_dd, got_out = run()
    assert [d.dtype for d in got_dd] == [torch.float32] * 3
    for got, want in zip(got_dd, ref_dd):
        assert_close_verbose(got, want, 1e-4, 1e-4)
    assert_close_verbose(got_out, ref_out, 1e-4, 1e-4)
