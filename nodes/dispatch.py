"""Kernel dispatch: install Triton kernels into the core's op table when they can run.

Kernels are installed when DITACCEL_KERNELS is not "off", Triton imports and a CUDA device
exists. Each installed op still checks its arguments per call (dtype, device, layout) and hands
anything the kernel does not support to the torch reference. One INFO line names the backend.
Nothing here imports ComfyUI: the decision is plain Python, so tests can drive it directly.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

import torch

from accel_core import ops

try:  # the pack's own `kernels` (a same-named package elsewhere on sys.path must not win)
    from .. import kernels as kernel_pkg
except ImportError:  # imported as a top-level `nodes` package (scripts)
    import kernels as kernel_pkg

log = logging.getLogger("DiTAccel")

REFERENCE = "torch reference"
TRITON = "triton"
TRITON_INTERPRET = "triton (interpreter, tests only)"

# The backend installed now (None until the first install).
STATE: dict[str, str | None] = {"backend": None, "reason": None}


def decide(allow_interpret: bool = False) -> tuple[str, str]:
    """(backend, reason): which implementation the op table should hold, and why.

    Args:
        allow_interpret: tests only; with TRITON_INTERPRET=1 set, install the kernels on the CPU
            (interpreted) so the whole forecast path runs through them.
    """
    if kernel_pkg.forced_off():
        return REFERENCE, "DITACCEL_KERNELS=off"
    if not getattr(kernel_pkg, "DITACCEL_KERNELS", False):
        return REFERENCE, f"'kernels' resolves to another package ({getattr(kernel_pkg, '__file__', '?')})"
    if not kernel_pkg.triton_importable():
        return REFERENCE, "Triton is not installed"
    if allow_interpret and os.environ.get("TRITON_INTERPRET", "") == "1":
        return TRITON_INTERPRET, "TRITON_INTERPRET=1 (test mode)"
    if not torch.cuda.is_available():
        return REFERENCE, "no CUDA device"
    return TRITON, f"CUDA device {torch.cuda.get_device_name()}"


def guarded(name: str, kernel, reference: Callable) -> Callable:
    """The kernel where `kernel.supports(*args)`, else the reference (fp64, CPU tensors, odd layouts)."""
    launcher, supports = kernel.launcher, kernel.supports

    def run(*args):
        if supports(*args):
            return launcher(*args)
        return reference(*args)

    run.__name__ = f"{name}_kernel"
    run.__qualname__ = run.__name__
    return run


def install(allow_interpret: bool = False) -> str:
    """Fill `accel_core.ops.OPS` for this process and log the backend once; returns the backend name."""
    backend, reason = decide(allow_interpret)
    ops.use_references()
    if backend != REFERENCE:
        try:
            table = kernel_pkg.load()
        except Exception as error:  # a broken Triton install must not break the pack
            backend, reason = REFERENCE, f"kernels failed to load ({type(error).__name__}: {error})"
            log.warning("DiT Accel: %s; using the torch reference ops.", reason)
        else:
            ops.install({name: guarded(name, k, ops.REFERENCES[name]) for name, k in table.items()})
    STATE.update(backend=backend, reason=reason)
    log.info("DiT Accel: kernel backend: %s (%s)", backend, reason)
    return backend


def ensure_installed() -> str:
    """Install on first use only (one INFO line per process)."""
    if STATE["backend"] is None:
        return install()
    return STATE["backend"]
