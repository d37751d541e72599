"""Calibrate Forecasts and Learned Forecast Profile in the real ComfyUI: recording leaves the
image bit-identical, the profile appears in models/dit_accel with the right header, Forecast Cache then
forecasts with it, and bad names / other models / other cache modes are refused with clear errors."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from helpers import LATENTS, conditioning, recent_runs, sample

from accel_core import ConfigError
from accel_core.errors import ProfileMismatchError
from accel_core.learned import L2PTable, load_l2p, model_fingerprint, save_l2p
from accel_core.learned.calibrate import L2PFit, fit_steps
from accel_core.learned.profile import profile_method

STEPS = 12
RUNS = 3


def node(name: str):
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name]


def calibrate_module():
    """The pack's Calibrate Forecasts recorder (nodes/calibrate_recorder.py): its recorded runs and reports."""
    found = [m for name, m in list(sys.modules.items())
             if name.endswith("nodes.calibrate_recorder") and "dit_accel" in name and hasattr(m, "RECORDERS")]
    assert len(found) == 1, f"expected the pack's calibrate_recorder loaded once, found {len(found)}"
    return found[0]


@pytest.fixture
def profile_dir(comfy_nodes, tmp_path, monkeypatch):
    """models/dit_accel pointed at an empty temporary folder; no recorded runs."""
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "dit_accel", ([str(tmp_path)], {".safetensors"}))
    folder_paths.filename_list_cache.pop("dit_accel", None)  # ComfyUI caches folder listings
    mod = calibrate_module()
    mod.clear_recorders()
    mod.REPORTS.clear()
    yield tmp_path
    mod.clear_recorders()
    folder_paths.filename_list_cache.pop("dit_accel", None)  # the temporary listing must not outlive the test


# Plain-CFG runs fitted as two series (L2PFit.cfg_layout; "guided" was chosen on the tune models).
SPLIT_FIT = L2PFit(cfg_layout="split")


def calibrate(model, name: str, runs_needed: int = RUNS, max_runs: int = 8, budget: str = "balanced",
              method: str = "l2p", l2p_fit: L2PFit | None = None):
    patched = node("DiTAccelCalibrate").execute(model, name, budget, runs_needed, max_runs, method)[0]
    if l2p_fit is not None:  # a bench / test knob, not a node input: the field of the node's settings
        patched.model_options["transformer_options"][calibrate_module().CALIBRATE_KEY]["l2p_fit"] = l2p_fit
    return patched


def forecast(model, learned, cache_mode: str = "preset"):
    return node("DiTAccelForecastCache").execute(model, "balanced", "preset", cache_mode, 0, -1, -1, -1, 0.0, 1.0,
                                                 learned=learned)[0]


def _synthetic_profile(folder: Path, name: str, family: str, fingerprint: str) -> Path:
    table = L2PTable(coef=torch.zeros(1, 1), time=torch.tensor([0.5]), sigma=torch.tensor([0.5]),
                     since_full=torch.tensor([1], dtype=torch.int32), steps=STEPS,
                     plan=[i != STEPS // 2 for i in range(STEPS)])
    header = {"family": family, "fingerprint": fingerprint, "sampler": "euler", "scheduler": "simple",
              "sigmas": [1.0 - i / STEPS for i in range(STEPS + 1)], "budget": {"preset": "balanced"},
              "validation": {}}
    return save_l2p(folder / name, table, header)


def test_recording_is_bit_identical_and_fits_a_profile_forecast_cache_uses(micro, profile_dir, monkeypatch):
    import comfy.utils

    model, latent = micro["flux"], torch.zeros(LATENTS["flux"])
    pos, neg = conditioning(1), conditioning(2)
    progress: list[tuple[int, int]] = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None:
                        progress.append((value, total)))
    recording = calibrate(model, "micro flux_l2p", l2p_fit=SPLIT_FIT)
    mod = calibrate_module()
    for seed in range(RUNS):
        plain = sample(model, latent, pos, neg, cfg=2.0, steps=STEPS, seed=10 + seed)
        recorded = sample(recording, latent, pos, neg, cfg=2.0, steps=STEPS, seed=10 + seed)
        assert torch.equal(recorded, plain), f"run {seed}: recording changed the image"
    assert [r["status"] for r in mod.REPORTS] == ["recording", "recording", "saved"]
    assert "held-back error" in mod.REPORTS[-1]["message"]
    assert (fit_steps("split"), fit_steps("split")) in progress  # cfg 2: two series; the bar reached its end

    path = profile_dir / "micro flux_l2p.safetensors"
    assert path.is_file() and [p.name for p in profile_dir.iterdir()] == [path.name]
    profile = load_l2p(path, root=profile_dir)
    h = profile.header
    assert h["family"] == "flux" and h["method"] == "l2p" and h["steps"] == STEPS
    assert h["fingerprint"] == model_fingerprint(model.model.diffusion_model.state_dict())
    assert h["sampler"] == "euler" and h["scheduler"] == "simple"
    assert h["budget"]["preset"] == "balanced" and h["budget"]["share"] == "1/5"
    assert h["validation"]["held_back_trajectories"] == 1 and h["validation"]["fit_trajectories"] == RUNS - 1
    assert 0 < h["validation"]["l2p_rel_error"] < h["validation"]["reuse_rel_error"]
    assert h["calibration"]["trajectories"] == RUNS
    assert h["layout"] == "split" and h["cfg"] == 2.0 and profile.guidance is not None

    assert profiles_module().learned_profiles() == [path.name]
    learned = node("DiTAccelLearnedProfile").execute(path.name)[0]
    out = sample(forecast(model, learned), latent, pos, neg, cfg=2.0, steps=STEPS, seed=99)
    stats = recent_runs()[-1]
    assert stats["learned_forecasts"] > 0 and stats["learned_outside"] == "", stats
    assert torch.isfinite(out).all()


def test_lesa_from_the_gui_path_is_saved_and_used(micro, profile_dir):
    """method lesa: the same recording, a LESA profile (L2P table + stage experts) that Forecast Cache uses."""
    from accel_core.learned.lesa import load_lesa

    model, latent = micro["flux"], torch.zeros(LATENTS["flux"])
    pos, neg = conditioning(1), conditioning(2)
    recording = calibrate(model, "micro_lesa", runs_needed=4, method="lesa")
    for seed in range(4):
        plain = sample(model, latent, pos, neg, steps=STEPS, seed=20 + seed)
        assert torch.equal(sample(recording, latent, pos, neg, steps=STEPS, seed=20 + seed), plain)
    mod = calibrate_module()
    assert mod.REPORTS[-1]["status"] == "saved" and "LESA" in mod.REPORTS[-1]["message"]
    path = profile_dir / "micro_lesa.safetensors"
    profile = load_lesa(path, root=profile_dir)
    assert profile.header["method"] == "lesa" and profile.model is not None
    v = profile.header["validation"]
    assert {"lesa_state_error", "l2p_state_error", "reuse_state_error"} <= set(v)
    assert path.name in profiles_module().learned_profiles()
    learned = node("DiTAccelLearnedProfile").execute(path.name)[0]
    out = sample(forecast(model, learned), latent, pos, neg, steps=STEPS, seed=99)
    stats = recent_runs()[-1]
    assert torch.isfinite(out).all() and stats["learned_forecasts"] > 0 and stats["learned_outside"] == "", stats
    with pytest.raises(ConfigError, match="method"):
        calibrate(model, "x", method="taylor")


def test_runs_of_another_schedule_do_not_mix_and_memory_is_bounded(micro, profile_dir):
    model, latent = micro["flux"], torch.zeros(LATENTS["flux"])
    pos, neg = conditioning(1), conditioning(2)
    recording = calibrate(model, "mixed", runs_needed=2, max_runs=2)
    sample(recording, latent, pos, neg, steps=6, seed=1)
    sample(recording, latent, pos, neg, steps=8, seed=2)  # another step count: its own group
    mod = calibrate_module()
    assert [r["status"] for r in mod.REPORTS] == ["recording", "recording"]
    assert not list(profile_dir.iterdir())
    sample(recording, latent, pos, neg, steps=8, seed=3)  # the 6-step run is dropped (max_runs 2)
    runs = mod.RECORDERS["mixed"].runs
    assert len(runs) == 2 and all(r.trajectory.steps == 8 for r in runs)
    assert mod.REPORTS[-1]["status"] == "saved" and (profile_dir / "mixed.safetensors").is_file()
    # Only the slopes are kept: one latent-sized float32 tensor per step.
    assert runs[-1].trajectory.slope.shape == (8, *LATENTS["flux"]) and runs[-1].trajectory.slope.dtype == torch.float32


def test_multi_call_samplers_are_not_recorded(micro, profile_dir):
    model, latent = micro["flux"], torch.zeros(LATENTS["flux"])
    pos, neg = conditioning(1), conditioning(2)
    plain = sample(model, latent, pos, neg, steps=4, sampler="heun")
    got = sample(calibrate(model, "heun_try", runs_needed=2), latent, pos, neg, steps=4, sampler="heun")
    assert torch.equal(got, plain)
    mod = calibrate_module()
    assert mod.REPORTS[-1]["status"] == "skipped" and "one-call-per-step" in mod.REPORTS[-1]["message"]
    assert "heun_try" not in mod.RECORDERS or not mod.RECORDERS["heun_try"].runs


def test_forecast_cache_on_the_calibrated_path_is_not_recorded(micro, profile_dir):
    model, latent = micro["flux"], torch.zeros(LATENTS["flux"])
    cached = forecast(calibrate(model, "cached_path", runs_needed=2), None)
    sample(cached, latent, conditioning(1), conditioning(2), steps=8)
    mod = calibrate_module()
    assert not mod.REPORTS and ("cached_path" not in mod.RECORDERS or not mod.RECORDERS["cached_path"].runs)


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\\b", "..", "", "x..y", "/abs"])
def test_profile_names_with_paths_are_refused(micro, profile_dir, name):
    with pytest.raises(ConfigError, match="profile_name") as err:
        calibrate(micro["flux"], name)
    assert "no path separators" in str(err.value) and repr(name) in str(err.value)
    assert not list(profile_dir.iterdir())


def test_bad_run_counts_and_non_l2p_files_are_refused(micro, profile_dir):
    with pytest.raises(ConfigError, match=r"max_runs \(3\) is below runs_needed \(4\)"):
        calibrate(micro["flux"], "ok", runs_needed=4, max_runs=3)
    with pytest.raises(ConfigError, match="runs_needed is 1"):
        calibrate(micro["flux"], "ok", runs_needed=1)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(profile_dir / "other.safetensors"))
    with pytest.raises(ConfigError, match="not a profile this node makes"):
        calibrate(micro["flux"], "other")
    import shutil

    old_hyca = Path(__file__).resolve().parents[1] / "assets" / "hyca_micro_flux.safetensors"
    shutil.copy(old_hyca, profile_dir / "old_hyca.safetensors")
    with pytest.raises(ConfigError, match="old-format HyCa profile"):  # never overwritten by a new fit
        calibrate(micro["flux"], "old_hyca", method="hyca")
    folder_paths_cache_clear()
    assert profiles_module().hyca_profiles() == ["old_hyca.safetensors"]
    (profile_dir / "old_hyca.safetensors").unlink()
    folder_paths_cache_clear()
    assert profiles_module().learned_profiles() == []
    with pytest.raises(ConfigError, match="not an L2P profile"):
        node("DiTAccelLearnedProfile").execute("other.safetensors")
    with pytest.raises(ConfigError, match="not in models/dit_accel"):
        node("DiTAccelLearnedProfile").execute("missing.safetensors")


def test_profile_of_another_family_or_weights_is_refused(micro, profile_dir):
    model = micro["flux"]
    fingerprint = model_fingerprint(model.model.diffusion_model.state_dict())
    _synthetic_profile(profile_dir, "qwen.safetensors", "qwen_image", fingerprint)
    _synthetic_profile(profile_dir, "retrained.safetensors", "flux", "sha256:000000000000000000000000")
    _synthetic_profile(profile_dir, "same.safetensors", "flux", fingerprint)
    assert profiles_module().learned_profiles() == ["qwen.safetensors", "retrained.safetensors", "same.safetensors"]
    learned = node("DiTAccelLearnedProfile")
    with pytest.raises(ProfileMismatchError, match="model family 'qwen_image', but the model is 'flux'") as err:
        forecast(model, learned.execute("qwen.safetensors")[0])
    assert "Calibrate Forecasts" in str(err.value)
    with pytest.raises(ProfileMismatchError, match="other model weights"):
        forecast(model, learned.execute("retrained.safetensors")[0])
    forecast(model, learned.execute("same.safetensors")[0])  # the matching profile is accepted


def test_learned_profile_needs_the_output_cache(micro, profile_dir):
    model = micro["flux"]
    fingerprint = model_fingerprint(model.model.diffusion_model.state_dict())
    _synthetic_profile(profile_dir, "same.safetensors", "flux", fingerprint)
    learned = node("DiTAccelLearnedProfile").execute("same.safetensors")[0]
    with pytest.raises(ConfigError, match="'learned'.*'final_hidden'.*cache_mode to 'output'"):
        forecast(model, learned, cache_mode="final_hidden")


def _calibrated(model, latent, pos, neg, name: str, cfg: float, l2p_fit: L2PFit | None = None) -> str:
    recording = calibrate(model, name, l2p_fit=l2p_fit)
    for seed in range(RUNS):
        sample(recording, latent, pos, neg, cfg=cfg, steps=STEPS, seed=20 + seed)
    assert calibrate_module().REPORTS[-1]["status"] == "saved", calibrate_module().REPORTS[-1]
    return name + ".safetensors"


def test_cfg_runs_give_a_split_profile_cfg_1_runs_a_guided_one_and_a_mismatch_falls_back(micro, profile_dir,
                                                                                         caplog):
    """Plain CFG (cfg 3): the node records uncond and guidance slopes and fits a split profile, which a cfg-3
    run forecasts with; cfg 1 gives the one-series profile, which a cfg-1 run uses. A split profile on a
    cfg-1 run (no CFG branches) falls back to the backtest blend with one warning saying why."""
    model, latent = micro["flux"], torch.zeros(LATENTS["flux"])
    pos, neg = conditioning(1), conditioning(2)
    split = _calibrated(model, latent, pos, neg, "split_l2p", cfg=3.0, l2p_fit=SPLIT_FIT)
    guided = _calibrated(model, latent, pos, neg, "guided_l2p", cfg=1.0, l2p_fit=SPLIT_FIT)
    assert load_l2p(profile_dir / split, root=profile_dir).layout == "split"
    assert load_l2p(profile_dir / guided, root=profile_dir).layout == "guided"
    assert "layout" in calibrate_module().REPORTS[0]["message"]  # a recording report names cfg and layout

    for name, cfg in ((split, 3.0), (guided, 1.0)):
        learned = node("DiTAccelLearnedProfile").execute(name)[0]
        out = sample(forecast(model, learned), latent, pos, neg, cfg=cfg, steps=STEPS, seed=99)
        stats = recent_runs()[-1]
        assert stats["learned_forecasts"] > 0 and stats["learned_outside"] == "", (name, stats)
        assert torch.isfinite(out).all()

    learned = node("DiTAccelLearnedProfile").execute(split)[0]
    cached = forecast(model, learned)
    caplog.clear()
    with caplog.at_level("WARNING"):
        out = sample(cached, latent, pos, neg, cfg=1.0, steps=STEPS, seed=99)
    stats = recent_runs()[-1]
    assert stats["learned_forecasts"] == 0 and stats["forecast_calls"] > 0, stats
    assert "split" in stats["learned_outside"] and "no plain CFG" in stats["learned_outside"], stats
    warnings = [r for r in caplog.records if "L2P profile does not cover" in r.getMessage()]
    assert len(warnings) == 1 and "no plain CFG" in warnings[0].getMessage()
    blend = sample(forecast(model, None), latent, pos, neg, cfg=1.0, steps=STEPS, seed=99)
    assert torch.equal(out, blend)  # the fallback is exactly the training-free blend


def test_with_the_chosen_guided_layout_cfg_runs_give_a_guided_profile(micro, profile_dir):
    assert L2PFit().cfg_layout == "guided"  # the default the node uses
    model, latent = micro["flux"], torch.zeros(LATENTS["flux"])
    name = _calibrated(model, latent, conditioning(1), conditioning(2), "cfg_guided", cfg=3.0)
    profile = load_l2p(profile_dir / name, root=profile_dir)
    assert profile.layout == "guided" and profile.header["layout"] == "guided"
    learned = node("DiTAccelLearnedProfile").execute(name)[0]
    sample(forecast(model, learned), latent, conditioning(1), conditioning(2), cfg=3.0, steps=STEPS, seed=99)
    assert recent_runs()[-1]["learned_forecasts"] > 0


def folder_paths_cache_clear() -> None:
    import folder_paths

    folder_paths.filename_list_cache.pop("dit_accel", None)


def profiles_module():
    found = [m for name, m in list(sys.modules.items())
             if name.endswith("nodes.profiles") and "dit_accel" in name and hasattr(m, "hyca_profiles")]
    assert len(found) == 1
    return found[0]


def test_hyca_from_the_gui_path_is_closed_loop_saved_and_used(micro, profile_dir, monkeypatch):
    """method hyca: recording stays bit-identical, the recorded run replays bit-identically without the
    recording, the closed-loop fit reports a held-back score with a progress bar, saves a shared-format HyCa
    profile, and Forecast Cache runs with it through the HyCa Profile node (the Learned Forecast Profile node
    points there)."""
    import comfy.utils

    from accel_core.learned.hyca_profile import load_profile

    model, latent = micro["flux"], torch.zeros(LATENTS["flux"])
    pos, neg = conditioning(1), conditioning(2)
    progress: list[tuple[int, int]] = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None:
                        progress.append((value, total)))
    recording = calibrate(model, "micro_hyca", runs_needed=2, method="hyca")
    mod = calibrate_module()
    plain = [sample(model, latent, pos, neg, steps=STEPS, seed=30 + i) for i in range(2)]
    assert torch.equal(sample(recording, latent, pos, neg, steps=STEPS, seed=30), plain[0])
    assert mod.REPORTS[-1]["status"] == "recording"
    run = mod.RECORDERS["micro_hyca"].runs[-1].trajectory
    assert run.values.shape == (STEPS, 1, 64, 128) and torch.equal(run.case.truth, plain[0])
    clean = mod.hyca_gui.uncalibrated(recording, mod.CALIBRATE_KEY, mod.record_cfg_branches)
    assert torch.equal(mod.hyca_gui.replay(run.case, clean), plain[0])  # the closed loop's baseline is exact
    assert torch.equal(sample(recording, latent, pos, neg, steps=STEPS, seed=31), plain[1])

    report = mod.REPORTS[-1]
    assert report["status"] == "saved" and "HyCa" in report["message"] and "held-back error" in report["message"]
    assert progress and progress[-1][0] == progress[-1][1]  # the fit's bar reached its end
    path = profile_dir / "micro_hyca.safetensors"
    fingerprint = model_fingerprint(model.model.diffusion_model.state_dict())
    profile = load_profile(path.name, profile_dir, family="flux", fingerprint=fingerprint)
    h = profile.info
    assert profile_method(path) == "hyca" and h["cache_level"] == "final_hidden" and h["steps"] == STEPS
    assert profile.hidden_size == 128 and not profile.legacy and h["sampler"] == "euler"
    v = h["validation"]
    assert v["fit_runs"] == 1 and v["held_back_runs"] == 1
    assert {"hyca_rel_error", "foca_rel_error", "reuse_rel_error"} <= set(v)
    loop = v["closed_loop"]
    assert loop["candidates"] == 5 + 1 + len(loop["cluster_sizes"]) * 4  # every start, one sweep
    assert loop["fit_mean_mse"] <= loop["foca_fit_mean_mse"]  # never worse than FoCa on the fitting runs
    if v["kept"] == "foca":  # the held-back gate: a map that lost to FoCa there is not kept
        assert profile.channel_counts()["foca"] == 128 and "lost to FoCa" in report["message"]
    else:
        assert v["hyca_rel_error"] <= v["foca_rel_error"] and v["hyca_worst"] <= v["foca_worst"]
    assert profiles_module().hyca_profiles() == [path.name] and profiles_module().learned_profiles() == []

    hyca = node("DiTAccelHyCaProfile").execute(path.name)[0]
    cached = node("DiTAccelForecastCache").execute(model, "balanced", "preset", "preset", 0, -1, -1, -1, 0.0, 1.0,
                                                   hyca=hyca)[0]
    out = sample(cached, latent, pos, neg, steps=STEPS, seed=99)
    stats = recent_runs()[-1]
    assert stats["tag"].startswith("hyca-") and stats["forecast_calls"] > 0 and torch.isfinite(out).all(), stats
    with pytest.raises(ConfigError, match="HyCa Profile node"):
        node("DiTAccelLearnedProfile").execute(path.name)
    with pytest.raises(ConfigError, match="not a HyCa profile"):
        _synthetic_profile(profile_dir, "l2p.safetensors", "flux", fingerprint)
        node("DiTAccelHyCaProfile").execute("l2p.safetensors")


def test_a_gui_hyca_profile_on_other_weights_is_refused(micro, profile_dir):
    from scripts.harness.micro_models import build_micro_model

    from accel_core.learned.hyca_profile import HyCaProfile, SOLVERS, save_profile

    model = micro["flux"]
    header = {"fingerprint": model_fingerprint(model.model.diffusion_model.state_dict()), "steps": STEPS,
              "sampler": "euler", "scheduler": "simple", "sigmas": [1.0, 0.0], "budget": {}, "validation": {}}
    save_profile(profile_dir / "mine.safetensors",
                 HyCaProfile(torch.zeros(128, dtype=torch.int64), tuple(SOLVERS), "flux", info=header))
    hyca = node("DiTAccelHyCaProfile").execute("mine.safetensors")[0]
    args = ("balanced", "preset", "preset", 0, -1, -1, -1, 0.0, 1.0)
    node("DiTAccelForecastCache").execute(model, *args, hyca=hyca)  # its own weights: accepted
    with pytest.raises(ProfileMismatchError, match="other model weights"):
        node("DiTAccelForecastCache").execute(build_micro_model("flux", seed=1), *args, hyca=hyca)


def test_default_names_carry_the_method_and_scores_read_as_percentages(micro, profile_dir):
    """Issue 20 item 6: LESA and L2P no longer share a default name; '4 % lower', not '1.0x lower'; runs_needed
    says it needs one run to fit and one held back."""
    from accel_core.learned.calibration_fit import METHODS, check_profile_name, held_back, versus

    mod = calibrate_module()
    schema = node("DiTAccelCalibrate").define_schema()
    default = next(i for i in schema.inputs if i.id == "profile_name").default
    assert default == "my_model_{method}"
    assert {m: check_profile_name(default, m) for m in METHODS} == {
        "l2p": "my_model_l2p", "lesa": "my_model_lesa", "hyca": "my_model_hyca"}
    assert versus(0.0096, 0.01) == "4 % lower than output reuse"
    assert versus(0.3, 0.1, "L2P") == "200 % higher than L2P"
    assert versus(0.00998, 0.01) == "0.2 % lower than output reuse"
    assert held_back({"held_back_trajectories": 1}, 2) == "1 fitted, 1 held back"
    with pytest.raises(ConfigError, match="one run to fit the profile and one held back"):
        calibrate(micro["flux"], "ok", runs_needed=1)
    model, latent = micro["flux"], torch.zeros(LATENTS["flux"])
    recording = node("DiTAccelCalibrate").execute(model, default, "balanced", 2, 4, "lesa")[0]
    for seed in range(2):
        sample(recording, latent, conditioning(1), conditioning(2), steps=STEPS, seed=40 + seed)
    saved = mod.REPORTS[-1]
    assert saved["status"] == "saved" and saved["path"].endswith("my_model_lesa.safetensors"), saved
    assert "from 2 runs (1 fitted, 1 held back)" in saved["message"]
    assert " % lower than output reuse" in saved["message"] or " % higher than output reuse" in saved["message"]
    assert "x lower" not in saved["message"]
