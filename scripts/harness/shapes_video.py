"""Moving procedural shapes for the trained micro HunyuanVideo, on top of the image shapes data.

A clip is ``frames`` images of one shape (same prompts as the image data: "a red circle on a blue
background") translating in a straight line at constant velocity (random direction, 1.5-3.5 px a
frame), always fully inside the frame. Frames are 32x32 px so a 4-frame clip costs about as many
tokens as one 64x64 image. Each frame goes through the same exact linear "VAE" as the images
(shapes_data.encode), stacked on the time axis: raw latent [B, 16, T, H/2, W/2]. The stand-in has
no temporal compression (real HunyuanVideo compresses 4x in time); one latent frame = one frame.
"""
from __future__ import annotations

import math

import torch

from scripts.harness import shapes_data

FRAME_SIZE = 32
FRAMES = 4
SPEED_RANGE = (1.5, 3.5)  # pixels per frame
RADIUS_RANGE = (0.16, 0.24)  # fraction of the frame size


def sample_clips(gen: torch.Generator, n: int, frames: int = FRAMES, size: int = FRAME_SIZE
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n random clips [n, T, H, W, 3], prompt indices [n] (into shapes_data.PROMPTS) and the
    per-frame shape centres [n, T, 2] (x, y in pixels) they were drawn with."""
    idx = torch.randint(len(shapes_data.COMBOS), (n,), generator=gen)
    u = torch.rand(n, 7, generator=gen)
    clips, centres = [], []
    for i in range(n):
        shape, fg, bg = shapes_data.COMBOS[int(idx[i])]
        r = size * (RADIUS_RANGE[0] + (RADIUS_RANGE[1] - RADIUS_RANGE[0]) * float(u[i, 0]))
        speed = SPEED_RANGE[0] + (SPEED_RANGE[1] - SPEED_RANGE[0]) * float(u[i, 1])
        angle = 2 * math.pi * float(u[i, 2])
        # Shorten the path if it cannot fit, so the shape never leaves the frame.
        room = size - 2 * r
        span = frames - 1
        vx, vy = speed * math.cos(angle), speed * math.sin(angle)
        vx = math.copysign(min(abs(vx), room / span), vx) if span else 0.0
        vy = math.copysign(min(abs(vy), room / span), vy) if span else 0.0
        x_lo, x_hi = r - min(0.0, vx * span), size - r - max(0.0, vx * span)
        y_lo, y_hi = r - min(0.0, vy * span), size - r - max(0.0, vy * span)
        x0 = x_lo + (x_hi - x_lo) * float(u[i, 3])
        y0 = y_lo + (y_hi - y_lo) * float(u[i, 4])
        clip, pts = render_clip(shape, fg, bg, (x0, y0), (vx, vy), r, frames=frames, size=size,
                                grad_angle=2 * math.pi * float(u[i, 5]), grad_amp=0.3 * float(u[i, 6]))
        clips.append(clip)
        centres.append(pts)
    return torch.stack(clips), idx, torch.stack(centres)


def render_clip(shape: str, fg: str, bg: str, start: tuple[float, float], velocity: tuple[float, float],
                r: float, frames: int = FRAMES, size: int = FRAME_SIZE, grad_angle: float = 0.0,
                grad_amp: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip [T, H, W, 3] of a shape moving from ``start`` by ``velocity`` px a frame, and its
    centres [T, 2]. The background gradient is fixed in the frame (the camera does not move)."""
    pts = [(start[0] + velocity[0] * t, start[1] + velocity[1] * t) for t in range(frames)]
    clip = torch.stack([shapes_data.render(shape, fg, bg, x, y, r, grad_angle=grad_angle, grad_amp=grad_amp,
                                           size=size) for x, y in pts])
    return clip, torch.tensor(pts, dtype=torch.float32)


def encode_clips(clips: torch.Tensor) -> torch.Tensor:
    """Clips [B, T, H, W, 3] in [0, 1] -> raw latent [B, 16, T, H/2, W/2] (frame by frame)."""
    b, t = clips.shape[:2]
    lat = shapes_data.encode(clips.reshape(b * t, *clips.shape[2:]))
    return lat.reshape(b, t, *lat.shape[1:]).movedim(1, 2).contiguous()


def decode_frames(latent: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Raw latent [B, 16, T, h, w] -> frames [B, T, 2h, 2w, 3] (exact inverse of encode_clips)."""
    b, _, t = latent.shape[:3]
    flat = latent.movedim(2, 1).reshape(b * t, latent.shape[1], *latent.shape[3:])
    img = shapes_data.decode(flat, clamp=clamp)
    return img.reshape(b, t, *img.shape[1:])


def motion_analysis(frames: torch.Tensor) -> dict[str, object]:
    """Colours and shape track of one clip [T, H, W, 3].

    Per frame: shapes_data.colour_analysis, and the centroid of the foreground pixels (far from
    the background colour). ``path_residual`` is the RMS distance (px) of the centroids from
    their best straight constant-velocity fit: small for a shape that moves smoothly.
    """
    per_frame, cents = [], []
    for f in frames:
        got = shapes_data.colour_analysis(f)
        bg = torch.tensor(got["bg_rgb"])
        mask = (f.to(torch.float32) - bg).norm(dim=-1) > 0.35
        if mask.any():
            ys, xs = torch.nonzero(mask, as_tuple=True)
            cents.append([float(xs.float().mean()) + 0.5, float(ys.float().mean()) + 0.5])
        else:
            cents.append([float("nan"), float("nan")])
        per_frame.append(got)
    c = torch.tensor(cents, dtype=torch.float64)
    residual = float("nan")
    velocity = [float("nan"), float("nan")]
    if torch.isfinite(c).all() and len(c) >= 2:
        t = torch.arange(len(c), dtype=torch.float64)
        a = torch.stack([torch.ones_like(t), t], 1)
        coef = torch.linalg.lstsq(a, c).solution  # [2, 2]: intercept and velocity per axis
        residual = float(((a @ coef - c) ** 2).sum(-1).mean().sqrt())
        velocity = coef[1].tolist()
    return {"frames": per_frame, "centroids": cents, "velocity": velocity, "path_residual": residual}
