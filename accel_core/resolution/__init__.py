"""Progressive-resolution sampling (Fresco, arXiv 2601.07462), host-free.

- `noise`: the unified noise field (drawn once at the target size) and its unit-variance
  down-sampling; up-sampling of estimates; the flow-matching re-noise at a stage switch.
- `plan`: which steps run at which scale, from the sigma schedule (`ResolutionConfig`, `StagePlan`).
- `promotion`: the token-variance criterion that decides when the low-res sketch has settled.
- `work`: token-block and FLOPs accounting against the uncached full-resolution run.
- `run`: one run's bookkeeping (`ResolutionRun`: stage, step, work done, anchor correction).
"""
from __future__ import annotations

from .noise import (carry_state, downsample_latent, downsample_noise, pooled_scale, pooled_sigma, renoise,
                    spatial_dims_ok, upsample)
from .plan import UPSAMPLE_MODES, ResolutionConfig, Stage, StagePlan, plan_stages
from .promotion import PromotionTracker, converged_share, token_change
from .run import ResolutionRun
from .work import StageWork, stage_work

__all__ = [
    "carry_state", "downsample_latent", "downsample_noise", "pooled_scale", "pooled_sigma", "renoise",
    "spatial_dims_ok", "upsample", "UPSAMPLE_MODES",
    "ResolutionConfig", "Stage", "StagePlan", "plan_stages", "PromotionTracker", "converged_share",
    "token_change", "StageWork", "stage_work", "ResolutionRun",
]
