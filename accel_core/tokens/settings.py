"""Settings of a token method (one frozen dataclass for every method; the token nodes build it, a run
reads it). `method` names a registered token policy (policies/)."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .edit_discovery import THRESHOLD_RULES
from .policies import TOKEN_POLICIES

LOCKS = ("forecast", "input")  # specedit: what the unmarked tokens take on partial steps
KV_MODES = ("cached", "drop")
SHADOW_RULES = ("settled", "always")  # when full steps measure trust with a shadow call (state.py)
TRUST_HORIZONS = ("flat", "scaled")  # how the trust and gain measured at a gap's end apply mid-gap (state.py)


@dataclass(frozen=True)
class TokenSettings:
    method: str = "clusters"
    clusters: int = 16  # K (clusters)
    per_cluster: int = 2  # fresh tokens per cluster and partial step (>= 2: the gain is cross-fitted)
    keep: float = 0.1  # dynamics: share of target tokens computed on partial steps
    rings: int = 2  # region: dilation rings computed around the mask
    ring_decay: float = 0.8  # region: blend weight of ring i is ring_decay ** i (EEdit's cascade)
    kv: str = "cached"
    cluster_block: float = 0.5  # which block's hidden state is clustered, as a fraction of the depth
    kmeans_iterations: int = 5
    seed: int = 0
    kv_extrapolate: bool = True
    # clusters: spread the fresh tokens' corrections to their clusters. Off by default: on the tune
    # models it lost 0.5-0.9 dB on average at the same full steps (micro_qwen_image -3 dB), while
    # without it the method is +0.0 to +0.3 dB (bench/results/tokens_exp.json, tokens_tune.json).
    propagate: bool = False
    # specedit (see edit_discovery.py): the edit region is marked from the discrepancy between the
    # draft (x0 estimate of a full step) and the reference latent; the unmarked tokens are locked.
    lock: str = "forecast"
    threshold: str = "otsu"
    share: float = 0.25  # threshold "max_share": marked when the discrepancy >= share x its maximum
    draft_steps: int = 1  # full steps whose x0 estimates mark the region (union); later ones do not
    shadow: str = "settled"  # when full steps run a shadow call: "settled" (see state.py) or "always"
    # Forecast steps become partial only from this share of the gap between full steps on (0: every
    # forecast step; 0.5: the later half, where the forecast has drifted and the trust measured at the
    # gap's end applies). Partial steps skipped cost nothing.
    partial_from: float = 0.0
    trust_horizon: str = "flat"  # "scaled": mid-gap trust and gain from the gap-end ones (horizon_weight)

    def __post_init__(self) -> None:
        def check(name, value, lo, hi, hint):
            if not lo <= value <= hi:
                raise ConfigError(f"Token settings: {name} = {value!r} is outside [{lo}, {hi}]. {hint}")

        if self.method not in TOKEN_POLICIES:
            raise ConfigError(f"Token settings: method {self.method!r} is not one of "
                              f"{tuple(TOKEN_POLICIES.names())}.")
        if self.kv not in KV_MODES:
            raise ConfigError(f"Token settings: attention_context {self.kv!r} is not one of {KV_MODES}.")
        check("clusters", self.clusters, 2, 256, "Use 8-32.")
        check("tokens_per_cluster", self.per_cluster, 1, 64, "Use 2-4.")
        check("keep", self.keep, 0.01, 0.9, "Use 0.05-0.25.")
        check("rings", self.rings, 0, 16, "Use 1-3.")
        check("ring_decay", self.ring_decay, 0.0, 1.0, "Use 0.6-1.")
        check("cluster_layer", self.cluster_block, 0.0, 1.0, "Use 0.3-0.7.")
        if self.lock not in LOCKS:
            raise ConfigError(f"Token settings: lock {self.lock!r} is not one of {LOCKS}.")
        if self.threshold not in THRESHOLD_RULES:
            raise ConfigError(f"Token settings: threshold {self.threshold!r} is not one of {THRESHOLD_RULES}.")
        check("share", self.share, 0.01, 1.0, "Use 0.1-0.5 (a share of the largest discrepancy).")
        check("draft_steps", self.draft_steps, 1, 10, "Use 1-3 (the first full steps the cache computes anyway).")
        check("partial_from", self.partial_from, 0.0, 0.95, "Use 0 (every forecast step) to 0.5 (the later half).")
        if self.trust_horizon not in TRUST_HORIZONS:
            raise ConfigError(f"Token settings: trust_horizon {self.trust_horizon!r} is not one of {TRUST_HORIZONS}.")
        if self.shadow not in SHADOW_RULES:
            raise ConfigError(f"Token settings: shadow {self.shadow!r} is not one of {SHADOW_RULES}.")
