"""FLUX.1-dev and FLUX.1-Kontext-dev (comfy/ldm/flux/model.py: Flux)."""
from __future__ import annotations

from .registry import MODEL_SPECS
from .spec import TXT_IMG, BlockGroup, ModelSpec

FLUX = MODEL_SPECS.register("flux")(
    ModelSpec(
        family="flux",
        host_classes=("Flux",),
        block_groups=(
            BlockGroup("double_block", "double_blocks", "double"),
            BlockGroup("single_block", "single_blocks", "single", TXT_IMG),
        ),
        description="FLUX.1-dev / schnell / Kontext-dev: 19 double + 38 single blocks, txt+img single stream",
        reference_tokens="appended",  # Kontext ref_latents after the target tokens
        blocks_modify_inputs=True,  # DoubleStreamBlock `img +=`, SingleStreamBlock `x +=`
        token_methods=True,
        progressive_resolution=True,
        reads_rope_options=True,  # Flux.process_img
    )
)
