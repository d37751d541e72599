"""The graphs artists build around a sampler, run in the real ComfyUI on a trained zoo model, each
uncached and through Forecast Cache, scored against each other (image PSNR, dB).

Used by the combination tests (tests/comfy/test_graphs_*.py) and bench/bench_graphs.py, so the
"What works with what" figures (docs/COMPATIBILITY.md) come from exactly the graphs the tests check.

    zoo = ZooModel("micro_flux"); case = zoo.cases(1, 1)[0]
    score = compare(zoo, case, GRAPHS["controlnet"])    # GraphScore(psnr, plain, runs)

A graph is a function (zoo, case, model, extras) -> raw latent; `model` is either the zoo model or
the same model through Forecast Cache, so both runs see the same graph. `extras` carries the
graph's own objects (a ControlNet, a hook LoRA), built once per zoo model.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from typing import Callable

import torch

STEPS = 28
PRESET = "balanced"
SPLIT_AT = 12  # KSamplerAdvanced / SplitSigmas boundary (steps 0-12, then 12-28)
CONTROL_RANGE = (0.3, 0.7)  # ControlNet start / end percent: both boundaries inside the run
HOOK_KEYFRAMES = ((0.0, 0.0), (0.35, 1.0), (0.7, 0.4))  # (start_percent, LoRA strength) of the hook LoRA
UPSCALE = 1.5  # LatentUpscaleBy factor of the second pass
UPSCALE_STEPS, UPSCALE_DENOISE = 20, 0.55
LORA_NAME = "dit_accel_hook_lora_{name}.safetensors"


def forecast_cache(model, preset: str = PRESET):
    import nodes

    node = nodes.NODE_CLASS_MAPPINGS["DiTAccelForecastCache"]
    return node.execute(model, preset, "preset", "preset", 0, -1, -1, -1, 0.0, 1.0)[0]


def ksampler(model, case, latent: torch.Tensor, positive=None, negative=None, steps: int = STEPS,
             denoise: float = 1.0) -> torch.Tensor:
    import nodes

    out = nodes.KSampler().sample(model, case.seed, steps, case.cfg, "euler", "simple",
                                  case.positive if positive is None else positive,
                                  case.negative if negative is None else negative,
                                  {"samples": latent}, denoise=denoise)
    return out[0]["samples"]


# ------------------------------------------------------------------------------------ graphs
def plain(zoo, case, model, extras) -> torch.Tensor:
    return ksampler(model, case, case.latent["samples"])


def controlnet(zoo, case, model, extras) -> torch.Tensor:
    """Apply ControlNet (ControlNetApplyAdvanced) active from CONTROL_RANGE[0] to [1] of the run."""
    import nodes

    pos, neg = nodes.ControlNetApplyAdvanced().apply_controlnet(
        case.positive, case.negative, extras["controlnet"], extras["hint"], 1.0, *CONTROL_RANGE)
    return ksampler(model, case, case.latent["samples"], pos, neg)


def ksampler_advanced_pair(zoo, case, model, extras) -> torch.Tensor:
    """KSamplerAdvanced steps 0-SPLIT_AT with leftover noise, then SPLIT_AT-end without adding noise."""
    import nodes

    sampler = nodes.KSamplerAdvanced()
    common = dict(noise_seed=case.seed, steps=STEPS, cfg=case.cfg, sampler_name="euler", scheduler="simple",
                  positive=case.positive, negative=case.negative)
    first = sampler.sample(model, "enable", latent_image=dict(case.latent), start_at_step=0, end_at_step=SPLIT_AT,
                           return_with_leftover_noise="enable", **common)[0]
    return sampler.sample(model, "disable", latent_image=first, start_at_step=SPLIT_AT, end_at_step=10000,
                          return_with_leftover_noise="disable", **common)[0]["samples"]


def split_sigmas(zoo, case, model, extras) -> torch.Tensor:
    """SamplerCustomAdvanced twice: BasicScheduler -> SplitSigmas at SPLIT_AT, CFGGuider, euler."""
    from comfy_extras import nodes_custom_sampler as cs

    guider = cs.CFGGuider.execute(model, case.positive, case.negative, case.cfg)[0]
    sampler = cs.KSamplerSelect.execute("euler")[0]
    split = cs.SplitSigmas.execute(cs.BasicScheduler.execute(model, "simple", STEPS, 1.0)[0], SPLIT_AT)
    high, low = split[0], split[1]
    first = cs.SamplerCustomAdvanced.execute(cs.RandomNoise.execute(case.seed)[0], guider, sampler, high,
                                             dict(case.latent))[0]
    return cs.SamplerCustomAdvanced.execute(cs.DisableNoise.execute()[0], guider, sampler, low, first)[0]["samples"]


def upscale_pass(zoo, case, model, extras) -> torch.Tensor:
    """KSampler, LatentUpscaleBy UPSCALE, then a second KSampler pass at the new size with denoise < 1."""
    import nodes

    first = ksampler(model, case, case.latent["samples"])
    bigger = nodes.LatentUpscaleBy().upscale({"samples": first}, "bislerp", UPSCALE)[0]["samples"]
    return ksampler(model, case, bigger, steps=UPSCALE_STEPS, denoise=UPSCALE_DENOISE)


def hook_keyframes(zoo, case, model, extras) -> torch.Tensor:
    """A LoRA as a hook (CreateHookLoraModelOnly) whose strength changes at HOOK_KEYFRAMES
    (CreateHookKeyframe -> SetHookKeyframes), put on both conds (ConditioningSetProperties)."""
    from comfy_extras import nodes_hooks as nh

    hooks = nh.CreateHookLoraModelOnly().create_hook_model_only(extras["lora_name"], 1.0)[0]
    keyframes = None
    for start, strength in HOOK_KEYFRAMES:
        keyframes = nh.CreateHookKeyframe().create_hook_keyframe(strength, start, keyframes)[0]
    hooks = nh.SetHookKeyframes().set_hook_keyframes(hooks, keyframes)[0]
    props = nh.ConditioningSetProperties()
    pos = props.set_properties(case.positive, 1.0, "default", hooks=hooks)[0]
    neg = props.set_properties(case.negative, 1.0, "default", hooks=hooks)[0]
    return ksampler(model, case, case.latent["samples"], pos, neg)


def split_branches(zoo, case, model, extras) -> torch.Tensor:
    """Plain KSampler at cfg > 1 while ComfyUI's memory estimate lets only one CFG branch run per call
    (see `memory_pressure`): the cond and uncond branches run as separate model calls."""
    with memory_pressure(zoo.model, case.latent["samples"]):
        return ksampler(model, case, case.latent["samples"])


def qwen_model_patch_controlnet(zoo, case, model, extras) -> torch.Tensor:
    """Qwen-Image's model-patch ControlNet (QwenImageDiffsynthControlnet, a double-block patch)."""
    from comfy_extras.nodes_model_patch import QwenImageDiffsynthControlnet

    patched = QwenImageDiffsynthControlnet().diffsynth_controlnet(
        model, extras["model_patch"], extras["vae"], extras["hint"], 1.0)[0]
    return ksampler(patched, case, case.latent["samples"])


GRAPHS: dict[str, Callable] = {
    "plain": plain, "controlnet": controlnet, "ksampler_advanced_pair": ksampler_advanced_pair,
    "split_sigmas": split_sigmas, "upscale_pass": upscale_pass, "hook_keyframes": hook_keyframes,
    "split_branches": split_branches, "qwen_model_patch_controlnet": qwen_model_patch_controlnet,
}


# ------------------------------------------------------------------------------------ graph objects
class memory_pressure:
    """ComfyUI batches the CFG branches of a call only when its memory estimate
    (BaseModel.memory_required x 1.5) fits the free memory; this raises the model's
    memory_usage_factor (what ComfyUI sets per model class) so that one branch takes 90 % of the free
    memory (two would need it to grow by 80 % meanwhile), as for a large model on a small GPU. Restored
    on exit."""

    def __init__(self, patcher, latent: torch.Tensor) -> None:
        self.model, self.latent = patcher.model, latent

    def __enter__(self):
        import comfy.model_management as mm

        self.saved = self.model.memory_usage_factor
        one = self.model.memory_required([1] + list(self.latent.shape[1:])) * 1.5
        free = mm.get_free_memory(mm.get_torch_device())
        self.model.memory_usage_factor = self.saved * 0.9 * free / one
        return self

    def __exit__(self, *exc) -> None:
        self.model.memory_usage_factor = self.saved


def hint_image(size: int, seed: int = 0) -> torch.Tensor:
    """A control image [1, size, size, 3]: a bright disc and bar on dark, like an edge / depth map."""
    g = torch.Generator().manual_seed(seed)
    cx, cy = (0.3 + 0.4 * torch.rand(2, generator=g)).tolist()
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    disc = ((xs - cx) ** 2 + (ys - cy) ** 2 < 0.04).float()
    bar = ((ys - 0.8).abs() < 0.05).float()
    return torch.clamp(disc + bar, 0, 1)[None, :, :, None].expand(1, size, size, 3).contiguous()


def micro_flux_controlnet(zoo, seed: int = 0):
    """An XLabs-style FLUX ControlNet (one double block) at the zoo model's width, built as
    comfy.controlnet's load_controlnet_flux_xlabs_mistoline builds one after config detection
    (ControlNetFlux in a comfy.controlnet.ControlNet), with seeded random weights: a strong control
    (the image moves to about 17 dB PSNR from the uncontrolled one on micro_flux)."""
    import comfy.controlnet
    import comfy.ldm.flux.controlnet
    import comfy.model_management as mm
    import comfy.ops

    from scripts.harness.micro_models import deterministic_init_

    config = dict(zoo.model.model.model_config.unet_config)
    config.update(depth=1, depth_single_blocks=0)
    for key in ("image_model", "dtype", "device", "operations"):
        config.pop(key, None)
    net = comfy.ldm.flux.controlnet.ControlNetFlux(operations=comfy.ops.disable_weight_init, dtype=torch.float32,
                                                   device=mm.unet_offload_device(), **config)
    deterministic_init_(net, seed)
    net.eval()
    return comfy.controlnet.ControlNet(net, load_device=mm.get_torch_device(), manual_cast_dtype=None,
                                       extra_conds=["y", "guidance"])


def micro_qwen_model_patch(zoo, seed: int = 0):
    """Qwen-Image's block-wise ControlNet model patch (what ModelPatchLoader loads) at the zoo model's
    width and depth, seeded random weights."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
    from comfy_extras.nodes_model_patch import QwenImageBlockWiseControlNet

    from scripts.harness.micro_models import deterministic_init_

    dm = zoo.model.model.diffusion_model
    net = QwenImageBlockWiseControlNet(num_layers=len(dm.transformer_blocks), dim=dm.inner_dim,
                                       device=mm.unet_offload_device(), dtype=torch.float32,
                                       operations=comfy.ops.manual_cast)
    deterministic_init_(net, seed)
    return comfy.model_patcher.ModelPatcher(net, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def write_hook_lora(zoo, rank: int = 4, seed: int = 0, gain: float = 0.5) -> str:
    """A LoRA for the zoo model's attention and MLP projections (ComfyUI's generic
    'diffusion_model.<key>.lora_up / lora_down' format) in models/loras; returns its file name."""
    import folder_paths
    import safetensors.torch

    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, weight in zoo.model.model.diffusion_model.state_dict().items():
        if not key.endswith(".weight") or weight.dim() != 2 or not any(p in key for p in ("qkv", "mlp", "linear")):
            continue
        out_dim, in_dim = weight.shape
        base = f"diffusion_model.{key[:-len('.weight')]}"
        sd[f"{base}.lora_down.weight"] = torch.randn(rank, in_dim, generator=g) / math.sqrt(in_dim)
        sd[f"{base}.lora_up.weight"] = torch.randn(out_dim, rank, generator=g) * gain / math.sqrt(rank)
    name = LORA_NAME.format(name=zoo.name)
    folder = folder_paths.get_folder_paths("loras")[0]
    os.makedirs(folder, exist_ok=True)
    safetensors.torch.save_file(sd, os.path.join(folder, name))
    folder_paths.filename_list_cache.pop("loras", None)
    return name


@functools.lru_cache(maxsize=None)
def zoo_case(name: str):
    """(ZooModel, its first bench case, the graphs' extras), built once per process."""
    from scripts.harness.zoo import ZooModel

    zoo = ZooModel(name)
    return zoo, zoo.cases(1, 1)[0], extras_for(zoo)


def extras_for(zoo) -> dict:
    """The graphs' own objects for one zoo model (built once; seeded)."""
    size = zoo.resolution[0]
    extras = {"hint": hint_image(size), "lora_name": write_hook_lora(zoo)}
    if zoo.family == "flux":
        extras["controlnet"] = micro_flux_controlnet(zoo)
    if zoo.family == "qwen_image":
        extras["model_patch"] = micro_qwen_model_patch(zoo)
        extras["vae"] = ZooVAE(zoo)
    return extras


class ZooVAE:
    """The zoo model's own stand-in VAE (the exact linear 'shapes' VAE, 2x) behind the two VAE methods
    ComfyUI's model patches call; a real Qwen-Image VAE is a video VAE with 5-D latents, as this gives."""

    def __init__(self, zoo) -> None:
        self.zoo = zoo

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.zoo.encode_image(image[..., :3])

    def spacial_compression_encode(self) -> int:
        return 2


def spied(model, record: Callable):
    """A clone of `model` calling record(diffusion_model, transformer_options) before every model call
    (a DIFFUSION_MODEL wrapper): tests read what ComfyUI actually ran (weights, CFG branches)."""
    import comfy.patcher_extension

    def spy(executor, *args, **kwargs):
        options = kwargs.get("transformer_options") or next(a for a in args if isinstance(a, dict) and "sigmas" in a)
        record(executor.class_obj, options)
        return executor(*args, **kwargs)

    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "graph_cases_spy", spy)
    return clone


# ------------------------------------------------------------------------------------ scoring
@dataclass
class GraphScore:
    psnr: float  # cached graph vs the same graph uncached (image PSNR, dB)
    plain: float  # plain KSampler cached vs uncached, same case and preset
    runs: list[dict] = field(default_factory=list)  # the cached graph's run summaries (RECENT_RUNS)

    @property
    def margin(self) -> float:
        return self.psnr - self.plain


def image_psnr(zoo, baseline: torch.Tensor, test: torch.Tensor) -> float:
    from accel_core.quality import psnr_db

    return psnr_db(zoo.decode(baseline), zoo.decode(test), 1.0)


def recent_runs():
    """The pack's RECENT_RUNS deque (the adapter module as ComfyUI loaded it)."""
    import sys

    found = [m for name, m in list(sys.modules.items())
             if name.endswith("nodes.adapter") and hasattr(m, "RECENT_RUNS") and "dit_accel" in name]
    if len(found) != 1:
        raise RuntimeError(f"expected the pack's adapter loaded once, found {len(found)}")
    return found[0].RECENT_RUNS


_PLAIN: dict[tuple, float] = {}


def cached_vs_uncached(zoo, case, graph: Callable, extras: dict, preset: str = PRESET,
                       model=None) -> tuple[float, list[dict], torch.Tensor]:
    """(PSNR, the cached run summaries, the cached latent) of `graph` through Forecast Cache.
    `model`: the zoo model by default (tests pass a clone carrying a spy wrapper)."""
    model = zoo.model if model is None else model
    baseline = graph(zoo, case, model, extras)
    runs = recent_runs()
    runs.clear()
    out = graph(zoo, case, forecast_cache(model, preset), extras)
    summaries = list(runs)
    if not torch.isfinite(out).all():
        return float("nan"), summaries, out
    return image_psnr(zoo, baseline, out), summaries, out


def compare(zoo, case, graph: Callable, extras: dict, preset: str = PRESET, model=None) -> GraphScore:
    score, runs, _ = cached_vs_uncached(zoo, case, graph, extras, preset, model)
    key = (zoo.name, case.prompt, case.seed, preset)
    if key not in _PLAIN:
        _PLAIN[key] = cached_vs_uncached(zoo, case, plain, extras, preset)[0]
    return GraphScore(score, _PLAIN[key], runs)
