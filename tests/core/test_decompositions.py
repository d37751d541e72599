"""FreqCa band split and SVD-Cache subspace projection: exact math on constructed tensors."""
from __future__ import annotations

import pytest
import torch

from accel_core import ForecastCacheConfig
from accel_core.hidden.decompositions import DecomposedForecaster, TokenGrid
from accel_core.hidden.decompositions.freq import FrequencyDecomposition, dct_matrix, dct_nd, split_bands
from accel_core.hidden.decompositions.svd import SubspaceDecomposition, energy_rank, randomized_svd
from accel_core.hidden.forecasters import make_forecaster


@pytest.mark.parametrize("n", [1, 2, 5, 16, 37])
def test_dct_matrix_is_orthonormal(n):
    d = dct_matrix(n, dtype=torch.float64)
    torch.testing.assert_close(d @ d.T, torch.eye(n, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("grid", [TokenGrid(1, 6, 10), TokenGrid(3, 5, 7), TokenGrid(1, 1, 9)])
def test_dct_round_trip_is_exact_on_non_square_grids(grid):
    x = torch.randn(2, grid.t, grid.h, grid.w, 4, dtype=torch.float64)
    back = dct_nd(dct_nd(x, (1, 2, 3)), (1, 2, 3), inverse=True)
    torch.testing.assert_close(back, x, atol=1e-12, rtol=0)


def test_dct_of_a_constant_is_pure_dc():
    x = torch.full((1, 1, 4, 6, 1), 3.0, dtype=torch.float64)
    c = dct_nd(x, (2, 3))
    assert abs(float(c[0, 0, 0, 0, 0]) - 3.0 * (4 * 6) ** 0.5) < 1e-9
    assert float(c.flatten()[1:].abs().max()) < 1e-9


@pytest.mark.parametrize("per_frame", [False, True])
def test_band_split_sums_to_input_and_is_a_projection(per_frame):
    grid = TokenGrid(3, 6, 10)
    x = torch.randn(2, grid.tokens, 5, dtype=torch.float64)
    low, high = split_bands(x, grid, cutoff=0.3, per_frame=per_frame)
    torch.testing.assert_close(low + high, x)
    low2, high2 = split_bands(low, grid, cutoff=0.3, per_frame=per_frame)
    torch.testing.assert_close(low2, low, atol=1e-10, rtol=0)  # idempotent
    assert float(high2.abs().max()) < 1e-10
    assert abs(float((low * high).sum())) < 1e-8  # orthogonal bands


def test_band_split_keeps_smooth_fields_low_and_checkerboards_high():
    grid = TokenGrid(1, 8, 12)
    hh, ww = torch.meshgrid(torch.arange(8.0), torch.arange(12.0), indexing="ij")
    smooth = torch.ones(1, grid.tokens, 1, dtype=torch.float64) * 2.0
    checker = ((-1.0) ** (hh + ww)).reshape(1, grid.tokens, 1).double()
    low, high = split_bands(smooth + checker, grid, cutoff=0.1)
    torch.testing.assert_close(low, smooth)
    torch.testing.assert_close(high, checker)


def test_per_frame_split_differs_from_3d_only_along_time():
    grid = TokenGrid(4, 4, 4)
    ramp_in_time = torch.arange(4.0, dtype=torch.float64).repeat_interleave(16).reshape(1, 64, 1)
    low3d, _ = split_bands(ramp_in_time, grid, cutoff=0.1)
    low2d, _ = split_bands(ramp_in_time, grid, cutoff=0.1, per_frame=True)
    torch.testing.assert_close(low2d, ramp_in_time)  # constant within each frame: all low per frame
    assert float((low3d - ramp_in_time).abs().max()) > 0.1  # a ramp over frames is not DC in 3-D


def test_randomized_svd_recovers_a_low_rank_matrix_and_energy_rank():
    g = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(200, 3, generator=g))[0]
    v = torch.linalg.qr(torch.randn(40, 3, generator=g))[0]
    m = u @ torch.diag(torch.tensor([10.0, 3.0, 1.0])) @ v.T
    s, basis = randomized_svd(m, 8)
    torch.testing.assert_close(s[:3], torch.tensor([10.0, 3.0, 1.0]), atol=1e-4, rtol=1e-4)
    total = float(m.square().sum())  # 110
    assert energy_rank(s, total, 0.9) == 1  # 100/110
    assert energy_rank(s, total, 0.95) == 2  # 109/110
    assert energy_rank(s, total, 0.999) == 3
    proj = m @ basis[:, :3] @ basis[:, :3].T
    torch.testing.assert_close(proj, m, atol=1e-4, rtol=1e-4)


def test_subspace_projection_is_idempotent_and_rank_follows_energy():
    config = ForecastCacheConfig(decomposition="svd", svd_energy=0.95, svd_max_rank=8)
    g = torch.Generator().manual_seed(1)
    value = (torch.randn(1, 64, 2, generator=g) @ torch.randn(2, 16, generator=g)).float()
    dec = SubspaceDecomposition(config)
    dec.fit(value, None)
    assert dec.rank <= 2 and dec.energy_captured >= 0.95
    x = torch.randn(1, 64, 16, generator=g)
    once = dec.project(x, None)
    torch.testing.assert_close(dec.project(once, None), once, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dec.project(value, None), value, atol=1e-4, rtol=1e-4)
    # Sign/rotation invariance: the projector, not the vectors, is what forecasts use.
    flipped = SubspaceDecomposition(config)
    flipped.basis = -dec.basis
    torch.testing.assert_close(flipped.project(x, None), once)


def _line(t, slope, base):
    return base + slope * t


def test_decomposed_forecast_reuses_the_complement_and_forecasts_the_projection():
    grid = TokenGrid(1, 4, 4)
    config = ForecastCacheConfig(method="taylorseer", order=1, decomposition="freq", freq_cutoff=0.1,
                                 split_select="fixed")
    fc = DecomposedForecaster(config, make_forecaster(config), FrequencyDecomposition(config))
    fc.grid = grid
    g = torch.Generator().manual_seed(2)
    base, slope = torch.randn(1, 16, 3, generator=g), torch.randn(1, 16, 3, generator=g)
    for t in (0.0, 1.0):
        fc.update(t, _line(t, slope, base))
    got = fc.forecast(3.0)
    low_anchor, _ = split_bands(_line(1.0, slope, base), grid, 0.1)
    _, high_true = split_bands(_line(3.0, slope, base), grid, 0.1)
    torch.testing.assert_close(got, low_anchor + high_true, atol=1e-5, rtol=1e-5)


def test_freqca_with_hermite_order_2_holds_three_hidden_states():
    config = ForecastCacheConfig(method="hicache", order=2, decomposition="freq")
    fc = DecomposedForecaster(config, make_forecaster(config), FrequencyDecomposition(config))
    fc.grid = TokenGrid(1, 4, 4)
    for t in (0.9, 0.8, 0.7, 0.6):
        fc.update(t, torch.randn(1, 16, 8))
    assert fc.memory_bytes() == 3 * 16 * 8 * 4


def test_adaptive_split_reuses_the_noisy_band_and_forecasts_the_smooth_one():
    grid = TokenGrid(1, 8, 8)
    g = torch.Generator().manual_seed(3)
    smooth_base = split_bands(torch.randn(1, 64, 4, generator=g), grid, 0.2)[0]
    smooth_slope = split_bands(torch.randn(1, 64, 4, generator=g), grid, 0.2)[0]

    def value(t):
        noise = split_bands(torch.randn(1, 64, 4, generator=g), grid, 0.2)[1]
        return smooth_base + t * smooth_slope + noise

    config = ForecastCacheConfig(method="taylorseer", order=1, decomposition="freq", freq_cutoff=0.2)
    fc = DecomposedForecaster(config, make_forecaster(config), FrequencyDecomposition(config))
    fc.grid = grid
    for t in (0.0, 1.0, 2.0, 3.0):
        last = value(t)
        fc.update(t, last)
    # With one anchor the forecast is reuse: nothing predicted, a tie (gain 1). Later: the noisy high band
    # is anti-correlated with its own extrapolation (gain clipped to 0), the smooth low band exact (gain 1).
    assert fc.history[0] == (1.0, 1.0)
    for high_gain, low_gain in fc.history[1:]:
        assert high_gain == 0.0 and low_gain == pytest.approx(1.0, abs=1e-6)
    got = fc.forecast(5.0)
    want = smooth_base + 5.0 * smooth_slope + split_bands(last, grid, 0.2)[1]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_fixed_split_keeps_the_papers_assignment():
    config = ForecastCacheConfig(method="taylorseer", order=1, decomposition="svd", split_select="fixed")
    fc = DecomposedForecaster(config, make_forecaster(config), SubspaceDecomposition(config))
    for t in (0.0, 1.0, 2.0):
        fc.update(t, torch.randn(1, 16, 8))
    assert fc.gains == (1.0, 0.0) and fc.history == []


def test_gain_is_the_clipped_least_squares_scale():
    from accel_core.hidden.decompositions.base import _gain

    p = torch.tensor([1.0, 2.0])
    assert _gain(p, 0.5 * p) == pytest.approx(0.5)
    assert _gain(p, 3.0 * p) == 1.0
    assert _gain(p, -p) == 0.0
    assert _gain(torch.zeros(2), p) == 1.0
