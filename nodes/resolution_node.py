"""Progressive Resolution (Fresco) node: MODEL in, MODEL out, in front of a normal KSampler."""
from __future__ import annotations

from comfy_api.latest import io

from accel_core.resolution import ResolutionConfig
from accel_core.resolution.plan import (COARSE_SIGMA_MODES, POSITION_MODES, TRANSITIONS, UPSAMPLE_MODES,
                                       VIDEO_REDUCTIONS)

from .resolution_hooks import apply_progressive_resolution

DEFAULTS = ResolutionConfig()


class DiTAccelProgressiveResolution(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelProgressiveResolution",
            display_name="Progressive Resolution (Fresco, experimental)",
            category="DiT Accel/resolution",
            description=(
                "EXPERIMENTAL, not yet faithful: on our micro models it changed the image far more than caching "
                "alone at the same work (docs/RESOLUTION.md). At 1024 image tokens (validate model flux_1k_validate, "
                "50 steps) the defaults alone saved 1.28x of the token-blocks at 20.7 dB, where output reuse every "
                "2 steps saved 2x at 37.8 dB; with Forecast Cache balanced, 5.8x at 21.9 dB against balanced alone's "
                "5x at 26.4 dB. At 4096 image tokens (flux_4k_validate) defaults + balanced: 6.0x at 23.1 dB against "
                "balanced alone's 5x at 27.8 dB. No regime where it helps has been measured yet; check with the "
                "A/B workflow. "
                "Runs the first steps of sampling at a lower latent resolution (a sketch with 1/factor^2 of the "
                "image tokens; video: optionally half the frames), then continues at full resolution from the "
                "sketch's own state with the same noise field (Fresco's unified noise). Forecast Cache can follow "
                "it on the model path; its panel then shows the stages and the joint work. FLUX/Kontext, "
                "Qwen-Image/Edit and HunyuanVideo 1.0 with flow-matching samplers. ControlNet, masks and sizes not "
                "divisible by factor x 16 px run unchanged with one warning."
            ),
            inputs=[
                io.Model.Input("model", tooltip="Diffusion model from a loader (FLUX / Kontext, Qwen-Image / Edit, "
                               "HunyuanVideo 1.0), flow-matching samplers. Place before the KSampler."),
                io.Int.Input("factor", default=DEFAULTS.factor, min=2, max=4, step=1,
                             tooltip="Down-scale of the low-resolution stage per side (2: a quarter of the image "
                             "tokens, about 1/16 of their attention). Width and height must be multiples of "
                             "factor x 16 px. Recommended 2."),
                io.Float.Input("low_res_share", default=DEFAULTS.low_res_share, min=0.0, max=0.95, step=0.05,
                               tooltip="Share of the steps run at low resolution (the switch comes after "
                               "round(share x steps) steps; the last steps are always full resolution). Higher is "
                               "faster and loses more fine detail. 0 turns the node off."),
                io.Float.Input("max_low_res_share", default=DEFAULTS.max_low_res_share, min=0.0, max=0.95, step=0.05,
                               tooltip="0: fixed switch. Above low_res_share: the low-resolution stage goes on, step "
                               "by step, up to this share while fewer than converged_share of its tokens have settled "
                               "(token-variance promotion)."),
                io.Float.Input("converge_threshold", default=DEFAULTS.converge_threshold, min=0.01, max=10.0,
                               step=0.01, tooltip="A token has settled when its denoised estimate changes by less "
                               "than this per unit of sigma, relative to the estimate's RMS. Used only when "
                               "max_low_res_share is above low_res_share. Not calibrated yet: at 0.5 the adaptive "
                               "switch never fired on our tune models (it ran to max_low_res_share)."),
                io.Float.Input("converged_share", default=DEFAULTS.converged_share, min=0.05, max=1.0, step=0.05,
                               tooltip="Share of settled tokens at which the whole image is promoted to full "
                               "resolution (adaptive switch only)."),
                io.Combo.Input("upsample", options=list(UPSAMPLE_MODES), default=DEFAULTS.upsample,
                               tooltip="transition renoise only: how the sketch's denoised estimate is up-sampled to "
                               "the finer grid. nearest keeps its block means exactly, bilinear is smoother. (carry, "
                               "the default transition, always copies blocks: that keeps its state exact.)"),
                io.Combo.Input("positions", options=list(POSITION_MODES), default=DEFAULTS.positions,
                               tooltip="full_res: coarse tokens get the full-resolution RoPE positions of the area "
                               "they cover (FLUX only; the other hosts do not expose positions). coarse: the host's "
                               "positions of the small grid."),
                io.Int.Input("coarse_stages", default=DEFAULTS.coarse_stages, min=1, max=2, step=1, optional=True,
                             tooltip="Low-resolution stages before full resolution. 1: factor -> full. 2: "
                             "factor^2 -> factor -> full (factor 2: 1/4 size, then 1/2, then full), the low-res "
                             "share split in two halves; the only way past about 2.1x fewer token-blocks at FLUX "
                             "1024 px, where the 512 text tokens never shrink. Width and height must then be "
                             "multiples of factor^2 x 16 px. Recommended 1 until checked on your model."),
                io.Combo.Input("coarse_sigma", options=list(COARSE_SIGMA_MODES), default=DEFAULTS.coarse_sigma,
                               optional=True, tooltip="Noise level of the low-resolution steps. schedule: each "
                               "step's own sigma. pooled: the level the full-resolution image really has when seen "
                               "at low resolution, s / (s + factor x (1 - s)) (lower: averaging pixels averages "
                               "noise away; the inverse of the resolution time shift), so the sketch is as far "
                               "along as the full-resolution run would be. Default pooled (needed by transition carry; "
                               "chosen on our tune models)."),
                io.Combo.Input("video_reduction", options=list(VIDEO_REDUCTIONS), default=DEFAULTS.video_reduction,
                               optional=True, tooltip="HunyuanVideo: what the low-resolution steps reduce. spatial: "
                               "width and height (1/factor). temporal: half the latent frames, full size. joint: "
                               "both. auto: one draft step at the joint scale measures motion (frame-to-frame "
                               "change) and detail (fine texture), then reduces the calmer axis (both when both "
                               "are calm; experimental: on our tune models it always chose spatial). temporal and "
                               "joint need an even number of latent frames (HunyuanVideo length 61, 125, ...). "
                               "Images ignore it. Recommended spatial."),
                io.Combo.Input("transition", options=list(TRANSITIONS), default=DEFAULTS.transition, optional=True,
                               tooltip="How a stage hands over to the finer one. renoise (Fresco): the sketch's "
                               "denoised estimate, up-sampled and re-noised with the same noise. carry: the "
                               "sketch's own state, up-sampled, plus the noise's fine detail at the current noise "
                               "level (needs coarse_sigma pooled). Fed the full-resolution run's own state as a perfect "
                               "sketch, "
                               "carry ended 43-51 dB from the uncached image on our tune models and re-noise 25-35 dB "
                               "(docs/RESOLUTION.md); with real sketches carry won 11 of 16 tune comparisons."),
                io.Float.Input("anchor", default=DEFAULTS.anchor, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="Anchor correction weight (0 = off). One extra full-resolution model call at "
                               "the first step measures how far the small sketch's estimate is from the "
                               "full-resolution one; this share of the difference is added to every estimate of "
                               "the first low-resolution stage. Costs one full step of work; recommended 0.5-1 "
                               "(0.7 was best on our tune models). Text-to-image / video from an empty latent only."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, factor: int = DEFAULTS.factor, low_res_share: float = DEFAULTS.low_res_share,
                max_low_res_share: float = DEFAULTS.max_low_res_share,
                converge_threshold: float = DEFAULTS.converge_threshold,
                converged_share: float = DEFAULTS.converged_share, upsample: str = DEFAULTS.upsample,
                positions: str = DEFAULTS.positions, coarse_stages: int = DEFAULTS.coarse_stages,
                coarse_sigma: str = DEFAULTS.coarse_sigma,
                video_reduction: str = DEFAULTS.video_reduction,
                transition: str = DEFAULTS.transition, anchor: float = DEFAULTS.anchor) -> io.NodeOutput:
        if low_res_share <= 0:
            return io.NodeOutput(model.clone())
        config = ResolutionConfig(factor=factor, low_res_share=low_res_share, max_low_res_share=max_low_res_share,
                                  converge_threshold=converge_threshold, converged_share=converged_share,
                                  upsample=upsample, positions=positions, coarse_stages=coarse_stages,
                                  coarse_sigma=coarse_sigma, video_reduction=video_reduction,
                                  transition=transition, anchor=anchor)
        return io.NodeOutput(apply_progressive_resolution(model, config))
