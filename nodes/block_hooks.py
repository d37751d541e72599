"""Per-block replacements (`patches_replace["dit"]`): skip, capture and forecast inside the DiT.

Token layout per call (ComfyUI 0.3.75):
- image stream = target tokens + reference tokens (Kontext / Qwen-Image-Edit append them;
  HunyuanVideo's ref_latent is prepended);
- Flux single blocks see cat(txt, img); HunyuanVideo single blocks cat(img, txt).
Only target tokens are forecast; reference tokens are reused (per-block mode) or left alone
(final-hidden mode: the host drops them after the last block).
Host blocks write into their inputs (`img +=`), so anything kept is cloned before the call.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from accel_core import CallPlan, ForecastRun
from accel_core.models import IMG_TXT

RUN_KEY = "dit_accel_run"  # transformer_options entry with the live run (per-run model_options clone)


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
    if site.is_first and plan.compute:
        run.capture_input(plan, stream[:, start:end])
    if plan.compute:
        out = _call_original(args, extra, inner)
        if site.is_last:
            run.record_final(plan, out["img"][:, start:end])
            plan.scratch["recorded"] = True
        return out
    if not site.is_last:
        return _passthrough(site, args)
    forecast = run.forecast_final(plan, stream[:, start:end])
    new_stream = torch.cat([stream[:, :start], forecast, stream[:, end:]], dim=1)
    out = {"img": new_stream}
    if site.kind == "double":
        out["txt"] = args["txt"]
    return out


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
    layout = {}
    for name in _streams(site):
        tensor = args[name]
        if name == "img":
            layout[name] = _segments(site, plan, tensor.shape[1])
        else:
            layout[name] = [("all", 0, tensor.shape[1], False)]
    slots = [f"{prefix}/{s}/{seg[0]}" for s, segs in layout.items() for seg in segs]
    if not plan.compute and all(run.has_slot(plan, slot) for slot in slots):
        out = {}
        for name, segs in layout.items():
            parts = [run.forecast_segment(plan, f"{prefix}/{name}/{seg}", args[name][:, lo:hi], reuse)
                     for seg, lo, hi, reuse in segs]
            out[name] = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return out
    if not plan.compute:  # scheduled forecast whose slot has no history yet: run the block, keep nothing
        return _call_original(args, extra, inner)
    kept = {name: args[name].detach().clone() for name in layout}  # host blocks write in place
    out = _call_original(args, extra, inner)
    for name, segs in layout.items():
        for seg, lo, hi, reuse in segs:
            run.record_segment(plan, f"{prefix}/{name}/{seg}", kept[name][:, lo:hi], out[name][:, lo:hi], reuse)
    if site.is_last:
        plan.scratch["recorded"] = True
    return out
