"""Rendered glyphs (letters and digits) for the zoo models, at any size (multiples of 16 px).

One character of one colour on a plain background of another, drawn with PIL's built-in scalable
font (``ImageFont.load_default(size)``; a bitmap fallback when FreeType is missing), random size
(45-75 % of the short side), position and a small rotation. Values in [0, 1], ComfyUI IMAGE layout
[B, H, W, 3]. Prompt: "the letter K in red on white" / "the digit 7 in blue on yellow".

The prompt set is kept small (CHARS x COLOUR_PAIRS = 96): every character appears with each of the
six colour pairs.
"""
from __future__ import annotations

import functools

import torch

from scripts.harness.shapes_data import PALETTE

CHARS = "ABCEHKMRSTXZ2357"
COLOUR_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "white"), ("blue", "white"), ("black", "white"), ("white", "black"), ("yellow", "black"),
    ("blue", "yellow"),
)


def prompt_for(char: str, fg: str, bg: str) -> str:
    kind = "digit" if char.isdigit() else "letter"
    return f"the {kind} {char} in {fg} on {bg}"


COMBOS: tuple[tuple[str, str, str], ...] = tuple((c, fg, bg) for c in CHARS for fg, bg in COLOUR_PAIRS)
PROMPTS: tuple[str, ...] = tuple(prompt_for(*c) for c in COMBOS)


@functools.lru_cache(maxsize=64)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # old Pillow or no FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def glyph_mask(char: str, size_px: int, height: int, width: int, cx: float, cy: float,
               angle: float = 0.0) -> torch.Tensor:
    """Coverage mask [H, W] in [0, 1] of ``char`` of height ~size_px centred at (cx, cy), rotated by angle (deg)."""
    from PIL import Image, ImageDraw

    canvas = 2 * max(height, width)
    im = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(im).text((canvas / 2, canvas / 2), char, fill=255, font=_font(size_px), anchor="mm")
    if angle:
        im = im.rotate(angle, resample=Image.Resampling.BICUBIC, center=(canvas / 2, canvas / 2))
    left, top = round(canvas / 2 - cx), round(canvas / 2 - cy)
    im = im.crop((left, top, left + width, top + height))
    return torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).reshape(height, width).float() / 255.0


def render(char: str, fg: str, bg: str, height: int, width: int, cx: float, cy: float, size_px: int,
           angle: float = 0.0, grad_amp: float = 0.0, grad_angle: float = 0.0) -> torch.Tensor:
    """One image [H, W, 3]: the glyph in ``fg`` over ``bg`` (with an optional mild background ramp)."""
    mask = glyph_mask(char, size_px, height, width, cx, cy, angle)[..., None]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    ramp = ((xs - width / 2) * torch.cos(torch.tensor(grad_angle)) +
            (ys - height / 2) * torch.sin(torch.tensor(grad_angle))) / max(height, width)
    bg_col = torch.tensor(PALETTE[bg]) * (1.0 + grad_amp * ramp[..., None])
    return (mask * torch.tensor(PALETTE[fg]) + (1.0 - mask) * bg_col).clamp(0.0, 1.0)


def random_placement(gen: torch.Generator, height: int, width: int) -> dict[str, float]:
    """Random glyph size, centre, rotation and background ramp that keep the glyph inside the frame."""
    u = torch.rand(6, generator=gen)
    short = min(height, width)
    size_px = int(round(short * (0.45 + 0.30 * float(u[0]))))
    half = 0.45 * size_px
    cx = half + (width - 2 * half) * float(u[1])
    cy = half + (height - 2 * half) * float(u[2])
    return {"size_px": size_px, "cx": cx, "cy": cy, "angle": 20.0 * (float(u[3]) - 0.5),
            "grad_amp": 0.3 * float(u[4]), "grad_angle": 6.2832 * float(u[5])}


def sample_batch(gen: torch.Generator, n: int, height: int = 64, width: int = 64
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """n images [n, H, W, 3] and their prompt indices [n] (uniform over PROMPTS)."""
    idx = torch.randint(len(COMBOS), (n,), generator=gen)
    imgs = []
    for i in range(n):
        char, fg, bg = COMBOS[int(idx[i])]
        imgs.append(render(char, fg, bg, height, width, **random_placement(gen, height, width)))
    return torch.stack(imgs), idx
