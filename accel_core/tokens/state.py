"""Per-run state of a token method (host-free): what full calls captured, what the next partial call
computes, and how its fresh tokens merge with the forecast.

Full calls capture, per CFG-branch layout and block, the attention keys / values (after RoPE) of the
whole joint sequence, the hidden state of the clustering block, and the last block's image stream.
A partial call computes the selected target tokens through every block; in attention they see the
other tokens' cached keys / values (`kv = "cached"`), or only each other and the text (`kv = "drop"`,
DaTo's pruning from attention). The merge works on the output in token rows (see patches.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Hashable

import torch

from .. import distributed, ops
from .edit_discovery import THRESHOLD_RULES, discrepancy, mark_batch, reference_at
from .kmeans import kmeans
from .mask import batch_note
from .patches import mask_to_tokens, patch_dims, patchify, token_map, unpatchify
from .propagate import cluster_means, propagate_corrections
from .selection import cluster_members, dynamics_top, region_rings
from .work import TokenWork

log = logging.getLogger(__name__)

TOKEN_METHODS = ("clusters", "region", "dynamics", "specedit")
LOCKS = ("forecast", "input")  # specedit: what the unmarked tokens take on partial steps
KV_MODES = ("cached", "drop")
# Text tokens a partial call keeps in its streams: the hosts' attention reshapes fail on an empty text
# stream, and one text token costs nothing; the rest of the text enters attention from the cache.
TXT_KEEP = 1
TRUST_DECAY = 0.5  # weight kept by older trust measurements
# Shadow calls (a partial call before a full step, to measure trust) cost a partial step each. Rule
# "settled": measure at every full step until SHADOW_FIRST measurements are in and the last one moved
# the trust (and, with propagation, the gain) by at most SHADOW_SETTLED; then measure at one full step
# in SHADOW_EVERY only, to follow drift (a move above SHADOW_SETTLED measures at every full step again).
SHADOW_RULES = ("settled", "always")
SHADOW_FIRST = 3
SHADOW_SETTLED = 0.05
SHADOW_EVERY = 3


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
    shadow: str = "settled"  # when full steps run a shadow call: "settled" (see SHADOW_FIRST) or "always"

    def __post_init__(self) -> None:
        from ..errors import ConfigError

        def check(name, value, lo, hi, hint):
            if not lo <= value <= hi:
                raise ConfigError(f"Token settings: {name} = {value!r} is outside [{lo}, {hi}]. {hint}")

        if self.method not in TOKEN_METHODS:
            raise ConfigError(f"Token settings: method {self.method!r} is not one of {TOKEN_METHODS}.")
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
        if self.shadow not in SHADOW_RULES:
            raise ConfigError(f"Token settings: shadow {self.shadow!r} is not one of {SHADOW_RULES}.")


@dataclass
class Capture:
    """What one full call left for the partial calls of the same CFG layout."""

    kv: dict = field(default_factory=dict)  # (block_type, index) -> (k, v) [B, H, L, D], joint order
    previous_kv: dict = field(default_factory=dict)  # the same one full call earlier (for extrapolation)
    time: float = 0.0  # sigma of the newest full call
    previous_time: float | None = None
    img_first: dict = field(default_factory=dict)  # (block_type, index) -> image rows first in the joint seq
    txt_len: int = 0
    image_len: int = 0  # image stream length (target + reference tokens)
    target_start: int = 0  # first target row in the image stream
    final_stream: torch.Tensor | None = None  # last block's image rows [B, image_len, C]

    def start(self, sigma: float) -> None:
        """A full call at `sigma` begins: the newest keys / values become the previous ones (a second
        call at the same sigma, Heun's corrector, replaces the newest instead)."""
        if self.kv and sigma != self.time:
            self.previous_kv, self.previous_time = self.kv, self.time
            self.kv = {}
        self.time = sigma


@dataclass
class PartialCall:
    rows: torch.Tensor  # target-token indices computed [M], sorted
    weights: torch.Tensor | None = None  # blend weight per computed row (region rings), None = 1
    pe_cache: dict = field(default_factory=dict)  # sliced position embeddings, per source tensor id
    joint_rows: dict = field(default_factory=dict)  # (image first, device) -> joint-sequence rows, per call


class TokenRun:
    """One sampling run's token method."""

    def __init__(self, settings: TokenSettings, mask: torch.Tensor | None = None) -> None:
        self.settings = settings
        self.mask = mask
        self.captures: dict[Hashable, Capture] = {}
        self.assign: torch.Tensor | None = None
        self.centroids: torch.Tensor | None = None
        self.features: torch.Tensor | None = None  # [N, C] clustering features of the newest full call
        self.outputs: list[torch.Tensor] = []  # token rows of the newest two full outputs (dynamics)
        self.rings: torch.Tensor | None = None
        self.grid: tuple[int, ...] | None = None
        self.mode: str | None = None  # "capture" | "partial" | None for the model call in progress
        self.partial: PartialCall | None = None
        self.branch: Hashable = None
        self.sizes: dict = {}  # hidden, blocks, txt_len, image_len, n_target (from full calls)
        self.calls: list[tuple[str, int, int]] = []  # (kind, queries, batch) per guided call
        self.gains: list[float] = []
        self.disabled: str | None = None  # why token work is off for this run (anatomy check, layout)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.cluster_index = 0  # block position whose hidden state is clustered (set by the adapter)
        self.image_first: dict[str, bool] = {"double": False, "single": False}  # joint order per block kind
        self.n_target = 0  # target image tokens of the call in progress
        self.host = None  # the host diffusion model during the run (the self-check finds blocks on it)
        self.call_batches: list[tuple[str, int]] = []  # (mode, batch) of each model call of the step
        self._last_batches: list[tuple[str, int]] = []
        self.warned = False
        self.mask_batch_checked = False  # Edit Region: mask batch vs latent batch said once (check_mask_batch)
        self.sigma = 0.0  # noise level of the step in progress
        self.in_block: tuple | None = None  # (kind, index) of the host block running (set by its replacement)
        # Trust in fresh tokens, measured at full steps (see calibrate): fresh rows get
        # forecast + trust * (fresh - forecast).
        self.trust_num = 0.0
        self.trust_den = 0.0
        self.trust_log: list[float] = []
        self.gain_num = 0.0
        self.gain_den = 0.0
        self.measurements = 0  # shadow measurements since the run (or its last reset) began
        self.moved = float("inf")  # how far the last measurement moved the trust (and gain): shadow rule
        self.since_measured = 0  # full steps since the last measurement
        self.shadows_skipped = 0
        # specedit: the reference latent of the newest full call (model space, set by the host's
        # DIFFUSION_MODEL wrapper), the marked edit tokens and the drafts seen so far.
        self.reference: torch.Tensor | None = None
        self.marked: torch.Tensor | None = None
        self.drafts = 0
        self.reference_resized = False
        self.latent_spatial: tuple[int, ...] = ()  # (T,) H, W of the target latent (set with the reference)

    # ------------------------------------------------------------------ full calls
    def capture_for(self, branch: Hashable) -> Capture:
        if branch not in self.captures:
            self.captures[branch] = Capture()
        return self.captures[branch]

    def add_features(self, hidden: torch.Tensor) -> None:
        """Target-token hidden state [B, N, C] of the clustering block at a full call."""
        self.features = hidden.detach().float().mean(dim=0)

    def after_full(self, out_rows: torch.Tensor) -> None:
        """A full call's guided output in token rows [B, N, P]: re-cluster, keep dynamics history."""
        self.outputs = (self.outputs + [out_rows.detach().float()])[-2:]
        if self.settings.method == "specedit":
            self.draft(out_rows)
        if self.settings.method == "clusters" and self.features is not None:
            self.assign, self.centroids = kmeans(self.features, self.settings.clusters, init=self.centroids,
                                                 iterations=self.settings.kmeans_iterations,
                                                 generator=self.generator)

    def reference_rows(self, batch: int) -> torch.Tensor:
        """The reference latent as token rows [batch, N, P] of the target latent in sampling."""
        shape = (batch, self.reference.shape[1]) + tuple(self.latent_spatial)
        ref, self.reference_resized = reference_at(self.reference, shape)
        return patchify(ref.float(), self.patch)

    def draft(self, out_rows: torch.Tensor) -> None:
        """SpecEdit at a full step: the guided x0 estimate [B, N, P] is the draft of the edit; tokens
        whose draft differs from the reference (relative threshold, union over the draft steps) are
        marked. No reference latent: not an edit model, token work off (one warning)."""
        if self.drafts >= self.settings.draft_steps or self.disabled:
            return
        if self.reference is None:
            self.disable("SpecEdit found no reference latent: not an edit model (Kontext / Qwen-Image-Edit with a "
                         "ReferenceLatent); use Edit Region with a mask for other models")
            return
        score = discrepancy(out_rows, self.reference_rows(out_rows.shape[0]).to(out_rows.device))
        marked = mark_batch(score, self.settings.threshold, self.settings.share).cpu()
        self.marked = marked if self.marked is None or self.marked.numel() != marked.numel() else self.marked | marked
        self.drafts += 1
        self.rings = None  # region rows follow the marks

    # ------------------------------------------------------------------ partial calls
    def ready(self, measuring: bool = False) -> bool:
        """Whether a partial call can run now. Partial steps wait for the first measurement of how far
        fresh tokens can be trusted (`calibrate`); the measuring (shadow) call itself does not."""
        if self.disabled or not self.captures or (not measuring and self.trust_den <= 0):
            return False
        if self.settings.method == "clusters":
            return self.assign is not None
        if self.settings.method == "dynamics":
            return len(self.outputs) == 2
        if self.settings.method == "specedit":
            return self.marked is not None
        return self.mask is not None

    def check_mask_batch(self, latent_batch: int) -> None:
        """Say once per run when the mask batch does not match the latent batch (their union is used)."""
        if self.mask is not None and not self.mask_batch_checked:
            self.mask_batch_checked = True
            note = batch_note(self.mask.shape[0] if self.mask.dim() > 2 else 1, latent_batch)
            if note:
                log.warning("DiT Accel: %s", note)

    def select(self, n_target: int, grid: tuple[int, ...]) -> PartialCall | None:
        s = self.settings
        if s.method == "clusters":
            if self.assign is None or self.assign.numel() != n_target:
                return None
            return PartialCall(cluster_members(self.assign, s.per_cluster, self.generator))
        if s.method == "dynamics":
            if len(self.outputs) < 2 or self.outputs[-1].shape[1] != n_target:
                return None
            change = (self.outputs[-1] - self.outputs[-2]).pow(2).sum(dim=(0, 2))
            return PartialCall(dynamics_top(change, max(1, round(s.keep * n_target))))
        if self.rings is None or self.grid != tuple(grid):
            self.grid = tuple(grid)
            if s.method == "specedit":
                if self.marked is None or self.marked.numel() != n_target:
                    return None
                coverage = self.marked.float()
            else:
                coverage = mask_to_tokens(self.mask, grid)
            self.rings = region_rings(coverage, grid, s.rings)  # once per run and size (specedit: per draft)
        if self.rings.numel() != n_target:
            return None
        rows = (self.rings >= 0).nonzero().flatten()
        if rows.numel() == 0:
            return None
        weights = torch.tensor(s.ring_decay, dtype=torch.float32) ** self.rings[rows].float()
        return PartialCall(rows, weights)

    @property
    def measured_gain(self) -> float | None:
        """Propagation gain measured at full steps (None before the first measurement)."""
        if self.gain_den <= 0:
            return None
        return min(1.0, max(0.0, self.gain_num / self.gain_den))

    @property
    def trust(self) -> float:
        return min(1.0, max(0.0, self.trust_num / self.trust_den)) if self.trust_den > 0 else 1.0

    def calibrate(self, forecast_rows: torch.Tensor, shadow_rows: torch.Tensor, truth_rows: torch.Tensor,
                  call: PartialCall) -> None:
        """At a full step: a shadow partial call (the context it would have had) and the output forecast,
        both against the computed truth at the selected tokens. A fresh token is only as good as its
        context, so how far to trust it over the forecast is measured on the user's model: the
        least-squares weight w of forecast + w (fresh - forecast), accumulated with decay."""
        rows = call.rows.to(truth_rows.device)
        f = forecast_rows[:, rows].float()
        d = shadow_rows[:, rows].float() - f
        e = truth_rows[:, rows].float() - f
        num, den = distributed.agree_sum(float((d * e).sum()), float((d * d).sum()))  # over every rank's tokens
        before = (self.trust if self.trust_den > 0 else None, self.measured_gain)
        self.trust_num = TRUST_DECAY * self.trust_num + num
        self.trust_den = TRUST_DECAY * self.trust_den + den
        self.trust_log.append(round(self.trust, 4))
        self.measurements += 1
        self.since_measured = 0
        self.moved = abs(self.trust - before[0]) if before[0] is not None else float("inf")
        if self.settings.method == "clusters" and self.assign is not None and self.assign.numel() == truth_rows.shape[1]:
            # The propagation gain, measured the same way: the cluster means of the (trusted) fresh
            # tokens' corrections against the true errors of every other token.
            assign = self.assign.to(truth_rows.device)
            k = self.centroids.shape[0]
            means, counts = cluster_means(self.trust * d, assign[rows], k)
            others = torch.ones(truth_rows.shape[1], dtype=torch.bool, device=truth_rows.device)
            others[rows] = False
            others &= counts[assign] > 0
            spread = means[:, assign[others]]
            error = truth_rows[:, others].float() - forecast_rows[:, others].float()
            num, den = distributed.agree_sum(float((spread * error).sum()), float((spread * spread).sum()))
            self.gain_num = TRUST_DECAY * self.gain_num + num
            self.gain_den = TRUST_DECAY * self.gain_den + den
            if self.settings.propagate:  # the gain is applied too: it must have settled as well
                gain = self.measured_gain
                moved = abs(gain - before[1]) if gain is not None and before[1] is not None else float("inf")
                self.moved = max(self.moved, moved)

    def wants_shadow(self) -> bool:
        """Whether the full step about to run measures trust with a shadow call (the rule above).
        A skipped measurement leaves the trust as it is: partial steps then use the settled value."""
        if self.settings.shadow == "always" or self.measurements < SHADOW_FIRST or self.moved > SHADOW_SETTLED:
            return True
        return self.since_measured + 1 >= SHADOW_EVERY

    def skip_shadow(self) -> None:
        self.since_measured += 1
        self.shadows_skipped += 1

    def merge(self, forecast_rows: torch.Tensor, fresh_rows: torch.Tensor, call: PartialCall) -> torch.Tensor:
        """Token rows [B, N, P] of a partial step's output: the fresh tokens (blended by the measured
        trust and their ring weight), the others from the forecast (clusters: plus their cluster's
        measured correction)."""
        rows = call.rows.to(forecast_rows.device)
        base = forecast_rows.float()
        if self.settings.method == "specedit" and self.settings.lock == "input":
            # Locked tokens take the reference's x0: the sampler's step moves them toward the input.
            base = self.reference_rows(base.shape[0]).to(base.device).clone()
            base[:, rows] = forecast_rows[:, rows].float()
        fresh = base[:, rows] + self.trust * (fresh_rows[:, rows].float() - base[:, rows])
        if self.settings.method == "clusters" and self.settings.propagate and self.assign is not None:
            out, gain = propagate_corrections(base, rows, fresh, self.assign.to(base.device),
                                              self.centroids.shape[0], gain=self.measured_gain or 0.0)
            self.gains.append(gain)
            return out
        if call.weights is not None:
            w = call.weights.to(base.device)[None, :, None]
            fresh = base[:, rows] + w * (fresh - base[:, rows])
        return ops.call("token_scatter", base, rows.expand(base.shape[0], -1), fresh)

    def merge_latent(self, forecast: torch.Tensor, fresh: torch.Tensor, call: PartialCall) -> torch.Tensor:
        """`merge` on the sampler's latents [B, C, *spatial] (fp32 out): forecast + c (fresh - forecast)
        with c = trust x ring weight on the computed tokens and 0 elsewhere, in one fused pass. The
        token-row path moves both latents into rows and back (three permuting copies and a scatter
        per partial step); it stays for what needs rows (propagation, SpecEdit locked to the input)."""
        s = self.settings
        if (s.method == "specedit" and s.lock == "input") or (s.method == "clusters" and s.propagate
                                                                and self.assign is not None):
            merged = self.merge(patchify(forecast, self.patch), patchify(fresh.float(), self.patch), call)
            return unpatchify(merged, forecast.shape, self.patch)
        grid = patch_dims(forecast.shape, self.patch)
        n = 1
        for d in grid:
            n *= d
        weight = torch.full((call.rows.numel(),), self.trust, dtype=torch.float32)
        if call.weights is not None:
            weight = weight * call.weights.float().cpu()
        per_token = torch.zeros(n, dtype=torch.float32).index_copy_(0, call.rows.cpu(), weight)
        c = token_map(per_token, forecast.shape, self.patch).to(forecast.device)
        return torch.lerp(forecast.float(), fresh.float(), c)

    def context_kv(self, capture: Capture, block):
        """Cached keys / values at the partial call's noise level: linear extrapolation over sigma from
        the newest two full calls (the context moves between full steps; stale keys cost more than
        the extrapolation error in our measurements), or the newest alone."""
        k1, v1 = capture.kv[block]
        old = capture.previous_kv.get(block)
        if not self.settings.kv_extrapolate or old is None or capture.previous_time is None:
            return k1, v1
        span = capture.time - capture.previous_time
        if abs(span) < 1e-12:
            return k1, v1
        # k1 + a (k1 - k0) = lerp(k0, k1, 1 + a): one fused pass over the cached keys per block and
        # call, where the three-op form read and wrote the full joint sequence three times over.
        w = 1.0 + (self.sigma - capture.time) / span
        return torch.lerp(old[0], k1, w), torch.lerp(old[1], v1, w)

    @staticmethod
    def query_rows(capture: Capture, rows: torch.Tensor, img_first: bool) -> torch.Tensor:
        """Joint-sequence rows (as in a full call) of a partial call's sequence, in the host's order:
        the kept text token(s) and the selected target tokens."""
        img = (0 if img_first else capture.txt_len) + capture.target_start + rows
        start = capture.image_len if img_first else 0
        txt = torch.arange(start, start + min(TXT_KEEP, capture.txt_len), device=rows.device)
        return torch.cat([img, txt]) if img_first else torch.cat([txt, img])

    def complete_kv(self, capture: Capture, block, k: torch.Tensor, v: torch.Tensor, mask=None):
        """Keys / values of a partial call's sequence [B, H, M', D] -> the keys / values its attention
        uses: the cached joint sequence with those rows replaced (kv "cached"), or of that only the text
        and the fresh rows (kv "drop"). An attention mask over the joint sequence follows."""
        ck, cv = self.context_kv(capture, block)
        img_first = self.image_first.get(block[0], False)
        key = (img_first, ck.device)  # the same for every block of a kind: computed once per call
        if key not in self.partial.joint_rows:
            self.partial.joint_rows[key] = self.query_rows(capture, self.partial.rows.to(ck.device), img_first)
        joint_rows = self.partial.joint_rows[key]
        length = ck.shape[2]
        key_rows = None
        cached_k, cached_v = capture.kv[block]
        if ck is cached_k:  # the capture itself (no extrapolation): it must stay intact for later calls
            k_all, v_all = ck.index_copy(2, joint_rows, k.to(ck.dtype)), cv.index_copy(2, joint_rows, v.to(cv.dtype))
        else:  # a fresh extrapolated tensor of this call: fill in place, no second full-length copy
            k_all, v_all = ck.index_copy_(2, joint_rows, k.to(ck.dtype)), cv.index_copy_(2, joint_rows, v.to(cv.dtype))
        if self.settings.kv == "drop":
            start = capture.image_len if img_first else 0
            txt_rows = torch.arange(start, start + capture.txt_len, device=ck.device)
            key_rows = torch.unique(torch.cat([txt_rows, joint_rows]))
            k_all, v_all = k_all.index_select(2, key_rows), v_all.index_select(2, key_rows)
        if isinstance(mask, torch.Tensor):
            if key_rows is not None and mask.shape[-1] == length:
                mask = mask.index_select(-1, key_rows.to(mask.device))
            if mask.dim() >= 2 and mask.shape[-2] == length:
                mask = mask.index_select(-2, joint_rows.to(mask.device))
        return k_all, v_all, mask

    def disable(self, reason: str) -> None:
        """Token work off for the rest of the run (one warning); the temporal cache goes on alone."""
        if self.disabled is None:
            self.disabled = reason
            log.warning("DiT Accel: token method off: %s; sampling continues with Forecast Cache alone.", reason)

    # ------------------------------------------------------------------ steps
    def begin_step(self, mode: str, partial: PartialCall | None = None, sigma: float = 0.0) -> None:
        self.sigma = sigma
        self.mode = mode
        self.partial = partial
        self.call_batches = []

    def end_step(self, shadow: bool = False) -> str:
        """Close a computed or partial step; returns "partial" when at least one model call was partial."""
        kinds = []
        for mode, batch in self.call_batches:
            kind = "partial" if mode == "partial" else "full"
            if shadow:
                if kind == "full":
                    continue  # a shadow call that could not run partial was not needed: nothing ran twice
                kind = "shadow"  # extra work the uncached run does not have
            # shadow calls run the same queries as a partial call: their work counts as done
            queries = self.partial.rows.numel() + TXT_KEEP if kind in ("partial", "shadow") else 0
            self.calls.append((kind, queries, batch))
            kinds.append(kind)
        if self.call_batches:
            self._last_batches = list(self.call_batches)
        self.mode = None
        self.partial = None
        self.call_batches = []
        return "partial" if ("partial" in kinds or "shadow" in kinds) else "full"

    def record_forecast(self) -> None:
        for _, batch in self._last_batches:
            self.calls.append(("forecast", 0, batch))

    # ------------------------------------------------------------------ accounting

    def work(self) -> TokenWork:
        work = TokenWork()
        z = self.sizes
        if not z:
            return work
        tokens = z["image_len"] + z["txt_len"]
        work.counts = {}
        shares, selected = [], []
        for kind, queries, batch in self.calls:
            work.counts[kind] = work.counts.get(kind, 0) + 1
            if kind in ("partial", "shadow") and z.get("n_target"):
                shares.append((queries - TXT_KEEP) / z["n_target"])
                selected.append(queries - TXT_KEEP)
            if kind == "full":
                work.add_call(z["blocks"], tokens, z["hidden"], batch)
            elif kind in ("partial", "shadow"):
                keys = tokens if self.settings.kv == "cached" else queries + z["txt_len"]
                work.add_call(z["blocks"], tokens, z["hidden"], batch, queries=queries, keys=keys,
                              extra=kind == "shadow")
            else:
                work.add_call(z["blocks"], tokens, z["hidden"], batch, queries=0)
        if self.shadows_skipped:
            work.counts["shadow_skipped"] = self.shadows_skipped  # not a call: no work (see wants_shadow)
        work.selected_share = sum(shares) / len(shares) if shares else 0.0
        work.selected_tokens = sum(selected) / len(selected) if selected else 0.0
        return work

    def reset(self) -> None:
        """The input changed within the run (size, dtype): everything captured is for another shape."""
        self.captures.clear()
        self.features = self.assign = self.centroids = None
        self.outputs = []
        self.rings = self.grid = None
        self.marked = None
        self.drafts = 0
        self.trust_num = self.trust_den = self.gain_num = self.gain_den = 0.0
        self.measurements, self.moved, self.since_measured = 0, float("inf"), 0

    def fill_stats(self, stats) -> None:
        work = self.work()
        stats.token_method = self.label()
        stats.token_work = work.as_dict() if work.full_token_blocks else {}
        stats.token_gain = round(sum(self.gains) / len(self.gains), 4) if self.gains else None
        stats.token_note = self.disabled or ""
        stats.token_trust = self.trust_log[-1] if self.trust_log else None

    def label(self) -> str:
        """The method's name for the summary line and the panel (specedit: what it marked)."""
        s = self.settings
        if s.method != "specedit" or self.marked is None:
            return s.method
        computed = int((self.rings >= 0).sum()) if self.rings is not None else int(self.marked.sum())
        note = ", reference resized" if self.reference_resized else ""
        rings = f"{s.rings} ring" + ("" if s.rings == 1 else "s")
        return (f"specedit ({int(self.marked.sum())} of {self.marked.numel()} tokens marked, {computed} computed "
                f"with {rings}, rest locked to the {s.lock}{note})")

    def close(self) -> None:
        self.captures.clear()
        self.reference = None
        self.host = None
        self.features = self.assign = self.centroids = None
        self.outputs = []
        self.partial = None
