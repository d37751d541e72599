"""HyCa in the real ComfyUI: trajectory recording, calibration to a profile, and sampling with it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import LATENTS, adapter_module, conditioning, recent_runs, sample

from accel_core import ForecastCacheConfig, plan_full_steps
from accel_core.learned.hyca_calibrate import calibrate
from accel_core.learned.hyca_profile import SOLVERS, HyCaProfile, load_profile, save_profile
from scripts.calibrate_hyca import file_digest, record_run, to_trajectory
from scripts.harness.assets import TRAINED_MODELS

STEPS = 8
SCHEDULE = dict(interval=3, warmup_steps=2, final_full_steps=1)
TOKENS = {"flux": 64, "qwen_image": 64, "hunyuan_video": 128}  # 16x16 latent, patch 2 (video: 2 frames)
ASSETS = Path(__file__).resolve().parents[1] / "assets"
HEADER = {"fingerprint": "sha256:test", "steps": STEPS, "sampler": "euler", "scheduler": "simple",
          "sigmas": [1.0, 0.0], "budget": {}, "validation": {}}


@pytest.mark.parametrize("family", sorted(TOKENS))
def test_recording_leaves_the_run_unchanged_and_keeps_one_residual_per_step(micro, family):
    model, latent = micro[family], torch.zeros(LATENTS[family])
    pos, neg = conditioning(1), conditioning(2)
    plain = sample(model, latent, pos, neg, cfg=1.0, steps=STEPS, seed=7)
    run = record_run(model, pos, neg, 7, STEPS, "euler", "simple", latent)
    assert torch.equal(run["samples"], plain)
    assert run["values"].shape == (STEPS, 1, TOKENS[family], 128) and run["family"] == family
    assert run["sigmas"] == sorted(run["sigmas"], reverse=True) and run["sigmas"][0] == run["sample_sigmas"][0]
    assert torch.isfinite(run["values"]).all() and run["values"].abs().amax() > 0


def test_token_subset_keeps_the_same_tokens_at_every_step(micro):
    args = (conditioning(1), conditioning(2), 3, 4, "euler", "simple", torch.zeros(LATENTS["flux"]))
    subset = record_run(micro["flux"], *args, max_tokens=16)
    full = record_run(micro["flux"], *args)
    assert subset["values"].shape[2] == 16 and full["tokens"] is None
    torch.testing.assert_close(subset["values"], full["values"][:, :, subset["tokens"]], rtol=0, atol=0)


def test_calibrated_profile_drives_a_real_run(micro, tmp_path, monkeypatch):
    model, latent = micro["flux"], torch.zeros(LATENTS["flux"])
    pos, neg = conditioning(1), conditioning(2)
    config = ForecastCacheConfig(method="taylorseer", **SCHEDULE)
    runs = [record_run(model, pos, neg, seed, STEPS, "euler", "simple", latent) for seed in (1, 2)]
    plan = plan_full_steps(runs[0]["sample_sigmas"], config)
    result = calibrate([to_trajectory(r, config.time_axis) for r in runs], plan, config, clusters=3)
    path = save_profile(tmp_path / "hyca.safetensors", result.to_profile("flux", HEADER))
    profile = load_profile(path, tmp_path)
    monkeypatch.setenv("DIT_ACCEL_PROFILE_DIRS", str(tmp_path))  # Forecast Cache reads registered folders only
    assert profile.hidden_size == 128 and profile.family == "flux"

    adapter = adapter_module()
    out = sample(adapter.apply_forecast_cache(model, config.replace(method="hyca", hyca_profile=str(path))),
                 latent, pos, neg, steps=STEPS)
    stats = recent_runs()[-1]
    assert stats["forecast_calls"] == plan.count(False) and torch.isfinite(out).all()


def test_single_solver_profile_is_bit_identical_to_that_method_in_comfy(micro, tmp_path, monkeypatch):
    """Gather/scatter through the real adapter changes nothing when every channel uses FoCa."""
    model, latent = micro["flux"], torch.zeros(LATENTS["flux"])
    pos, neg = conditioning(1), conditioning(2)
    solvers = tuple(SOLVERS)
    foca_only = HyCaProfile(solver_index=torch.full((128,), solvers.index("foca")), solvers=solvers, family="flux",
                            info=HEADER)
    path = save_profile(tmp_path / "foca.safetensors", foca_only)
    monkeypatch.setenv("DIT_ACCEL_PROFILE_DIRS", str(tmp_path))
    config = ForecastCacheConfig(method="foca", order=1, **SCHEDULE)
    adapter = adapter_module()
    expected = sample(adapter.apply_forecast_cache(model, config), latent, pos, neg, cfg=2.0, steps=STEPS)
    got = sample(adapter.apply_forecast_cache(model, config.replace(method="hyca", hyca_profile=str(path))),
                 latent, pos, neg, cfg=2.0, steps=STEPS)
    assert recent_runs()[-1]["forecast_calls"] > 0
    assert torch.equal(got, expected)


@pytest.mark.parametrize("family", ["flux", "qwen_image", "hunyuan_video"])
def test_shipped_profiles_match_their_micro_models(family):
    from scripts.harness.micro_models import micro_config

    cfg = micro_config(family)
    hidden = cfg.get("hidden_size") or cfg["num_attention_heads"] * cfg["attention_head_dim"]
    profile = load_profile(ASSETS / f"hyca_micro_{family}.safetensors", ASSETS)  # old format: still read
    profile.check_compatible(family, hidden)
    assert profile.info["schedule"]["time_axis"] in ("sigma", "step") and profile.info["steps"] > 0
    assert set(profile.info["solver_errors"]) == set(profile.solvers)
    assert profile.info["holdout"]["folds"] == profile.info["calibration_trajectories"]
    # A profile is calibrated on given weights: retrained weights need a new one.
    weights = TRAINED_MODELS[family][0]
    assert profile.info["model_sha256"] == file_digest(weights), (
        f"{ASSETS / f'hyca_micro_{family}.safetensors'} was calibrated on other weights than {weights.name}; "
        f"rerun `.venv/bin/python scripts/calibrate_hyca.py --family {family} --intervals 4 6 7 8 12`")
