"""Procedural "textures and photo crops" data for the zoo models, at any size (multiples of 16 px).

Two kinds of images, both in [0, 1], ComfyUI IMAGE layout [B, H, W, 3]:

- photo crops: random crops (random scale, flips, colour jitter) of the sample images that an
  installed package already ships (ComfyUI's workflow-template thumbnails, package
  ``comfyui_workflow_templates_media_image``: photos and renders). The prompt describes the crop
  coarsely from its own statistics after jitter: "a dark warm photo crop".
- procedural textures (always available; the only kind when no sample images are installed):
  stripes, waves, spots, checkers or multi-octave value noise, mapped onto a two-colour palette of
  a coarse tone: "a warm striped texture".

Everything is drawn from a caller-supplied torch.Generator, so batches are reproducible.
"""
from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F

PATTERNS = ("striped", "wavy", "spotted", "checkered", "noisy")
TONES: dict[str, tuple[tuple[float, float, float], ...]] = {
    "warm": ((0.90, 0.25, 0.10), (0.95, 0.65, 0.15), (0.55, 0.25, 0.10), (0.95, 0.85, 0.55)),
    "cool": ((0.15, 0.25, 0.85), (0.20, 0.70, 0.90), (0.45, 0.25, 0.75), (0.10, 0.15, 0.35)),
    "green": ((0.10, 0.55, 0.20), (0.55, 0.80, 0.25), (0.05, 0.30, 0.10), (0.70, 0.90, 0.60)),
    "grey": ((0.10, 0.10, 0.10), (0.45, 0.45, 0.45), (0.75, 0.75, 0.75), (0.95, 0.95, 0.95)),
}
BRIGHTNESS = ("dark", "bright")

TEXTURE_PROMPTS: tuple[str, ...] = tuple(f"a {tone} {pattern} texture" for tone in TONES for pattern in PATTERNS)
PHOTO_PROMPTS: tuple[str, ...] = tuple(f"a {b} {tone} photo crop" for b in BRIGHTNESS for tone in TONES)
PROMPTS: tuple[str, ...] = TEXTURE_PROMPTS + PHOTO_PROMPTS

SOURCE_SIDE = 160  # sample images are kept at this short side (crops are 1/5 to 2/5 of the image)
PHOTO_SHARE = 0.5  # share of photo crops in a batch when sample images exist


def _template_dir() -> Path | None:
    spec = importlib.util.find_spec("comfyui_workflow_templates_media_image")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "templates"
    return path if path.is_dir() else None


@functools.lru_cache(maxsize=1)
def source_images() -> tuple[torch.Tensor, ...]:
    """The shipped sample images, each [h, w, 3] in [0, 1] at SOURCE_SIDE short side (sorted by name).

    Empty when no package ships them; callers then use procedural textures only.
    """
    folder = _template_dir()
    if folder is None:
        return ()
    from PIL import Image

    out = []
    for path in sorted(folder.glob("*.webp")):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                s = SOURCE_SIDE / min(im.size)
                im = im.resize((max(SOURCE_SIDE, round(im.size[0] * s)), max(SOURCE_SIDE, round(im.size[1] * s))),
                               Image.Resampling.LANCZOS)
                out.append(torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
                           .reshape(im.size[1], im.size[0], 3).float() / 255.0)
        except OSError:  # an unreadable file is skipped, not fatal
            continue
    return tuple(out)


def describe_photo(image: torch.Tensor) -> str:
    """Coarse prompt of an image [H, W, 3]: brightness (dark / bright) and tone (warm / cool / green / grey)."""
    mean = image.reshape(-1, 3).mean(0)
    lum = float(0.299 * mean[0] + 0.587 * mean[1] + 0.114 * mean[2])
    bright = "bright" if lum >= 0.45 else "dark"
    r, g, b = (float(v) for v in mean)
    if max(r, g, b) - min(r, g, b) < 0.06:
        tone = "grey"
    elif g >= r and g >= b:
        tone = "green"
    elif r >= b:
        tone = "warm"
    else:
        tone = "cool"
    return f"a {bright} {tone} photo crop"


def _rand(gen: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def photo_crop(gen: torch.Generator, height: int, width: int) -> torch.Tensor:
    """One random crop [H, W, 3] of a sample image with flip and colour jitter (images must exist)."""
    images = source_images()
    src = images[int(torch.randint(len(images), (), generator=gen))]
    sh, sw = src.shape[:2]
    scale = _rand(gen, 1.0, min(2.5, sh / height, sw / width))
    ch, cw = max(height, round(height * scale)), max(width, round(width * scale))
    ch, cw = min(ch, sh), min(cw, sw)  # sizes above the source (256 px): the whole side, upsampled
    y0 = int(torch.randint(sh - ch + 1, (), generator=gen))
    x0 = int(torch.randint(sw - cw + 1, (), generator=gen))
    crop = src[y0:y0 + ch, x0:x0 + cw].movedim(-1, 0)[None]
    crop = F.interpolate(crop, size=(height, width), mode="bilinear", antialias=True, align_corners=False)[0]
    if float(torch.rand((), generator=gen)) < 0.5:
        crop = crop.flip(-1)
    grey = crop.mean(0, keepdim=True)
    crop = grey + (crop - grey) * _rand(gen, 0.6, 1.3)  # saturation
    crop = (crop - crop.mean()) * _rand(gen, 0.8, 1.25) + crop.mean()  # contrast
    crop = crop * _rand(gen, 0.8, 1.2) + _rand(gen, -0.05, 0.05)  # brightness
    crop = crop * (1.0 + 0.1 * (torch.rand(3, 1, 1, generator=gen) - 0.5))  # white balance
    return crop.clamp(0.0, 1.0).movedim(0, -1)


def _value_noise(gen: torch.Generator, height: int, width: int, octaves: int = 4) -> torch.Tensor:
    """Multi-octave smooth noise [H, W] in roughly [-1, 1] (Perlin-like: upsampled random grids)."""
    total = torch.zeros(height, width)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        cells = 2 ** (o + 1)
        grid = torch.randn(1, 1, cells + 1, cells + 1, generator=gen)
        total += amp * F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=True)[0, 0]
        norm += amp
        amp *= 0.55
    return (total / norm).clamp(-1.5, 1.5) / 1.5


def texture_field(gen: torch.Generator, pattern: str, height: int, width: int) -> torch.Tensor:
    """A pattern field [H, W] in [0, 1] (0 and 1 pick the palette's two colours)."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    theta = _rand(gen, 0.0, math.pi)
    if pattern == "striped":
        period = _rand(gen, 6.0, 14.0)
        u = xs * math.cos(theta) + ys * math.sin(theta)
        f = 0.5 + 0.5 * torch.tanh(3.0 * torch.sin(2 * math.pi * u / period + _rand(gen, 0, 6.3)))
    elif pattern == "wavy":
        f = torch.zeros(height, width)
        for _ in range(3):
            th = _rand(gen, 0.0, 2 * math.pi)
            period = _rand(gen, 12.0, 40.0)
            f += torch.sin(2 * math.pi * (xs * math.cos(th) + ys * math.sin(th)) / period + _rand(gen, 0, 6.3))
        f = 0.5 + f / 6.0
    elif pattern == "spotted":
        n = int(torch.randint(4, 12, (), generator=gen))
        f = torch.zeros(height, width)
        for _ in range(n):
            cx, cy, r = _rand(gen, 0, width), _rand(gen, 0, height), _rand(gen, 3.0, 8.0)
            f = torch.maximum(f, (r - torch.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) + 0.5).clamp(0.0, 1.0))
    elif pattern == "checkered":
        cell = _rand(gen, 6.0, 14.0)
        c, s = math.cos(theta / 2), math.sin(theta / 2)  # checkers rotated by up to 90 degrees
        u, v = xs * c + ys * s, -xs * s + ys * c
        f = 0.5 + 0.5 * torch.tanh(4.0 * torch.sin(math.pi * u / cell) * torch.sin(math.pi * v / cell))
    elif pattern == "noisy":
        f = 0.5 + 0.5 * _value_noise(gen, height, width)
    else:
        raise ValueError(f"unknown pattern {pattern!r}; choose one of {PATTERNS}")
    return f.clamp(0.0, 1.0)


def render_texture(gen: torch.Generator, tone: str, pattern: str, height: int, width: int) -> torch.Tensor:
    """A texture [H, W, 3]: the pattern field blended between two colours of the tone, plus mild noise."""
    cols = TONES[tone]
    i = int(torch.randint(len(cols), (), generator=gen))
    j = (i + 1 + int(torch.randint(len(cols) - 1, (), generator=gen))) % len(cols)
    a, b = torch.tensor(cols[i]), torch.tensor(cols[j])
    f = texture_field(gen, pattern, height, width)[..., None]
    img = a * (1.0 - f) + b * f
    img = img * (1.0 + 0.08 * _value_noise(gen, height, width, octaves=3)[..., None])
    return img.clamp(0.0, 1.0)


def sample_batch(gen: torch.Generator, n: int, height: int = 64, width: int = 64,
                 photo_share: float = PHOTO_SHARE) -> tuple[torch.Tensor, torch.Tensor]:
    """n images [n, H, W, 3] and their prompt indices [n] into PROMPTS."""
    has_photos = bool(source_images())
    imgs, idx = [], []
    for _ in range(n):
        if has_photos and float(torch.rand((), generator=gen)) < photo_share:
            img = photo_crop(gen, height, width)
            idx.append(PROMPTS.index(describe_photo(img)))
        else:
            k = int(torch.randint(len(TEXTURE_PROMPTS), (), generator=gen))
            tone, pattern = list(TONES)[k // len(PATTERNS)], PATTERNS[k % len(PATTERNS)]
            img = render_texture(gen, tone, pattern, height, width)
            idx.append(k)
        imgs.append(img)
    return torch.stack(imgs), torch.tensor(idx, dtype=torch.long)
