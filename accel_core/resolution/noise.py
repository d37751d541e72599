"""The unified noise field and stage transitions for flow-matching models.

One noise tensor `eps` is drawn at the target latent size (KSampler already does this: the noise
handed to the sampler is the field). A stage at scale 1/f sees

    eps_f = f * avg_pool(eps, f)            (spatial dims only: the last two)

Why the factor f: avg_pool over an f x f window of i.i.d. unit-variance values has variance 1/f^2
(sum of f^2 independent terms, divided by f^2, squared); multiplying by f restores variance 1, so
the coarse noise is a proper N(0, 1) draw, and it is by construction the pooled fine noise
(consistency: every coarse value is the rescaled mean of the fine values it covers). Video latents
[B, C, T, H, W] are pooled over H, W only: frames keep their count, so time needs no rescale.

Switch at sigma s (flow matching: x_s = s * eps + (1 - s) * x0): the coarse stage's denoised
estimate x0_hat is up-sampled and re-noised with the SAME full-size field,

    x = s * eps + (1 - s) * up(x0_hat),

so every stage heads for the image this noise field defines, instead of a fresh draw.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError


def _as_4d(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Fold every leading dim into the batch so pooling acts on the last two (H, W) only."""
    if x.dim() < 3:
        raise ConfigError(f"latent must have at least 3 dims (C, H, W), got shape {tuple(x.shape)}")
    lead = tuple(x.shape[:-2])
    return x.reshape(-1, 1, x.shape[-2], x.shape[-1]), lead


def spatial_dims_ok(shape, factor: int, patch: int) -> bool:
    """True when H and W are multiples of factor * patch (every coarse token covers whole fine ones)."""
    return all(int(s) % (factor * patch) == 0 for s in tuple(shape)[-2:])


def _check(x: torch.Tensor, factor: int) -> None:
    if factor < 1:
        raise ConfigError(f"factor must be >= 1, got {factor}")
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ConfigError(f"latent size {h}x{w} is not divisible by the factor {factor}")


def _check_frames(x: torch.Tensor, frames: int) -> None:
    if frames < 1:
        raise ConfigError(f"frames must be >= 1, got {frames}")
    if frames > 1 and (x.dim() != 5 or x.shape[2] % frames):
        raise ConfigError(f"latent {tuple(x.shape)} has no frame axis divisible by {frames} (video [B, C, T, H, W])")


def downsample_latent(x: torch.Tensor, factor: int, frames: int = 1) -> torch.Tensor:
    """Average-pool H, W by `factor` (and T by `frames`, video only): the coarse view of an
    image-like latent (means are kept)."""
    if factor == 1 and frames == 1:
        return x
    _check_frames(x, frames)
    if frames > 1:
        b, c, t, h, w = x.shape
        x = x.float().reshape(b, c, t // frames, frames, h, w).mean(dim=3).to(x.dtype)
    if factor == 1:
        return x
    _check(x, factor)
    flat, lead = _as_4d(x)
    pooled = F.avg_pool2d(flat.float(), factor)
    return pooled.reshape(*lead, *pooled.shape[-2:]).to(x.dtype)


def downsample_noise(eps: torch.Tensor, factor: int, frames: int = 1) -> torch.Tensor:
    """The field's noise at scale 1/factor (1/frames in time): sqrt(n) * mean of n = factor^2 * frames
    values; unit variance, exactly the pooled field."""
    if factor == 1 and frames == 1:
        return eps
    return (downsample_latent(eps.float(), factor, frames) * (factor * math.sqrt(frames))).to(eps.dtype)


def upsample(x: torch.Tensor, factor: int, mode: str = "nearest", frames: int = 1) -> torch.Tensor:
    """Up-sample H, W by `factor` (and T by `frames`). nearest: each coarse value fills its block,
    so downsample_latent(upsample(x)) == x exactly (the sketch's block means are kept). bilinear
    (align_corners=False; linear in time): smoother, block means only approximately kept."""
    if mode not in ("nearest", "bilinear"):
        raise ConfigError(f"upsample mode must be 'nearest' or 'bilinear', got {mode!r}")
    if frames > 1:
        if x.dim() != 5:
            raise ConfigError(f"temporal up-sampling needs a video latent [B, C, T, H, W], got {tuple(x.shape)}")
        if mode == "nearest":
            x = x.repeat_interleave(frames, dim=2)
        else:
            b, c, t, h, w = x.shape
            seq = x.float().permute(0, 1, 3, 4, 2).reshape(-1, 1, t)
            seq = F.interpolate(seq, scale_factor=frames, mode="linear", align_corners=False)
            x = seq.reshape(b, c, h, w, t * frames).permute(0, 1, 4, 2, 3).to(x.dtype)
    if factor == 1:
        return x
    flat, lead = _as_4d(x.float())
    if mode == "nearest":
        up = F.interpolate(flat, scale_factor=factor, mode="nearest")
    else:
        up = F.interpolate(flat, scale_factor=factor, mode="bilinear", align_corners=False)
    return up.reshape(*lead, *up.shape[-2:]).to(x.dtype)


def renoise(x0_hat_full: torch.Tensor, eps_full: torch.Tensor, sigma: float) -> torch.Tensor:
    """Flow-matching state at `sigma` from an estimate and the shared field: s*eps + (1-s)*x0."""
    if x0_hat_full.shape != eps_full.shape:
        raise ConfigError(f"estimate {tuple(x0_hat_full.shape)} and noise {tuple(eps_full.shape)} differ in shape")
    s = float(sigma)
    return (s * eps_full.float() + (1.0 - s) * x0_hat_full.float()).to(eps_full.dtype)


def pooled_sigma(sigma: float, factor: int, frames: int = 1) -> float:
    """Noise level of the pooled full-resolution state, seen as a unit-noise state at 1/factor.

    avg_pool(x_s, f) = s * avg_pool(eps) + (1 - s) * avg_pool(x0), and avg_pool(eps) has std 1/f:
    rescaled to unit noise (x' = a * pooled, a = 1 / (s/f + 1 - s)) the coarse grid is a flow state
    at s' = (s/f) / (s/f + 1 - s) = s / (s + f (1 - s)). That is the inverse of SD3's time shift
    with shift f: a coarse grid at the step's own sigma is noisier than the image it stands for,
    which is why real models shift their schedules with resolution. s' = s at 0 and 1. Pooling
    `frames` frames too divides the noise std by sqrt(frames) more: f becomes f * sqrt(frames).
    """
    s = float(sigma)
    k = factor * math.sqrt(frames)
    if k == 1 or s <= 0.0 or s >= 1.0:
        return s
    return s / (s + k * (1.0 - s))


def pooled_scale(sigma: float, factor: int, frames: int = 1) -> float:
    """a(s): the factor that turns the pooled full-resolution state into a unit-noise state at
    pooled_sigma (x' = a * avg_pool(x)); 1 at full resolution."""
    k = factor * math.sqrt(frames)
    return 1.0 / (float(sigma) / k + 1.0 - float(sigma))


def carry_state(coarse_state: torch.Tensor, eps: torch.Tensor, sigma: float, coarse: tuple[int, int],
                fine: tuple[int, int]) -> torch.Tensor:
    """The finer stage's unit-noise state at `sigma` from the coarser stage's state (both pooled views
    of one full-resolution trajectory, see pooled_sigma).

    The coarse state holds the trajectory's low frequencies (at the coarse grid); what the finer grid
    adds is, at this noise level, almost only noise: sigma times the field's detail between the two
    grids. So: pooled_fine(x) ~= up(pooled_coarse(x)) + sigma * (pooled_fine(eps) - up(pooled_coarse(eps))),
    nearest up-sampling (an exact split: block means of the detail are zero). `coarse` / `fine` are
    (factor, frames) with fine dividing coarse. Unlike re-noising the sketch's x0 estimate with the
    field, this keeps the noise the sampler has actually been carrying (measured: the re-noise alone,
    fed the full-resolution run's own estimate, already lost 10-20 dB; docs/RESOLUTION.md)."""
    (cf, ct), (ff, ft) = coarse, fine
    if cf % ff or ct % ft:
        raise ConfigError(f"stage {fine} does not divide stage {coarse}")
    pooled_coarse = coarse_state.float() / pooled_scale(sigma, cf, ct)
    eps_fine = downsample_latent(eps.float(), ff, ft)
    eps_coarse_up = upsample(downsample_latent(eps.float(), cf, ct), cf // ff, "nearest", frames=ct // ft)
    detail = float(sigma) * (eps_fine - eps_coarse_up)
    pooled_fine = upsample(pooled_coarse, cf // ff, "nearest", frames=ct // ft) + detail
    return (pooled_fine * pooled_scale(sigma, ff, ft)).to(eps.dtype)
