"""HunyuanVideo 1.0 (comfy/ldm/hunyuan_video/model.py: HunyuanVideo) and 1.5 (same class, other config)."""
from __future__ import annotations

from .registry import MODEL_SPECS
from .spec import IMG_TXT, BlockGroup, ModelSpec

HUNYUAN_VIDEO = MODEL_SPECS.register("hunyuan_video")(
    ModelSpec(
        family="hunyuan_video",
        host_classes=("HunyuanVideo",),
        block_groups=(
            BlockGroup("double_block", "double_blocks", "double", IMG_TXT),  # flipped: img first in attention
            BlockGroup("single_block", "single_blocks", "single", IMG_TXT),
        ),
        description="HunyuanVideo 1.0 (20 double + 40 single) and 1.5 (double blocks): img+txt single stream",
        reference_tokens="none",
        blocks_modify_inputs=True,
        token_methods=True,
        progressive_resolution=True,
        reads_rope_options=False,
    )
)
