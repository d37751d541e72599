"""Step location, schedules, configs and registries."""
from __future__ import annotations

import pytest

from accel_core.hidden.decompositions import DECOMPOSITIONS
from accel_core import (FORECASTERS, MODEL_SPECS, ConfigError, ForecastCacheConfig, StepTracker, UnknownNameError,
                        locate_step, plan_full_steps, preset, spec_for_class)

SIGMAS = [1.0, 0.9, 0.75, 0.5, 0.0]


def test_locate_step_on_schedule_entries_and_between_them():
    assert [locate_step(s, SIGMAS)[0] for s in SIGMAS[:-1]] == [0, 1, 2, 3]
    step, step_time = locate_step(0.825, SIGMAS)  # dpm_2 midpoint inside step 1
    assert step == 1 and step_time == pytest.approx(1.5)
    assert locate_step(0.2, SIGMAS) == (3, pytest.approx(3.6))


def test_tracker_counts_calls_for_heun_type_samplers():
    tracker = StepTracker(SIGMAS)
    # heun: predictor at sigma_i, corrector at sigma_{i+1} (last step has no corrector)
    calls = [1.0, 0.9, 0.9, 0.75, 0.75, 0.5, 0.5]
    infos = [tracker.locate(s) for s in calls]
    assert [i.step for i in infos] == [0, 1, 1, 2, 2, 3, 3]
    assert [i.call_index for i in infos] == list(range(7))
    assert all(i.total_steps == 4 for i in infos)


def test_taylorseer_schedule_reproduced():
    sigmas = [1.0 - i / 50 for i in range(51)]
    config = ForecastCacheConfig(interval=6, warmup_steps=3, final_full_steps=0)
    plan = plan_full_steps(sigmas, config)
    assert [i for i, full in enumerate(plan) if full] == [0, 1, 2, 8, 14, 20, 26, 32, 38, 44]


def test_schedule_window_final_steps_and_interval_one():
    sigmas = [1.0 - i / 20 for i in range(21)]
    plan = plan_full_steps(sigmas, ForecastCacheConfig(interval=4, warmup_steps=2, final_full_steps=2),
                           start_sigma=0.8, end_sigma=0.3)
    full = [i for i, f in enumerate(plan) if f]
    assert full[:5] == [0, 1, 2, 3, 7]  # warm-up, then sigma above 0.8 (steps 0-3), then every 4
    assert all(plan[i] for i in range(15, 20))  # sigma below 0.3 and the final steps
    assert not plan[4] and not plan[8] and plan[11]
    assert all(plan_full_steps(sigmas, ForecastCacheConfig(interval=1)))
    assert all(plan_full_steps(sigmas, preset("off")))


@pytest.mark.parametrize("field,value,needle", [
    ("interval", 0, "interval must be between 1 and 20 (got 0)"),
    ("order", 7, "order must be between 0 and 3 (got 7)"),
    ("warmup_steps", 0, "warmup_steps must be between 1"),
    ("cache_mode", "blocks", "cache_mode must be one of output, final_hidden, per_block (got 'blocks')"),
    ("hermite_scale", 2.0, "hermite_scale must be between"),
])
def test_config_errors_name_input_value_range_and_fix(field, value, needle):
    with pytest.raises(ConfigError) as err:
        ForecastCacheConfig(**{field: value})
    assert needle in str(err.value)
    assert str(err.value).rstrip().endswith(".")


def test_config_rejects_inverted_window_and_unknown_names():
    with pytest.raises(ConfigError, match="start_percent"):
        ForecastCacheConfig(start_percent=0.6, end_percent=0.5)
    with pytest.raises(UnknownNameError, match="Available: foca, hicache, hyca, reuse, taylorseer"):
        ForecastCacheConfig(method="taylorsear")
    with pytest.raises(UnknownNameError, match="quality"):
        preset("ultra")


def test_registries_and_specs():
    assert FORECASTERS.names() == ["foca", "hicache", "hyca", "reuse", "taylorseer"]
    assert DECOMPOSITIONS.names() == ["freq", "none", "svd"]
    assert MODEL_SPECS.names() == ["flux", "hunyuan_video", "qwen_image"]
    assert spec_for_class("Flux").family == "flux"
    assert spec_for_class("QwenImageTransformer2DModel").block_groups[0].module_attr == "transformer_blocks"
    hv = spec_for_class("HunyuanVideo")
    assert hv.block_groups[1].token_order == "img_txt"
    assert spec_for_class("WanModel") is None
    assert preset("balanced").tag() == "output-backtest-1/5-w1-f0-budget"
    assert ForecastCacheConfig(method="taylorseer", order=2, interval=5).tag() == "taylorseer-o2-i5-w3-f1-final_hidden"
