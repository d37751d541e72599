"""Token policies, one per token method, registered by name; importing this package registers all of
them. `make_policy(settings)` builds the run's policy (`TokenRun` holds one)."""
from __future__ import annotations

from . import clusters, dynamics, region, specedit  # noqa: F401  (registration side effects)
from .base import TRUST_DECAY, PartialCall, TokenPolicy
from .registry import TOKEN_POLICIES


def make_policy(settings) -> TokenPolicy:
    return TOKEN_POLICIES.get(settings.method)(settings)


__all__ = ["TOKEN_POLICIES", "TRUST_DECAY", "PartialCall", "TokenPolicy", "make_policy"]
