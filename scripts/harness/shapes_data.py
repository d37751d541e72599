"""Procedural "shapes" data and a fixed, exactly invertible linear "VAE" for the trained micro FLUX.

Images: one shape (circle / square / triangle) of a foreground colour on a background of another
colour with a mild brightness gradient, 64x64 px, values in [0, 1] (ComfyUI IMAGE layout
[B, H, W, 3]). Prompts name every visible attribute: "a red circle on a blue background".

VAE: pixel-unshuffle 2x2 (3 -> 12 channels at 32x32), then a fixed orthonormal 12 -> 16 map (the
first 12 columns of a 16x16 Sylvester Hadamard matrix / 4: exact in floats, identical on every
machine), times a gain. Decode is the exact inverse (Q^T Q = I).
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

IMAGE_SIZE = 64
LATENT_CHANNELS = 16
# Gain so that latents put through latent_formats.Flux().process_in have roughly unit RMS.
VAE_GAIN = 4.0

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.75, 0.20),
    "blue": (0.15, 0.25, 0.95),
    "yellow": (0.95, 0.90, 0.10),
    "white": (0.95, 0.95, 0.95),
    "black": (0.05, 0.05, 0.05),
}
SHAPES = ("circle", "square", "triangle")
FG_COLOURS = ("red", "green", "blue", "yellow")
BG_COLOURS = ("red", "green", "blue", "yellow", "white", "black")


def prompt_for(shape: str, fg: str, bg: str) -> str:
    return f"a {fg} {shape} on a {bg} background"


# Every (shape, fg, bg) with bg != fg; the prompt list order is fixed (indices are used in training).
COMBOS: tuple[tuple[str, str, str], ...] = tuple(
    (s, f, b) for s, f, b in itertools.product(SHAPES, FG_COLOURS, BG_COLOURS) if f != b
)
PROMPTS: tuple[str, ...] = tuple(prompt_for(*c) for c in COMBOS)


def _hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def vae_matrix() -> torch.Tensor:
    """Q [16, 12] with orthonormal columns (exact entries +-1/4)."""
    return (_hadamard(16)[:, :12] / 4.0).to(torch.float32)


def encode(images: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, H, W, 3] in [0, 1] -> raw latent [B, 16, H/2, W/2] (before process_in)."""
    x = images.movedim(-1, 1).to(torch.float32) * 2.0 - 1.0
    x = F.pixel_unshuffle(x, 2)
    return torch.einsum("oc,bchw->bohw", vae_matrix().to(x.device), x) * VAE_GAIN


def decode(latent: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Raw latent [B, 16, h, w] (or 5-D with one frame) -> IMAGE [B, 2h, 2w, 3]."""
    if latent.dim() == 5:
        latent = latent[:, :, 0]
    z = latent.to(torch.float32) / VAE_GAIN
    x = torch.einsum("oc,bohw->bchw", vae_matrix().to(z.device), z)
    x = (F.pixel_shuffle(x, 2) + 1.0) * 0.5
    if clamp:
        x = x.clamp(0.0, 1.0)
    return x.movedim(1, -1)


def render(shape: str, fg: str, bg: str, cx: float, cy: float, r: float, grad_angle: float = 0.0,
           grad_amp: float = 0.0, size: int = IMAGE_SIZE) -> torch.Tensor:
    """One image [H, W, 3]; (cx, cy, r) in pixels; anti-aliased one-pixel edge."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32) + 0.5,
                            torch.arange(size, dtype=torch.float32) + 0.5, indexing="ij")
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        sd = r - torch.sqrt(dx * dx + dy * dy)
    elif shape == "square":
        sd = r * 0.85 - torch.maximum(dx.abs(), dy.abs())
    elif shape == "triangle":  # upright equilateral, circumradius r, inradius r/2
        s60, c60 = math.sin(math.pi / 3), math.cos(math.pi / 3)
        rt, dyt = r * 1.3, dy - r * 0.15  # larger and lowered so its area is close to the others'
        sd = torch.minimum(rt * 0.5 - dyt, rt * 0.5 - (s60 * dx.abs() - c60 * dyt))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    mask = (sd + 0.5).clamp(0.0, 1.0)[..., None]
    ramp = (dx * math.cos(grad_angle) + dy * math.sin(grad_angle)) / size
    bg_col = torch.tensor(PALETTE[bg]) * (1.0 + grad_amp * ramp[..., None])
    img = mask * torch.tensor(PALETTE[fg]) + (1.0 - mask) * bg_col
    return img.clamp(0.0, 1.0)


def sample_batch(gen: torch.Generator, n: int, size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """n random images [n, H, W, 3] and their prompt indices [n] (uniform over PROMPTS)."""
    idx = torch.randint(len(COMBOS), (n,), generator=gen)
    u = torch.rand(n, 5, generator=gen)
    imgs = []
    for i in range(n):
        shape, fg, bg = COMBOS[int(idx[i])]
        r = size * (0.16 + 0.14 * float(u[i, 0]))
        cx = r + (size - 2 * r) * float(u[i, 1])
        cy = r + (size - 2 * r) * float(u[i, 2])
        imgs.append(render(shape, fg, bg, cx, cy, r, grad_angle=2 * math.pi * float(u[i, 3]),
                           grad_amp=0.3 * float(u[i, 4]), size=size))
    return torch.stack(imgs), idx


def nearest_colour(rgb: torch.Tensor, names: tuple[str, ...] = tuple(PALETTE)) -> str:
    """Palette name closest (L2) to an RGB triple."""
    pal = torch.tensor([PALETTE[n] for n in names])
    return names[int(((pal - rgb.reshape(1, 3)) ** 2).sum(-1).argmin())]


def colour_analysis(image: torch.Tensor) -> dict[str, object]:
    """Background = median of the border pixels; foreground = pixels far from it.

    The foreground colour is the mean of the half of those pixels farthest from the background
    (the shape's core), so soft edges of a blurry sample do not wash it out.
    Returns {"background", "foreground", "fg_fraction", "fg_rgb", "bg_rgb"} for one IMAGE [H, W, 3].
    """
    img = image.to(torch.float32).reshape(image.shape[-3], image.shape[-2], 3)
    border = torch.cat([img[0], img[-1], img[:, 0], img[:, -1]])
    bg_rgb = border.median(dim=0).values
    dist = (img - bg_rgb).norm(dim=-1)
    fg_mask = dist > 0.35
    frac = float(fg_mask.float().mean())
    if fg_mask.any():
        d = dist[fg_mask]
        fg_rgb = img[fg_mask][d >= d.median()].mean(0)
    else:
        fg_rgb = torch.full((3,), float("nan"))
    return {
        "background": nearest_colour(bg_rgb),
        "foreground": nearest_colour(fg_rgb) if fg_mask.any() else None,
        "fg_fraction": frac,
        "fg_rgb": fg_rgb.tolist(),
        "bg_rgb": bg_rgb.tolist(),
    }
