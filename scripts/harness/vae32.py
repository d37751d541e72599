"""A 32-channel version of shapes_data's exact linear "VAE", for HunyuanVideo 1.5 (32-channel latents).

Same pixel-unshuffle 2x2 (3 -> 12 channels at half size), then a fixed orthonormal 12 -> 32 map (the
first 12 columns of a 32x32 Sylvester Hadamard matrix / sqrt(32)), times a gain. Decode is the exact
inverse on the image subspace (Q^T Q = I). Works at any even size; video clips go frame by frame
(no temporal compression, one latent frame per frame).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from scripts.harness.shapes_data import _hadamard

LATENT_CHANNELS = 32
# Gain so that latents put through latent_formats.HunyuanVideo15().process_in have roughly unit RMS
# on the zoo's data (measured: 0.9-1.1 on moving shapes and glyphs).
VAE_GAIN = 1.8


def vae_matrix() -> torch.Tensor:
    """Q [32, 12] with orthonormal columns (entries +-1/sqrt(32))."""
    return (_hadamard(32)[:, :12] / math.sqrt(32.0)).to(torch.float32)


def encode(images: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, H, W, 3] in [0, 1] -> raw latent [B, 32, H/2, W/2] (before process_in)."""
    x = F.pixel_unshuffle(images.movedim(-1, 1).to(torch.float32) * 2.0 - 1.0, 2)
    return torch.einsum("oc,bchw->bohw", vae_matrix().to(x.device), x) * VAE_GAIN


def decode(latent: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Raw latent [B, 32, h, w] -> IMAGE [B, 2h, 2w, 3]."""
    z = latent.to(torch.float32) / VAE_GAIN
    x = (F.pixel_shuffle(torch.einsum("oc,bohw->bchw", vae_matrix().to(z.device), z), 2) + 1.0) * 0.5
    return (x.clamp(0.0, 1.0) if clamp else x).movedim(1, -1)


def encode_clips(clips: torch.Tensor) -> torch.Tensor:
    """Clips [B, T, H, W, 3] -> raw latent [B, 32, T, H/2, W/2]."""
    b, t = clips.shape[:2]
    lat = encode(clips.reshape(b * t, *clips.shape[2:]))
    return lat.reshape(b, t, *lat.shape[1:]).movedim(1, 2).contiguous()


def decode_frames(latent: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Raw latent [B, 32, T, h, w] -> frames [B, T, 2h, 2w, 3]."""
    b, _, t = latent.shape[:3]
    img = decode(latent.movedim(2, 1).reshape(b * t, latent.shape[1], *latent.shape[3:]), clamp=clamp)
    return img.reshape(b, t, *img.shape[1:])
