"""Every shipped preset is the schedule the tune-model benchmark chose (never a validation figure)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO))

from accel_core.config import PRESET_SHARES, PRESETS, preset  # noqa: E402
from bench.choose_presets import choose, settings_of  # noqa: E402

TUNE = REPO / "bench" / "results" / "zoo_tune.json"


@pytest.mark.parametrize("name", sorted(PRESET_SHARES))
def test_presets_are_the_choice_measured_on_tune_models(name):
    rows = json.loads(TUNE.read_text())["rows"]
    pick = choose(rows)[name]
    config = PRESETS[name]
    assert config.cache_mode == "output"
    chosen = settings_of(pick["row"])
    assert {key: getattr(config, key) for key in chosen} == chosen


def test_the_tune_table_holds_tune_models_only_and_choose_refuses_others():
    rows = json.loads(TUNE.read_text())["rows"]
    assert rows and {r["role"] for r in rows} == {"tune"}
    with pytest.raises(ValueError, match="tune models only"):
        choose(rows + [{**rows[0], "role": "validate"}])


def test_the_choice_is_by_the_worst_model_not_the_mean():
    """A candidate that wins on average but loses badly on one model is not chosen."""
    def row(model, name, mean, worst):
        return {"model": model, "role": "tune", "scenario": "euler50", "row": name, "psnr_mean": mean,
                "psnr_min": worst}
    reuse = "output reuse every 5"
    steady, risky = "output backtest budget 1/5 w1 f0", "output backtest budget 1/5 w3 f1"
    rows = [row("a", reuse, 30, 28), row("b", reuse, 30, 28),
            row("a", steady, 31, 29), row("b", steady, 31, 29),  # +1 on both
            row("a", risky, 40, 38), row("b", risky, 25, 20)]  # +10 on a, -8 on b: better mean, worse worst
    pick = choose(rows)["balanced"]
    assert pick["row"] == steady and pick["worst"] == 1.0
    assert settings_of(risky) == {"schedule": "budget", "interval": 5, "warmup_steps": 3, "warmup_sigma": 0.0,
                                  "final_full_steps": 1, "horizon_match": 1.5, "blend_bands": 1}
    assert settings_of("output backtest adaptive 1/7 w1s0.03 f0 h0")["warmup_sigma"] == 0.03


def test_off_and_unknown_family():
    assert not preset("off").enabled
    assert preset("balanced", "some_new_family") == preset("balanced")
