"""What the pack reads off ComfyUI's model and calls, in one place: the family spec, the block sites,
sizes (blocks, hidden size, patch) and the token grid a latent makes.

Every hook module reads these here rather than through another hook module, so the host layer has no
import circles (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import torch

from accel_core import spec_for_class
from accel_core.hidden.decompositions import TokenGrid
from accel_core.models import ModelSpec

from .block_hooks import BlockSite


def detect_spec(model) -> tuple[ModelSpec | None, torch.nn.Module | None, str]:
    """The family spec of a ModelPatcher's diffusion model, plus the model and its class name."""
    diffusion_model = getattr(getattr(model, "model", None), "diffusion_model", None)
    class_name = type(diffusion_model).__name__ if diffusion_model is not None else type(model).__name__
    spec = spec_for_class(class_name) if diffusion_model is not None else None
    return spec, diffusion_model, class_name


def block_count(spec: ModelSpec, diffusion_model) -> int:
    """Transformer blocks of the model (every block group)."""
    return sum(len(getattr(diffusion_model, g.module_attr, []) or []) for g in spec.block_groups)


def block_sites(spec: ModelSpec, diffusion_model) -> list[tuple[object, int, int, BlockSite]]:
    """(block group, index in the group, position in the model, site) of every block, in running order."""
    groups = [(g, len(getattr(diffusion_model, g.module_attr, []) or [])) for g in spec.block_groups]
    order = [(g, i) for g, n in groups for i in range(n)]
    return [(group, index, position, BlockSite(
        kind=group.kind, patch_name=group.patch_name, index=index, token_order=group.token_order,
        is_first=position == 0, is_last=position == len(order) - 1, reference_tokens=spec.reference_tokens,
    )) for position, (group, index) in enumerate(order)]


def hidden_size(diffusion_model) -> int:
    """Width of the model's token features (the attribute, else the image embedding's output size)."""
    for name in ("hidden_size", "inner_dim"):
        value = getattr(diffusion_model, name, None)
        if isinstance(value, int):
            return value
    img_in = getattr(diffusion_model, "img_in", None)
    weight = getattr(img_in, "weight", None)
    if weight is None:
        weight = getattr(getattr(img_in, "proj", None), "weight", None)
    return int(weight.shape[0]) if weight is not None else 3072


def patch_tuple(patch_size) -> tuple[int, ...]:
    """The model's patch size as a tuple (an int is square)."""
    if isinstance(patch_size, int):
        return (patch_size, patch_size)
    return tuple(int(p) for p in patch_size)


def spatial_patch(diffusion_model) -> int:
    """The model's spatial patch (the last axis of its patch size)."""
    patch = getattr(diffusion_model, "patch_size", 2)
    return int(patch if isinstance(patch, int) else tuple(patch)[-1])


def token_grid(x: torch.Tensor, patch_size) -> TokenGrid:
    """(t, h, w) token grid the DiT makes from latent `x` (same rounding as the hosts' process_img)."""
    spatial = list(x.shape[2:])
    if isinstance(patch_size, int):
        patches = [1] * (len(spatial) - 2) + [patch_size, patch_size]
    else:
        patches = list(patch_size)[-len(spatial):]
        patches = [1] * (len(spatial) - len(patches)) + patches
    dims = [(size + p // 2) // p for size, p in zip(spatial, patches)]
    dims = [1] * (3 - len(dims)) + dims
    t = 1
    for d in dims[:-2]:
        t *= d
    return TokenGrid(t, dims[-2], dims[-1])


def target_token_count(x: torch.Tensor, patch_size) -> int:
    """Image tokens the DiT makes from latent `x`."""
    return token_grid(x, patch_size).tokens


def find_transformer_options(args, kwargs) -> dict | None:
    """The transformer_options of a DIFFUSION_MODEL call (keyword, or the positional dict that carries
    sigmas or patches)."""
    found = kwargs.get("transformer_options")
    if isinstance(found, dict):
        return found
    for value in reversed(args):
        if isinstance(value, dict) and ("sigmas" in value or "patches_replace" in value):
            return value
    return None


def sampler_name(sampler) -> str | None:
    """k-diffusion name of a KSAMPLER's function ("euler" for sample_euler), None when unknown."""
    fn = getattr(sampler, "sampler_function", None)
    fn = getattr(fn, "func", fn)  # functools.partial
    name = getattr(fn, "__name__", "")
    return name[len("sample_"):] if name.startswith("sample_") else None
