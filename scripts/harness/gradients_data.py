"""Colour gradients with noise for the zoo models, at any size (multiples of 16 px).

A two-colour gradient (horizontal, vertical, diagonal or radial) with a random smooth warp of the
ramp, plus pixel noise and low-frequency noise of random strength. Values in [0, 1], ComfyUI IMAGE
layout [B, H, W, 3]. Prompt: "a horizontal gradient from red to blue" (32 prompts: 4 directions x
8 colour pairs).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from scripts.harness.shapes_data import PALETTE

DIRECTIONS = ("horizontal", "vertical", "diagonal", "radial")
COLOUR_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "blue"), ("blue", "yellow"), ("green", "white"), ("black", "red"),
    ("yellow", "green"), ("white", "blue"), ("black", "yellow"), ("red", "white"),
)
COMBOS: tuple[tuple[str, str, str], ...] = tuple((d, a, b) for d in DIRECTIONS for a, b in COLOUR_PAIRS)
PROMPTS: tuple[str, ...] = tuple(f"a {d} gradient from {a} to {b}" for d, a, b in COMBOS)


def ramp(direction: str, height: int, width: int, flip: bool = False, jitter: float = 0.0,
         centre: tuple[float, float] = (0.5, 0.5)) -> torch.Tensor:
    """The ramp t [H, W] in [0, 1] of a gradient (0: first colour, 1: second colour).

    Diagonal runs from the top-left corner (or the top-right with ``flip``); radial from the centre
    outwards; ``jitter`` tilts the linear ones by up to that many radians.
    """
    ys, xs = torch.meshgrid((torch.arange(height, dtype=torch.float32) + 0.5) / height,
                            (torch.arange(width, dtype=torch.float32) + 0.5) / width, indexing="ij")
    if direction == "radial":
        d = torch.sqrt(((xs - centre[0]) * width) ** 2 + ((ys - centre[1]) * height) ** 2)
        return (d / d.max()).clamp(0.0, 1.0)
    base = {"horizontal": 0.0, "vertical": math.pi / 2, "diagonal": math.atan2(height, width)}[direction]
    if direction == "diagonal" and flip:
        xs = 1.0 - xs
    th = base + jitter
    u = xs * math.cos(th) * width + ys * math.sin(th) * height
    return ((u - u.min()) / (u.max() - u.min())).clamp(0.0, 1.0)


def render(direction: str, a: str, b: str, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
    """One gradient image [H, W, 3] with random tilt, warp and noise drawn from ``gen``."""
    u = torch.rand(5, generator=gen)
    t = ramp(direction, height, width, flip=bool(u[0] < 0.5), jitter=0.25 * (float(u[1]) - 0.5),
             centre=(0.3 + 0.4 * float(u[2]), 0.3 + 0.4 * float(u[3])))
    warp = F.interpolate(torch.randn(1, 1, 3, 3, generator=gen), size=(height, width), mode="bicubic",
                         align_corners=True)[0, 0]
    t = (t + 0.08 * warp).clamp(0.0, 1.0)
    t = t * t * (3.0 - 2.0 * t) if float(u[4]) < 0.5 else t  # smoothstep half the time
    img = torch.tensor(PALETTE[a]) * (1.0 - t[..., None]) + torch.tensor(PALETTE[b]) * t[..., None]
    grain = 0.01 + 0.07 * float(torch.rand((), generator=gen))
    low = F.interpolate(torch.randn(1, 3, 4, 4, generator=gen), size=(height, width), mode="bilinear",
                        align_corners=False)[0].movedim(0, -1)
    img = img + grain * torch.randn(height, width, 3, generator=gen) + 0.03 * low
    return img.clamp(0.0, 1.0)


def sample_batch(gen: torch.Generator, n: int, height: int = 64, width: int = 64
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """n images [n, H, W, 3] and their prompt indices [n] (uniform over PROMPTS)."""
    idx = torch.randint(len(COMBOS), (n,), generator=gen)
    return torch.stack([render(*COMBOS[int(i)], height, width, gen) for i in idx]), idx
