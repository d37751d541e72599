"""shapes_data at any height x width (not only 64x64 squares), same prompts and look.

shapes_data.render draws on a square canvas; here the canvas is max(H, W) wide and cropped, with
the shape's centre placed so that the whole shape lies inside the crop.
"""
from __future__ import annotations

import math

import torch

from scripts.harness import shapes_data

PROMPTS = shapes_data.PROMPTS
COMBOS = shapes_data.COMBOS


def render(shape: str, fg: str, bg: str, cx: float, cy: float, r: float, height: int, width: int,
           grad_angle: float = 0.0, grad_amp: float = 0.0) -> torch.Tensor:
    """One image [H, W, 3]; (cx, cy, r) in pixels of the H x W frame. r <= 0 draws the background only."""
    size = max(height, width)
    ox, oy = (size - width) // 2, (size - height) // 2
    img = shapes_data.render(shape, fg, bg, cx + ox, cy + oy, r if r > 0 else -4.0 * size,
                             grad_angle=grad_angle, grad_amp=grad_amp, size=size)
    return img[oy:oy + height, ox:ox + width]


def random_geometry(gen: torch.Generator, height: int, width: int) -> dict[str, float]:
    """Radius (16-30 % of the short side), centre inside the frame and background ramp."""
    u = torch.rand(5, generator=gen)
    short = min(height, width)
    r = short * (0.16 + 0.14 * float(u[0]))
    return {"r": r, "cx": r + (width - 2 * r) * float(u[1]), "cy": r + (height - 2 * r) * float(u[2]),
            "grad_angle": 2 * math.pi * float(u[3]), "grad_amp": 0.3 * float(u[4])}


def sample_batch(gen: torch.Generator, n: int, height: int = 64, width: int = 64
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """n images [n, H, W, 3] and their prompt indices [n] (uniform over PROMPTS)."""
    idx = torch.randint(len(COMBOS), (n,), generator=gen)
    imgs = [render(*COMBOS[int(i)], height=height, width=width, **random_geometry(gen, height, width)) for i in idx]
    return torch.stack(imgs), idx
