"""Qwen-Image and Qwen-Image-Edit (comfy/ldm/qwen_image/model.py: QwenImageTransformer2DModel)."""
from __future__ import annotations

from .registry import MODEL_SPECS
from .spec import BlockGroup, ModelSpec

QWEN_IMAGE = MODEL_SPECS.register("qwen_image")(
    ModelSpec(
        family="qwen_image",
        host_classes=("QwenImageTransformer2DModel",),
        block_groups=(BlockGroup("double_block", "transformer_blocks", "double"),),
        description="Qwen-Image / Qwen-Image-Edit: 60 MMDiT double blocks, no single blocks",
        reference_tokens="appended",  # edit reference latents after the target tokens
        blocks_modify_inputs=False,
        token_methods=True,
        progressive_resolution=True,
        reads_rope_options=False,
    )
)
