"""Edit Region's MASK input, checked once (host-free): shapes ComfyUI and other packs produce are accepted,
masks that cannot mean anything are refused with the usual message shape, and a mask that selects nothing
is said once.

Accepted: [H, W], [B, H, W] and [B, 1, H, W] (a singleton channel), any size and value range (values are
clamped to [0, 1]; a token is inside when any of its area is above 0). Refused: an empty mask (a zero-size
dimension), non-finite values, other shapes. Token selection is shared by the whole batch (accel_core/tokens/
selection.py), so several masks are joined (their union) and applied to every sample; a mask batch that does
not match the latent batch is said once per run (`batch_note`).
"""
from __future__ import annotations

import torch

from ..errors import ConfigError

FIX = "Connect a MASK from a mask editor, Load Image (alpha) or a mask node, of shape [H, W], [B, H, W] or [B, 1, H, W]."


def as_batch_hw(mask: torch.Tensor) -> torch.Tensor:
    """[B, H, W] view of a [H, W], [B, H, W] or [B, 1, H, W] mask (other shapes: ConfigError)."""
    m = mask
    if m.dim() == 4 and m.shape[1] == 1:
        m = m[:, 0]
    elif m.dim() == 2:
        m = m[None]
    if m.dim() != 3:
        raise ConfigError(f"Edit Region: mask has shape {list(mask.shape)}; allowed: [H, W], [B, H, W] or [B, 1, H, W] "
                          f"(one channel). {FIX}")
    return m


def prepare_mask(mask: object) -> tuple[torch.Tensor, str]:
    """(mask [B, H, W] float32 on the CPU, clamped to [0, 1]; a note when it selects no token, else "")."""
    if not isinstance(mask, torch.Tensor):
        raise ConfigError(f"Edit Region: mask is a {type(mask).__name__}, not a MASK tensor. {FIX}")
    m = as_batch_hw(mask.detach())
    if m.numel() == 0:
        raise ConfigError(f"Edit Region: mask has shape {list(mask.shape)}, which is empty (no pixels). {FIX}")
    m = m.float().cpu()
    finite = torch.isfinite(m)
    if not bool(finite.all()):
        raise ConfigError(f"Edit Region: mask has {int((~finite).sum())} non-finite value(s) (NaN or inf) of "
                          f"{m.numel()}; a mask holds values in 0-1. {FIX}")
    m = m.clamp(0.0, 1.0)
    note = ""
    if not bool((m > 0).any()):
        note = ("Edit Region: the mask is empty (all zero), so it selects no token: between full steps nothing is "
                "computed and Forecast Cache forecasts the whole image. Paint the edited area white to compute it.")
    return m, note


def batch_note(mask_batch: int, latent_batch: int) -> str:
    """What is done when the mask batch does not match the latent batch ("" when it matches or is one mask)."""
    if mask_batch <= 1 or mask_batch == latent_batch:
        return ""
    return (f"Edit Region: {mask_batch} masks for a batch of {latent_batch} latent(s); their union is computed for "
            "every sample (token selection is shared by the batch). Give one mask, or one per latent.")
