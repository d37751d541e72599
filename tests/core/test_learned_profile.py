"""The learned-profile format: round trip, typed errors for another family / other weights / wrong
format, and loading confined to the profile folder."""
from __future__ import annotations

import json
import os

import pytest
import torch

from accel_core.errors import ConfigError, ProfileFormatError, ProfileMismatchError, ProfilePathError
from accel_core.learned import L2PTable, load_l2p, model_fingerprint, save_l2p
from accel_core.learned import profile as profile_mod
from accel_core.learned.loading import load_l2p_cached
from accel_core.learned.profile import write_profile

HEADER = {"family": "flux", "fingerprint": "sha256:abc", "sampler": "euler", "scheduler": "simple",
          "sigmas": [1.0, 0.5, 0.0], "budget": {"interval": 5, "preset": "balanced"},
          "validation": {"l2p_rel_error": 0.01, "reuse_rel_error": 0.05}}


def _table(rows=7, history=3, steps=50) -> L2PTable:
    g = torch.Generator().manual_seed(0)
    plan = [i % 7 == 0 for i in range(steps)]
    return L2PTable(coef=torch.randn(rows, history, generator=g), time=torch.linspace(0.1, 0.9, rows),
                    sigma=torch.linspace(0.9, 0.1, rows), since_full=torch.arange(rows, dtype=torch.int32) % 3 + 1,
                    steps=steps, plan=plan)


def test_round_trip_keeps_tables_and_header(tmp_path):
    table = _table()
    path = save_l2p(tmp_path / "m.safetensors", table, HEADER)
    assert path.stat().st_size < profile_mod.MAX_PROFILE_BYTES
    prof = load_l2p("m.safetensors", tmp_path, family="flux", fingerprint="sha256:abc")
    assert torch.equal(prof.table.coef, table.coef)
    assert torch.equal(prof.table.time, table.time)
    assert torch.equal(prof.table.since_full, table.since_full.long())
    assert prof.table.plan == table.plan and prof.table.steps == 50
    h = prof.header
    assert (h["method"], h["cache_level"], h["family"], h["format_version"]) == ("l2p", "output", "flux", 1)
    assert h["validation"] == HEADER["validation"] and h["sampler"] == "euler" and h["created"]


def test_other_family_or_weights_raise_a_mismatch(tmp_path):
    save_l2p(tmp_path / "m.safetensors", _table(), HEADER)
    with pytest.raises(ProfileMismatchError, match="family 'flux'"):
        load_l2p("m.safetensors", tmp_path, family="qwen_image")
    with pytest.raises(ProfileMismatchError, match="other model weights"):
        load_l2p("m.safetensors", tmp_path, family="flux", fingerprint="sha256:other")


def test_fingerprint_follows_the_weights_not_their_dtype():
    g = torch.Generator().manual_seed(1)
    sd = {f"blocks.{i}.w": torch.randn(8, 8, generator=g) for i in range(12)}
    fp = model_fingerprint(sd)
    assert model_fingerprint({k: v.to(torch.bfloat16) for k, v in sd.items()}) == fp
    assert model_fingerprint(list(reversed(list(sd.items())))) == fp  # order-independent
    changed = dict(sd)
    changed["blocks.0.w"] = sd["blocks.0.w"] + 0.1
    assert model_fingerprint(changed) != fp
    reshaped = dict(sd)
    reshaped["blocks.5.w"] = sd["blocks.5.w"].reshape(4, 16)  # a middle tensor: only its shape is hashed
    assert model_fingerprint(reshaped) != fp


def test_paths_outside_the_folder_are_refused(tmp_path):
    root = tmp_path / "profiles"
    outside = tmp_path / "elsewhere"
    save_l2p(root / "ok.safetensors", _table(), HEADER)
    save_l2p(outside / "evil.safetensors", _table(), HEADER)
    assert load_l2p("ok.safetensors", root).table.steps == 50
    assert load_l2p(str(root / "ok.safetensors"), root).table.steps == 50  # absolute, inside: fine
    with pytest.raises(ProfilePathError, match=r"'\.\.'"):
        load_l2p("../elsewhere/evil.safetensors", root)
    with pytest.raises(ProfilePathError, match="outside"):
        load_l2p(str(outside / "evil.safetensors"), root)
    os.symlink(outside / "evil.safetensors", root / "link.safetensors")
    with pytest.raises(ProfilePathError, match="outside"):
        load_l2p("link.safetensors", root)
    with pytest.raises(ProfilePathError, match="does not exist"):
        load_l2p("missing.safetensors", root)
    assert isinstance(ProfilePathError("x"), ConfigError)


def test_registered_folders_only(tmp_path, monkeypatch):
    monkeypatch.setattr(profile_mod, "_DIRS", [])
    monkeypatch.delenv("DIT_ACCEL_PROFILE_DIRS", raising=False)
    save_l2p(tmp_path / "m.safetensors", _table(), HEADER)
    with pytest.raises(ProfilePathError, match="no profile folder"):
        load_l2p_cached("m.safetensors")
    profile_mod.register_profile_dir(tmp_path)
    assert load_l2p_cached("m.safetensors").family == "flux"


def test_non_safetensors_and_foreign_files_are_refused(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"\x80\x04 pickle")
    with pytest.raises(ProfileFormatError, match="only safetensors"):
        load_l2p("weights.pt", tmp_path)
    (tmp_path / "fake.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ProfileFormatError, match="not a readable safetensors"):
        load_l2p("fake.safetensors", tmp_path)
    os.symlink(tmp_path / "weights.pt", tmp_path / "alias.safetensors")
    with pytest.raises(ProfileFormatError):
        load_l2p("alias.safetensors", tmp_path)  # a .safetensors name pointing at another file type
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ProfileFormatError, match="header"):
        load_l2p("plain.safetensors", tmp_path)


def test_wrong_version_method_or_missing_fields(tmp_path):
    tensors = {"coef": torch.zeros(1, 2), "time": torch.zeros(1), "sigma": torch.zeros(1),
               "since_full": torch.ones(1, dtype=torch.int32)}
    full = {**HEADER, "method": "l2p", "cache_level": "output", "steps": 2}
    write_profile(tmp_path / "v2.safetensors", tensors, {**full, "format_version": 2})
    with pytest.raises(ProfileFormatError, match="format version 2"):
        load_l2p("v2.safetensors", tmp_path)
    write_profile(tmp_path / "hyca.safetensors", tensors, {**full, "method": "hyca"})
    with pytest.raises(ProfileFormatError, match="'hyca' profile"):
        load_l2p("hyca.safetensors", tmp_path)
    from safetensors.torch import save_file

    partial = {k: v for k, v in full.items() if k != "fingerprint"}
    save_file(tensors, str(tmp_path / "partial.safetensors"),
              metadata={profile_mod.METADATA_KEY: json.dumps({**partial, "format_version": 1, "created": "x"})})
    with pytest.raises(ProfileFormatError, match="fingerprint"):
        load_l2p("partial.safetensors", tmp_path)
    write_profile(tmp_path / "nan.safetensors", {**tensors, "coef": torch.full((1, 2), float("nan"))}, full)
    with pytest.raises(ProfileFormatError, match="non-finite"):
        load_l2p("nan.safetensors", tmp_path)


def test_oversized_profiles_are_refused(tmp_path, monkeypatch):
    save_l2p(tmp_path / "m.safetensors", _table(rows=400, history=4), HEADER)
    monkeypatch.setattr(profile_mod, "MAX_PROFILE_BYTES", 1000)
    with pytest.raises(ProfileFormatError, match="byte limit"):
        load_l2p("m.safetensors", tmp_path)
    with pytest.raises(ProfileFormatError, match="byte limit"):
        save_l2p(tmp_path / "big.safetensors", _table(rows=400, history=4), HEADER)
    assert not (tmp_path / "big.safetensors").exists()
