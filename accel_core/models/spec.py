"""Model specs as data: block groups, token order and reference segments of each DiT family.

The adapter matches a host diffusion model by class name and reads block counts from it; the
core never sees the host objects.
"""
from __future__ import annotations

from dataclasses import dataclass

# Token order of a block's joint attention sequence (single-stream blocks: also of the concatenated stream).
TXT_IMG = "txt_img"  # Flux, Qwen-Image: torch.cat((txt, img), 1)
IMG_TXT = "img_txt"  # HunyuanVideo: torch.cat((img, txt), 1) (its double blocks are flipped too)


@dataclass(frozen=True)
class BlockGroup:
    """One list of transformer blocks.

    Attributes:
        patch_name: key in patches_replace["dit"], "double_block" or "single_block".
        module_attr: attribute of the host diffusion model holding the ModuleList.
        kind: "double" (separate img/txt streams) or "single" (one concatenated stream).
        token_order: which tokens come first in the block's joint attention sequence, the text's
            (TXT_IMG) or the image's (IMG_TXT); for single blocks also the order of the stream.
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
        token_methods: token methods (partial calls on a token subset) may run on this family: its
            blocks are per token outside attention, and its position embedding has one row per joint
            token (nodes/token_anatomy.py checks both on the real blocks at the first full call).
        progressive_resolution: Progressive Resolution may stage this family (a coarse token grid
            runs through the same blocks).
        reads_rope_options: the host builds its image positions from
            transformer_options["rope_options"] (scale / shift per axis), so Progressive Resolution
            can give coarse tokens the full-resolution positions they cover.
    """

    family: str
    host_classes: tuple[str, ...]
    block_groups: tuple[BlockGroup, ...]
    description: str
    reference_tokens: str = "none"
    blocks_modify_inputs: bool = True
    token_methods: bool = False
    progressive_resolution: bool = False
    reads_rope_options: bool = False
