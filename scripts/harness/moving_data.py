"""Moving shapes and moving glyphs: short clips at any size, for the zoo's video model.

A clip is ``frames`` frames of one shape (shapes_sized) or one glyph (glyphs_data) translating in a
straight line at constant velocity (random direction, 1.5-3.5 px a frame) over a fixed background,
always fully inside the frame (the path is shortened when it cannot fit), like shapes_video but at
any H x W and with glyphs. Prompts: the shapes prompts then the glyph prompts ("a red circle on a
blue background", "the letter K in red on white"). Clips [B, T, H, W, 3] in [0, 1].
"""
from __future__ import annotations

import math

import torch

from scripts.harness import glyphs_data, shapes_sized

SPEED_RANGE = (1.5, 3.5)  # pixels per frame
PROMPTS: tuple[str, ...] = shapes_sized.PROMPTS + glyphs_data.PROMPTS
N_SHAPES = len(shapes_sized.PROMPTS)


def _path(gen: torch.Generator, half: float, frames: int, height: int, width: int) -> list[tuple[float, float]]:
    """Centres of a constant-velocity path that keeps an object of half-size ``half`` inside the frame."""
    u = torch.rand(4, generator=gen)
    speed = SPEED_RANGE[0] + (SPEED_RANGE[1] - SPEED_RANGE[0]) * float(u[0])
    angle = 2 * math.pi * float(u[1])
    span = max(1, frames - 1)
    vx = speed * math.cos(angle)
    vy = speed * math.sin(angle)
    vx = math.copysign(min(abs(vx), max(0.0, width - 2 * half) / span), vx)
    vy = math.copysign(min(abs(vy), max(0.0, height - 2 * half) / span), vy)
    x_lo, x_hi = half - min(0.0, vx * span), width - half - max(0.0, vx * span)
    y_lo, y_hi = half - min(0.0, vy * span), height - half - max(0.0, vy * span)
    x0 = x_lo + (x_hi - x_lo) * float(u[2])
    y0 = y_lo + (y_hi - y_lo) * float(u[3])
    return [(x0 + vx * t, y0 + vy * t) for t in range(frames)]


def render_clip(gen: torch.Generator, index: int, frames: int, height: int, width: int) -> torch.Tensor:
    """One clip [T, H, W, 3] for PROMPTS[index], motion and layout drawn from gen."""
    if index < N_SHAPES:
        shape, fg, bg = shapes_sized.COMBOS[index]
        geo = shapes_sized.random_geometry(gen, height, width)
        geo["r"] = min(height, width) * (0.16 + 0.08 * float(torch.rand((), generator=gen)))
        pts = _path(gen, geo["r"], frames, height, width)
        return torch.stack([shapes_sized.render(shape, fg, bg, height=height, width=width,
                                                **{**geo, "cx": x, "cy": y}) for x, y in pts])
    char, fg, bg = glyphs_data.COMBOS[index - N_SHAPES]
    place = glyphs_data.random_placement(gen, height, width)
    pts = _path(gen, 0.45 * place["size_px"], frames, height, width)
    return torch.stack([glyphs_data.render(char, fg, bg, height, width, **{**place, "cx": x, "cy": y})
                        for x, y in pts])


def sample_clips(gen: torch.Generator, n: int, frames: int = 4, height: int = 32, width: int = 32,
                 glyph_share: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """n clips [n, T, H, W, 3] and prompt indices [n]: shapes or (with glyph_share) glyphs."""
    glyph = torch.rand(n, generator=gen) < glyph_share
    shape_idx = torch.randint(N_SHAPES, (n,), generator=gen)
    glyph_idx = N_SHAPES + torch.randint(len(glyphs_data.PROMPTS), (n,), generator=gen)
    idx = torch.where(glyph, glyph_idx, shape_idx)
    return torch.stack([render_clip(gen, int(i), frames, height, width) for i in idx]), idx
