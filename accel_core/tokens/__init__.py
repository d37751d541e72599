"""Token-level acceleration (host-free): which image tokens a partial step computes, how their fresh
values correct the forecast of the others, and what the step cost in token-block units.

A *partial* step runs every transformer block on a subset of the target image tokens only (text and
reference tokens enter attention as keys / values cached at the newest full step); the other tokens
take the temporal forecast, corrected from the fresh ones. One policy per method picks the subset
(policies/, registry `TOKEN_POLICIES`):
- clusters (ClusCa): K-means clusters of a block's hidden state, a few random members per cluster;
  the fresh members' forecast errors are propagated to their clusters;
- region (EEdit): the tokens of a user's MASK plus dilation rings, weighted by ring;
- specedit: the region marked from an edit model's draft against its reference latent, no mask;
- dynamics (DaTo, ported to DiTs): the tokens whose output changed most between the last two full
  steps; the static rest keep their forecast.
`TokenRun` (state.py) keeps what every method shares and asks its policy the rest.
"""
from .kmeans import kmeans
from .patches import patchify, unpatchify
from .propagate import fit_gain, propagate_corrections
from .selection import cluster_members, dynamics_top, region_rings
from .work import TokenWork, block_flops

__all__ = [
    "kmeans", "patchify", "unpatchify", "fit_gain", "propagate_corrections", "cluster_members",
    "dynamics_top", "region_rings", "TokenWork", "block_flops",
]
