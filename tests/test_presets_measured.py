"""Every shipped per-family preset is the configuration the benchmark measured and chose."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))

from accel_core.config import FAMILY_PRESETS, preset  # noqa: E402
from bench.choose_presets import choose  # noqa: E402


@pytest.mark.parametrize("family", sorted(FAMILY_PRESETS))
def test_family_presets_are_the_measured_choice(family):
    rows = json.loads((REPO / "bench" / "results" / f"methods_{family}_cpu.json").read_text())["rows"]
    picks = choose(rows)
    for name in ("quality", "balanced", "fast"):
        assert preset(name, family).tag() == picks[name]["tag"], (family, name)
    assert not preset("off", family).enabled


def test_unknown_family_falls_back_to_the_generic_presets():
    assert preset("balanced", "some_new_family") == preset("balanced")
