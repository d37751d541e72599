"""SpecEdit's edit discovery (host-free): which target tokens an edit changes, found without a mask.

The draft is the model's own denoised estimate x0_hat at a full step; the input is the reference
latent (Kontext / Qwen-Image-Edit). Per token, the discrepancy is the squared distance between the
two, in the DiT's token rows. Tokens far from the reference are the edit-relevant ones; the rest
may be locked. Thresholds are relative to the measured discrepancy distribution (Otsu's split, or a
share of the maximum), never absolute values, so the same rule holds on models whose latents have
other scales.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import distributed

THRESHOLD_RULES = ("otsu", "max_share")
OTSU_BINS = 64


def discrepancy(draft_rows: torch.Tensor, reference_rows: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-token mean squared distance [B, N] between the draft and the reference, both
    [B, N, P] token rows (a reference of batch 1 is broadcast)."""
    return (draft_rows.float() - reference_rows.float()).pow(2).mean(dim=-1)


def otsu_threshold(values: torch.Tensor, bins: int = OTSU_BINS) -> float:
    """Otsu's threshold of a 1-D sample: the split of a histogram over [min, max] that maximises the
    between-class variance. Returns a value inside [min, max]; a constant sample returns its value."""
    v = values.detach().float().flatten()
    lo, hi = float(v.min()), float(v.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return hi
    hist = torch.histc(v, bins=bins, min=lo, max=hi).double()
    centres = lo + (torch.arange(bins, dtype=torch.float64) + 0.5) * (hi - lo) / bins
    weight0 = torch.cumsum(hist, 0)
    weight1 = hist.sum() - weight0
    mass0 = torch.cumsum(hist * centres, 0)
    mean0 = mass0 / weight0.clamp_min(1e-12)
    mean1 = (mass0[-1] - mass0) / weight1.clamp_min(1e-12)
    between = weight0 * weight1 * (mean0 - mean1).pow(2)
    between[(weight0 == 0) | (weight1 == 0)] = -1.0
    k = int(torch.argmax(between))
    return lo + (k + 1) * (hi - lo) / bins  # upper edge of the last bin of the low class


def mark_edit_tokens(score: torch.Tensor, rule: str = "otsu", share: float = 0.25) -> torch.Tensor:
    """Edit-relevant tokens [N] (bool) of a discrepancy score [N].

    otsu: above Otsu's split of the score distribution (two populations: kept and edited);
    max_share: at least `share` of the largest score.
    An all-zero score (draft equals the reference) marks nothing."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold rule {rule!r} is not one of {THRESHOLD_RULES}")
    s = score.detach().float().flatten()
    top = float(s.max()) if s.numel() else 0.0
    if top <= 0.0:
        return torch.zeros_like(s, dtype=torch.bool)
    cut = otsu_threshold(s) if rule == "otsu" else share * top
    return s >= cut if rule == "max_share" else s > cut


def mark_batch(scores: torch.Tensor, rule: str = "otsu", share: float = 0.25) -> torch.Tensor:
    """Union over samples of each sample's own marks, for scores [B, N]: one token subset serves the
    whole batch (every CFG branch and sample computes the same rows), and each sample's threshold
    follows its own distribution. Under sequence parallelism the threshold is taken over every rank's
    tokens (what one GPU marks) and each rank keeps its own rows (accel_core/distributed.py)."""
    n = scores.shape[-1]
    everyone, offset = distributed.gather_rows(scores.reshape(-1, n).T)  # [N over ranks, B]
    marked = torch.zeros(everyone.shape[0], dtype=torch.bool, device=everyone.device)
    for row in everyone.T:
        marked |= mark_edit_tokens(row, rule, share)
    return marked[offset:offset + n].to(scores.device)


def reference_at(reference: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor, bool]:
    """A reference latent [B', C, (T,) H', W'] brought to the target latent's shape [B, C, (T,) H, W]:
    batch rows taken (or repeated) to B, spatial size resampled (area) when it differs. Returns the
    tensor and whether it had to be resampled (then the lock to it is only approximate)."""
    ref = reference
    if ref.dim() == 4 and len(shape) == 5:  # an image latent for a one-frame video-layout target
        ref = ref.unsqueeze(2)
    if ref.dim() != len(shape) or ref.shape[1] != shape[1]:
        raise ValueError(f"reference latent {tuple(reference.shape)} does not match the target layout {tuple(shape)}")
    b = shape[0]
    if ref.shape[0] >= b:
        ref = ref[:b]
    else:
        ref = ref.repeat(-(-b // ref.shape[0]), *([1] * (ref.dim() - 1)))[:b]
    resized = tuple(ref.shape[2:]) != tuple(shape[2:])
    if resized:
        if ref.dim() == 5:  # (T, H, W): frames and size together
            ref = F.interpolate(ref.float(), size=tuple(shape[2:]), mode="trilinear", align_corners=False)
        else:
            ref = F.interpolate(ref.float(), size=tuple(shape[2:]), mode="area")
    return ref, resized
