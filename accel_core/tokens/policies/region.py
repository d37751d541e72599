"""Edit Region (EEdit): a partial call computes the target tokens a region covers plus `rings` dilation
rings around it, ring i blended with the forecast at weight ring_decay ** i (EEdit's cascade). The region
is the user's MASK on the token grid; SpecEdit (specedit.py) marks it from the draft instead."""
from __future__ import annotations

import torch

from ..patches import mask_to_tokens
from ..selection import region_rings
from .base import PartialCall, TokenPolicy
from .registry import TOKEN_POLICIES


@TOKEN_POLICIES.register("region")
class RegionPolicy(TokenPolicy):
    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.rings: torch.Tensor | None = None  # [N] ring of every target token (-1 outside), per grid
        self.grid: tuple[int, ...] | None = None

    def coverage(self, run, n_target: int, grid: tuple[int, ...]) -> torch.Tensor | None:
        """Region of the target tokens [N] (float, > 0 inside), None when there is none for this size."""
        return mask_to_tokens(run.mask, grid)

    def ready(self, run) -> bool:
        return run.mask is not None

    def select(self, run, n_target: int, grid: tuple[int, ...]) -> PartialCall | None:
        s = self.settings
        if self.rings is None or self.grid != tuple(grid):
            self.grid = tuple(grid)
            coverage = self.coverage(run, n_target, grid)
            if coverage is None:
                return None
            self.rings = region_rings(coverage, grid, s.rings)  # once per run and size (specedit: per draft)
        if self.rings.numel() != n_target:
            return None
        rows = (self.rings >= 0).nonzero().flatten()
        if rows.numel() == 0:
            return None
        weights = torch.tensor(s.ring_decay, dtype=torch.float32) ** self.rings[rows].float()
        return PartialCall(rows, weights)

    def reset(self) -> None:
        self.rings = self.grid = None
