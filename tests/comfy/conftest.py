"""In-process real ComfyUI (CPU, private base dir) with the pack loaded through its entrypoint."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def comfy_nodes():
    from scripts.harness.comfy_env import bootstrap, load_custom_nodes

    bootstrap()
    load_custom_nodes()
    import nodes

    return nodes


@pytest.fixture(scope="session")
def micro(comfy_nodes):
    """Micro models of every family, built once (deterministic random weights)."""
    from scripts.harness.micro_models import build_micro_model

    return {family: build_micro_model(family, seed=0) for family in
            ("flux", "qwen_image", "hunyuan_video", "hunyuan_video15")}
