"""Procedural image-edit pairs (reference image, instruction) -> edited image, for the zoo's edit models.

The reference is a shapes image (shapes_sized: one shape on a background with a mild ramp, any
size); the instruction is one of four kinds, and the edited image is the same scene re-rendered
with exactly that change:

- recolour: "make the circle blue" (the shape's colour changes),
- move: "move the square left" (the shape moves a quarter of the frame; the reference is drawn
  where the move fits),
- remove: "remove the triangle" (background only, ramp kept),
- background: "make the background white".

The instruction names the reference's shape, so the model must read the reference to know where
and what to edit. 33 instructions in all. Values in [0, 1], ComfyUI IMAGE layout [B, H, W, 3].
"""
from __future__ import annotations

import torch

from scripts.harness import shapes_sized
from scripts.harness.shapes_data import BG_COLOURS, FG_COLOURS, SHAPES

DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
MOVE_FRACTION = 0.25  # of the frame's width (left/right) or height (up/down)

# (kind, shape, argument) per instruction; fixed order (indices are used in training).
EDITS: tuple[tuple[str, str, str], ...] = (
    tuple(("recolour", s, c) for s in SHAPES for c in FG_COLOURS)
    + tuple(("move", s, d) for s in SHAPES for d in DIRECTIONS)
    + tuple(("remove", s, "") for s in SHAPES)
    + tuple(("background", "", c) for c in BG_COLOURS)
)


def instruction(kind: str, shape: str, arg: str) -> str:
    if kind == "recolour":
        return f"make the {shape} {arg}"
    if kind == "move":
        return f"move the {shape} {arg}"
    if kind == "remove":
        return f"remove the {shape}"
    if kind == "background":
        return f"make the background {arg}"
    raise ValueError(f"unknown edit kind {kind!r}")


PROMPTS: tuple[str, ...] = tuple(instruction(*e) for e in EDITS)


def _pick(gen: torch.Generator, options: list[str]) -> str:
    return options[int(torch.randint(len(options), (), generator=gen))]


def make_pair(gen: torch.Generator, edit_index: int, height: int = 64, width: int = 64
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference [H, W, 3], edited [H, W, 3]) for instruction PROMPTS[edit_index], scene drawn from gen."""
    kind, shape, arg = EDITS[edit_index]
    if not shape:
        shape = _pick(gen, list(SHAPES))
    banned = {arg} if kind in ("recolour", "background") else set()
    fg = _pick(gen, [c for c in FG_COLOURS if c not in banned])
    bg = _pick(gen, [c for c in BG_COLOURS if c != fg and c not in banned])
    geo = shapes_sized.random_geometry(gen, height, width)
    geo["r"] = min(height, width) * (0.16 + 0.06 * float(torch.rand((), generator=gen)))  # room to move
    new = dict(geo)
    if kind == "move":
        dx, dy = DIRECTIONS[arg]
        step_x, step_y = dx * MOVE_FRACTION * width, dy * MOVE_FRACTION * height
        r = geo["r"]
        # Draw the reference centre where both it and the moved centre are inside the frame.
        lo_x, hi_x = r - min(0.0, step_x), width - r - max(0.0, step_x)
        lo_y, hi_y = r - min(0.0, step_y), height - r - max(0.0, step_y)
        u = torch.rand(2, generator=gen)
        geo["cx"], geo["cy"] = lo_x + (hi_x - lo_x) * float(u[0]), lo_y + (hi_y - lo_y) * float(u[1])
        new.update(cx=geo["cx"] + step_x, cy=geo["cy"] + step_y)
    ref = shapes_sized.render(shape, fg, bg, height=height, width=width, **geo)
    if kind == "recolour":
        out = shapes_sized.render(shape, arg, bg, height=height, width=width, **new)
    elif kind == "background":
        out = shapes_sized.render(shape, fg, arg, height=height, width=width, **new)
    elif kind == "remove":
        out = shapes_sized.render(shape, fg, bg, height=height, width=width, **{**new, "r": 0.0})
    else:
        out = shapes_sized.render(shape, fg, bg, height=height, width=width, **new)
    return ref, out


def sample_batch(gen: torch.Generator, n: int, height: int = 64, width: int = 64
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n pairs: references [n, H, W, 3], edited images [n, H, W, 3], instruction indices [n] into PROMPTS."""
    idx = torch.randint(len(EDITS), (n,), generator=gen)
    pairs = [make_pair(gen, int(i), height, width) for i in idx]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]), idx
