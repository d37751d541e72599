"""Triton kernels for DiT Accel's hot paths.

Never imports ComfyUI or `accel_core`. `nodes/dispatch.py` installs them into
`accel_core.ops.OPS` when `available()` says Triton and a CUDA device are usable; each kernel
comes with a `supports(...)` predicate, and calls it rejects (dtype, device, layout) go to the
torch reference. Triton is optional: this package imports without it, `load()` needs it.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Callable, NamedTuple

# Marker checked by the dispatcher: a top-level `kernels` package from another distribution
# (Hugging Face publishes one) could shadow ours on sys.path.
DITACCEL_KERNELS = True

OFF_VALUES = ("off", "0", "false", "reference", "references")


class Kernel(NamedTuple):
    launcher: Callable
    supports: Callable  # same arguments as the launcher -> bool


def forced_off() -> bool:
    """DITACCEL_KERNELS=off (or 0 / false / reference) forces the torch references."""
    return os.environ.get("DITACCEL_KERNELS", "").strip().lower() in OFF_VALUES


def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def available() -> bool:
    """True when Triton imports and a CUDA device exists, unless DITACCEL_KERNELS=off forces the references."""
    if forced_off() or not triton_importable():
        return False
    import torch

    return torch.cuda.is_available()


def load() -> dict[str, Kernel]:
    """op name -> Kernel; names match accel_core.ops.REFERENCES. Imports Triton."""
    from . import forecast, ladder, reduce, tokens

    return {
        "forecast_combine": Kernel(forecast.forecast_combine, forecast.supports_combine),
        "forecast_residual_add": Kernel(forecast.forecast_residual_add, forecast.supports_residual_add),
        "ladder_update": Kernel(ladder.ladder_update, ladder.supports),
        "relative_error": Kernel(reduce.relative_error, reduce.supports),
        "token_gather": Kernel(tokens.token_gather, tokens.supports_gather),
        "token_scatter": Kernel(tokens.token_scatter, tokens.supports_scatter),
        "cluster_propagate": Kernel(tokens.cluster_propagate, tokens.supports_propagate),
    }
