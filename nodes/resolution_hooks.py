"""ComfyUI side of progressive-resolution sampling (Fresco): one OUTER_SAMPLE wrapper that runs the
sampler in stages, plus a DIFFUSION_MODEL wrapper that only counts the work of each model call.

Why OUTER_SAMPLE: the stage change alters the latent's shape, and only the outer sample sees the
whole schedule, the noise field and the latent before anything was derived from their shape
(conds, memory estimates, the sampler's state). Calling the executor once per stage gives each
stage ComfyUI's own preparation (conds encoded for that size, models loaded, cleanup in finally),
and any sampler works inside a stage. The state handed between stages never goes through the
latent format: stage inputs are given as (noise = x / sigma, latent = zeros), so the sampler's
`noise_scaling` (sigma * noise + (1 - sigma) * latent) rebuilds exactly the state we computed with
accel_core.resolution.renoise, in the model's own latent space.

Positions: FLUX reads `transformer_options["rope_options"]` in process_img, so coarse tokens get
the full-resolution coordinates of the f x f fine tokens they cover (their mean: scale f, shift
(f - 1) / 2). Qwen-Image and HunyuanVideo do not read rope_options: their coarse tokens keep the
host's positions of the small grid (documented in docs/RESOLUTION.md).

No state lives on the model: the run object rides in the guider's per-run model_options and is
dropped in `finally`, interrupted runs included.
"""
from __future__ import annotations

import collections
import logging
import time

import comfy.model_patcher
import comfy.patcher_extension
import torch

from accel_core import MODEL_SPECS
from accel_core.cache_run import CacheRun
from accel_core.resolution import (PromotionTracker, ResolutionConfig, ResolutionRun, carry_state,
                                   downsample_latent, downsample_noise, pooled_scale, pooled_sigma, renoise,
                                   spatial_dims_ok, upsample)
from accel_core.resolution.plan import TEMPORAL_FACTOR, Stage, plan_for, steps_for_share
from accel_core.resolution.strategy import JOINT_BELOW, choose_reduction, motion_and_detail

from .host import block_count, detect_spec, find_transformer_options, hidden_size, spatial_patch, target_token_count
from .keys import RESOLUTION_OPTIONS_KEY as OPTIONS_KEY
from .keys import RESOLUTION_RUN_KEY as RUN_KEY
from .keys import RESOLUTION_WRAPPER_KEY as WRAPPER_KEY
from .keys import RUN_KEY as FORECAST_RUN_KEY

log = logging.getLogger("DiTAccel")

# Conditioning entries bound to the full-resolution grid: with them the model runs unchanged.
SPATIAL_COND_KEYS = ("control", "mask", "area", "gligen", "concat_latent_image", "concat_mask", "noise_mask")

RECENT_RUNS: collections.deque = collections.deque(maxlen=32)
_WARNED: set[str] = set()


def warn_once(key: str, message: str, *args) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(message, *args)


def apply_progressive_resolution(model, config: ResolutionConfig):
    """A clone of `model` with progressive-resolution sampling installed (the input stays untouched)."""
    patched = model.clone()
    spec, diffusion_model, class_name = detect_spec(model)
    if spec is None or not spec.progressive_resolution:
        warn_once(f"family:{class_name}", "DiT Accel: Progressive Resolution supports FLUX/Kontext, Qwen-Image/Edit and "
                  "HunyuanVideo 1.0, not %s; the model runs unchanged.", class_name)
        return patched
    blocks = block_count(spec, diffusion_model)
    patched.model_options.setdefault("transformer_options", {})[OPTIONS_KEY] = {
        "config": config, "family": spec.family, "patch": spatial_patch(diffusion_model),
        "hidden": hidden_size(diffusion_model), "blocks": blocks,
    }
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, outer_sample_wrapper)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, count_work_wrapper)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, WRAPPER_KEY, anchor_wrapper)
    return patched


def _args(args, kwargs):
    names = ("noise", "latent_image", "sampler", "sigmas", "denoise_mask", "callback", "disable_pbar", "seed")
    bound = dict(zip(names, args))
    bound.update({k: v for k, v in kwargs.items() if k in names})
    extra = {k: v for k, v in kwargs.items() if k not in names}
    return bound, extra


def _refusal(guider, bound: dict, extra: dict, settings: dict) -> tuple[str, str] | None:
    """(key, message) when this run must stay at full resolution, else None."""
    noise, config = bound["noise"], settings["config"]
    if bound.get("denoise_mask") is not None:
        return "mask", "an inpainting mask (denoise_mask) is bound to the full-resolution grid"
    shapes = extra.get("latent_shapes")
    if getattr(noise, "is_nested", False) or (shapes is not None and len(shapes) > 1):
        return "nested", "nested (multi-latent) inputs are not supported"
    for kind, conds in (getattr(guider, "conds", None) or {}).items():
        for c in conds:
            found = [k for k in SPATIAL_COND_KEYS if c.get(k) is not None]
            if found:
                return f"cond:{found[0]}", (f"the {kind} conditioning carries {found[0]} (ControlNet, masks and areas are "
                                            "bound to the full-resolution grid)")
    patch, factor = settings["patch"], config.coarsest
    if not spatial_dims_ok(noise.shape, factor, patch):
        h, w = noise.shape[-2:]
        step = factor * patch * 8
        return f"size:{h}x{w}:{factor}", (
            f"latent {h}x{w} (image {h * 8}x{w * 8} px) is not divisible by factor {factor} x patch {patch}; "
            f"use a width and height that are multiples of {step} px, or a smaller factor / one coarse stage")
    sampling = guider.model_patcher.get_model_object("model_sampling")
    import comfy.model_sampling

    if not isinstance(sampling, comfy.model_sampling.CONST):
        return "sampling", "the model is not a flow-matching (CONST) model"
    return None


def _rope_options(existing: dict | None, factor: int) -> dict:
    """rope_options placing coarse tokens at the mean full-resolution position of the fine tokens they
    cover, composed with any options already set (position = shift + index * scale)."""
    out = dict(existing or {})
    for axis in ("x", "y"):
        scale = float(out.get(f"scale_{axis}", 1.0))
        shift = float(out.get(f"shift_{axis}", 0.0))
        out[f"scale_{axis}"] = scale * factor
        out[f"shift_{axis}"] = shift + (factor - 1) / 2.0 * scale
    return out


def outer_sample_wrapper(executor, *args, **kwargs):
    guider = executor.class_obj
    settings = (guider.model_options.get("transformer_options") or {}).get(OPTIONS_KEY)
    if settings is None:
        return executor(*args, **kwargs)
    bound, extra = _args(args, kwargs)
    config: ResolutionConfig = settings["config"]
    refusal = _refusal(guider, bound, extra, settings)
    sigmas = bound["sigmas"]
    if refusal is None and steps_for_share(len(sigmas) - 1, config.low_res_share) == 0:
        refusal = ("steps", f"{len(sigmas) - 1} step(s) leave no room for a low-resolution stage")
    if refusal is not None:
        warn_once(refusal[0], "DiT Accel: Progressive Resolution: %s; this run samples at full resolution unchanged.",
                  refusal[1])
        RECENT_RUNS.append({"family": settings["family"], "tag": config.tag(), "fallback": refusal[1]})
        return executor(*args, **kwargs)
    return StagedSampling(executor, guider, bound, extra, settings).run()


def _plan_entries(stages) -> list[list[int]]:
    """[factor, start, end] per stage, plus frames when a video stage halves them (summary, panel)."""
    return [[st.factor, st.start, st.end] + ([st.frames] if st.frames > 1 else []) for st in stages]


class StagedSampling:
    """Runs one KSampler call as a low-resolution stage then a full-resolution stage."""

    def __init__(self, executor, guider, bound: dict, extra: dict, settings: dict):
        self.executor, self.guider, self.bound, self.extra = executor, guider, bound, extra
        self.config: ResolutionConfig = settings["config"]
        self.settings = settings
        self.sigmas = bound["sigmas"]
        self.schedule = [float(s) for s in self.sigmas.flatten().tolist()]
        self.n = len(self.schedule) - 1
        self.user_callback = bound.get("callback")
        self.run_state = ResolutionRun(self.config, settings["family"], settings["hidden"], self.n)
        # Coarse tokens at the full-resolution positions they cover: asked for, and the host reads rope_options.
        self.full_res_positions = (self.config.positions == "full_res"
                                   and MODEL_SPECS.get(settings["family"]).reads_rope_options)
        self.last_denoised: torch.Tensor | None = None
        self.tracker: PromotionTracker | None = None

    def _sigma(self, step: int, stage: Stage) -> float:
        """Noise level the stage runs step `step` at (ResolutionConfig.coarse_sigma)."""
        s = self.schedule[step]
        if self.config.coarse_sigma == "pooled" and stage.coarse:
            return pooled_sigma(s, stage.factor, stage.frames)
        return s

    def _initial_noise(self, eps, latent, stage: Stage):
        """`noise` for the first stage such that the sampler's noise scaling (sigma * noise, latent
        zeros) starts from the uncached run's initial state seen at the stage's scale."""
        s0 = self.schedule[0]
        f, t = stage.factor, stage.frames
        latent = latent.to(eps.dtype)
        if self.config.coarse_sigma == "pooled":  # the pooled state itself, rescaled to unit noise
            x = (s0 * downsample_latent(eps, f, t) + (1 - s0) * downsample_latent(latent, f, t)) * pooled_scale(s0, f, t)
            return x / self._sigma(0, stage)
        if torch.count_nonzero(latent) == 0:  # pooled-and-rescaled field
            return downsample_noise(eps, f, t)
        return (s0 * downsample_noise(eps, f, t) + (1 - s0) * downsample_latent(latent, f, t)) / s0

    def _promote(self, out, stage: Stage, k_max: int):
        """Token-variance promotion: continue the sketch step by step while too few tokens settled.
        Returns (the step full resolution starts at, the sketch's last sampler output)."""
        model_base = self.guider.model_patcher.model
        k = stage.end
        while k < k_max and not self.tracker.settled():
            s = self._sigma(k, stage)
            x_k = model_base.process_latent_in(out) * (1 - s)  # undo inverse_noise_scaling + latent format
            out = self._stage_call(x_k / s, Stage(stage.factor, k, k + 1, 0.0, 0.0, stage.frames))
            k += 1
        return k, out

    def _stage_transition(self, previous: Stage | None, stage: Stage) -> None:
        """A Forecast Cache running around this sampler (one cache run over all stages) sees the next
        call at another size: tell it that this is a planned stage change, not a user's mistake."""
        if previous is None:
            return
        cache: CacheRun | None = (self.base_options.get("transformer_options") or {}).get(FORECAST_RUN_KEY)
        if cache is not None:
            cache.expect_input_change(f"resolution stage {previous.label()} -> {stage.label()}")

    # ------------------------------------------------------------------ one executor call
    def _stage_call(self, noise, stage: Stage, step_key: int | None = None):
        """Sample sigmas[start] -> sigmas[end] at the stage's scale from state x = sigma_start * noise."""
        guider, start, end, factor = self.guider, stage.start, stage.end, stage.factor
        guider.conds = {k: [c.copy() for c in v] for k, v in self.conds.items()}  # fresh per stage (sizes)
        options = comfy.model_patcher.create_model_options_clone(self.base_options)
        transformer_options = options.setdefault("transformer_options", {})
        transformer_options[RUN_KEY] = self.run_state
        if factor > 1 and self.full_res_positions:
            transformer_options["rope_options"] = _rope_options(transformer_options.get("rope_options"), factor)
        guider.model_options = options
        self.run_state.stage = stage
        self.run_state.step = -1 if step_key is not None else start


        def callback(i, denoised, x, total):
            self.last_denoised = denoised
            if step_key is not None:  # the anchor call: extra work, no progress of its own
                return
            self.run_state.step = start + i + 1  # later model calls belong to the next step
            if self.tracker is not None and stage.coarse:
                self.tracker.observe(denoised, self._sigma(start + i, stage))
            if self.user_callback is not None:  # progress over the whole schedule, previews at full size
                self.user_callback(start + i, upsample(denoised, factor, frames=stage.frames),
                                   upsample(x, factor, frames=stage.frames), self.n)

        latent = torch.zeros_like(noise)
        extra = dict(self.extra)
        if "latent_shapes" in extra:
            extra["latent_shapes"] = [noise.shape]
        b = self.bound
        sigmas = self.sigmas[start:end + 1]
        if stage.coarse and self.config.coarse_sigma == "pooled":
            sigmas = torch.tensor([self._sigma(i, stage) for i in range(start, end + 1)], dtype=sigmas.dtype,
                                  device=sigmas.device)
        return self.executor(noise, latent, b["sampler"], sigmas, None, callback,
                             b.get("disable_pbar", False), b.get("seed"), **extra)

    def _measure_anchor(self, eps, first: Stage) -> None:
        """One full-resolution model call at step 0 (the sampler's first step, output discarded): its
        denoised estimate, pooled to the first stage's grid, is what the sketch's first estimate should
        be. anchor_wrapper turns the difference into the correction of that stage."""
        full = Stage(1, 0, 1, self.schedule[0], self.schedule[1])
        self._stage_call(eps, full, step_key=-1)
        run = self.run_state
        run.anchor_target = downsample_latent(self.last_denoised.float(), first.factor, first.frames)
        run.correct_stage = first
        self.last_denoised = None
        self.run_state.info["anchor"] = self.config.anchor
        self._stage_transition(full, first)  # a cache around all stages: the size change is planned

    def _video(self, eps) -> bool:
        """The latent has a frame axis the video reduction can halve; else images (spatial only)."""
        if self.config.video_reduction == "spatial":
            return False
        frames = int(eps.shape[2]) if eps.dim() == 5 else 1
        ok = frames >= TEMPORAL_FACTOR and frames % TEMPORAL_FACTOR == 0
        if not ok and frames > 1:  # a video whose frames cannot be paired (images: space only, silently)
            warn_once(f"frames:{tuple(eps.shape)}", "DiT Accel: Progressive Resolution: video_reduction %s needs an "
                      "even number of latent frames, got %s (HunyuanVideo: length 4k+1 frames gives k+1 latent "
                      "frames; use e.g. 61 or 125); reducing space only.",
                      self.config.video_reduction, tuple(eps.shape))
        return ok

    def _choose_video_reduction(self, stage: Stage) -> Stage:
        """auto: pick the reduction for the rest of the stage from the one-step joint draft."""
        motion, detail = motion_and_detail(self.last_denoised)
        choice = choose_reduction(motion, detail, JOINT_BELOW)
        factor, frames = self.config.video_scale(choice, self.config.factor)
        self.run_state.info["video_choice"] = {"motion": round(motion, 4), "detail": round(detail, 4),
                                              "reduction": choice}
        return Stage(factor, stage.start, stage.end, stage.sigma_start, stage.sigma_end, frames)

    def _state_for(self, eps, previous: Stage, stage: Stage):
        """The finer stage restarts from the sketch's estimate, re-noised with the SAME field."""
        s = self._sigma(stage.start, stage)
        x0 = upsample(self.last_denoised, previous.factor // stage.factor, self.config.upsample,
                      frames=previous.frames // stage.frames)
        return renoise(x0, downsample_noise(eps, stage.factor, stage.frames).to(x0.device), s) / s

    def run(self):
        guider, config = self.guider, self.config
        self.conds = guider.conds
        self.base_options = guider.model_options
        started = time.perf_counter()
        info = self.run_state.info
        model_base = guider.model_patcher.model
        try:
            eps = self.bound["noise"]
            latent = self.bound["latent_image"]
            if torch.count_nonzero(latent) > 0:  # img2img: the sampler would process_in a non-empty latent
                latent = model_base.process_latent_in(latent)
            video = self._video(eps)
            stages = list(plan_for(config, self.schedule, video=video).stages)
            if config.adaptive:
                self.tracker = PromotionTracker(config.converge_threshold, config.converged_share, self.settings["patch"])
            if video and config.video_reduction == "auto" and stages[0].steps >= 2:
                draft = stages[0]  # one step at the joint scale, then the chosen scale for the rest
                stages[0:1] = [Stage(draft.factor, 0, 1, draft.sigma_start, self.schedule[1], draft.frames),
                               Stage(draft.factor, 1, draft.end, self.schedule[1], draft.sigma_end, draft.frames)]
            info["plan"] = _plan_entries(stages)
            if config.anchor > 0 and stages[0].coarse and torch.count_nonzero(latent) == 0:
                self._measure_anchor(eps, stages[0])
            out, previous = None, None
            for index, stage in enumerate(stages):
                if previous is not None and stage.coarse and config.video_reduction == "auto" and video \
                        and "video_choice" not in info:
                    stage = stages[index] = self._choose_video_reduction(stage)
                    info["plan"] = _plan_entries(stages)
                if previous is None:
                    noise = self._initial_noise(eps, latent, stage)
                elif (previous.factor, previous.frames) == (stage.factor, stage.frames):  # same grid: continue
                    s = self._sigma(stage.start, stage)
                    noise = model_base.process_latent_in(out) * (1 - s) / s  # undo the sampler's output scaling
                elif config.transition == "carry":  # the sketch's own state, plus the field's detail
                    s_prev = self._sigma(stage.start, previous)
                    state = model_base.process_latent_in(out) * (1 - s_prev)  # undo the sampler's output scaling
                    s = self.schedule[stage.start]
                    x = carry_state(state, eps.to(state.device), s, (previous.factor, previous.frames),
                                    (stage.factor, stage.frames))
                    noise = x / self._sigma(stage.start, stage)
                else:
                    noise = self._state_for(eps, previous, stage)
                self._stage_transition(previous, stage)
                if stage.coarse and config.adaptive and index == len(stages) - 2:
                    out = self._stage_call(noise, stage)
                    end, out = self._promote(out, stage, steps_for_share(self.n, config.max_low_res_share))
                    stages[index] = Stage(stage.factor, stage.start, end, stage.sigma_start, self.schedule[end],
                                          stage.frames)
                    stages[index + 1] = Stage(1, end, self.n, self.schedule[end], self.schedule[self.n])
                    info["plan"] = _plan_entries(stages)
                elif stage.coarse:
                    out = self._stage_call(noise, stage)
                else:
                    info.update(switch_step=stage.start, switch_sigma=self.schedule[stage.start],
                                stage_labels=[st.label() for st in stages],
                                promotion=list(self.tracker.history) if self.tracker else None,
                                positions="full_res" if self.full_res_positions else "coarse")
                    return self._stage_call(noise, stage)
                previous = stages[index]
            return out
        except BaseException:
            info["interrupted"] = True
            raise
        finally:
            guider.model_options = self.base_options
            guider.conds = self.conds
            if self.tracker is not None:
                self.tracker.close()
            self.last_denoised = None
            self.run_state.anchor_target = self.run_state.correction = self.run_state.correct_stage = None
            info["wall_seconds"] = time.perf_counter() - started
            summary = self.run_state.summary()
            RECENT_RUNS.append(summary)
            outer_cache: CacheRun | None = (self.base_options.get("transformer_options") or {}).get(FORECAST_RUN_KEY)
            if outer_cache is not None:  # a Forecast Cache around all stages: its summary shows them
                outer_cache.show_stages(summary)
            log.info("DiT Accel: %s %s: switch at step %s/%d (sigma %.3f), %.2fx fewer token-blocks, %.2fx fewer FLOPs%s",
                     summary["family"], summary["tag"], summary.get("switch_step"), self.n,
                     summary.get("switch_sigma", float("nan")), summary["token_ratio"], summary["flops_ratio"],
                     " (interrupted)" if summary["interrupted"] else "")


def _reference_latents(args, kwargs) -> list:
    """Kontext / Qwen-Image-Edit reference latents of a model call (positional in the hosts' forwards)."""
    found = kwargs.get("ref_latents")
    if found is None:
        found = next((a for a in args[3:] if isinstance(a, (list, tuple)) and a
                      and all(isinstance(r, torch.Tensor) and r.dim() >= 4 for r in a)), None)
    return list(found or [])


def anchor_wrapper(executor, x, timestep, model_options, seed):
    """Adds the anchor correction to the sketch's denoised estimates (first low-resolution stage only).
    The first estimate of that stage sets it: anchor x (pooled full-resolution estimate - this one)."""
    out = executor(x, timestep, model_options, seed)
    run: ResolutionRun | None = (model_options.get("transformer_options") or {}).get(RUN_KEY)
    if run is None or run.correct_stage is None or \
            (run.stage.factor, run.stage.frames) != (run.correct_stage.factor, run.correct_stage.frames):
        return out  # other scales (a finer coarse stage, full resolution) are not corrected
    if run.correction is None:
        target = run.anchor_target
        if target is None or target.shape != out.shape:
            return out
        run.correction = (run.config.anchor * (target.to(out.device) - out.float())).to(out.dtype)
        run.anchor_target = None
    return out + run.correction


def count_work_wrapper(executor, *args, **kwargs):
    """Counts image / text tokens of every model call of a staged run (no effect on the output), scaled
    by the share of the call a Forecast Cache on the same model really computed."""
    transformer_options = find_transformer_options(args, kwargs)
    run: ResolutionRun | None = transformer_options.get(RUN_KEY) if transformer_options else None
    if run is None:
        return executor(*args, **kwargs)
    cache: CacheRun | None = transformer_options.get(FORECAST_RUN_KEY)
    # A cache whose wrapper runs outside this one has decided the call already; one inside decides during it.
    share = cache.decided_share() if cache is not None else None
    mark = cache.calls_decided() if cache is not None else 0
    out = executor(*args, **kwargs)
    if share is None:
        share = cache.computed_share(mark) if cache is not None else 1.0
    x = args[0] if args else kwargs["x"]
    patch = spatial_patch(executor.class_obj)
    context = args[2] if len(args) > 2 else kwargs.get("context")
    other = int(context.shape[1]) if isinstance(context, torch.Tensor) and context.dim() >= 2 else 0
    for ref in _reference_latents(args, kwargs):  # reference tokens: constant size, like text
        other += target_token_count(ref, patch)
    run.add_call(target_token_count(x, patch), other, int(x.shape[0]), share)
    return out


def note_resolution_step(cache: CacheRun, transformer_options: dict | None) -> None:
    """After a Forecast Cache decided a call: record, for each call it decided since the last note, the step of
    the Progressive Resolution schedule the call belongs to (-1: the anchor call), so the panel can draw which
    calls ran at which stage's scale (RunStats.resolution.steps; "resolution_steps" in the summary). The
    cache's own call_steps cannot tell: a cache inside a stage counts that stage's steps from 0, and one around all stages maps a coarse stage's
    noise levels onto the full schedule. Nothing without a resolution run; display only."""
    run: ResolutionRun | None = (transformer_options or {}).get(RUN_KEY)
    if run is None:
        return
    steps, decided = cache.stats.resolution.steps, len(cache.stats.timeline)
    steps.extend([run.step] * (decided - len(steps)))
