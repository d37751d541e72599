"""Per-block replacements (`patches_replace["dit"]`): skip, capture and forecast inside the DiT.

Token layout per call (ComfyUI 0.3.75):
- image stream = target tokens + reference tokens (Kontext / Qwen-Image-Edit append them;
  HunyuanVideo's ref_latent is prepended);
- Flux single blocks see cat(txt, img); HunyuanVideo single blocks cat(img, txt).
Only target tokens are forecast; reference tokens are reused (per-block mode) or left alone
(final-hidden mode: the host drops them after the last block).
Host blocks write into their inputs (`img +=`), so anything kept is cloned before the call.

Verification (SpeCa) probes, on forecast calls with `plan.probe`:
- first_block: run the first block for real and compare its target tokens with their forecast
  (final-hidden mode keeps a small "probe" history of the first block's residual). Accepted: the
  forecast path goes on (final-hidden: from the untouched input). Rejected in rollback mode: the
  call turns into a computed call right there, reusing the block output it already has.
- last_block: run the last block on the forecast penultimate state (per-block mode: the chain of
  block forecasts; final-hidden mode: a cached "pen" residual per segment, relative to the first
  block's input arranged like the last block's stream) and compare with the forecast output.
  Accepted: the real block's output is used. Rejected in rollback mode: the adapter reruns the
  whole call as computed (`scratch["rerun"]`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from accel_core import CallPlan, ForecastRun
from accel_core.models import IMG_TXT

from .keys import GUARD_KEY, RUN_KEY

GUARD_RERUN = "guard_rerun"  # plan.scratch flag: the guard rejected the forecast, the adapter computes the call
PROBE_SLOT = "probe/first/target"  # final-hidden mode: forecast of the first block's target tokens
PEN_PREFIX = "pen"  # final-hidden mode with a last-block probe: penultimate state per segment


@dataclass(frozen=True)
class BlockSite:
    kind: str  # "double" or "single"
    patch_name: str
    index: int
    token_order: str
    is_first: bool
    is_last: bool
    reference_tokens: str


def _call_original(args: dict, extra: dict, inner) -> dict:
    if inner is not None:
        return inner(args, extra)
    return extra["original_block"](args)


def _image_range(site: BlockSite, plan: CallPlan, stream_len: int) -> tuple[int, int]:
    """[start, end) of the target image tokens in this block's image (double) or joint (single) stream."""
    img_total = plan.scratch.get("img_total", plan.n_target)
    if site.kind == "double":
        img_start = 0
    elif site.token_order == IMG_TXT:
        img_start = 0
    else:
        img_start = stream_len - img_total
    offset = img_total - plan.n_target if site.reference_tokens == "prepended" else 0
    start = img_start + offset
    return start, start + plan.n_target


# Not traced itself (its branches read host state that changes every step, which would recompile);
# the original block it calls stays compilable (recursive=False).
@torch.compiler.disable(recursive=False)
def block_replacement(args: dict, extra: dict, *, site: BlockSite, inner=None) -> dict:
    transformer_options = args.get("transformer_options") or {}
    run: ForecastRun | None = transformer_options.get(RUN_KEY)
    plan: CallPlan | None = run.current_plan if run is not None else None
    if plan is None:
        return _call_original(args, extra, inner)
    if site.is_first and site.kind == "double":
        plan.scratch["img_total"] = args["img"].shape[1]
    if run.config.cache_mode == "per_block":
        return _per_block(run, plan, site, args, extra, inner)
    return _final_hidden(run, plan, site, args, extra, inner)


# ------------------------------------------------------------------------------ final hidden state
def _final_hidden(run: ForecastRun, plan: CallPlan, site: BlockSite, args: dict, extra: dict, inner) -> dict:
    stream = args["img"]
    start, end = _image_range(site, plan, stream.shape[1])
    if end > stream.shape[1]:
        plan.scratch["layout_error"] = True
        return _call_original(args, extra, inner)
    probe = run.config.verify
    if site.is_first and plan.compute:
        run.capture_input(plan, stream[:, start:end])
        if probe == "last_block" and not site.is_last:
            plan.scratch["first_in"] = {name: args[name].detach().clone() for name in _streams(site)}
    if plan.compute:
        if site.is_last and probe == "last_block" and "first_in" in plan.scratch:
            _record_penultimate(run, plan, site, args)
        out = _call_original(args, extra, inner)
        if site.is_first and probe == "first_block" and not site.is_last:
            run.record_segment(plan, PROBE_SLOT, plan.h_in, out["img"][:, start:end],
                               backtest=run.config.verify_relative > 0)
        if site.is_last:
            run.record_final(plan, out["img"][:, start:end])
            plan.scratch["recorded"] = True
            _observe(transformer_options_of(args), out["img"][:, start:end])
        return out
    if site.is_first and plan.probe and probe == "first_block" and run.has_slot(plan, PROBE_SLOT):
        return _probe_first_final(run, plan, site, args, extra, inner, start, end)
    if not site.is_last:
        return _passthrough(site, args)
    forecast = run.forecast_final(plan, stream[:, start:end])
    _guard(run, plan, transformer_options_of(args), forecast)
    if plan.probe and probe == "last_block" and all(run.has_slot(plan, slot) for slot in _pen_slots(site, plan, args)):
        return _probe_last_final(run, plan, site, args, extra, inner, start, end, forecast)
    new_stream = torch.cat([stream[:, :start], forecast, stream[:, end:]], dim=1)
    out = {"img": new_stream}
    if site.kind == "double":
        out["txt"] = args["txt"]
    return out


def _probe_first_final(run, plan, site, args, extra, inner, start, end) -> dict:
    """First-block probe in final-hidden mode (see module doc)."""
    kept = {name: args[name].detach().clone() for name in _streams(site)}
    h_in = kept["img"][:, start:end]
    forecast = run.forecast_segment(plan, PROBE_SLOT, h_in)
    out = _call_original(args, extra, inner)
    if run.verify(plan, forecast, out["img"][:, start:end]):
        return kept  # forecast path continues from the untouched first-block input
    if run.config.verify_mode == "rollback":
        run.rollback(plan)
        run.capture_input(plan, h_in)
        run.record_segment(plan, PROBE_SLOT, h_in, out["img"][:, start:end])
        return out  # the rest of the call computes
    return kept


def _arranged_first_input(site: BlockSite, first_in: dict) -> dict:
    """The first block's inputs laid out like the last block's stream(s)."""
    if site.kind == "double":
        return {"img": first_in["img"], "txt": first_in["txt"]}
    parts = (first_in["img"], first_in["txt"]) if site.token_order == IMG_TXT else (first_in["txt"], first_in["img"])
    return {"img": torch.cat(parts, dim=1)}


def _stream_layout(site: BlockSite, plan: CallPlan, args: dict) -> dict:
    layout = {}
    for name in _streams(site):
        if name == "img":
            layout[name] = _segments(site, plan, args[name].shape[1])
        else:
            layout[name] = [("all", 0, args[name].shape[1], False)]
    return layout


def _pen_slots(site: BlockSite, plan: CallPlan, args: dict) -> list[str]:
    return [f"{PEN_PREFIX}/{name}/{seg[0]}" for name, segs in _stream_layout(site, plan, args).items() for seg in segs]


def _record_penultimate(run: ForecastRun, plan: CallPlan, site: BlockSite, args: dict) -> None:
    """Computed call, last block: store its input relative to the arranged first-block input."""
    first = _arranged_first_input(site, plan.scratch.pop("first_in"))
    for name, segs in _stream_layout(site, plan, args).items():
        if first[name].shape != args[name].shape:
            return  # the host changed the token layout between blocks: no last-block probe this run
        for seg, lo, hi, reuse in segs:
            run.record_segment(plan, f"{PEN_PREFIX}/{name}/{seg}", first[name][:, lo:hi], args[name][:, lo:hi], reuse)


def _probe_last_final(run, plan, site, args, extra, inner, start, end, forecast) -> dict:
    """Last-block probe in final-hidden mode: forecast penultimate state -> real last block."""
    penultimate = {}
    for name, segs in _stream_layout(site, plan, args).items():
        parts = [run.forecast_segment(plan, f"{PEN_PREFIX}/{name}/{seg}", args[name][:, lo:hi], reuse)
                 for seg, lo, hi, reuse in segs]
        penultimate[name] = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
    out = _call_original({**args, **penultimate}, extra, inner)
    if not run.verify(plan, forecast, out["img"][:, start:end]) and run.config.verify_mode == "rollback":
        plan.scratch["rerun"] = True
    return out


def transformer_options_of(args: dict) -> dict:
    return args.get("transformer_options") or {}


def _observe(transformer_options: dict, computed: torch.Tensor) -> None:
    """A computed last-block output (target tokens): it sets the finite-output guard's bound."""
    guard = transformer_options.get(GUARD_KEY)
    if guard is not None:
        guard.observe(computed)


def _guard(run: ForecastRun, plan: CallPlan, transformer_options: dict, forecast: torch.Tensor) -> None:
    """A forecast last-block output that is not finite or runs away: the adapter computes the call instead
    (the model's own output replaces it before anything reaches the sampler)."""
    guard = transformer_options.get(GUARD_KEY)
    if guard is None or plan.scratch.get(GUARD_RERUN):
        return
    reason = guard.reason(forecast)
    if reason:
        guard.reject(run.stats, reason)
        plan.scratch[GUARD_RERUN] = True


def _passthrough(site: BlockSite, args: dict) -> dict:
    if site.kind == "double":
        return {"img": args["img"], "txt": args["txt"]}
    return {"img": args["img"]}


# ------------------------------------------------------------------------------ per-block residuals
def _segments(site: BlockSite, plan: CallPlan, stream_len: int) -> list[tuple[str, int, int, bool]]:
    """(name, start, end, reuse) covering the stream in order; reference tokens are reused."""
    start, end = _image_range(site, plan, stream_len)
    img_total = plan.scratch.get("img_total", plan.n_target)
    if site.kind == "double":
        img_lo, img_hi = 0, stream_len
        txt = None
    elif site.token_order == IMG_TXT:
        img_lo, img_hi = 0, img_total
        txt = ("txt", img_total, stream_len, False)
    else:
        img_lo, img_hi = stream_len - img_total, stream_len
        txt = ("txt", 0, img_lo, False)
    pieces = [("ref_before", img_lo, start, True), ("target", start, end, False), ("ref_after", end, img_hi, True)]
    if txt is not None:
        pieces.append(txt)
    return sorted((p for p in pieces if p[2] > p[1]), key=lambda p: p[1])


def _streams(site: BlockSite) -> tuple[str, ...]:
    return ("img", "txt") if site.kind == "double" else ("img",)


def _per_block(run: ForecastRun, plan: CallPlan, site: BlockSite, args: dict, extra: dict, inner) -> dict:
    prefix = f"{site.patch_name}{site.index}"
    layout = _stream_layout(site, plan, args)
    slots = [f"{prefix}/{s}/{seg[0]}" for s, segs in layout.items() for seg in segs]
    if not plan.compute and all(run.has_slot(plan, slot) for slot in slots):
        out = {}
        for name, segs in layout.items():
            parts = [run.forecast_segment(plan, f"{prefix}/{name}/{seg}", args[name][:, lo:hi], reuse)
                     for seg, lo, hi, reuse in segs]
            out[name] = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        if site.is_last:
            start, end = _image_range(site, plan, args["img"].shape[1])
            _guard(run, plan, transformer_options_of(args), out["img"][:, start:end])
        probe = run.config.verify
        if plan.probe and ((probe == "first_block" and site.is_first) or (probe == "last_block" and site.is_last)):
            return _probe_block(run, plan, site, args, extra, inner, layout, prefix, out)
        return out
    if not plan.compute:  # scheduled forecast whose slot has no history yet: run the block, keep nothing
        return _call_original(args, extra, inner)
    kept = {name: args[name].detach().clone() for name in layout}  # host blocks write in place
    out = _call_original(args, extra, inner)
    probe = run.config.verify
    probed = (probe == "first_block" and site.is_first) or (probe == "last_block" and site.is_last)
    _record_block(run, plan, prefix, layout, kept, out, backtest=probed and run.config.verify_relative > 0)
    if site.is_last:
        plan.scratch["recorded"] = True
        start, end = _image_range(site, plan, out["img"].shape[1])
        _observe(transformer_options_of(args), out["img"][:, start:end])
    return out


def _record_block(run, plan, prefix, layout, kept, out, backtest: bool = False) -> None:
    for name, segs in layout.items():
        for seg, lo, hi, reuse in segs:
            run.record_segment(plan, f"{prefix}/{name}/{seg}", kept[name][:, lo:hi], out[name][:, lo:hi], reuse,
                               backtest=backtest and name == "img" and seg == "target")


def _probe_block(run, plan, site, args, extra, inner, layout, prefix, forecast_out) -> dict:
    """Per-block probe: this block's real output against its forecast (target tokens)."""
    start, end = _image_range(site, plan, args["img"].shape[1])
    kept = {name: args[name].detach().clone() for name in layout} if site.is_first else None
    out = _call_original(args, extra, inner)
    if run.verify(plan, forecast_out["img"][:, start:end], out["img"][:, start:end]):
        return out
    if run.config.verify_mode == "rollback":
        if site.is_first:  # turn the call into a computed one from here on
            run.rollback(plan)
            _record_block(run, plan, prefix, layout, kept, out)
        else:
            plan.scratch["rerun"] = True
    return out
