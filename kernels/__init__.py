"""Triton kernels for DiT Accel's hot paths (filled in by the kernels milestone).

Never imports ComfyUI or `accel_core`; `nodes/` installs kernels from `OPS` into
`accel_core.ops.OPS` when `available()` says Triton and a CUDA device are usable.
"""
from __future__ import annotations

import importlib.util
import os

# op name -> launcher; names match accel_core.ops.REFERENCES one to one.
OPS: dict = {}


def available() -> bool:
    """True when Triton imports and a CUDA device exists, unless DITACCEL_KERNELS=off forces the references."""
    if os.environ.get("DITACCEL_KERNELS", "").lower() in ("off", "0", "false", "reference"):
        return False
    if importlib.util.find_spec("triton") is None:
        return False
    import torch

    return torch.cuda.is_available()
