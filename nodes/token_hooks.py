"""Host side of the token methods: a DIFFUSION_MODEL wrapper (which branch layout, may this call be
partial), per-block replacements (subset the stream at the first block, position embeddings at every
block, full stream back at the last) and an attention override (capture keys / values on full calls,
complete them on partial calls). Facts about the blocks live in token_anatomy.py.
"""
from __future__ import annotations

import inspect
import logging

import torch

from accel_core import distributed, ops
from accel_core.models import IMG_TXT
from accel_core.tokens.patches import patch_dims
from accel_core.tokens.policies import PartialCall, TokenPolicy
from accel_core.tokens.state import TXT_KEEP, Capture, TokenRun

from . import token_anatomy as anatomy
from .host import find_transformer_options
from .keys import ATTENTION_OVERRIDE, RUN_KEY

log = logging.getLogger("DiTAccel")


def _tokens(transformer_options) -> TokenRun | None:
    if not isinstance(transformer_options, dict):
        return None
    run = transformer_options.get(RUN_KEY)
    return getattr(run, "tokens", None)


def token_count(x: torch.Tensor, patch) -> int:
    count = 1
    for d in patch_dims(x.shape, patch):
        count *= d
    return count


def branch_key(transformer_options: dict) -> tuple:
    return tuple(transformer_options.get("cond_or_uncond") or (0,))


# ------------------------------------------------------------------------ DIFFUSION_MODEL wrapper
def token_model_wrapper(executor, *args, **kwargs):
    transformer_options = find_transformer_options(args, kwargs)
    tokens = _tokens(transformer_options)
    if tokens is None or tokens.mode is None:
        return executor(*args, **kwargs)
    x = args[0] if args else kwargs["x"]
    tokens.host = executor.class_obj
    tokens.branch = branch_key(transformer_options)
    tokens.n_target = token_count(x, tokens.patch)
    requested = tokens.mode
    if requested == "partial" and (tokens.disabled or tokens.branch not in tokens.captures
                                   or kwargs.get("control") is not None):
        tokens.mode = "capture"  # this call runs in full (no capture for its layout, or ControlNet)
    if tokens.mode == "capture":
        tokens.capture_for(tokens.branch).start(tokens.sigma)
        if tokens.policy.wants_reference:
            keep_reference(tokens.policy, x, _argument(executor, args, kwargs, "ref_latents"))
    tokens.call_batches.append((tokens.mode, x.shape[0]))
    try:
        return executor(*args, **kwargs)
    finally:
        tokens.mode = requested


def _argument(executor, args, kwargs, name: str):
    """A host forward's argument by name: hosts pass theirs positionally to the wrapped `_forward`."""
    if name in kwargs:
        return kwargs[name]
    try:
        bound = inspect.signature(executor.original).bind_partial(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    return bound.arguments.get(name)


def keep_reference(policy: TokenPolicy, x: torch.Tensor, refs) -> None:
    """A policy's input on edit models (SpecEdit): the reference latent of a full call (model space, as
    the host receives it). The first one of the target's size, else the first (resampled when used)."""
    refs = [r for r in (refs or []) if isinstance(r, torch.Tensor)]
    if not refs:
        return
    same = [r for r in refs if tuple(r.shape[2:]) == tuple(x.shape[2:])]
    policy.set_reference((same or refs)[0].detach(), tuple(x.shape[2:]))


# ------------------------------------------------------------------------ block replacement
class TokenBlock:
    """Replacement of one host block (chains another pack's replacement, like block_hooks)."""

    def __init__(self, site, position: int, module_attr: str, inner=None) -> None:
        self.module_attr = module_attr
        self.site = site
        self.position = position
        self.inner = inner
        self.image_first = site.token_order == IMG_TXT  # image rows first in the joint sequence

    def original(self, args: dict, extra: dict) -> dict:
        if self.inner is not None:
            return self.inner(args, extra)
        return extra["original_block"](args)

    def module(self, tokens: TokenRun):
        host = getattr(tokens, "host", None)
        group = getattr(host, self.module_attr, None) if host is not None else None
        return group[self.site.index] if group is not None and self.site.index < len(group) else None

    @torch.compiler.disable(recursive=False)
    def __call__(self, args: dict, extra: dict) -> dict:
        tokens = _tokens(args.get("transformer_options"))
        if tokens is None or tokens.mode is None:
            return self.original(args, extra)
        # The attention override acts only inside this block: hosts also run attention elsewhere
        # (HunyuanVideo's text refiner), with stale block ids in transformer_options.
        tokens.in_block = (self.site.kind, self.site.index)
        try:
            if tokens.mode == "capture":
                return self._full(tokens, args, extra)
            return self._partial(tokens, args, extra)
        finally:
            tokens.in_block = None

    # -------------------------------------------------------------- geometry
    def image_start(self, stream_len: int, capture: Capture) -> int:
        """First image row of this block's stream (double: image stream; single: joint stream)."""
        if self.site.kind == "double" or self.image_first:
            return 0
        return stream_len - capture.image_len

    def pe_rows(self, capture: Capture, rows: torch.Tensor) -> torch.Tensor:
        return TokenRun.query_rows(capture, rows, self.image_first)

    def image_rows(self, stream: torch.Tensor, count: int) -> torch.Tensor:
        """The selected image rows of a partial call's output stream (single blocks also hold text)."""
        if self.site.kind == "double" or self.image_first:
            return stream[:, :count]
        return stream[:, stream.shape[1] - count:]

    def full_stream(self, capture: Capture, out: dict, rows: torch.Tensor) -> dict:
        """Last block of a partial call: the host's full-length stream back, the selected rows fresh and
        the others from the newest full call (the output merge replaces those anyway)."""
        image = capture.final_stream
        image = ops.call("token_scatter", image, (capture.target_start + rows).expand(image.shape[0], -1),
                         self.image_rows(out["img"], rows.numel()))
        result = dict(out)
        if self.site.kind == "double":
            result["img"] = image
            return result
        txt = out["img"][:, rows.numel():] if self.image_first else out["img"][:, :out["img"].shape[1] - rows.numel()]
        result["img"] = torch.cat([image, txt], dim=1) if self.image_first else torch.cat([txt, image], dim=1)
        return result

    # -------------------------------------------------------------- full calls
    def _full(self, tokens: TokenRun, args: dict, extra: dict) -> dict:
        capture = tokens.capture_for(tokens.branch)
        stream = args["img"]
        if self.site.is_first:
            capture.image_len = stream.shape[1]
            capture.txt_len = args["txt"].shape[1] if "txt" in args else 0
            n = tokens.n_target
            capture.target_start = capture.image_len - n if self.site.reference_tokens == "prepended" else 0
            tokens.sizes.update(hidden=stream.shape[-1], txt_len=capture.txt_len, image_len=capture.image_len,
                                n_target=tokens.n_target)
        check = self._wants_check(tokens)
        kept = {k: args[k].detach().clone() for k in ("img", "txt") if k in args} if check else None
        out = self.original(args, extra)
        start = self.image_start(out["img"].shape[1], capture)
        if self.position == tokens.cluster_index:
            lo = start + capture.target_start
            tokens.add_features(out["img"][:, lo:lo + tokens.n_target])
        if self.site.is_last:
            capture.final_stream = out["img"][:, start:start + capture.image_len].detach().clone()
        if check:
            self._self_check(tokens, capture, args, kept, out, extra, start)
        return out

    def _wants_check(self, tokens: TokenRun) -> bool:
        first_of_kind = self.site.is_first or (self.site.kind == "single" and self.site.index == 0)
        if not first_of_kind or tokens.disabled:
            return False
        cached = anatomy.cached_result(self.module(tokens))
        if cached is not None:
            if not cached[0]:
                tokens.disable(f"block anatomy self-check failed earlier on this model "
                               f"({self.site.patch_name} 0: error {cached[1]:.2e})")
            return False
        return True

    def _self_check(self, tokens, capture, args, kept, out, extra, start) -> None:
        rows = anatomy.check_rows(tokens.n_target)
        stream = kept["img"]
        sub = dict(args)
        if self.site.kind == "double":
            sub["img"] = stream[:, capture.target_start + rows]
            if "txt" in kept:
                sub["txt"] = kept["txt"][:, :TXT_KEEP]
        else:  # the joint stream of a partial call: kept text and selected image rows, host order
            sub["img"] = stream.index_select(1, self.pe_rows(capture, rows).to(stream.device))
        error = float("inf")
        previous_mode, previous_partial = tokens.mode, tokens.partial
        try:
            if args.get("pe") is not None:
                sub["pe"] = args["pe"].index_select(anatomy.PE_TOKEN_DIM, self.pe_rows(capture, rows).to(args["pe"].device))
            tokens.mode, tokens.partial = "partial", PartialCall(rows)
            got = self.image_rows(self.original(sub, extra)["img"], rows.numel())
            want = out["img"][:, start + capture.target_start + rows]
            error = anatomy.relative_error(got, want) if got.shape == want.shape else float("inf")
        except Exception as e:  # a changed block may fail in any way: that is what the check is for
            log.warning("DiT Accel: token self-check raised %r", e)
        finally:
            tokens.mode, tokens.partial = previous_mode, previous_partial
        passed = distributed.agree_all(error <= anatomy.tolerance(stream.dtype))  # every rank, or none
        anatomy.remember(self.module(tokens), passed, error)
        if not passed:
            tokens.disable(f"block anatomy self-check failed on {self.site.patch_name} 0 "
                           f"(subset rows differ from the full block by {error:.2e})")

    # -------------------------------------------------------------- partial calls
    def _partial(self, tokens: TokenRun, args: dict, extra: dict) -> dict:
        capture = tokens.captures[tokens.branch]
        call = tokens.partial
        rows = call.rows.to(args["img"].device)
        sub = dict(args)
        if self.site.is_first:
            img = args["img"]
            sub["img"] = ops.call("token_gather", img, (capture.target_start + rows).expand(img.shape[0], -1))
            if "txt" in args:
                sub["txt"] = args["txt"][:, :TXT_KEEP]
        pe = args.get("pe")
        if pe is not None:
            key = id(pe)
            if key not in call.pe_cache:
                call.pe_cache[key] = pe.index_select(anatomy.PE_TOKEN_DIM, self.pe_rows(capture, rows).to(pe.device))
            sub["pe"] = call.pe_cache[key]
        out = self.original(sub, extra)
        if not self.site.is_last:
            return out
        return self.full_stream(capture, out, rows)


# ------------------------------------------------------------------------ attention override
def make_attention_override(previous=None):
    def attention_override(func, *args, **kwargs):
        transformer_options = kwargs.get("transformer_options")
        tokens = _tokens(transformer_options)
        call = previous if previous is not None else None
        if tokens is None or tokens.mode is None or len(args) < 4 or not kwargs.get("skip_reshape", False):
            return call(func, *args, **kwargs) if call else func(*args, **kwargs)
        q, k, v, heads = args[:4]
        rest = list(args[4:])
        block = getattr(tokens, "in_block", None)
        capture = tokens.captures.get(tokens.branch)
        if capture is None or block is None:
            return call(func, *args, **kwargs) if call else func(*args, **kwargs)
        if tokens.mode == "capture":
            capture.kv[block] = (k.detach(), v.detach())
            return call(func, *args, **kwargs) if call else func(*args, **kwargs)
        k, v, mask = tokens.complete_kv(capture, block, k, v, _mask(rest, kwargs))
        if rest:
            rest[0] = mask
        else:
            kwargs["mask"] = mask
        new_args = (q, k, v, heads, *rest)
        return call(func, *new_args, **kwargs) if call else func(*new_args, **kwargs)

    attention_override.dit_accel = True
    attention_override.previous = previous  # restored when a later Forecast Cache replaces this one
    return attention_override


def _mask(rest: list, kwargs: dict):
    return rest[0] if rest else kwargs.get("mask")
