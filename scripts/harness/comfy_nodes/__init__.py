"""Test-only ComfyUI nodes for the DiT Accel harness (not part of the pack; never shipped).

Loaded by symlinking this folder into ``<base>/custom_nodes``. Ids start with ``DiTAccelDev`` so
they can never collide with the pack's or ComfyUI's own nodes.
"""
from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import torch

# The folder is loaded through a symlink from custom_nodes; resolve() finds the repo root.
_REPO_ROOT = Path(__file__).resolve().parents[3]
if str(_REPO_ROOT) not in sys.path:
    sys.path.append(str(_REPO_ROOT))

import folder_paths  # noqa: E402

from scripts.harness import shapes_data  # noqa: E402
from scripts.harness.micro_models import load_micro_model  # noqa: E402

log = logging.getLogger(__name__)

MICRO_PREFIXES = ("dit_accel_micro", "micro_", "dit_accel_zoo_")


def micro_model_files() -> list[str]:
    return sorted(f for f in folder_paths.get_filename_list("diffusion_models")
                  if Path(f).name.startswith(MICRO_PREFIXES))


def tensor_stats(t: torch.Tensor) -> dict:
    """Shape, mean, std, finiteness and sha256 of the float32 bytes (bit-exact comparisons)."""
    f = t.detach().to("cpu", torch.float32).contiguous()
    return {
        "shape": list(f.shape),
        "mean": float(f.mean()) if f.numel() else 0.0,
        "std": float(f.std()) if f.numel() > 1 else 0.0,
        "finite": bool(torch.isfinite(f).all()),
        "sha256": hashlib.sha256(f.numpy().tobytes()).hexdigest(),
    }


class DiTAccelDevMicroLoader:
    """Loads a micro DiT (config in the safetensors metadata) from diffusion_models."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet_name": (micro_model_files(),)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "DiT Accel/dev"

    def load(self, unet_name):
        return (load_micro_model(Path(folder_paths.get_full_path_or_raise("diffusion_models", unet_name))),)


class DiTAccelDevShapesDecode:
    """Decodes a latent with the shapes data's fixed linear decoder (the trained micro FLUX's 'VAE')."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"
    CATEGORY = "DiT Accel/dev"

    def decode(self, samples):
        return (shapes_data.decode(samples["samples"]),)


class DiTAccelDevStats:
    """Returns latent statistics to the client through the node's ``ui`` output."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    RETURN_TYPES = ()
    FUNCTION = "stats"
    OUTPUT_NODE = True
    CATEGORY = "DiT Accel/dev"

    def stats(self, samples):
        return {"ui": {"dit_accel_stats": [tensor_stats(samples["samples"])]}}


NODE_CLASS_MAPPINGS = {
    "DiTAccelDevMicroLoader": DiTAccelDevMicroLoader,
    "DiTAccelDevShapesDecode": DiTAccelDevShapesDecode,
    "DiTAccelDevStats": DiTAccelDevStats,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DiTAccelDevMicroLoader": "DiT Accel (dev) Micro Loader",
    "DiTAccelDevShapesDecode": "DiT Accel (dev) Shapes Decode",
    "DiTAccelDevStats": "DiT Accel (dev) Latent Stats",
}
