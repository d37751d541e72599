"""ComfyUI -> core translation for the forecast cache.

Hooks only through keyed wrappers and `patches_replace` (see docs/ARCHITECTURE.md):
- OUTER_SAMPLE creates the run's `ForecastRun`, logs the one-line summary, frees all
  state in `finally` (interrupted runs included);
- DIFFUSION_MODEL turns each model call into a `CallPlan` (compute or forecast) for the run;
- a replacement on every transformer block does the skipping, capturing and forecasting.
No state lives on the model; the run object rides in the guider's per-run model_options.
"""
from __future__ import annotations

import collections
import functools
import logging
import time

import comfy.model_patcher
import comfy.patcher_extension
import torch

from accel_core import MODEL_SPECS, ForecastCacheConfig, ForecastRun
from accel_core.cache_run import CacheRun
from accel_core.models import IMG_TXT, ModelSpec
from accel_core.errors import ProfileError
from accel_core.output import OutputCacheRun
from accel_core.output.guard import ForecastGuard, count_as_computed
from accel_core.resolution import ResolutionRun
from accel_core.tokens.settings import TokenSettings
from accel_core.tokens.state import TokenRun

from . import passes
from .block_hooks import GUARD_RERUN, block_replacement
from .boundaries import BoundaryWatch
from .coexistence import other_step_cache, strip_previous
from .diagnostics import publish_run
from .dispatch import ensure_installed as install_kernels
from .host import block_count, block_sites, detect_spec, find_transformer_options, patch_tuple, sampler_name, token_grid
from .keys import ATTENTION_OVERRIDE, GUARD_KEY, OPTIONS_KEY, RESOLUTION_RUN_KEY, RUN_KEY, WATCH_KEY, WRAPPER_KEY
from .output_hooks import predict_noise_wrapper, record_cfg_branches
from .profiles import check_learned_profile
from .resolution_hooks import note_resolution_step
from .token_hooks import TokenBlock, make_attention_override, token_model_wrapper

log = logging.getLogger("DiTAccel")

# Summaries of recent runs (plain dicts, no tensors) for diagnostics and tests.
RECENT_RUNS: collections.deque = collections.deque(maxlen=32)


def apply_forecast_cache(model, config: ForecastCacheConfig, tokens: dict | None = None):
    """Return a clone of `model` with the forecast cache installed (the input stays untouched).
    `tokens`: {"settings": TokenSettings, "mask": MASK or None} from a token node (output cache only)."""
    patched = model.clone()
    if not config.enabled:
        return patched
    other = other_step_cache(patched.model_options, patched.wrappers)
    if other is not None:
        log.warning("DiT Accel: another step cache (ComfyUI's %s) is already on this model; Forecast Cache is not "
                    "applied, so the model is not cached twice. Remove one of the two nodes.", other)
        return patched
    if strip_previous(patched, WRAPPER_KEY, OPTIONS_KEY, ATTENTION_OVERRIDE,
                      (block_replacement, TokenBlock, record_cfg_branches)):
        log.warning("DiT Accel: Forecast Cache is applied twice on this model path; the later node's settings "
                    "replace the earlier one's (one cache, not two).")
    install_kernels()  # once per process: Triton kernels into the op table, or the references
    spec, diffusion_model, class_name = detect_spec(model)
    if spec is None:
        log.warning(
            "DiT Accel: Forecast Cache does not support %s (supported: Flux/Kontext, Qwen-Image/Edit, "
            "HunyuanVideo 1.0/1.5); the model runs unchanged.", class_name)
        return patched
    blocks = block_count(spec, diffusion_model)
    if config.learned_profile:
        check_learned_profile(config.learned_profile, spec.family, diffusion_model)
    patched.model_options.setdefault("transformer_options", {})[OPTIONS_KEY] = {
        "config": config, "family": spec.family, "blocks": blocks,
    }
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, outer_sample_wrapper)
    # Every mode: restart the cache where ControlNet / hook keyframes / cond ranges switch (boundaries.py);
    # the output cache also decides compute / forecast there.
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, WRAPPER_KEY, predict_noise_wrapper)
    if config.cache_mode == "output":
        # The guided output is the cached series: no block hooks, nothing of the model runs on forecasts.
        if config.cfg_split:
            patched.set_model_sampler_post_cfg_function(record_cfg_branches)  # sees cond / uncond outputs
        if tokens is not None:
            _install_token_hooks(patched, spec, diffusion_model, tokens)
        return patched
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY,
                                 diffusion_model_wrapper)
    _install_block_replacements(patched, spec, diffusion_model)
    return patched


def _install_block_replacements(patched, spec: ModelSpec, diffusion_model) -> None:
    existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    for group, index, _, site in block_sites(spec, diffusion_model):
        inner = existing.get((group.patch_name, index))  # chain another pack's replacement, never drop it
        fn = functools.partial(block_replacement, site=site, inner=inner)
        patched.set_model_patch_replace(fn, "dit", group.patch_name, index)


def _install_token_hooks(patched, spec: ModelSpec, diffusion_model, tokens: dict) -> None:
    if not spec.token_methods:
        log.warning("DiT Accel: token methods do not support %s yet; Forecast Cache runs without them.",
                    spec.family)
        return
    options = patched.model_options["transformer_options"]
    options[OPTIONS_KEY]["tokens"] = tokens
    options[OPTIONS_KEY]["patch"] = patch_tuple(getattr(diffusion_model, "patch_size", 2))
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY,
                                 token_model_wrapper)
    previous = options.get(ATTENTION_OVERRIDE)
    if not getattr(previous, "dit_accel", False):  # this node applied twice: one override is enough
        options[ATTENTION_OVERRIDE] = make_attention_override(previous)
    existing = options.get("patches_replace", {}).get("dit", {})
    for group, index, position, site in block_sites(spec, diffusion_model):
        block = TokenBlock(site, position, group.module_attr, inner=existing.get((group.patch_name, index)))
        patched.set_model_patch_replace(block, "dit", group.patch_name, index)


def _start_token_run(run: OutputCacheRun, settings: dict, spec: ModelSpec) -> None:
    tokens = settings.get("tokens")
    if tokens is None:
        return
    token_settings: TokenSettings = tokens["settings"]
    token_run = TokenRun(token_settings, tokens.get("mask"))
    token_run.patch = settings["patch"]
    blocks = settings.get("blocks", 0)
    token_run.cluster_index = min(max(0, blocks - 1), int(round(token_settings.cluster_block * (blocks - 1))))
    token_run.sizes["blocks"] = blocks
    token_run.image_first = {kind: _image_first(spec, kind) for kind in ("double", "single")}
    run.tokens = token_run


def _image_first(spec: ModelSpec, kind: str) -> bool:
    """Whether image tokens come first in the joint attention of the family's `kind` blocks (the spec's
    token order; False when the family has no such blocks)."""
    group = next((g for g in spec.block_groups if g.kind == kind), None)
    return group is not None and group.token_order == IMG_TXT


# ------------------------------------------------------------------------------------ wrappers
def outer_sample_wrapper(executor, *args, **kwargs):
    guider = executor.class_obj
    orig_model_options = guider.model_options
    guider.model_options = comfy.model_patcher.create_model_options_clone(orig_model_options)
    transformer_options = guider.model_options.setdefault("transformer_options", {})
    settings = transformer_options.get(OPTIONS_KEY)
    if settings is None:
        return executor(*args, **kwargs)
    other = other_step_cache(guider.model_options)
    if other is not None:  # a step cache added after Forecast Cache: step aside for this run
        log.warning("DiT Accel: another step cache (ComfyUI's %s) was added after Forecast Cache; Forecast Cache "
                    "steps aside for this run, so the model is not cached twice.", other)
        guider.model_options = orig_model_options
        return executor(*args, **kwargs)
    sigmas = args[3] if len(args) > 3 else kwargs["sigmas"]
    config: ForecastCacheConfig = settings["config"]
    spec = MODEL_SPECS.get(settings["family"])
    model_sampling = guider.model_patcher.get_model_object("model_sampling")
    start_sigma = float(model_sampling.percent_to_sigma(config.start_percent)) if config.start_percent > 0 else float("inf")
    end_sigma = float(model_sampling.percent_to_sigma(config.end_percent)) if config.end_percent < 1 else 0.0
    schedule = [float(s) for s in sigmas.flatten().tolist()]
    if config.cache_mode == "output":
        sampler = args[2] if len(args) > 2 else kwargs.get("sampler")
        run_args = (spec.family, schedule, start_sigma, end_sigma, sampler_name(sampler))
        steps = resolution_schedule_steps(transformer_options)
        try:
            run = OutputCacheRun(config, *run_args, schedule_steps=steps)
        except ProfileError as e:
            # The node checked the profile; it changed on disk since (or cannot be read now). Never fail
            # mid-sampling: this run forecasts with the training-free blend.
            log.warning("DiT Accel: %s This run forecasts without the learned profile.", e)
            run = OutputCacheRun(config.replace(learned_profile=""), *run_args, schedule_steps=steps)
        _start_token_run(run, settings, spec)
    else:
        run = ForecastRun(config, spec, schedule, start_sigma, end_sigma)
    run.stats.verify.blocks_per_call = settings.get("blocks", 0)
    transformer_options[RUN_KEY] = run
    transformer_options[GUARD_KEY] = ForecastGuard(what="forecast" if config.cache_mode == "output" else
                                                   "forecast hidden state")
    transformer_options[WATCH_KEY] = watch = BoundaryWatch()
    passes.take(guider, run, watch, args[0] if args else kwargs.get("noise"),
                args[1] if len(args) > 1 else kwargs.get("latent_image"))  # split sampling: continue a pass
    # The one INFO line per run is the summary at the end; the plan goes to DEBUG.
    log.debug("DiT Accel: %s %s: %d steps", spec.family, config.tag(), run.stats.total_steps)
    started = time.perf_counter()
    try:
        return executor(*args, **kwargs)
    except BaseException:
        run.stats.interrupted = True
        raise
    finally:
        run.stats.wall_seconds = time.perf_counter() - started
        attach_resolution_stages(run, transformer_options)
        passes.store(guider, run, watch)
        stats = run.close()
        transformer_options.pop(RUN_KEY, None)
        transformer_options.pop(GUARD_KEY, None)
        transformer_options.pop(WATCH_KEY, None)
        guider.model_options = orig_model_options
        RECENT_RUNS.append(stats.as_dict())
        log.info(stats.summary())
        publish_run(RECENT_RUNS[-1], settings.get("node_id"))  # to the web UI (cosmetic)


def resolution_schedule_steps(transformer_options: dict) -> int | None:
    """Steps of the whole sampling when this cache run is one stage of a Progressive Resolution run."""
    resolution: ResolutionRun | None = transformer_options.get(RESOLUTION_RUN_KEY)
    return resolution.steps if resolution is not None else None


def attach_resolution_stages(run: CacheRun, transformer_options: dict) -> None:
    """This cache ran inside one stage of a Progressive Resolution run (that node sits before this one on
    the model path): show the stage plan and the joint work so far (complete at the last stage)."""
    resolution: ResolutionRun | None = transformer_options.get(RESOLUTION_RUN_KEY)
    if resolution is not None:
        run.show_stages(resolution.summary())


@torch.compiler.disable
def _begin_call(run: ForecastRun, x: torch.Tensor, transformer_options: dict, patch_size):
    """Host-side decision for one model call (reads sigma with .item(): kept out of compiled graphs)."""
    sigma = float(transformer_options["sigmas"].detach().flatten().max().item())
    keys = list(transformer_options.get("uuids") or transformer_options.get("cond_or_uncond") or [0])
    grid = token_grid(x, patch_size)
    plan = run.begin_call(sigma, keys, grid.tokens, x.shape[0], x.dtype, x.device, grid)
    note_resolution_step(run, transformer_options)  # the panel's stage band
    run.current_plan = plan
    return plan


def diffusion_model_wrapper(executor, *args, **kwargs):
    transformer_options = find_transformer_options(args, kwargs)
    run: ForecastRun | None = transformer_options.get(RUN_KEY) if transformer_options else None
    if run is None or "sigmas" not in transformer_options:
        return executor(*args, **kwargs)
    x = args[0] if args else kwargs["x"]
    plan = _begin_call(run, x, transformer_options, getattr(executor.class_obj, "patch_size", 2))
    completed = False
    try:
        out = executor(*args, **kwargs)
        rerun = plan.scratch.pop("rerun", False)
        guarded = plan.scratch.pop(GUARD_RERUN, False) and not plan.compute
        if rerun or guarded:
            if rerun:  # a last-block probe rejected the forecast (rollback mode): compute this call for real
                run.rollback(plan)
            else:  # the finite-output guard rejected the forecast (block_hooks._guard): compute it instead
                plan.compute, plan.probe = True, False
                count_as_computed(run.stats, len(plan.branch_keys))
            keep = {k: plan.scratch[k] for k in ("img_total",) if k in plan.scratch}
            plan.scratch.clear()
            plan.scratch.update(keep)
            out = executor(*args, **kwargs)
        completed = True
        return out
    finally:
        run.end_call(plan, completed=completed and plan.scratch.get("recorded", False))
        run.current_plan = None
