"""Latent <-> token rows, in the DiT's own token order (row-major over (t, h, w) patches).

Partial steps merge fresh and forecast outputs per token: the sampler's latent [B, C, (T,) H, W] is
cut into the same patches the DiT makes (sizes rounded up, as the hosts pad to the patch size), so
token i of a hidden state and row i here are the same image region.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def patch_dims(latent_shape, patch: tuple[int, ...]) -> tuple[int, ...]:
    """Token grid (t, h, w) of a latent shape [B, C, *spatial] for a patch (pt, ph, pw) or (ph, pw)."""
    spatial = list(latent_shape[2:])
    patch = (1,) * (len(spatial) - len(patch)) + tuple(patch[-len(spatial):])
    return tuple(-(-s // p) for s, p in zip(spatial, patch))


def _full_patch(x: torch.Tensor, patch) -> tuple[int, ...]:
    spatial = x.dim() - 2
    return (1,) * (spatial - len(patch)) + tuple(patch[-spatial:])


def patchify(x: torch.Tensor, patch: tuple[int, ...]) -> torch.Tensor:
    """[B, C, *spatial] -> [B, N, C * prod(patch)] (zero-padded to whole patches)."""
    p = _full_patch(x, patch)
    pad = []
    for size, q in reversed(list(zip(x.shape[2:], p))):
        pad += [0, (-size) % q]
    if any(pad):
        x = F.pad(x, pad)
    B, C = x.shape[:2]
    dims = [s // q for s, q in zip(x.shape[2:], p)]
    # [B, C, d0, p0, d1, p1, ...] -> [B, d0, d1, ..., C, p0, p1, ...]
    shaped = x.reshape(B, C, *[v for pair in zip(dims, p) for v in pair])
    n = len(dims)
    order = [0] + [2 + 2 * i for i in range(n)] + [1] + [3 + 2 * i for i in range(n)]
    return shaped.permute(order).reshape(B, -1, C * int(torch.tensor(p).prod()))


def unpatchify(tokens: torch.Tensor, shape, patch: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `patchify` for a latent of `shape` (padding cropped)."""
    B, C = shape[0], shape[1]
    spatial = list(shape[2:])
    p = (1,) * (len(spatial) - len(patch)) + tuple(patch[-len(spatial):])
    dims = [-(-s // q) for s, q in zip(spatial, p)]
    n = len(dims)
    x = tokens.reshape(B, *dims, C, *p)
    order = [0, n + 1] + [v for i in range(n) for v in (1 + i, n + 2 + i)]
    x = x.permute(order).reshape(B, C, *[d * q for d, q in zip(dims, p)])
    return x[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)]


def mask_to_tokens(mask: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """A user MASK [H, W] / [B, H, W] / [B, 1, H, W] (pixels or latent, any size) -> [t * h * w] coverage in
    [0, 1] per token: the fraction of the token's area inside the mask (area resampling, batch maxed)."""
    from .mask import as_batch_hw

    m = as_batch_hw(mask).float()
    m = m.amax(dim=0, keepdim=True)[None]  # [1, 1, H, W]
    t, h, w = (1,) * (3 - len(grid)) + tuple(grid)
    cover = F.adaptive_avg_pool2d(m, (h, w))[0, 0]
    return cover.flatten().repeat(t)


def token_map(values: torch.Tensor, shape, patch: tuple[int, ...]) -> torch.Tensor:
    """A value per token [N] -> [1, 1, *spatial] over the latent of `shape` (each token's value on all
    of its patch's pixels, padding cropped): per-token weights applied to the latent directly, without
    moving the latent into token rows and back."""
    spatial = list(shape[2:])
    p = (1,) * (len(spatial) - len(patch)) + tuple(patch[-len(spatial):])
    grid = values.reshape(patch_dims(shape, patch))
    for dim, q in enumerate(p):
        if q > 1:
            grid = grid.repeat_interleave(q, dim=dim)
    grid = grid[tuple(slice(0, s) for s in spatial)]
    return grid[None, None]
