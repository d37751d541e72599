"""Every shipped preset is the schedule the tune-model benchmark chose (never a validation figure)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))

from accel_core.config import PRESET_SHARES, PRESETS, preset  # noqa: E402
from bench.choose_presets import choose  # noqa: E402

TUNE = REPO / "bench" / "results" / "zoo_tune.json"


@pytest.mark.parametrize("name", sorted(PRESET_SHARES))
def test_presets_are_the_choice_measured_on_tune_models(name):
    rows = json.loads(TUNE.read_text())["rows"]
    pick = choose(rows)[name]
    config = PRESETS[name]
    assert config.cache_mode == "output"
    assert (config.interval, config.warmup_steps, config.final_full_steps, config.schedule) == (
        pick["interval"], pick["warmup"], pick["final"], pick["schedule"])


def test_the_tune_table_holds_tune_models_only_and_choose_refuses_others():
    rows = json.loads(TUNE.read_text())["rows"]
    assert rows and {r["role"] for r in rows} == {"tune"}
    with pytest.raises(ValueError, match="tune models only"):
        choose(rows + [{**rows[0], "role": "validate"}])


def test_off_and_unknown_family():
    assert not preset("off").enabled
    assert preset("balanced", "some_new_family") == preset("balanced")
