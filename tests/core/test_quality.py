"""PSNR / SSIM / heatmap of accel_core.quality against values worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from accel_core.errors import ConfigError
from accel_core.quality import SSIM_K1, SSIM_K2, difference_heatmap, mse, psnr_db, ssim, value_range


def _image(seed: int = 0, shape=(2, 3, 32, 32)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.2 + 0.6 * torch.rand(shape, generator=g, dtype=torch.float64)  # inside [0.2, 0.8]: +-noise stays in range


def _signs(shape, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, shape, generator=g).float() * 2 - 1


def test_identical_inputs_give_inf_psnr_and_ssim_one():
    x = _image()
    assert psnr_db(x, x.clone()) == math.inf
    assert ssim(x, x.clone()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.1])
def test_known_noise_level_matches_the_psnr_formula(sigma):
    # +-sigma at every pixel: MSE is exactly sigma^2, so PSNR = 10 log10(1 / sigma^2).
    x = _image()
    y = x + sigma * _signs(x.shape)
    assert mse(x, y) == pytest.approx(sigma ** 2, rel=1e-6)
    assert psnr_db(x, y) == pytest.approx(10 * math.log10(1 / sigma ** 2), abs=1e-4)


def test_data_range_scales_psnr():
    x = _image()
    y = x + 0.05 * _signs(x.shape)
    # The same relative error on a signal twice as wide gives the same PSNR.
    assert psnr_db(2 * x, 2 * y, data_range=2.0) == pytest.approx(psnr_db(x, y, 1.0), abs=1e-6)
    with pytest.raises(ConfigError, match="data_range"):
        psnr_db(x, y, data_range=0)


def test_ssim_of_a_constant_offset_on_a_flat_image_is_the_luminance_term():
    # Flat image: variances and covariance are 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 0.5, 0.6
    x = torch.full((1, 3, 24, 24), a, dtype=torch.float64)
    y = torch.full((1, 3, 24, 24), b, dtype=torch.float64)
    c1 = SSIM_K1 ** 2
    assert ssim(x, y) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-9)


def test_ssim_falls_with_noise_and_goes_negative_for_an_inverted_image():
    x = _image()
    scores = [ssim(x, x + s * _signs(x.shape)) for s in (0.01, 0.05, 0.2)]
    assert 1.0 > scores[0] > scores[1] > scores[2]
    assert ssim(x, 1.0 - x) < 0


def test_ssim_on_images_smaller_than_the_window():
    x = _image(shape=(1, 1, 5, 7))
    y = x + 0.05 * _signs(x.shape)
    assert 0 < ssim(x, y) < 1 and ssim(x, x) == pytest.approx(1.0)
    tiny = torch.tensor([[[[0.2, 0.8]]]])  # 1x2: one global window
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    other = torch.tensor([[[[0.8, 0.2]]]])
    # means equal (0.5), variances 0.09, covariance -0.09
    expected = (2 * 0.25 + c1) * (2 * -0.09 + c2) / ((0.5 + c1) * (0.18 + c2))
    assert ssim(tiny, other) == pytest.approx(expected, abs=1e-9)


def test_ssim_rejects_mismatched_shapes():
    with pytest.raises(ConfigError, match=r"\(1, 3, 8, 8\) and \(1, 3, 8, 9\)"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))


def test_heatmap_black_where_identical_white_at_full_difference():
    x = torch.zeros(1, 3, 4, 4)
    y = x.clone()
    y[..., 0, 0] = 1.0  # full-range difference at one pixel
    y[..., 1, 1] = 0.1  # 0.1 x amplify 5 = 0.5: red, partly green
    heat = difference_heatmap(x, y, amplify=5.0)
    assert heat.shape == (1, 4, 4, 3)
    assert torch.equal(heat[0, 0, 0], torch.ones(3))
    assert torch.allclose(heat[0, 1, 1], torch.tensor([1.0, 0.5, 0.0]))
    assert heat[0, 2:, 2:].abs().sum() == 0
    assert difference_heatmap(x, x).abs().sum() == 0


def test_value_range():
    assert value_range(torch.tensor([-2.0, 3.0])) == 5.0
    assert value_range(torch.zeros(3)) == 1.0


def test_ssim_matches_an_independent_implementation():
    # kornia (a ComfyUI dependency) implements the same Wang et al. SSIM; 'valid' windows like ours.
    kornia = pytest.importorskip("kornia")
    x = _image(seed=3, shape=(2, 3, 40, 40))
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=x.dtype)).clamp(0, 1)
    reference = float(kornia.metrics.ssim(x, y, 11, max_val=1.0, padding="valid").mean())
    assert ssim(x, y) == pytest.approx(reference, abs=1e-8)
