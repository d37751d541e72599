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
from .mask import batch_note
from .patches import patch_dims, patchify, token_map, unpatchify
from .policies import TRUST_DECAY, PartialCall, TokenPolicy, make_policy
from .settings import TokenSettings
from .work import TokenWork

log = logging.getLogger(__name__)

# Text tokens a partial call keeps in its streams: the hosts' attention reshapes fail on an empty text
# stream, and one text token costs nothing; the rest of the text enters attention from the cache.
TXT_KEEP = 1
# Shadow calls (a partial call before a full step, to measure trust) cost a partial step each. Rule
# "settled": measure at every full step until SHADOW_FIRST measurements are in and the last one moved
# the trust (and, with propagation, the gain) by at most SHADOW_SETTLED; then measure at one full step
# in SHADOW_EVERY only, to follow drift (a move above SHADOW_SETTLED measures at every full step again).
SHADOW_FIRST = 3
SHADOW_SETTLED = 0.05
SHADOW_EVERY = 3


def horizon_weight(weight: float, share: float) -> float:
    """A least-squares weight measured at a gap's end (share 1), applied `share` of the way into the gap.

    w = A / (A + N) weighs a correction whose useful part has variance A against its noise N. The
    forecast's error (what the fresh tokens correct) grows about linearly with the horizon, so A scales
    with share**2 while the noise of the fresh tokens' extrapolated context is taken as constant:
    w(share) = A s^2 / (A s^2 + N) = 1 / (1 + (1 - w) / (w s^2)). Early in a gap, where the forecast is
    still close, the fresh tokens' own noise dominates and they weigh less."""
    if weight <= 0.0 or share >= 1.0:
        return max(0.0, weight)
    if weight >= 1.0:
        return 1.0
    s2 = max(share, 1e-6) ** 2
    return 1.0 / (1.0 + (1.0 - weight) / (weight * s2))


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


class TokenRun:
    """One sampling run's token method: the bookkeeping every method shares (captures of full calls,
    the trust in fresh tokens and when to measure it, partial-step accounting, stats). What is the
    method's own (which tokens are fresh, how the others are filled, what full calls teach it) is asked
    of `policy`, built from `settings.method` (policies/)."""

    def __init__(self, settings: TokenSettings, mask: torch.Tensor | None = None) -> None:
        self.settings = settings
        self.policy: TokenPolicy = make_policy(settings)
        self.mask = mask  # Edit Region's mask (any size, resampled to the token grid), else None
        self.patch: tuple[int, ...] = ()  # the model's patch size (set by the adapter)
        self.captures: dict[Hashable, Capture] = {}
        self.mode: str | None = None  # "capture" | "partial" | None for the model call in progress
        self.partial: PartialCall | None = None
        self.branch: Hashable = None
        self.sizes: dict = {}  # hidden, blocks, txt_len, image_len, n_target (from full calls)
        self.calls: list[tuple[str, int, int]] = []  # (kind, queries, batch) per guided call
        self.disabled: str | None = None  # why token work is off for this run (anatomy check, layout)
        self.cluster_index = 0  # block position whose hidden state is clustered (set by the adapter)
        self.image_first: dict[str, bool] = {"double": False, "single": False}  # joint order per block kind
        self.n_target = 0  # target image tokens of the call in progress
        self.host = None  # the host diffusion model during the run (the self-check finds blocks on it)
        self.call_batches: list[tuple[str, int]] = []  # (mode, batch) of each model call of the step
        self._last_batches: list[tuple[str, int]] = []
        self.mask_batch_checked = False  # Edit Region: mask batch vs latent batch said once (check_mask_batch)
        self.sigma = 0.0  # noise level of the step in progress
        self.in_block: tuple | None = None  # (kind, index) of the host block running (set by its replacement)
        # Trust in fresh tokens, measured at full steps (see calibrate): fresh rows get
        # forecast + trust * (fresh - forecast).
        self.trust_num = 0.0
        self.trust_den = 0.0
        self.trust_log: list[float] = []
        self.measurements = 0  # shadow measurements since the run (or its last reset) began
        self.moved = float("inf")  # how far the last measurement moved the trust (and gain): shadow rule
        self.since_measured = 0  # full steps since the last measurement
        self.shadows_skipped = 0
        self.horizon = 1.0  # share of the gap at the partial step in progress (1 at a shadow call)

    # ------------------------------------------------------------------ full calls
    def capture_for(self, branch: Hashable) -> Capture:
        if branch not in self.captures:
            self.captures[branch] = Capture()
        return self.captures[branch]

    def add_features(self, hidden: torch.Tensor) -> None:
        """Target-token hidden state [B, N, C] of the clustering block at a full call."""
        self.policy.add_features(hidden)

    def after_full(self, out_rows: torch.Tensor) -> None:
        """A full call's guided output in token rows [B, N, P] (the policy re-clusters, keeps history,
        marks its region)."""
        self.policy.after_full(self, out_rows)

    # ------------------------------------------------------------------ partial calls
    def ready(self, measuring: bool = False) -> bool:
        """Whether a partial call can run now. Partial steps wait for the first measurement of how far
        fresh tokens can be trusted (`calibrate`); the measuring (shadow) call itself does not."""
        if self.disabled or not self.captures or (not measuring and self.trust_den <= 0):
            return False
        return self.policy.ready(self)

    def check_mask_batch(self, latent_batch: int) -> None:
        """Say once per run when the mask batch does not match the latent batch (their union is used)."""
        if self.mask is not None and not self.mask_batch_checked:
            self.mask_batch_checked = True
            note = batch_note(self.mask.shape[0] if self.mask.dim() > 2 else 1, latent_batch)
            if note:
                log.warning("DiT Accel: %s", note)

    def select(self, n_target: int, grid: tuple[int, ...]) -> PartialCall | None:
        """The target tokens the next partial call computes (the policy's choice), or None: run in full."""
        return self.policy.select(self, n_target, grid)

    @property
    def trust(self) -> float:
        return min(1.0, max(0.0, self.trust_num / self.trust_den)) if self.trust_den > 0 else 1.0

    def at_horizon(self, weight: float) -> float:
        """A weight measured at the gap's end, as the partial step in progress applies it."""
        if self.settings.trust_horizon == "scaled":
            return horizon_weight(weight, self.horizon)
        return weight

    def wants_partial(self, share: float) -> bool:
        """Whether a forecast step `share` of the way into its gap runs partial (settings.partial_from)."""
        self.horizon = share
        return share >= self.settings.partial_from - 1e-9

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
        before = self.trust if self.trust_den > 0 else None
        self.trust_num = TRUST_DECAY * self.trust_num + num
        self.trust_den = TRUST_DECAY * self.trust_den + den
        self.trust_log.append(round(self.trust, 4))
        self.measurements += 1
        self.since_measured = 0
        self.moved = abs(self.trust - before) if before is not None else float("inf")
        moved = self.policy.measure(self, forecast_rows, truth_rows, d, rows)  # e.g. the propagation gain
        if moved is not None:
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
        trust and their ring weight), the others as the policy fills them (the forecast; clusters: plus
        their cluster's measured correction; SpecEdit locked to the input: the reference)."""
        rows = call.rows.to(forecast_rows.device)
        base = self.policy.base_rows(self, forecast_rows, rows)
        fresh = base[:, rows] + self.at_horizon(self.trust) * (fresh_rows[:, rows].float() - base[:, rows])
        spread = self.policy.spread(self, base, rows, fresh)
        if spread is not None:
            return spread
        if call.weights is not None:
            w = call.weights.to(base.device)[None, :, None]
            fresh = base[:, rows] + w * (fresh - base[:, rows])
        return ops.call("token_scatter", base, rows.expand(base.shape[0], -1), fresh)

    def merge_latent(self, forecast: torch.Tensor, fresh: torch.Tensor, call: PartialCall) -> torch.Tensor:
        """`merge` on the sampler's latents [B, C, *spatial] (fp32 out): forecast + c (fresh - forecast)
        with c = trust x ring weight on the computed tokens and 0 elsewhere, in one fused pass. The
        token-row path moves both latents into rows and back (three permuting copies and a scatter
        per partial step); it stays for policies that need rows (propagation, SpecEdit locked to the input)."""
        if self.policy.needs_rows():
            merged = self.merge(patchify(forecast, self.patch), patchify(fresh.float(), self.patch), call)
            return unpatchify(merged, forecast.shape, self.patch)
        grid = patch_dims(forecast.shape, self.patch)
        n = 1
        for d in grid:
            n *= d
        weight = torch.full((call.rows.numel(),), self.at_horizon(self.trust), dtype=torch.float32)
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
        self.policy.reset()
        self.trust_num = self.trust_den = 0.0
        self.measurements, self.moved, self.since_measured = 0, float("inf"), 0

    def fill_stats(self, stats) -> None:
        work = self.work()
        stats.tokens.method = self.label()
        stats.tokens.work = work.as_dict() if work.full_token_blocks else {}
        gains = self.policy.applied_gains()
        stats.tokens.gain = round(sum(gains) / len(gains), 4) if gains else None
        stats.tokens.note = self.disabled or ""
        stats.tokens.trust = self.trust_log[-1] if self.trust_log else None

    def label(self) -> str:
        """The method's name for the summary line and the panel (specedit: what it marked)."""
        return self.policy.label(self)

    def close(self) -> None:
        self.captures.clear()
        self.policy.close()
        self.host = None
        self.partial = None
