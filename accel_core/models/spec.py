"""Model specs as data: block groups, token order and reference segments of each DiT family.

The adapter matches a host diffusion model by class name and reads block counts from it; the
core never sees the host objects.
"""
from __future__ import annotations

from dataclasses import dataclass

# Token order of the concatenated stream in single-stream blocks.
TXT_IMG = "txt_img"  # Flux: torch.cat((txt, img), 1)
IMG_TXT = "img_txt"  # HunyuanVideo: torch.cat((img, txt), 1)


@dataclass(frozen=True)
class BlockGroup:
    """One list of transformer blocks.

    Attributes:
        patch_name: key in patches_replace["dit"], "double_block" or "single_block".
        module_attr: attribute of the host diffusion model holding the ModuleList.
        kind: "double" (separate img/txt streams) or "single" (one concatenated stream).
        token_order: for single blocks, the order of the concatenation.
    """

    patch_name: str
    module_attr: str
    kind: str
    token_order: str = TXT_IMG


@dataclass(frozen=True)
class ModelSpec:
    """One DiT family.

    Attributes:
        family: registry name.
        host_classes: class names of the host diffusion model (ComfyUI's ldm classes).
        block_groups: in execution order.
        reference_tokens: how reference-image tokens (Kontext / Qwen-Image-Edit) are laid out:
            appended after the target image tokens in the image stream. They are dropped after the
            last block, so the final-hidden cache never forecasts them; the per-block cache reuses
            them (they are nearly static) instead of forecasting.
        blocks_modify_inputs: True when host blocks update img/txt in place (clone before keeping).
    """

    family: str
    host_classes: tuple[str, ...]
    block_groups: tuple[BlockGroup, ...]
    description: str
    reference_tokens: str = "none"
    blocks_modify_inputs: bool = True
