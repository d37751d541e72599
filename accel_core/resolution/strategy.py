"""Content-aware choice of the video reduction (DVG-style): measure motion and detail on a draft.

The draft is the denoised estimate of ONE low-res step at the joint scale (half the frames, 1/f
per side): the cheapest look at the clip the run is heading for. Two relative measures, both
ratios of energies of the centred estimate, so they mean the same on any model and latent scale:

- motion: mean squared difference of consecutive frames / (2 x energy). 0 for a still clip,
  about 1 when frames are unrelated. Merging frames loses what moves.
- detail: energy of the spatial high-pass (estimate minus its 2x2 block means) / energy. 0 for
  smooth content. Shrinking the grid loses what is fine.

Choice: the axis whose measure is lower is reduced (its loss is smaller); when both are below
`joint_below`, both are reduced (joint). Sums are agreed across ranks (sequence parallelism).
"""
from __future__ import annotations

import torch

from .. import distributed
from .noise import downsample_latent, upsample

REDUCTIONS = ("spatial", "temporal", "joint")


def motion_and_detail(x0: torch.Tensor) -> tuple[float, float]:
    """(motion, detail) of a video estimate [B, C, T, H, W] (see the module doc)."""
    if x0.dim() != 5 or x0.shape[2] < 2:
        raise ValueError(f"motion needs a video latent with >= 2 frames, got {tuple(x0.shape)}")
    x = x0.float()
    centred = x - x.mean(dim=(2, 3, 4), keepdim=True)
    frame_diff = (x[:, :, 1:] - x[:, :, :-1]).pow(2)
    h, w = x.shape[-2:]
    if h % 2 == 0 and w % 2 == 0:
        high = (x - upsample(downsample_latent(x, 2), 2, "nearest")).pow(2)
        high_sum, high_n = float(high.sum()), float(high.numel())
    else:  # odd grid: no 2x2 blocks, call it smooth
        high_sum, high_n = 0.0, 1.0
    energy, count, diff_sum, diff_n, high_sum, high_n = distributed.agree_sum(
        float(centred.pow(2).sum()), float(centred.numel()), float(frame_diff.sum()), float(frame_diff.numel()),
        high_sum, high_n)
    mean_energy = max(energy / max(count, 1.0), 1e-12)
    motion = (diff_sum / max(diff_n, 1.0)) / (2.0 * mean_energy)
    detail = (high_sum / max(high_n, 1.0)) / mean_energy
    return motion, detail


def choose_reduction(motion: float, detail: float, joint_below: float) -> str:
    """The reduction that loses least: the calmer axis, or both when both are calm."""
    if motion < joint_below and detail < joint_below:
        return "joint"
    return "temporal" if motion < detail else "spatial"


# Both measures below this: reduce both axes. Chosen on the tune video models (docs/RESOLUTION.md).
JOINT_BELOW = 0.05
