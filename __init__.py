"""DiT Accel: ComfyUI nodes that make diffusion transformers several times faster.

ComfyUI loads this folder as a custom node pack through the V3 `comfy_entrypoint`.
Outside ComfyUI (pytest, scripts) importing it does nothing.
"""
from __future__ import annotations

import os
import sys

WEB_DIRECTORY = "./web"

_HERE = os.path.dirname(os.path.abspath(__file__))


def _inside_comfyui() -> bool:
    return "comfy_api" in sys.modules or "comfy.model_patcher" in sys.modules


if _inside_comfyui():
    # `accel_core` is imported by absolute name (as under pytest); ComfyUI imports this folder
    # under a path-derived name, so make the pack root importable. Appended, never prepended:
    # our `nodes/` package must not shadow ComfyUI's `nodes` module.
    if _HERE not in sys.path:
        sys.path.append(_HERE)
    from .nodes import comfy_entrypoint  # noqa: E402

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
