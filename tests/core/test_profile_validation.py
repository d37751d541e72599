"""Issue 21 item 1: one validation layer for profiles. Every header field a run reads has a type and a range,
every table is finite and bounded; a bad profile raises ProfileFormatError (input, value, allowed, fix) at
load, never a raw ZeroDivisionError / ValueError / TypeError / AttributeError later in a run."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from accel_core.errors import ProfileFormatError
from accel_core.learned.hyca_profile import LEGACY_KEY, load_profile
from accel_core.learned import L2PForecaster, L2PTable, load_l2p, save_l2p
from accel_core.learned.lesa import LESA, load_lesa, save_lesa
from accel_core.learned.loading import load_learned
from accel_core.learned.profile import METADATA_KEY

HEADER = {"family": "flux", "fingerprint": "sha256:abc", "sampler": "euler", "scheduler": "simple",
          "sigmas": [1.0 - i / 10 for i in range(11)], "budget": {"preset": "balanced"}, "validation": {}}
STEPS = 10


def _table(coef: torch.Tensor | None = None, time: torch.Tensor | None = None) -> L2PTable:
    plan = [i in (0, 1, 2, 5, 9) for i in range(STEPS)]
    return L2PTable(coef=coef if coef is not None else torch.full((2, 2), 0.5),
                    time=time if time is not None else torch.tensor([0.3, 0.4]), sigma=torch.tensor([0.7, 0.6]),
                    since_full=torch.tensor([1, 2], dtype=torch.int32), steps=STEPS, plan=plan)


def _edit_header(path, **changes) -> None:
    """Rewrite the profile's JSON header with `changes` (a key set to ... is removed)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        header = json.loads(f.metadata()[METADATA_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for key, value in changes.items():
        header[key] = value
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(header)})


def _edit_tensor(path, name: str, value: torch.Tensor) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors[name] = value
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize("field,value,says", [
    ("steps", 0, "'steps' = 0; allowed: an integer in 1..10000"),  # was ZeroDivisionError inside KSampler
    ("steps", "abc", "'steps' = 'abc'"),  # was a raw ValueError
    ("steps", True, "'steps' = True"),
    ("budget", [1, 2], "'budget' = [1, 2]; allowed: a mapping"),  # was AttributeError
    ("budget", {"full_steps": [0, 99]}, "budget 'full_steps' = [0, 99]"),
    ("sigmas", "abc", "'sigmas' = 'abc'"),  # was ValueError inside KSampler
    ("sigmas", 5, "'sigmas' = 5"),  # was TypeError inside KSampler
    ("sigmas", [0.0, 0.5, 1.0], "sampling order"),
    ("sigmas", [1.0, float("nan")], "'sigmas'"),
    ("validation", "good", "'validation' = 'good'"),
    ("cfg", "high", "'cfg' = 'high'"),
    ("sampler", 3, "'sampler' = 3"),
])
def test_bad_header_fields_are_refused_at_load(tmp_path, field, value, says):
    save_l2p(tmp_path / "p.safetensors", _table(), HEADER)
    _edit_header(tmp_path / "p.safetensors", **{field: value})
    with pytest.raises(ProfileFormatError) as err:
        load_l2p("p.safetensors", tmp_path)
    message = str(err.value)
    assert says in message and "p.safetensors" in message and "Calibrate Forecasts" in message, message


@pytest.mark.parametrize("name,value,says", [
    ("coef", torch.full((2, 2), 1e30), "'coef' with values in [1e+30, 1e+30]; allowed: values in [-1000, 1000]"),
    ("coef", torch.tensor([[0.5, float("nan")], [0.1, 0.2]]), "'coef' with 1 non-finite value(s)"),
    ("time", torch.full((2,), float("nan")), "'time' with 2 non-finite value(s)"),
    ("time", torch.tensor([0.3, 7.0]), "'time' with values in [0.3, 7]"),
    ("since_full", torch.tensor([0, 1], dtype=torch.int32), "'since_full' with values in [0, 1]"),
    ("sigma", torch.tensor([0.7, -1.0]), "'sigma' with values in [-1, 0.7]"),
])
def test_tables_must_be_finite_and_bounded(tmp_path, name, value, says):
    save_l2p(tmp_path / "p.safetensors", _table(), HEADER)
    _edit_tensor(tmp_path / "p.safetensors", name, value)
    with pytest.raises(ProfileFormatError) as err:
        load_l2p("p.safetensors", tmp_path)
    assert says in str(err.value), str(err.value)


def test_a_steps_zero_profile_never_reaches_the_forecaster(tmp_path):
    """The old path: load passed, then L2PForecaster divided by the profile's steps inside the sampler."""
    save_l2p(tmp_path / "p.safetensors", _table(), HEADER)
    good = load_l2p("p.safetensors", tmp_path)
    L2PForecaster(good, HEADER["sigmas"], "euler")  # the valid one builds
    _edit_header(tmp_path / "p.safetensors", steps=0)
    with pytest.raises(ProfileFormatError, match="'steps' = 0"):
        load_learned("p.safetensors", tmp_path)


def _lesa(tmp_path, history: int = 2):
    model = LESA(history)
    return save_lesa(tmp_path / "l.safetensors", model, _table(), HEADER)


def test_lesa_coefficients_and_experts_are_checked(tmp_path):
    path = _lesa(tmp_path)
    load_lesa("l.safetensors", tmp_path)  # valid
    _edit_tensor(path, "coef", torch.tensor([[0.5, float("nan")], [0.1, 0.2]]))
    with pytest.raises(ProfileFormatError, match="'coef' with 1 non-finite"):  # loaded before: only experts checked
        load_lesa("l.safetensors", tmp_path)
    path = _lesa(tmp_path)
    _edit_tensor(path, "time", torch.full((2,), float("nan")))
    with pytest.raises(ProfileFormatError, match="'time' with 2 non-finite"):
        load_lesa("l.safetensors", tmp_path)
    path = _lesa(tmp_path)
    key = next(k for k in LESA(2).state_dict() if k.startswith("experts."))
    _edit_tensor(path, key, torch.full_like(LESA(2).state_dict()[key], 1e9))
    with pytest.raises(ProfileFormatError, match=f"'{key}' with values in"):
        load_lesa("l.safetensors", tmp_path)


@pytest.mark.parametrize("lesa,says", [
    ({"history": 2, "stages": 3, "width": 10 ** 9, "grid": 5, "gap_scale": 1.0}, "'width' = 1000000000"),
    ([2, 3], "'lesa' = [2, 3]"),
    ({"history": 2, "stages": 3, "width": 8, "grid": 5, "gap_scale": float("inf")}, "'gap_scale' = inf"),
])
def test_lesa_sizes_are_bounded_before_a_network_is_built(tmp_path, lesa, says):
    path = _lesa(tmp_path)
    _edit_header(path, lesa=lesa)
    with pytest.raises(ProfileFormatError) as err:
        load_lesa("l.safetensors", tmp_path)
    assert says in str(err.value), str(err.value)


def test_a_legacy_hyca_header_that_is_a_list_is_refused(tmp_path):
    save_file({"solver_index": torch.zeros(4, dtype=torch.int8)}, str(tmp_path / "h.safetensors"),
              metadata={LEGACY_KEY: json.dumps([1, 2, 3])})
    with pytest.raises(ProfileFormatError, match="header is a JSON list"):  # was AttributeError
        load_profile("h.safetensors", tmp_path)
    save_file({"solver_index": torch.zeros(4, dtype=torch.int8)}, str(tmp_path / "s.safetensors"),
              metadata={LEGACY_KEY: json.dumps({"format_version": 1, "family": "flux", "hidden_size": 4,
                                                "solvers": 7})})
    with pytest.raises(ProfileFormatError, match="'solvers' is 7"):  # was TypeError
        load_profile("s.safetensors", tmp_path)
    save_file({"solver_index": torch.zeros(4, dtype=torch.int8)}, str(tmp_path / "t.safetensors"),
              metadata={LEGACY_KEY: json.dumps({"format_version": 1, "family": "flux", "hidden_size": 4,
                                                "solvers": ["reuse"], "schedule": [1]})})
    with pytest.raises(ProfileFormatError, match="'schedule' = \\[1\\]"):  # was AttributeError mid-run
        load_profile("t.safetensors", tmp_path)


def test_every_shipped_profile_passes(tmp_path):
    """The profiles in the repository (benches, tests) load under the new checks."""
    import shutil
    from pathlib import Path

    from accel_core.learned.profile import profile_method

    repo = Path(__file__).resolve().parents[2]
    files = sorted(repo.glob("bench/results/*_profiles/*.safetensors")) + sorted(repo.glob("tests/assets/hyca_*.safetensors"))
    assert len(files) > 20
    for f in files:
        shutil.copy(f, tmp_path / f.name)
        if profile_method(f) in ("l2p", "lesa"):
            load_learned(f.name, tmp_path)
        else:
            load_profile(f.name, tmp_path)
