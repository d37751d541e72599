"""Shared pytest setup: the repo root on sys.path (for `scripts.*`), and the `server` marker."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    # Appended: the pack's `nodes/` package must never shadow ComfyUI's `nodes` module.
    sys.path.append(str(REPO))


def pytest_configure(config):
    config.addinivalue_line("markers", "server: starts a real ComfyUI server (about 30 s); runs by default, "
                                       "deselect with -m 'not server'")


@pytest.fixture(scope="session")
def comfy():
    """In-process ComfyUI (CPU, private base dir) plus the harness assets; built once per session.

    Attributes: ``base`` (base dir) and ``assets`` (name -> path, see scripts.harness.assets).
    """
    from scripts.harness import comfy_env
    from scripts.harness.assets import ensure_assets

    base = comfy_env.bootstrap()
    return SimpleNamespace(base=base, assets=ensure_assets(base))
