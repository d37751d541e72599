"""The token-policy interface: what one token method decides for a run (which target tokens a partial
call computes, how the others are filled, what full calls teach it). `TokenRun` keeps what every method
shares (captures, the trust in fresh tokens, partial-step accounting, stats) and asks its policy the rest.

Adding a method is adding a class: subclass `TokenPolicy`, register it with `TOKEN_POLICIES.register(name)`
in its own module, import that module in `policies/__init__.py`. One instance per run: it may keep state.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # hints only: state.py builds the run from this package
    from ..settings import TokenSettings
    from ..state import TokenRun

# Weight kept by older measurements of a least-squares weight at full steps (the trust in fresh tokens,
# Cluster Tokens' propagation gain): new = DECAY * old + this step's sums.
TRUST_DECAY = 0.5


@dataclass
class PartialCall:
    rows: torch.Tensor  # target-token indices computed [M], sorted
    weights: torch.Tensor | None = None  # blend weight per computed row (region rings), None = 1
    pe_cache: dict = field(default_factory=dict)  # sliced position embeddings, per source tensor id
    joint_rows: dict = field(default_factory=dict)  # (image first, device) -> joint-sequence rows, per call


class TokenPolicy:
    """One token method's decisions. The defaults are those of a method that only selects tokens: the
    others keep the forecast, nothing is learned from full calls."""

    # The host hands this policy the reference latent of each full call (`set_reference`): edit models.
    wants_reference = False

    def __init__(self, settings: TokenSettings) -> None:
        self.settings = settings

    # -------------------------------------------------------------- full calls
    def add_features(self, hidden: torch.Tensor) -> None:
        """Target-token hidden state [B, N, C] of the run's clustering block at a full call."""

    def after_full(self, run: TokenRun, out_rows: torch.Tensor) -> None:
        """A full call's guided output in token rows [B, N, P]."""

    def measure(self, run: TokenRun, forecast_rows: torch.Tensor, truth_rows: torch.Tensor,
                fresh_change: torch.Tensor, rows: torch.Tensor) -> float | None:
        """At a full step, after the run measured its trust: anything else the method measures against
        the computed truth (`fresh_change`: the shadow call's fresh rows minus the forecast at `rows`).
        Returns how far that moved a value that is applied (for the shadow rule), None if nothing is."""
        return None

    # -------------------------------------------------------------- partial calls
    def ready(self, run: TokenRun) -> bool:
        """Whether the method has what it needs to select tokens (the run checks its own part first)."""
        return True

    def select(self, run: TokenRun, n_target: int, grid: tuple[int, ...]) -> PartialCall | None:
        """The target tokens a partial call computes, or None (this call runs in full)."""
        raise NotImplementedError

    def base_rows(self, run: TokenRun, forecast_rows: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """What the tokens not computed take [B, N, P] (fp32): the forecast."""
        return forecast_rows.float()

    def spread(self, run: TokenRun, base: torch.Tensor, rows: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor | None:
        """The merged rows when the fresh tokens also correct the others (propagation), else None."""
        return None

    def needs_rows(self) -> bool:
        """Whether the merge must go through token rows (`TokenRun.merge`) rather than the fused lerp."""
        return False

    def set_reference(self, reference: torch.Tensor, latent_spatial: tuple[int, ...]) -> None:
        """The reference latent of a full call (model space) and the target latent's (T,) H, W."""

    # -------------------------------------------------------------- run
    def applied_gains(self) -> list[float]:
        """Propagation gains applied on partial steps (for the summary)."""
        return []

    def label(self, run: TokenRun) -> str:
        """The method's name for the summary line and the panel."""
        return self.settings.method

    def reset(self) -> None:
        """The input changed within the run (size, dtype): forget what was learned for the old shape."""

    def close(self) -> None:
        """The run ends: drop tensors."""
