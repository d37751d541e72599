"""Token-variance promotion criterion for the last low-res stage.

Per token (a patch x patch block of the coarse latent, i.e. one transformer token), the change of
the denoised estimate between two consecutive low-res steps, per unit of sigma travelled and
relative to the estimate's RMS over the whole latent:

    change_i = RMS_token_i(x0_t - x0_{t-1}) / (|sigma_{t-1} - sigma_t| * RMS(x0_{t-1}))

Per unit sigma, so a threshold does not depend on the step count; relative to the global RMS (not
the token's own), so flat dark tokens do not look unsettled. A token with change below the
threshold has "converged": its coarse content no longer moves. How it is used (kept simple and
measurable): the whole image is promoted to full resolution at the first low-res step at or after
the planned switch where at least `converged_share` of the tokens (over the batch) converged, and at
the latest at `max_low_res_share`. Mixed-resolution token sets (region-wise promotion proper) are not
done: they need partial-resolution attention in the host.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import distributed


def token_change(prev: torch.Tensor, cur: torch.Tensor, dsigma: float, patch: int = 2) -> torch.Tensor:
    """Relative change per token, shape [B, ..., h/patch, w/patch] (leading dims kept)."""
    diff = (cur.float() - prev.float()) ** 2
    lead = diff.shape[:-2]
    # Mean over channels (dim 1) of a [B, C, (T,) H, W] latent, then over each patch block.
    per_pixel = diff.mean(dim=1)
    flat = per_pixel.reshape(-1, 1, *per_pixel.shape[-2:])
    pooled = F.avg_pool2d(flat, patch, ceil_mode=True)
    tokens = pooled.reshape(lead[0], *lead[2:], *pooled.shape[-2:]).sqrt()
    energy, count = distributed.agree_sum(float(prev.double().pow(2).sum()), float(prev.numel()))  # all ranks
    scale = max(math.sqrt(energy / max(count, 1.0)), 1e-8) * max(abs(float(dsigma)), 1e-8)
    return tokens / scale


def converged_share(change: torch.Tensor, threshold: float) -> float:
    """Share of tokens whose change is below `threshold`."""
    below, count = distributed.agree_sum(float((change < threshold).sum()), float(change.numel()))  # all ranks
    return below / max(count, 1.0)


class PromotionTracker:
    """Feeds on the low-res stage's denoised estimates (one per step, in order) and says when the
    sketch has settled. Keeps only the previous estimate."""

    def __init__(self, threshold: float, share: float, patch: int = 2):
        self.threshold = threshold
        self.share = share
        self.patch = patch
        self.prev: torch.Tensor | None = None
        self.prev_sigma: float | None = None
        self.history: list[float] = []  # converged share after each step (from the 2nd on)

    def observe(self, x0_hat: torch.Tensor, sigma: float) -> float | None:
        """Record the estimate made at `sigma`; returns the converged share (None at the first)."""
        out = None
        if self.prev is not None and self.prev.shape == x0_hat.shape:
            change = token_change(self.prev, x0_hat, self.prev_sigma - float(sigma), self.patch)
            out = converged_share(change, self.threshold)
            self.history.append(out)
        self.prev = x0_hat.detach().float().clone()
        self.prev_sigma = float(sigma)
        return out

    def settled(self) -> bool:
        return bool(self.history) and self.history[-1] >= self.share

    def close(self) -> None:
        self.prev = None
