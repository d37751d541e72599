"""Regenerate workflows/*.json (UI format) and scripts/harness/demo_workflow_api.json.

The UI workflows are built from the real node definitions of the dev ComfyUI (with the pack
loaded), so socket lists and widget values match what the frontend would save. Run after a node's
inputs change:  .venv/bin/python -m scripts.build_workflows
"""
from __future__ import annotations

import argparse
import json
import logging
import uuid
from pathlib import Path

log = logging.getLogger("build_workflows")

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
DEMO_API = REPO / "scripts" / "harness" / "demo_workflow_api.json"
PACK_ID = "dit-accel"

# Free canvas under Forecast Cache for the run panel the pack draws there (timeline, stage band, summary
# lines: about 200-300 px at the node's width), so that no shipped node covers it.
PANEL_ROOM = 300

# The Forecast Cache node as users first see it: every knob left at "use the preset".
FORECAST_DEFAULTS = {"preset": "balanced", "method": "preset", "cache_mode": "preset", "interval": 0,
                     "order": -1, "warmup_steps": -1, "final_full_steps": -1, "start_percent": 0.0,
                     "end_percent": 1.0, "schedule": "preset"}

def _preset_lines(family: str) -> str:
    # From accel_core's presets, so the note never drifts from what the presets really do.
    from accel_core import PRESETS, preset

    lines = []
    for name in PRESETS:
        cfg = preset(name, family)
        if not cfg.enabled:
            lines.append(f"  {name:<9} - model unchanged (use it to A/B against the cached run, same seed)")
            continue
        lines.append(f"  {name:<9} - 1/{cfg.interval} of the steps computed at any step count, first "
                     f"{cfg.warmup_steps} and last {cfg.final_full_steps} in full")
    return "\n".join(lines)


def settings_note(family: str = "flux") -> str:
    return f"""Forecast Cache (DiT Accel) - settings

Place it between the model loader (and any LoRA / model-sampling nodes) and the sampler.

preset (default balanced; a share of model evaluations)
{_preset_lines(family)}
  Between full steps the model's guided output is forecast by a blend of
  output reuse and extrapolations, refitted at every full step on how well
  each would have predicted it (with CFG: the uncond output and the guidance
  direction are forecast apart).

method      preset / taylorseer = the backtested blend; reuse = output reuse
            only. With cache_mode final_hidden / per_block: the forecaster.
cache_mode  preset = output (final_hidden when a Verify / Split node is
            connected); final_hidden / per_block cache hidden states.
interval    0 = preset's share (3 / 5 / 7). schedule: budget spreads the
            full steps evenly, adaptive follows the measured error.
warmup_steps / final_full_steps: -1 = preset's.
start/end_percent  restrict caching to part of the run (0-1).

After every run the node shows a timeline of computed / forecast steps,
the measured speed-up in model evaluations and the cache memory, and the
console prints one line starting with "DiT Accel:" with the same numbers.
To check quality on your model, open flux_compare_forecast_cache.json.
"""


def _forecast_node(g, pos):
    return g.node("DiTAccelForecastCache", pos, FORECAST_DEFAULTS, size=(340, 290))


def _wid(name: str) -> str:
    # Stable id per file, so regenerating does not churn the JSON.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dit-accel/workflows/{name}"))


def _flux_loaders(g, unet_name: str = "flux1-dev.safetensors"):
    """UNET, dual CLIP and VAE loaders of a FLUX graph, in the left column."""
    unet = g.node("UNETLoader", (0, 0), {"unet_name": unet_name, "weight_dtype": "default"}, (315, 82))
    clip = g.node("DualCLIPLoader", (0, 140), {"clip_name1": "clip_l.safetensors",
                                               "clip_name2": "t5xxl_fp16.safetensors", "type": "flux",
                                               "device": "default"}, (315, 130))
    vae = g.node("VAELoader", (0, 320), {"vae_name": "ae.safetensors"}, (315, 58))
    return unet, clip, vae


def flux_t2i(g, kontext: bool = False):
    unet, clip, vae = _flux_loaders(g, "flux1-kontext-dev.safetensors" if kontext else "flux1-dev.safetensors")
    fc = _forecast_node(g, (400, 0))
    g.link(unet, 0, fc, "model")
    prompt = ("Change the sky to a sunset and keep everything else the same" if kontext else
              "a photo of a red fox sitting in fresh snow, morning light, shallow depth of field")
    pos = g.node("CLIPTextEncode", (400, 330), {"text": prompt}, (400, 160))
    g.link(clip, 0, pos, "clip")
    cond = pos
    if kontext:
        load = g.node("LoadImage", (0, 440), {"image": "example.png"}, (315, 314))
        scale = g.node("FluxKontextImageScale", (400, 540), {}, (270, 30))
        enc = g.node("VAEEncode", (400, 620), {}, (210, 46))
        ref = g.node("ReferenceLatent", (850, 330), {}, (210, 46))
        g.link(load, "IMAGE", scale, "image")
        g.link(scale, 0, enc, "pixels")
        g.link(vae, 0, enc, "vae")
        g.link(pos, 0, ref, "conditioning")
        g.link(enc, 0, ref, "latent")
        cond, latent = ref, enc
    else:
        latent = g.node("EmptySD3LatentImage", (850, 600), {"width": 1024, "height": 1024, "batch_size": 1},
                        (315, 106))
    guid = g.node("FluxGuidance", (850, 430), {"guidance": 2.5 if kontext else 3.5}, (250, 58))
    neg = g.node("ConditioningZeroOut", (850, 520), {}, (250, 26))
    g.link(cond, 0, guid, "conditioning")
    g.link(pos, 0, neg, "conditioning")
    ks = _ksampler(g, 1200, fc, guid, neg, latent, steps=28, cfg=1.0)
    _decode_save(g, ks, vae, "flux_kontext_forecast" if kontext else "flux_forecast")
    extra = ("\nKontext: the reference image's tokens are kept apart from the\n"
             "forecast (only the image being generated is forecast).\n") if kontext else ""
    g.note(settings_note() + extra + "\nFLUX.1-dev: 28-50 steps, cfg 1.0, guidance 3.5 (Kontext 2.5).",
           (400, -380), (560, 360))
    return fc


ADVANCED_NOTE = """Advanced: verified forecasting (SpeCa) + subspace split (SVD-Cache).

Verify Forecasts runs the last transformer block for real on each
forecast and computes the step when the forecast is off, so full steps
land where the model needs them; Forecast Cache's interval (the preset's
here) becomes the longest run of forecasts. Subspace Split forecasts only the main
feature directions and reuses the rest, weighted by how well each part
was predicted at the last full step.

threshold_mode relative: a forecast is accepted when its probe error is
at most relative_threshold x the error measured on your model at the
last full step (a backtest), so the setting means the same on any model.
Lower it for fidelity, raise it for speed; the node's timeline shows
computed / forecast / rejected steps after each run.
"""


def flux_advanced(g) -> None:
    fc = flux_t2i(g)
    verify = g.node("DiTAccelVerifyOptions", (0, 700), {"probe": "last_block", "on_reject": "rollback",
                                                        "threshold": 0.05, "decay": 0.5, "floor": 0.005,
                                                        "min_forecasts": 2}, (315, 200))
    split = g.node("DiTAccelSubspaceOptions", (0, 930), {"energy": 0.9, "max_rank": 32, "weighting": "adaptive"},
                   (315, 110))
    g.link(verify, 0, fc, "verify")
    g.link(split, 0, fc, "split")
    g.note(ADVANCED_NOTE, (1200, -380), (520, 300))


def _ksampler(g, x: int, model, positive, negative, latent, steps: int, cfg: float):
    """A KSampler (euler / simple, seed 42) wired to the Forecast Cache model and its inputs."""
    ks = g.node("KSampler", (x, 0), {"seed": 42, "steps": steps, "cfg": cfg, "sampler_name": "euler",
                                     "scheduler": "simple", "denoise": 1.0}, (315, 262))
    g.link(model, 0, ks, "model")
    g.link(positive, 0, ks, "positive")
    g.link(negative, 0, ks, "negative")
    g.link(latent, 0, ks, "latent_image")
    return ks


def _decode_save(g, sampler, vae, prefix: str) -> None:
    dec = g.node("VAEDecode", (1600, 0), {}, (210, 46))
    g.link(sampler, 0, dec, "samples")
    g.link(vae, 0, dec, "vae")
    save = g.node("SaveImage", (1850, 0), {"filename_prefix": prefix}, (600, 600))
    g.link(dec, 0, save, "images")


def qwen_image(g, edit: bool = False) -> None:
    unet = g.node("UNETLoader", (0, 0), {"unet_name": "qwen_image_edit_fp8_e4m3fn.safetensors" if edit
                                          else "qwen_image_fp8_e4m3fn.safetensors", "weight_dtype": "default"},
                  (330, 82))
    clip = g.node("CLIPLoader", (0, 140), {"clip_name": "qwen_2.5_vl_7b_fp8_scaled.safetensors",
                                           "type": "qwen_image", "device": "default"}, (330, 106))
    vae = g.node("VAELoader", (0, 300), {"vae_name": "qwen_image_vae.safetensors"}, (330, 58))
    msampling = g.node("ModelSamplingAuraFlow", (400, 0), {"shift": 3.0 if edit else 3.1}, (315, 58))
    g.link(unet, 0, msampling, "model")
    last = msampling
    if edit:
        norm = g.node("CFGNorm", (400, 100), {"strength": 1.0}, (315, 58))
        g.link(msampling, 0, norm, "model")
        last = norm
    fc = _forecast_node(g, (780, 0))
    g.link(last, 0, fc, "model")
    if edit:
        load = g.node("LoadImage", (0, 420), {"image": "example.png"}, (330, 314))
        scale = g.node("ImageScaleToTotalPixels", (400, 420), {"upscale_method": "lanczos", "megapixels": 1.0},
                       (315, 82))
        g.link(load, "IMAGE", scale, "image")
        pos = g.node("TextEncodeQwenImageEdit", (780, 330), {"prompt": "Replace the background with a "
                                                               "sunny beach, keep the subject unchanged"},
                     (400, 200))
        neg = g.node("TextEncodeQwenImageEdit", (780, 570), {"prompt": ""}, (400, 200))
        for enc in (pos, neg):
            g.link(clip, 0, enc, "clip")
            g.link(vae, 0, enc, "vae")
            g.link(scale, 0, enc, "image")
        latent = g.node("VAEEncode", (780, 810), {}, (210, 46))
        g.link(scale, 0, latent, "pixels")
        g.link(vae, 0, latent, "vae")
        sampler_args = {"steps": 20, "cfg": 2.5}
    else:
        pos = g.node("CLIPTextEncode", (780, 330), {"text": 'A coffee shop entrance with a chalkboard sign '
                                                    'reading "DiT Accel", warm afternoon light'}, (400, 200))
        neg = g.node("CLIPTextEncode", (780, 570), {"text": " "}, (400, 200))
        g.link(clip, 0, pos, "clip")
        g.link(clip, 0, neg, "clip")
        latent = g.node("EmptySD3LatentImage", (780, 810), {"width": 1328, "height": 1328, "batch_size": 1},
                        (315, 106))
        sampler_args = {"steps": 30, "cfg": 2.5}
    ks = _ksampler(g, 1250, fc, pos, neg, latent, **sampler_args)
    _decode_save(g, ks, vae, "qwen_image_edit_forecast" if edit else "qwen_image_forecast")
    extra = ("\nQwen-Image-Edit: the input image's tokens are kept apart from the\n"
             "forecast. 20 steps is short for caching: prefer 'quality' there,\n"
             "'balanced' from about 30 steps.\n" if edit else
             "\nQwen-Image: cfg 2.5-4 runs two branches per step; each branch\n"
             "has its own cache (memory x2).\n")
    g.note(settings_note("qwen_image") + extra, (780, -380), (560, 360))
    return fc


def hunyuan_video(g) -> None:
    unet = g.node("UNETLoader", (0, 0), {"unet_name": "hunyuan_video_t2v_720p_bf16.safetensors",
                                         "weight_dtype": "default"}, (350, 82))
    clip = g.node("DualCLIPLoader", (0, 140), {"clip_name1": "clip_l.safetensors",
                                               "clip_name2": "llava_llama3_fp8_scaled.safetensors",
                                               "type": "hunyuan_video", "device": "default"}, (350, 130))
    vae = g.node("VAELoader", (0, 320), {"vae_name": "hunyuan_video_vae_bf16.safetensors"}, (350, 58))
    msampling = g.node("ModelSamplingSD3", (400, 0), {"shift": 7.0}, (315, 58))
    g.link(unet, 0, msampling, "model")
    fc = _forecast_node(g, (780, 0))
    g.link(msampling, 0, fc, "model")
    pos = g.node("CLIPTextEncode", (400, 330), {"text": "a cat walks along a sunlit garden wall, slow "
                                                "camera pan, cinematic"}, (400, 160))
    g.link(clip, 0, pos, "clip")
    guid = g.node("FluxGuidance", (850, 330), {"guidance": 6.0}, (250, 58))
    neg = g.node("ConditioningZeroOut", (850, 420), {}, (250, 26))
    g.link(pos, 0, guid, "conditioning")
    g.link(pos, 0, neg, "conditioning")
    latent = g.node("EmptyHunyuanLatentVideo", (850, 500), {"width": 848, "height": 480, "length": 73,
                                                            "batch_size": 1}, (315, 130))
    ks = _ksampler(g, 1250, fc, guid, neg, latent, steps=30, cfg=1.0)
    dec = g.node("VAEDecodeTiled", (1600, 0), {"tile_size": 256, "overlap": 64, "temporal_size": 64,
                                               "temporal_overlap": 8}, (315, 150))
    g.link(ks, 0, dec, "samples")
    g.link(vae, 0, dec, "vae")
    video = g.node("CreateVideo", (1600, 200), {"fps": 24.0}, (270, 78))
    g.link(dec, 0, video, "images")
    save = g.node("SaveVideo", (1950, 0), {"filename_prefix": "video/hunyuan_video_forecast",
                                           "format": "auto", "codec": "auto"}, (600, 500))
    g.link(video, 0, save, "video")
    g.note(settings_note("hunyuan_video") + "\nHunyuanVideo: 30 steps, cfg 1.0, embedded guidance 6.0, shift 7.\n"
           "The cache scales with frames x pixels: use final_hidden for long clips.", (780, -380), (560, 360))


COMPARE_NOTE = """A/B check: is the speed-up worth it on YOUR model?

Both samplers get the same model, prompt, latent and seed (the
Seed node drives both). The top one runs the model as loaded
(baseline); the bottom one runs it through Forecast Cache.

Queue once, then read:
- Forecast Cache node: the per-step timeline (blue = computed,
  green = forecast, red = forecast rejected), how many times fewer
  model evaluations this run needed, and the cache memory.
- Compare node: PSNR (dB; higher = closer, above ~35 dB differences
  are hard to see) and SSIM (1.0 = identical), plus a heatmap of
  where the two images differ (black = identical).

Try presets quality / balanced / fast and keep the fastest one whose
result you are happy with. Then delete the baseline branch (or mute
it) for everyday use.
"""


def flux_compare(g) -> None:
    """Same seed through the plain model and through Forecast Cache, into DiTAccelCompare."""
    unet, clip, vae = _flux_loaders(g)
    latent = g.node("EmptySD3LatentImage", (0, 420), {"width": 1024, "height": 1024, "batch_size": 1},
                    (315, 106))
    fc = _forecast_node(g, (400, 370))
    g.link(unet, 0, fc, "model")
    pos = g.node("CLIPTextEncode", (400, 0), {"text": "a photo of a red fox sitting in fresh snow, morning "
                                              "light, shallow depth of field"}, (400, 160))
    g.link(clip, 0, pos, "clip")
    guid = g.node("FluxGuidance", (400, 200), {"guidance": 3.5}, (250, 58))
    neg = g.node("ConditioningZeroOut", (400, 300), {}, (250, 26))
    g.link(pos, 0, guid, "conditioning")
    g.link(pos, 0, neg, "conditioning")
    seed = g.node("PrimitiveInt", (850, 660), {"value": 42}, (270, 82), title="Seed (both samplers)")
    decoded = []
    for row, (model, title) in enumerate([(unet, "KSampler (baseline, uncached)"),
                                          (fc, "KSampler (accelerated)")]):
        ks = _ksampler(g, 850, model, guid, neg, latent, steps=28, cfg=1.0)
        ks.pos[1] = row * 330
        ks.title = title
        g.link(seed, 0, ks, "seed")
        dec = g.node("VAEDecode", (1200, row * 330), {}, (210, 46))
        g.link(ks, 0, dec, "samples")
        g.link(vae, 0, dec, "vae")
        preview = g.node("PreviewImage", (1450, row * 330), {}, (300, 300),
                         title="Baseline" if row == 0 else "Accelerated")
        g.link(dec, 0, preview, "images")
        decoded.append(dec)
    compare = g.node("DiTAccelCompare", (1800, 0), {"amplify": 5.0}, (320, 200))
    g.link(decoded[0], 0, compare, "baseline")
    g.link(decoded[1], 0, compare, "accelerated")
    heat = g.node("PreviewImage", (1800, 330), {}, (320, 320), title="Difference heatmap")
    g.link(compare, "heatmap", heat, "images")
    g.note(COMPARE_NOTE, (0, -420), (560, 390))


EDIT_REGION_NOTE = """Edit Region (EEdit): only the edited area is recomputed between full steps.

Paint the edit area on the Load Image node (right click > Open in
MaskEditor) or use an image with an alpha channel: its MASK goes to
Edit Region. Between Forecast Cache's full steps, only the tokens inside
the mask and `rings` token rings around it run through the model; the
rest of the image keeps the forecast, and the reference image's tokens
are never recomputed. How far the fresh tokens are trusted over the
forecast is measured on your model at every full step. partial_from 0.5
computes the region in the later half of each gap only (cheaper, about
as faithful on our tune edit model).

The node's panel and the console line give the work in token-blocks
(tokens through each block, vs the uncached run) beside the evaluations.
Measured on our validation edit models (docs/RESULTS.md, Token methods): the
edited area gains fidelity, the rest is as good as the forecast at the
preset's budget, and a smaller mask means less work.
"""

CLUSTER_NOTE = """Cluster Tokens (ClusCa): a few tokens per cluster between full steps.

At every full step the image tokens are clustered (K-means on one
block's features). Between full steps, tokens_per_cluster tokens of each
cluster run through the model; the rest of each cluster gets the
forecast plus the correction measured at its fresh tokens, scaled by a
gain measured on your model at the full steps. Partial steps run in
the later half of each gap (partial_from 0.5), with that gain scaled
down where the forecast has drifted less (gap_weighting scaled).

Experimental: on our models it has not beaten the same time spent on
Forecast Cache alone (docs/TOKENS.md). The panel shows the work in
token-blocks and the measured gain.
"""


def flux_kontext_edit_region(g) -> None:
    fc = flux_t2i(g, kontext=True)
    load = next(n for n in g.nodes if n.type == "LoadImage")
    region = g.node("DiTAccelEditRegion", (0, 800), {"rings": 2, "ring_decay": 0.8,
                                                     "attention_context": "cached", "partial_from": 0.5}, (315, 130))
    g.link(load, "MASK", region, "mask")
    g.link(region, 0, fc, "tokens")
    g.note(EDIT_REGION_NOTE, (1200, -380), (560, 330))


SPECEDIT_NOTE = """Spec Edit (auto region): the edit region is found, no mask needed.

The first full step's estimate of the finished image is the draft of
the edit. Where it differs from the input image (the reference latent)
more than the rest does (Otsu's split of the measured differences), the
tokens are marked as the edit region, plus `rings` token rings. Between
Forecast Cache's full steps only those run through the model; the rest
keep the forecast (lock = forecast) or the input (lock = input), and
the input image's own tokens are never recomputed.

The console line and the node panel say how many tokens were marked and
the work in token-blocks (tokens through each block, vs the uncached
run). Without a reference latent (not an edit model) it warns once and
Forecast Cache runs alone. Measured figures: docs/SPECEDIT.md.
"""
SPECEDIT_DEFAULTS = {"rings": 0, "lock": "forecast", "threshold": "otsu", "share": 0.25, "draft_steps": 1,
                     "attention_context": "cached", "partial_from": 0.5}


def _specedit(g, fc, pos) -> None:
    spec = g.node("DiTAccelSpecEdit", pos, SPECEDIT_DEFAULTS, (315, 200))
    g.link(spec, 0, fc, "tokens")


def flux_kontext_specedit(g) -> None:
    fc = flux_t2i(g, kontext=True)
    _specedit(g, fc, (0, 800))
    g.note(SPECEDIT_NOTE, (1200, -380), (560, 330))


def qwen_image_edit_specedit(g) -> None:
    fc = qwen_image(g, edit=True)
    _specedit(g, fc, (400, 560))
    g.note(SPECEDIT_NOTE, (1400, -380), (560, 330))


def flux_cluster_tokens(g) -> None:
    fc = flux_t2i(g)
    clusters = g.node("DiTAccelClusterTokens", (0, 440), {"clusters": 16, "tokens_per_cluster": 2,
                                                          "cluster_layer": 0.5, "attention_context": "cached",
                                                          "propagation": "measured", "partial_from": 0.5,
                                                          "gap_weighting": "scaled"},
                      (315, 130))
    g.link(clusters, 0, fc, "tokens")
    g.note(CLUSTER_NOTE, (1200, -380), (520, 280))


CALIBRATE_NOTE = """Calibrate on your own model (L2P, learned forecasts)

1. Calibrate (top group). Calibrate Forecasts records every run of
   the KSampler behind it; the image is exactly the plain model's. Queue
   runs_needed (4) runs with different prompts / seeds (set the seed to
   randomize), same steps, sampler and scheduler as you will use later.
   Samplers with one model call per step only (euler, euler_ancestral).
   After the 4th run it fits and saves models/dit_accel/<profile_name>
   .safetensors (a few KB) with a progress bar; the console line
   "DiT Accel: Calibrate Forecasts ..." gives the held-back error vs
   plain output reuse. Later runs refit it on the newest max_runs runs.
2. Refresh the page (R), pick the profile in Learned Forecast Profile.
3. Use it (bottom group): Forecast Cache (output cache, the same preset
   as Calibrate's budget) forecasts with the learned weights. Bypass the
   top group (Ctrl+B) once calibrated. The profile only loads on the
   same model weights; another model is refused with a clear error.
Until a profile exists the bottom group's prompt fails validation:
mute it (Ctrl+M) while calibrating. See docs/CALIBRATION.md.
"""


def flux_calibrate_l2p(g) -> None:
    """Group 1: loader -> Calibrate Forecasts -> KSampler; group 2: Learned Profile -> Forecast Cache -> KSampler."""
    unet, clip, vae = _flux_loaders(g)
    latent = g.node("EmptySD3LatentImage", (0, 420), {"width": 1024, "height": 1024, "batch_size": 1},
                    (315, 106))
    pos = g.node("CLIPTextEncode", (0, 580), {"text": "a photo of a red fox sitting in fresh snow, morning "
                                              "light, shallow depth of field"}, (400, 160))
    g.link(clip, 0, pos, "clip")
    guid = g.node("FluxGuidance", (0, 790), {"guidance": 3.5}, (250, 58))
    neg = g.node("ConditioningZeroOut", (0, 880), {}, (250, 26))
    g.link(pos, 0, guid, "conditioning")
    g.link(pos, 0, neg, "conditioning")

    cal = g.node("DiTAccelCalibrate", (450, 40), {"profile_name": "my_flux_l2p", "budget": "balanced",
                                                  "runs_needed": 4, "max_runs": 8}, (340, 170))
    g.link(unet, 0, cal, "model")
    profile = g.node("DiTAccelLearnedProfile", (450, 480), {"profile": "my_flux_l2p.safetensors"}, (340, 60))
    fc = _forecast_node(g, (450, 580))
    g.link(unet, 0, fc, "model")
    g.link(profile, 0, fc, "learned")
    for row, (model, title, prefix) in enumerate([(cal, "KSampler (calibration runs, uncached)", "flux_calibrate"),
                                                  (fc, "KSampler (learned forecasts)", "flux_l2p")]):
        y = row * 480
        ks = _ksampler(g, 850, model, guid, neg, latent, steps=28, cfg=1.0)
        ks.pos[1] = y + 40
        ks.title = title
        dec = g.node("VAEDecode", (1200, y + 40), {}, (210, 46))
        g.link(ks, 0, dec, "samples")
        g.link(vae, 0, dec, "vae")
        save = g.node("SaveImage", (1450, y + 40), {"filename_prefix": prefix}, (400, 400))
        g.link(dec, 0, save, "images")
    g.group("1. Calibrate: queue 4+ runs (different prompts / seeds)", (430, -30, 1440, 470))
    g.group("2. Use the profile (mute while calibrating)", (430, 450, 1440, 500), color="#3f7e4a")
    presets = _preset_lines("flux")
    g.note(CALIBRATE_NOTE + "\nForecast Cache presets (pick Calibrate's budget to match):\n" + presets, (0, -560),
           (620, 520))


RESOLUTION_NOTE = """Progressive Resolution (Fresco) + Forecast Cache — EXPERIMENTAL

The first steps run at a lower latent resolution (a sketch with a
quarter of the image tokens at factor 2), then the sketch is up-sampled
and re-noised with the same noise at full size for the remaining steps.
Forecast Cache then caches inside each stage (it restarts at the stage
change). The Forecast Cache panel shows the stages and the joint work
in token-blocks and FLOPs against the plain full-resolution run.

Not yet faithful: on our test models it changed the image far more
than caching alone at the same work (docs/RESOLUTION.md). Compare with
flux_compare_forecast_cache.json before relying on it.
Width and height must be multiples of factor x 16 px (32 px at
factor 2; 64 px with coarse_stages 2); other sizes, masks and
ControlNet run at full resolution with one warning.
"""


def with_progressive_resolution(build, family_note: str = ""):
    """A builder that puts Progressive Resolution between the model path and Forecast Cache."""

    def builder(g) -> None:
        build(g)
        fc = next(n for n in g.nodes if n.type == "DiTAccelForecastCache")
        res = g.node("DiTAccelProgressiveResolution", (0, -420), {}, (340, 330))
        g.insert_before(fc, "model", res, "model")
        g.note(RESOLUTION_NOTE + family_note, (-600, -420), (560, 420))

    return builder


def hunyuan_video_832(g) -> None:
    """hunyuan_video with an 832x480 latent (848 is not a multiple of 32 px: no low-res stage there)."""
    hunyuan_video(g)
    latent = next(n for n in g.nodes if n.type == "EmptyHunyuanLatentVideo")
    latent.widgets_values[0] = 832  # widgets: width, height, length, batch_size


BUILDERS = {
    "flux_forecast_cache": lambda g: flux_t2i(g),
    "flux_kontext_forecast_cache": lambda g: flux_t2i(g, kontext=True),
    "qwen_image_forecast_cache": lambda g: qwen_image(g),
    "qwen_image_edit_forecast_cache": lambda g: qwen_image(g, edit=True),
    "hunyuan_video_forecast_cache": hunyuan_video,
    "flux_compare_forecast_cache": flux_compare,
    "flux_verified_forecast_cache": flux_advanced,
    "flux_kontext_edit_region": flux_kontext_edit_region,
    "flux_cluster_tokens": flux_cluster_tokens,
    "flux_kontext_specedit": flux_kontext_specedit,
    "qwen_image_edit_specedit": qwen_image_edit_specedit,
    "flux_calibrate_l2p": flux_calibrate_l2p,
    "flux_progressive_resolution": with_progressive_resolution(lambda g: flux_t2i(g)),
    "flux_kontext_progressive_resolution": with_progressive_resolution(
        lambda g: flux_t2i(g, kontext=True),
        "\nKontext: the reference image keeps its own size and positions at\nevery stage; "
        "FluxKontextImageScale sizes that are not multiples\nof 32 px run at full resolution (warning).\n"),
    "qwen_image_edit_progressive_resolution": with_progressive_resolution(
        lambda g: qwen_image(g, edit=True),
        "\nQwen-Image-Edit: the input image keeps its own size at every stage.\n"),
    "hunyuan_video_progressive_resolution": with_progressive_resolution(
        hunyuan_video_832, "\nHunyuanVideo: frames are kept; 832x480 (multiples of 32 px).\n"),
}

DEMO_PROMPT = "a red circle on a blue background"


def demo_api_prompt() -> dict:
    """The A/B demo on the trained micro FLUX: uncached vs Forecast Cache, same seed (API format).

    Uses the dev-only nodes of scripts/harness/comfy_nodes, so it is an API prompt, not a
    shipped workflow. 256x256 'pixels' = a 32x32 latent, what the micro model was trained on;
    DiTAccelDevShapesDecode turns it into a 64x64 image.
    """
    def n(cls, inputs, title):
        return {"class_type": cls, "inputs": inputs, "_meta": {"title": title}}

    sampler = {"seed": 0, "steps": 50, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
               "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["6", 0], "denoise": 1.0}
    return {
        "1": n("DiTAccelDevMicroLoader", {"unet_name": "dit_accel_micro_flux_trained.safetensors"},
               "Trained micro FLUX"),
        "2": n("CLIPLoader", {"clip_name": "dit_accel_clip_l_random.safetensors", "type": "stable_diffusion",
                              "device": "default"}, "Random CLIP-L"),
        "3": n("CLIPTextEncode", {"text": DEMO_PROMPT, "clip": ["2", 0]}, "Prompt"),
        "4": n("FluxGuidance", {"guidance": 3.5, "conditioning": ["3", 0]}, "FluxGuidance"),
        "5": n("ConditioningZeroOut", {"conditioning": ["3", 0]}, "Negative (unused at cfg 1)"),
        "6": n("EmptySD3LatentImage", {"width": 256, "height": 256, "batch_size": 1}, "Latent 32x32"),
        "7": n("DiTAccelForecastCache", {"model": ["1", 0], **FORECAST_DEFAULTS}, "Forecast Cache"),
        "8": n("KSampler", {"model": ["1", 0], **sampler}, "KSampler (uncached)"),
        "9": n("KSampler", {"model": ["7", 0], **sampler}, "KSampler (forecast)"),
        "10": n("DiTAccelDevShapesDecode", {"samples": ["8", 0]}, "Decode (uncached)"),
        "11": n("SaveImage", {"images": ["10", 0], "filename_prefix": "uncached"}, "Save (uncached)"),
        "12": n("DiTAccelDevShapesDecode", {"samples": ["9", 0]}, "Decode (forecast)"),
        "13": n("SaveImage", {"images": ["12", 0], "filename_prefix": "forecast"}, "Save (forecast)"),
        "14": n("DiTAccelDevStats", {"samples": ["8", 0]}, "Stats (uncached)"),
        "15": n("DiTAccelDevStats", {"samples": ["9", 0]}, "Stats (forecast)"),
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=WORKFLOWS)
    args = ap.parse_args()

    from scripts.harness import comfy_env
    from scripts.harness.ui_graph import UIGraph
    from scripts.harness.workflow_convert import object_info_in_process, ui_to_api

    comfy_env.bootstrap()
    comfy_env.load_custom_nodes()
    oi = object_info_in_process()
    if "DiTAccelForecastCache" not in oi:
        raise SystemExit("DiTAccelForecastCache is not registered: the pack failed to load")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, build in BUILDERS.items():
        g = UIGraph(oi, pack_nodes={name: PACK_ID for name in oi if name.startswith("DiTAccel")})
        build(g)
        g.make_room_below("DiTAccelForecastCache", PANEL_ROOM)
        g.separate_notes()
        wf = g.to_json(_wid(name))
        ui_to_api(wf, oi)  # must convert cleanly
        path = args.out / f"{name}.json"
        path.write_text(json.dumps(wf, indent=2) + "\n")
        log.info("wrote %s (%d nodes)", path, len(wf["nodes"]))
    DEMO_API.write_text(json.dumps(demo_api_prompt(), indent=2) + "\n")
    log.info("wrote %s", DEMO_API)


if __name__ == "__main__":
    main()
