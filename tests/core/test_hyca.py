"""HyCa: profile round trip and validation, the per-channel forecaster, and the calibration."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from accel_core import ConfigError, ForecastCacheConfig, make_forecaster, plan_full_steps
from accel_core.hidden.forecasters import FORECASTERS
from accel_core.hidden.forecasters.hyca import HyCaForecaster
from accel_core.learned.hyca_calibrate import Trajectory, calibrate, kmeans, simulate
from accel_core.errors import ProfileFormatError, ProfileMismatchError, ProfilePathError
from accel_core.learned.hyca_profile import (LEGACY_KEY, SOLVERS, HyCaProfile, clear_profile_cache, in_memory,
                                     is_hyca_profile, load_profile, load_profile_cached, save_profile)
from accel_core.learned.profile import profile_method, read_profile, write_profile

CONFIG = ForecastCacheConfig(method="taylorseer", interval=4, warmup_steps=3, final_full_steps=1)
STEPS = 30
SIGMAS = [1.0 - 0.97 * i / STEPS for i in range(STEPS)] + [0.0]
PLAN = plan_full_steps(SIGMAS, CONFIG)
N_QUAD, N_NOISY = 6, 6


def _profile(index, solvers=tuple(SOLVERS), **kw) -> HyCaProfile:
    return HyCaProfile(solver_index=torch.tensor(index), solvers=solvers, family="flux", **kw)


def _trajectory(seed: int, tokens: int = 5) -> Trajectory:
    """Channels 0-5 follow a quadratic in sigma (TaylorSeer o2 is exact); channels 6-11 are a constant plus
    fresh noise every step (extrapolating noise only amplifies it: reuse is best)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor(SIGMAS[:STEPS])[:, None, None, None]
    a, b, c = (torch.randn(1, 1, tokens, N_QUAD, generator=g) * s for s in (1.0, 2.0, 3.0))
    quad = a + b * t + c * t ** 2
    noisy = torch.randn(1, 1, tokens, N_NOISY, generator=g) + 0.3 * torch.randn(STEPS, 1, tokens, N_NOISY, generator=g)
    return Trajectory(values=torch.cat([quad, noisy], dim=-1).float(), times=SIGMAS[:STEPS])


def _run_along_plan(forecaster, trajectory: Trajectory) -> float:
    """Relative error of a forecaster driven as the engine drives it (updates at full steps)."""
    err = energy = 0.0
    anchors = 0
    need = getattr(forecaster, "min_anchors", 1)
    for i, t in enumerate(trajectory.times):
        value = trajectory.values[i]
        if PLAN[i] or anchors < need:
            forecaster.update(t, value.clone())
            anchors += 1
            continue
        err += float(((forecaster.forecast(t) - value) ** 2).sum(dtype=torch.float64))
        energy += float((value ** 2).sum(dtype=torch.float64))
    return math.sqrt(err / energy)


# ------------------------------------------------------------------------------------ profiles
HEADER = {"fingerprint": "sha256:abc", "steps": 50, "sampler": "euler", "scheduler": "simple",
          "sigmas": [1.0, 0.5, 0.0], "budget": {"preset": "balanced", "interval": 5}, "validation": {},
          "schedule": {"time_axis": "sigma"}}
LEGACY_ASSET = Path(__file__).resolve().parents[1] / "assets" / "hyca_micro_flux.safetensors"


def test_profile_round_trip_on_the_shared_format(tmp_path):
    profile = _profile([0, 1, 2, 3, 4, 2, 2], cluster_index=torch.tensor([0, 1, 2, 3, 4, 2, 2]),
                       info={**HEADER, "solver_errors": {"reuse": 0.1}})
    path = save_profile(tmp_path / "p.safetensors", profile)
    loaded = load_profile("p.safetensors", tmp_path, family="flux", fingerprint="sha256:abc")
    assert torch.equal(loaded.solver_index, profile.solver_index)
    assert torch.equal(loaded.cluster_index, profile.cluster_index)
    assert loaded.solvers == profile.solvers and loaded.family == "flux" and loaded.hidden_size == 7
    assert not loaded.legacy and loaded.fingerprint == "sha256:abc" and loaded.source == str(path.resolve())
    assert {k: loaded.info[k] for k in profile.info} == profile.info
    # The shared header: the same reader as L2P / LESA sees a "hyca" profile at the final_hidden level.
    header, tensors, _ = read_profile(path, tmp_path)
    assert (header["method"], header["cache_level"], header["format_version"]) == ("hyca", "final_hidden", 1)
    assert header["created"] and header["hidden_size"] == 7 and header["solvers"] == list(SOLVERS)
    assert tensors["solver_index"].dtype == torch.int8 and profile_method(path) == "hyca" and is_hyca_profile(path)


def test_a_profile_of_other_weights_or_another_family_is_refused(tmp_path):
    save_profile(tmp_path / "p.safetensors", _profile([0, 1], info=HEADER))
    with pytest.raises(ProfileMismatchError, match="other model weights.*Calibrate Forecasts node \\(method hyca"):
        load_profile("p.safetensors", tmp_path, family="flux", fingerprint="sha256:other")
    with pytest.raises(ProfileMismatchError, match="model family 'flux', but the model is 'qwen_image'"):
        load_profile("p.safetensors", tmp_path, family="qwen_image", fingerprint="sha256:abc")


def test_saving_needs_the_shared_header_fields(tmp_path):
    with pytest.raises(ProfileFormatError, match="fingerprint"):
        save_profile(tmp_path / "p.safetensors", _profile([0, 1], info={"steps": 50}))
    assert not (tmp_path / "p.safetensors").exists()


def test_loading_is_confined_to_the_profile_folder_and_to_safetensors(tmp_path):
    inside, outside = tmp_path / "profiles", tmp_path / "elsewhere"
    save_profile(outside / "p.safetensors", _profile([0, 1], info=HEADER))
    inside.mkdir()
    with pytest.raises(ProfilePathError, match="outside the profile folder"):
        load_profile(outside / "p.safetensors", inside)
    with pytest.raises(ProfilePathError, match="contains '..'"):
        load_profile("../elsewhere/p.safetensors", inside)
    (inside / "p.pt").write_bytes(b"pickle")
    with pytest.raises(ProfileFormatError, match="only safetensors"):
        load_profile("p.pt", inside)
    (inside / "link.safetensors").symlink_to(outside / "p.safetensors")
    with pytest.raises(ProfilePathError, match="outside the profile folder"):
        load_profile("link.safetensors", inside)


def test_an_l2p_profile_is_not_read_as_hyca(tmp_path):
    write_profile(tmp_path / "l2p.safetensors", {"coef": torch.zeros(1, 1)},
                  {**HEADER, "family": "flux", "method": "l2p", "cache_level": "output"})
    with pytest.raises(ProfileFormatError, match="is a 'l2p' profile, expected 'hyca'"):
        load_profile("l2p.safetensors", tmp_path)
    assert not is_hyca_profile(tmp_path / "l2p.safetensors")


def test_old_format_files_still_load_with_one_info_line(tmp_path, caplog):
    """The shipped micro-model profiles predate the shared format: they load (family and hidden size checked,
    no fingerprint to check) and say so once per file."""
    import shutil

    shutil.copy(LEGACY_ASSET, tmp_path / "old.safetensors")
    with caplog.at_level("INFO", logger="accel_core.learned.hyca_profile"):
        first = load_profile("old.safetensors", tmp_path, family="flux", fingerprint="sha256:anything")
        load_profile("old.safetensors", tmp_path, family="flux")
    lines = [r.getMessage() for r in caplog.records if "old format" in r.getMessage()]
    assert len(lines) == 1 and "Recreate it with the Calibrate Forecasts node" in lines[0]
    assert first.legacy and first.fingerprint is None and first.hidden_size == 128 and first.family == "flux"
    assert is_hyca_profile(tmp_path / "old.safetensors")
    with pytest.raises(ProfileMismatchError, match="'flux'.*'qwen_image'"):
        load_profile("old.safetensors", tmp_path, family="qwen_image")


def test_profile_is_cached_until_the_file_changes(tmp_path):
    clear_profile_cache()
    path = save_profile(tmp_path / "p.safetensors", _profile([0, 1], info=HEADER))
    first = load_profile_cached(path, tmp_path)
    assert load_profile_cached(path, tmp_path) is first
    save_profile(path, _profile([1, 1, 0], info=HEADER))
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse-clock filesystems
    again = load_profile_cached(path, tmp_path)
    assert again is not first and again.hidden_size == 3


def test_in_memory_profiles_exist_only_inside_their_block():
    profile = _profile([0, 1, 1])
    with in_memory(profile) as name:
        assert name.startswith("memory:") and load_profile_cached(name) is profile
    with pytest.raises(ConfigError, match="no longer exists"):
        load_profile_cached(name)


def _write_raw(path, tensors, meta):
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=None if meta is None else {LEGACY_KEY: json.dumps(meta)})
    return path


GOOD_META = {"format_version": 1, "family": "flux", "hidden_size": 3, "solvers": ["reuse", "foca"]}


@pytest.mark.parametrize("tensors,meta,expected", [
    ({"solver_index": torch.tensor([0, 1, 2], dtype=torch.int8)}, GOOD_META, "values must lie in 0..1"),
    ({"solver_index": torch.tensor([0, 1, 1], dtype=torch.int8)}, {**GOOD_META, "solvers": ["reuse", "magic"]},
     "unknown solver names"),
    ({"solver_index": torch.tensor([0, 1, 1], dtype=torch.int8)}, {**GOOD_META, "format_version": 99},
     "version 99"),
    ({"solver_index": torch.tensor([0, 1, 1], dtype=torch.int8)}, None, "no 'dit_accel_learned' header"),
    ({"other": torch.zeros(3)}, GOOD_META, "'solver_index' is missing"),
    ({"solver_index": torch.tensor([0, 1], dtype=torch.int8)}, GOOD_META, "hidden size 3"),
    ({"solver_index": torch.tensor([0.0, 1.0, 1.0])}, GOOD_META, "must hold integers"),
])
def test_invalid_profiles_raise_config_errors_naming_file_and_fix(tmp_path, tensors, meta, expected):
    path = _write_raw(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(ConfigError) as info:
        load_profile(path, tmp_path)
    assert expected in str(info.value) and "bad.safetensors" in str(info.value)
    assert "calibrate_hyca.py" in str(info.value)


def test_missing_or_unreadable_profile(tmp_path):
    with pytest.raises(ConfigError, match="does not exist.*calibrate_hyca"):
        load_profile("nope.safetensors", tmp_path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        load_profile(junk, tmp_path)


def test_method_hyca_without_a_profile_names_the_setting():
    with pytest.raises(ConfigError, match="hyca_profile is empty.*calibrate_hyca"):
        make_forecaster(ForecastCacheConfig(method="hyca"))  # the config or the forecaster refuses it


def test_compatibility_check_names_family_and_hidden_size():
    profile = _profile([0, 1, 1])
    profile.check_compatible("flux", 3)
    with pytest.raises(ConfigError, match="'flux'.*'qwen_image'"):
        profile.check_compatible("qwen_image", 3)
    with pytest.raises(ConfigError, match="maps 3 hidden channels.*have 128"):
        profile.check_compatible("flux", 128)


# ------------------------------------------------------------------------------------ forecaster
def test_hyca_is_registered():
    assert FORECASTERS.get("hyca") is HyCaForecaster


def test_each_channel_gets_exactly_its_solvers_forecast():
    """Channel c forecast by HyCa equals that channel of the assigned solver run alone on the full tensor."""
    solvers = tuple(SOLVERS)
    index = [1, 4, 0, 2, 3, 2, 1, 4, 0]
    hyca = HyCaForecaster.from_profile(CONFIG, _profile(index, solvers))
    alone = {name: make_forecaster(CONFIG.replace(method=m, order=o)) for name, (m, o) in SOLVERS.items()}
    g = torch.Generator().manual_seed(0)
    for t in (1.0, 0.9, 0.75):
        value = torch.randn(2, 4, len(index), generator=g)
        hyca.update(t, value.clone())
        for f in alone.values():
            f.update(t, value.clone())
    for t in (0.7, 0.6, 0.5):  # several steps: FoCa marches from its own forecasts
        out = hyca.forecast(t)
        expected = {name: f.forecast(t) for name, f in alone.items()}
        for c, k in enumerate(index):
            torch.testing.assert_close(out[..., c], expected[solvers[k]][..., c], rtol=0, atol=0)


def test_one_solver_profile_reproduces_that_solver_bit_for_bit():
    hyca = HyCaForecaster.from_profile(CONFIG, _profile([2, 2, 2, 2]))
    taylor = make_forecaster(CONFIG.replace(method="taylorseer", order=2))
    for t in (1.0, 0.8, 0.7):
        v = torch.randn(1, 3, 4)
        hyca.update(t, v)
        taylor.update(t, v)
    assert torch.equal(hyca.forecast(0.5), taylor.forecast(0.5))


def test_ready_needs_every_inner_and_memory_counts_only_subsets():
    hyca = HyCaForecaster.from_profile(CONFIG, _profile([0, 0, 4, 4, 4, 2, 2, 2]))  # reuse, foca, taylor o2
    assert hyca.min_anchors == 2 and not hyca.ready
    hyca.update(1.0, torch.randn(1, 16, 8))
    assert not hyca.ready  # FoCa needs two anchors
    hyca.update(0.9, torch.randn(1, 16, 8))
    assert hyca.ready
    for t in (0.8, 0.7):
        hyca.update(t, torch.randn(1, 16, 8))
    # reuse: 1 value of 2 channels; FoCa: point + anchor + slope + curvature, the first two the same
    # tensor (3 distinct) of 3 channels; Taylor o2: 3 ladder entries of 3 channels; plus int64 indices.
    expected = 4 * 16 * (1 * 2 + 3 * 3 + 3 * 3) + 8 * 8
    assert hyca.memory_bytes() == expected
    hyca.reset()
    assert not hyca.ready and hyca.memory_bytes() == 8 * 8


def test_wrong_hidden_size_raises_a_config_error_naming_the_profile():
    hyca = HyCaForecaster.from_profile(CONFIG, _profile([0, 1, 2]))
    with pytest.raises(ConfigError, match="maps 3 hidden channels, but the cached tensor has 5"):
        hyca.update(1.0, torch.zeros(1, 2, 5))


def test_config_profile_path_is_read_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("DIT_ACCEL_PROFILE_DIRS", str(tmp_path))  # the forecaster reads registered folders only
    path = save_profile(tmp_path / "p.safetensors", _profile([0, 2, 2], info=HEADER))
    config = ForecastCacheConfig(method="hyca", hyca_profile=str(path))
    a, b = make_forecaster(config), make_forecaster(config)
    assert isinstance(a, HyCaForecaster) and a.profile is b.profile and a.profile.hidden_size == 3


# ------------------------------------------------------------------------------------ calibration
def test_simulation_scores_exactly_the_planned_forecast_steps():
    tr = _trajectory(0)
    errs = simulate(tr, PLAN, CONFIG, "taylorseer_o2")
    assert errs.err.shape == (PLAN.count(False), N_QUAD + N_NOISY)
    assert errs.err[:, :N_QUAD].max() < 1e-6 * errs.energy[:, :N_QUAD].max()  # exact on quadratics
    assert errs.err[:, N_QUAD:].min() > 0


def test_calibration_finds_the_right_solver_per_dynamics_and_beats_every_single_solver():
    trajectories = [_trajectory(s) for s in range(3)]
    result = calibrate(trajectories, PLAN, CONFIG, clusters=4, seed=0)
    names = [result.solvers[k] for k in result.solver_index.tolist()]
    assert names[:N_QUAD] == ["taylorseer_o2"] * N_QUAD
    assert names[N_QUAD:] == ["reuse"] * N_NOISY
    assert set(result.cluster_index[:N_QUAD].tolist()).isdisjoint(result.cluster_index[N_QUAD:].tolist())
    assert result.hyca_error < min(result.solver_error.values())
    assert result.oracle_error <= result.hyca_error + 1e-12
    assert result.holdout["folds"] == 3 and result.holdout["hyca"] < result.holdout["best_single"]
    assert sum(result.cluster_sizes) == N_QUAD + N_NOISY
    again = calibrate(trajectories, PLAN, CONFIG, clusters=4, seed=0)
    assert torch.equal(again.solver_index, result.solver_index)
    assert torch.equal(again.cluster_index, result.cluster_index)


def test_calibrated_profile_round_trips_and_reproduces_the_reported_error(tmp_path):
    trajectories = [_trajectory(s) for s in range(2)]
    result = calibrate(trajectories, PLAN, CONFIG, clusters=3)
    path = save_profile(tmp_path / "hyca.safetensors", result.to_profile("flux", {**HEADER, "steps": STEPS}))
    profile = load_profile(path, tmp_path)
    assert profile.info["solver_errors"].keys() == set(SOLVERS) and profile.info["steps"] == STEPS
    assert "| **HyCa map** |" in result.table()
    # Drive the loaded profile through the plan on each trajectory: summed, it is the reported error.
    err = energy = 0.0
    for tr in trajectories:
        rel = _run_along_plan(HyCaForecaster.from_profile(CONFIG, profile), tr)
        e = float(sum((tr.values[i].double() ** 2).sum() for i in range(STEPS) if not PLAN[i]))
        err += rel ** 2 * e
        energy += e
    assert math.sqrt(err / energy) == pytest.approx(result.hyca_error, rel=1e-4)


def test_calibration_rejects_mixed_hidden_sizes_and_no_data():
    with pytest.raises(ConfigError, match="different hidden sizes"):
        calibrate([_trajectory(0), Trajectory(torch.zeros(STEPS, 1, 2, 3), SIGMAS[:STEPS])], PLAN, CONFIG)
    with pytest.raises(ConfigError, match="no trajectories"):
        calibrate([], PLAN, CONFIG)
    with pytest.raises(ConfigError, match="no forecast steps"):
        calibrate([_trajectory(0)], [True] * STEPS, CONFIG)


def test_kmeans_separates_blobs_deterministically():
    g = torch.Generator().manual_seed(3)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.3 * torch.randn(20, 2, generator=g) for c in centers])
    labels = kmeans(x, 3, seed=1)
    assert labels.tolist() == [0] * 20 + [1] * 20 + [2] * 20  # canonical numbering: by first member
    assert torch.equal(kmeans(x, 3, seed=1), labels)
    assert kmeans(x[:2], 5).tolist() == [0, 1]  # k capped at the number of points


def test_several_plans_add_their_forecast_steps_and_one_plan_equals_a_list_of_one():
    trajectories = [_trajectory(s) for s in range(2)]
    other = plan_full_steps(SIGMAS, CONFIG.replace(interval=6))
    single = calibrate(trajectories, PLAN, CONFIG, clusters=3)
    assert torch.equal(calibrate(trajectories, [PLAN], CONFIG, clusters=3).solver_index, single.solver_index)
    both = calibrate(trajectories, [PLAN, other], CONFIG, clusters=3)
    assert both.forecast_steps == PLAN.count(False) + other.count(False)
    names = [both.solvers[k] for k in both.solver_index.tolist()]
    assert names == ["taylorseer_o2"] * N_QUAD + ["reuse"] * N_NOISY
