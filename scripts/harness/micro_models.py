"""Micro DiTs in ComfyUI's own classes, built through the supplied-config path.

Flux and Qwen-Image are only file-detectable at 3072 wide, so micro models skip detection: we
build the ``supported_models`` config with an explicit ``unet_config`` (as
``comfy.sd.load_diffusion_model_state_dict`` does after detection). Everything downstream
(model_base, model_sampling, latent format, samplers, wrappers) is the real thing.
"""
from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

METADATA_KEY = "dit_accel_micro"

# Configs as data. Keys are exactly the diffusion model's constructor kwargs.
MICRO_CONFIGS: dict[str, dict[str, Any]] = {
    "flux": {
        "image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2,
        "vec_in_dim": 768, "context_in_dim": 768, "hidden_size": 128, "mlp_ratio": 4.0,
        "num_heads": 2, "depth": 2, "depth_single_blocks": 4, "axes_dim": [8, 28, 28],
        "theta": 10000, "qkv_bias": True, "guidance_embed": True,
    },
    "qwen_image": {
        "image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16,
        "num_layers": 4, "attention_head_dim": 64, "num_attention_heads": 2,
        "joint_attention_dim": 768, "axes_dims_rope": [8, 28, 28],
    },
    # Same keys detect_unet_config produces, so the saved state dict is also loader-legal.
    "hunyuan_video": {
        "image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "patch_size": [1, 2, 2],
        "vec_in_dim": 768, "context_in_dim": 768, "hidden_size": 128, "mlp_ratio": 4.0,
        "num_heads": 1, "depth": 2, "depth_single_blocks": 2, "axes_dim": [16, 56, 56],
        "theta": 256, "qkv_bias": True, "guidance_embed": True, "byt5": False, "meanflow": False,
        "use_cond_type_embedding": False, "vision_in_dim": None,
    },
    "hunyuan_video15": {
        "image_model": "hunyuan_video", "in_channels": 65, "out_channels": 32, "patch_size": [1, 1, 1],
        "vec_in_dim": None, "context_in_dim": 768, "hidden_size": 128, "mlp_ratio": 4.0,
        "num_heads": 1, "depth": 2, "depth_single_blocks": 0, "axes_dim": [16, 56, 56],
        "theta": 256, "qkv_bias": True, "guidance_embed": False, "byt5": False, "meanflow": False,
        "use_cond_type_embedding": True, "vision_in_dim": 1152,
    },
}

# supported_models class per family.
_MODEL_CONFIG_CLASS = {
    "flux": "Flux",
    "qwen_image": "QwenImage",
    "hunyuan_video": "HunyuanVideo",
    "hunyuan_video15": "HunyuanVideo15",
}

FAMILIES = tuple(MICRO_CONFIGS)


def micro_config(family: str) -> dict[str, Any]:
    """A copy of the micro config of ``family``."""
    if family not in MICRO_CONFIGS:
        raise ValueError(f"unknown micro family {family!r}; choose one of {list(MICRO_CONFIGS)}")
    return copy.deepcopy(MICRO_CONFIGS[family])


@torch.no_grad()
def deterministic_init_(module: torch.nn.Module, seed: int = 0) -> None:
    """Fill every float tensor of ``module`` from a seeded CPU generator.

    ComfyUI's ``disable_weight_init`` ops leave weights as ``torch.empty``, so nothing may be
    skipped. Matrices: N(0, 1/fan_in); 1-D biases: N(0, 0.02); other 1-D (norm weights, scales): 1.
    Sorted names make the result independent of module registration details.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    tensors = dict(module.named_parameters())
    tensors.update({k: v for k, v in module.named_buffers() if v is not None})
    for name in sorted(tensors):
        t = tensors[name]
        if not t.is_floating_point():
            continue
        if t.dim() >= 2:
            fan_in = math.prod(t.shape[1:])
            val = torch.randn(t.shape, generator=gen, dtype=torch.float32) / math.sqrt(fan_in)
        elif name.endswith("bias"):
            val = torch.randn(t.shape, generator=gen, dtype=torch.float32) * 0.02
        elif t.dim() == 1:
            val = torch.ones(t.shape, dtype=torch.float32)
        else:  # 0-d scalars
            val = torch.ones(t.shape, dtype=torch.float32)
        t.copy_(val.to(t.dtype))


def build_micro_model(family: str, seed: int = 0, state_dict: dict[str, torch.Tensor] | None = None,
                      config: dict[str, Any] | None = None, weight_dtype: torch.dtype | None = None):
    """Build a micro model of ``family`` as a ``comfy.model_patcher.ModelPatcher`` (fp32, CPU).

    Weights come from ``state_dict`` (strict) or a deterministic random init with ``seed``.
    ``config`` overrides the default micro config (used by saved files). ``weight_dtype`` (e.g.
    torch.float8_e4m3fn) stores the weights in that dtype with fp32 compute, as ComfyUI's loader does for
    ``weight_dtype`` fp8 (manual cast).
    """
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm

    cfg = copy.deepcopy(config) if config is not None else micro_config(family)
    model_config = getattr(sm, _MODEL_CONFIG_CLASS[family])(cfg)
    if weight_dtype is None:
        model_config.set_inference_dtype(torch.float32, None)
    else:
        model_config.set_inference_dtype(weight_dtype, torch.float32)
    model = model_config.get_model({})
    dm = model.diffusion_model
    deterministic_init_(dm, seed)
    if state_dict is not None:
        sd = {k.removeprefix("model.diffusion_model."): v for k, v in state_dict.items()}
        dm.load_state_dict(sd, strict=True)
    dm.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def _metadata(family: str, config: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, str]:
    info = {"family": family, "config": config}
    if extra:
        info.update(extra)
    return {METADATA_KEY: json.dumps(info)}


def save_micro_model(family: str, path: Path, seed: int = 0,
                     state_dict: dict[str, torch.Tensor] | None = None,
                     extra_metadata: dict[str, Any] | None = None,
                     config: dict[str, Any] | None = None,
                     dtype: torch.dtype = torch.float32) -> Path:
    """Save a micro model (bare diffusion-model keys) with its config in the safetensors metadata."""
    from safetensors.torch import save_file

    cfg = copy.deepcopy(config) if config is not None else micro_config(family)
    if state_dict is None:
        patcher = build_micro_model(family, seed=seed, config=cfg)
        state_dict = patcher.model.diffusion_model.state_dict()
    sd = {k: v.detach().to("cpu", dtype).contiguous() for k, v in state_dict.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(sd, str(tmp), metadata=_metadata(family, cfg, extra_metadata))
    tmp.replace(path)  # atomic: a reader never sees a half-written file
    return path


def read_micro_metadata(path: Path) -> dict[str, Any]:
    """The parsed ``dit_accel_micro`` metadata of a saved micro model."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if METADATA_KEY not in meta:
        raise ValueError(f"{path} has no {METADATA_KEY!r} metadata; not a micro model file")
    return json.loads(meta[METADATA_KEY])


def load_micro_model(path: Path, weight_dtype: torch.dtype | None = None):
    """Load a file written by :func:`save_micro_model` as a ModelPatcher (weights cast to fp32, or stored in
    ``weight_dtype`` with fp32 compute)."""
    from safetensors.torch import load_file

    info = read_micro_metadata(path)
    sd = {k: v.to(torch.float32) for k, v in load_file(str(path)).items()}
    return build_micro_model(info["family"], state_dict=sd, config=info["config"], weight_dtype=weight_dtype)


def save_loader_legal(family: str, path: Path, seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Save a tiny HunyuanVideo(1.5) that UNETLoader detects on its own (no metadata needed).

    Only the HunyuanVideo families are detectable at hidden 128; Flux/Qwen need 3072 wide.
    """
    if family not in ("hunyuan_video", "hunyuan_video15"):
        raise ValueError(f"{family!r} is not detectable at micro size; use save_micro_model")
    from safetensors.torch import save_file

    sd = build_micro_model(family, seed=seed).model.diffusion_model.state_dict()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(dtype).contiguous() for k, v in sd.items()}, str(path))
    return path
