"""Fidelity metrics for A/B checks: PSNR, SSIM and a difference heatmap (pure PyTorch).

Used by the DiTAccelCompare node to compare an accelerated result with the uncached result of the
same seed. Inputs are channel-first batches ``[N, C, H, W]``; the host adapter reshapes images
(``[B, H, W, C]``) and video/Qwen latents (``[B, C, T, H, W]``) into that form.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import ConfigError

# SSIM constants of Wang et al. (2004): 11-tap Gaussian window, sigma 1.5, K1 0.01, K2 0.03.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def mse(baseline: torch.Tensor, test: torch.Tensor) -> float:
    """Mean squared error over every element, computed in float64 (tiny differences stay visible)."""
    return float(torch.mean((baseline.double() - test.double()) ** 2))


def psnr_db(baseline: torch.Tensor, test: torch.Tensor, data_range: float = 1.0) -> float:
    """PSNR in dB, ``10 log10(range^2 / MSE)``; ``inf`` when the two are identical."""
    if data_range <= 0:
        raise ConfigError(f"psnr_db: data_range must be > 0 (got {data_range}); pass the value span of the "
                          "baseline, e.g. 1.0 for images")
    err = mse(baseline, test)
    if err == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / err)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(coords ** 2) / (2.0 * sigma * sigma))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(baseline: torch.Tensor, test: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean SSIM over all channels and windows of ``[N, C, H, W]`` batches; 1.0 when identical.

    Images smaller than the 11-pixel window use the largest odd window that fits (sigma scaled
    with it); 1-pixel-wide inputs fall back to one global window.
    """
    if baseline.dim() != 4 or baseline.shape != test.shape:
        raise ConfigError(f"ssim: expects two [N, C, H, W] tensors of one shape (got {tuple(baseline.shape)} "
                          f"and {tuple(test.shape)}); reshape both the same way first")
    if data_range <= 0:
        raise ConfigError(f"ssim: data_range must be > 0 (got {data_range})")
    x, y = baseline.double(), test.double()
    n, c, h, w = x.shape
    size = min(SSIM_WINDOW, h, w)
    if size % 2 == 0:
        size -= 1
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    if size < 3:  # too small for a sliding window: one window over the whole image
        mu_x, mu_y = x.mean(dim=(2, 3)), y.mean(dim=(2, 3))
        var_x = x.var(dim=(2, 3), unbiased=False)
        var_y = y.var(dim=(2, 3), unbiased=False)
        cov = ((x - mu_x[..., None, None]) * (y - mu_y[..., None, None])).mean(dim=(2, 3))
    else:
        window = _gaussian_window(size, SSIM_SIGMA * size / SSIM_WINDOW).to(x.device)
        kernel = window.expand(c, 1, size, size).contiguous()

        def blur(t: torch.Tensor) -> torch.Tensor:
            return F.conv2d(t, kernel, groups=c)  # 'valid' windows only, as in the reference method

        mu_x, mu_y = blur(x), blur(y)
        var_x = blur(x * x) - mu_x * mu_x
        var_y = blur(y * y) - mu_y * mu_y
        cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return float((num / den).mean())


def difference_heatmap(baseline: torch.Tensor, test: torch.Tensor, data_range: float = 1.0,
                       amplify: float = 5.0) -> torch.Tensor:
    """Per-pixel difference as an RGB image ``[N, H, W, 3]`` in [0, 1].

    The mean absolute difference over channels, divided by ``data_range`` and multiplied by
    ``amplify``, is clipped to [0, 1] and coloured black -> red -> yellow -> white (identical
    pixels stay black). A fixed scale, not a per-image one, so a clean result looks clean.
    """
    if data_range <= 0 or amplify <= 0:
        raise ConfigError(f"difference_heatmap: data_range and amplify must be > 0 (got {data_range}, {amplify})")
    d = (baseline.float() - test.float()).abs().mean(dim=1) / data_range
    v = (d * amplify).clamp(0.0, 1.0)
    r = (v * 3.0).clamp(0.0, 1.0)
    g = (v * 3.0 - 1.0).clamp(0.0, 1.0)
    b = (v * 3.0 - 2.0).clamp(0.0, 1.0)
    return torch.stack([r, g, b], dim=-1)


def value_range(t: torch.Tensor) -> float:
    """The value span (max - min) of ``t``, the PSNR/SSIM data range for latents; 1.0 if constant."""
    span = float(t.max() - t.min()) if t.numel() else 0.0
    return span if span > 0 else 1.0
