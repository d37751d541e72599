"""Forecaster math on analytic sequences."""
from __future__ import annotations

import math

import pytest
import torch

from accel_core import ForecastCacheConfig, make_forecaster
from accel_core.hidden.forecasters.hicache import hermite


def _series(coeffs, t):
    """Polynomial feature series: a fixed random tensor per power of t."""
    g = torch.Generator().manual_seed(0)
    basis = [torch.randn(2, 5, 3, generator=g, dtype=torch.float64) for _ in coeffs]
    return sum(c * b * t ** i for i, (c, b) in enumerate(zip(coeffs, basis)))


NONUNIFORM_TIMES = [1.0, 0.93, 0.85, 0.6, 0.41]  # shifted-schedule-like, gaps of different size


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_taylor_extrapolates_polynomials_up_to_its_order_exactly(order):
    config = ForecastCacheConfig(method="taylorseer", order=order)
    forecaster = make_forecaster(config)
    coeffs = [1.0, -2.0, 0.5, 0.3][: order + 1]
    for t in NONUNIFORM_TIMES[: order + 1]:
        forecaster.update(t, _series(coeffs, t))
    for t in (0.3, 0.2, 0.05):
        torch.testing.assert_close(forecaster.forecast(t), _series(coeffs, t), rtol=1e-9, atol=1e-9)


def test_taylor_of_too_low_order_misses_a_higher_degree_term():
    forecaster = make_forecaster(ForecastCacheConfig(method="taylorseer", order=1))
    for t in NONUNIFORM_TIMES[:3]:
        forecaster.update(t, _series([1.0, 0.0, 2.0], t))
    error = (forecaster.forecast(0.2) - _series([1.0, 0.0, 2.0], 0.2)).abs().max()
    assert error > 0.01


def test_taylor_uses_only_the_newest_anchors():
    forecaster = make_forecaster(ForecastCacheConfig(method="taylorseer", order=1))
    forecaster.update(1.0, torch.full((3,), 100.0, dtype=torch.float64))  # outlier, must be dropped
    for t in (0.8, 0.6):
        forecaster.update(t, torch.full((3,), 2 * t, dtype=torch.float64))
    torch.testing.assert_close(forecaster.forecast(0.4), torch.full((3,), 0.8, dtype=torch.float64))
    assert len(forecaster.tensors()) == 2


def test_same_time_update_replaces_the_newest_anchor():
    """Heun's corrector and the next predictor evaluate at the same sigma: the newer value wins."""
    forecaster = make_forecaster(ForecastCacheConfig(method="taylorseer", order=2))
    line = lambda t: torch.full((4,), 3.0 - 5.0 * t, dtype=torch.float64)  # noqa: E731
    forecaster.update(1.0, line(1.0))
    forecaster.update(0.8, line(0.8))
    forecaster.update(0.6, torch.full((4,), 99.0, dtype=torch.float64))  # wrong value first ...
    forecaster.update(0.6, line(0.6))  # ... replaced at the same time
    torch.testing.assert_close(forecaster.forecast(0.3), line(0.3))


def test_hermite_polynomials():
    assert [hermite(n, 0.5) for n in range(4)] == pytest.approx([1.0, 1.0, -1.0, -5.0])


def test_hicache_order1_at_inverse_sqrt2_equals_taylor():
    scale = 1 / math.sqrt(2)
    hi = make_forecaster(ForecastCacheConfig(method="hicache", order=1, hermite_scale=scale))
    ts = make_forecaster(ForecastCacheConfig(method="taylorseer", order=1))
    g = torch.Generator().manual_seed(1)
    for t in (0.9, 0.7):
        value = torch.randn(2, 8, generator=g, dtype=torch.float64)
        hi.update(t, value)
        ts.update(t, value)
    for t in (0.6, 0.45, 0.1):
        torch.testing.assert_close(hi.forecast(t), ts.forecast(t), rtol=1e-12, atol=1e-12)


def test_hicache_damps_higher_orders_relative_to_taylor():
    hi = make_forecaster(ForecastCacheConfig(method="hicache", order=2, hermite_scale=0.5))
    ts = make_forecaster(ForecastCacheConfig(method="taylorseer", order=2))
    for t in (3.0, 2.0, 1.0):
        value = torch.full((2,), t ** 2, dtype=torch.float64)
        hi.update(t, value)
        ts.update(t, value)
    taylor_step = (ts.forecast(-2.0) - ts.forecast(1.0)).abs().max()
    hermite_step = (hi.forecast(-2.0) - hi.forecast(1.0)).abs().max()
    assert hermite_step < taylor_step


def test_foca_is_exact_on_a_line_and_marches():
    foca = make_forecaster(ForecastCacheConfig(method="foca"))
    line = lambda t: torch.full((3, 2), 1.0 + 4.0 * t, dtype=torch.float64)  # noqa: E731
    assert not foca.ready
    foca.update(1.0, line(1.0))
    assert not foca.ready  # needs two computed anchors
    foca.update(0.9, line(0.9))
    assert foca.ready
    for t in (0.8, 0.7, 0.55, 0.4):  # variable steps, marching from its own forecasts
        torch.testing.assert_close(foca.forecast(t), line(t))


def test_foca_corrector_pulls_toward_the_anchor_slope():
    foca = make_forecaster(ForecastCacheConfig(method="foca"))
    foca.update(2.0, torch.tensor([0.0], dtype=torch.float64))
    foca.update(1.0, torch.tensor([1.0], dtype=torch.float64))  # anchor slope -1 per unit t
    first = foca.forecast(0.0)
    assert first.item() == pytest.approx(2.0)


def test_reuse_returns_the_last_value():
    reuse = make_forecaster(ForecastCacheConfig(method="reuse"))
    reuse.update(1.0, torch.ones(3))
    reuse.update(0.5, torch.full((3,), 2.0))
    assert torch.equal(reuse.forecast(0.1), torch.full((3,), 2.0))


@pytest.mark.parametrize("method,order,expected", [("taylorseer", 2, 3), ("hicache", 1, 2), ("reuse", 0, 1)])
def test_memory_is_history_length_times_tensor_bytes(method, order, expected):
    forecaster = make_forecaster(ForecastCacheConfig(method=method, order=order))
    for t in (1.0, 0.8, 0.6, 0.4):
        forecaster.update(t, torch.zeros(1, 64, 32))
    assert forecaster.memory_bytes() == expected * 64 * 32 * 4
