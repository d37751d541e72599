"""PREDICT_NOISE wrapper of the output-level cache: the guider's whole call (every CFG branch,
ControlNet, patches) is either computed or replaced by the forecast denoised estimate. With a token
method, forecast steps become partial: the model runs on a subset of the target tokens and the
forecast is merged with their fresh output (token_hooks.py does the model side)."""
from __future__ import annotations

import time

import torch

from accel_core.output import OutputCacheRun
from accel_core.output.guard import ForecastGuard, count_as_computed
from accel_core.tokens import patchify
from accel_core.tokens.patches import patch_dims

from . import boundaries
from .keys import GUARD_KEY, RUN_KEY
from .resolution_hooks import note_resolution_step


@torch.compiler.disable
def predict_noise_wrapper(executor, x, timestep, model_options=None, seed=None, *args, **kwargs):
    options = model_options if isinstance(model_options, dict) else {}
    run = options.get("transformer_options", {}).get(RUN_KEY)
    if run is None:
        return executor(x, timestep, model_options, seed, *args, **kwargs)
    boundaries.check(executor.class_obj, run, timestep, options)  # ControlNet / hook / cond range switches
    if not isinstance(run, OutputCacheRun):  # hidden-state modes decide per model call (adapter.py)
        return executor(x, timestep, model_options, seed, *args, **kwargs)
    sigma = float(timestep.detach().flatten().max().item())
    if sigma <= 0:
        return executor(x, timestep, model_options, seed, *args, **kwargs)
    call = run.begin(sigma, x)
    note_resolution_step(run, options.get("transformer_options"))  # the panel's stage band
    tokens = getattr(run, "tokens", None)
    guard: ForecastGuard | None = options.get("transformer_options", {}).get(GUARD_KEY)
    if call.compute:
        shadow = _shadow_partial(run, tokens, call, x, timestep, model_options, seed, executor, args, kwargs)
        run.pending_branches = None
        if tokens is not None:
            tokens.begin_step("capture", sigma=sigma)
        started = _clock(x)
        try:
            out = executor(x, timestep, model_options, seed, *args, **kwargs)
        finally:
            if tokens is not None:
                tokens.end_step()
        run.stats.full_call_seconds.append(_clock(x) - started)  # the panel's wall estimate
        run.record(call, x, out, run.pending_branches)
        run.pending_branches = None
        if guard is not None:
            guard.observe(out)
        if tokens is not None:
            rows = patchify(out.float(), tokens.patch)
            if shadow is not None:
                forecast, fresh, partial = shadow
                tokens.calibrate(patchify(forecast, tokens.patch), patchify(fresh.float(), tokens.patch), rows, partial)
            tokens.after_full(rows)
        return out
    forecast = run.forecast(call, x)
    reason = guard.reason(forecast) if guard is not None else ""
    if reason:  # a non-finite or runaway forecast never reaches the sampler: compute this call
        return _computed_instead(run, guard, reason, tokens, call, x, timestep, model_options, seed, executor,
                                 args, kwargs)
    if tokens is not None:
        partial = _partial_step(run, tokens, call, forecast, x, timestep, model_options, seed, executor, args, kwargs)
        if partial is not None:
            return partial.to(x.dtype)
        tokens.record_forecast()
    boundaries.advance_hook_keyframes(executor.class_obj, timestep, options)  # as the skipped call would have
    return forecast.to(x.dtype)


def _clock(x: torch.Tensor) -> float:
    """Wall time at a point where queued device work is done (computed calls only: a few per run), so that
    a computed call's time is its compute, not its launch."""
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return time.perf_counter()


def _computed_instead(run, guard, reason, tokens, call, x, timestep, model_options, seed, executor, args, kwargs):
    """The finite-output guard rejected this call's forecast: run the model for it (counted as computed)."""
    guard.reject(run.stats, reason)
    count_as_computed(run.stats)
    run.pending_branches = None
    if tokens is not None:
        tokens.begin_step("capture", sigma=call.info.sigma)
    try:
        out = executor(x, timestep, model_options, seed, *args, **kwargs)
    finally:
        if tokens is not None:
            tokens.end_step()
        run.pending_branches = None
    guard.observe(out)
    return out


def _selection(tokens, x):
    tokens.check_mask_batch(x.shape[0])
    grid = patch_dims(x.shape, tokens.patch)
    n_target = 1
    for d in grid:
        n_target *= d
    return tokens.select(n_target, grid)


def _shadow_partial(run, tokens, call, x, timestep, model_options, seed, executor, args, kwargs):
    """Before a full step: the partial call a forecast step here would have made, and the forecast,
    to measure against the truth about to be computed (TokenRun.calibrate)."""
    if tokens is None or not tokens.ready(measuring=True) or not run.series:
        return None
    if not tokens.wants_shadow():  # trust settled: this full step skips the measurement (TokenRun.wants_shadow)
        tokens.skip_shadow()
        return None
    partial = _selection(tokens, x)
    if partial is None:
        return None
    forecast = run.predict(call, x)
    tokens.horizon = 1.0  # a shadow call stands in for a forecast at the gap's end
    tokens.begin_step("partial", partial, sigma=call.info.sigma)
    try:
        fresh = executor(x, timestep, model_options, seed, *args, **kwargs)
    finally:
        kind = tokens.end_step(shadow=True)
    run.pending_branches = None
    return (forecast, fresh, partial) if kind == "partial" else None


def _partial_step(run, tokens, call, forecast, x, timestep, model_options, seed, executor, args, kwargs):
    if not tokens.ready() or not tokens.wants_partial(run.gap_share(call.info.step)):
        return None
    partial = _selection(tokens, x)
    if partial is None:
        return None
    tokens.begin_step("partial", partial, sigma=call.info.sigma)
    run.pending_branches = None
    try:
        fresh = executor(x, timestep, model_options, seed, *args, **kwargs)
    finally:
        kind = tokens.end_step()
    run.pending_branches = None
    run.mark_partial(kind)
    if kind == "full":  # no call could run partial (e.g. ControlNet): the output is exact everywhere
        return fresh
    return tokens.merge_latent(forecast, fresh, partial)


def record_cfg_branches(args: dict) -> torch.Tensor:
    """Post-CFG hook: hand the call's branch outputs to the run (the guided output is unchanged)."""
    options = args.get("model_options") or {}
    run = options.get("transformer_options", {}).get(RUN_KEY)
    if isinstance(run, OutputCacheRun) and args.get("uncond_denoised") is not None:
        run.pending_branches = (args["cond_denoised"].detach(), args["uncond_denoised"].detach(),
                                float(args["cond_scale"]))
    return args["denoised"]
