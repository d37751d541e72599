"""HyCa profiles: the per-channel solver map of one model family, saved as a small safetensors file.

A profile holds the tensor "solver_index" (int8, [C]: which solver forecasts each hidden channel),
optionally "cluster_index" (int16, [C]: the calibration cluster of each channel), and string
metadata under the key "dit_accel_hyca" holding JSON: format version, model family, hidden size,
solver names in index order, and how the map was calibrated (steps, sampler, scheduler, the
full-step schedule, per-solver calibration error, date). `scripts/calibrate_hyca.py` makes them.

Loaded profiles are cached by (path, mtime, size): every forecaster of a run asks for the profile,
and the file is read once until it changes on disk.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import ConfigError

FORMAT_VERSION = 1
METADATA_KEY = "dit_accel_hyca"
CALIBRATE_HINT = ("Make a profile for this model with `.venv/bin/python scripts/calibrate_hyca.py` "
                  "(see its --help), or pick another forecast method.")

# The solver pool: profile name -> (registered forecaster, order). Names are stored in profiles,
# so never rename one; add new solvers at the end.
SOLVERS: dict[str, tuple[str, int]] = {
    "reuse": ("reuse", 0),
    "taylorseer_o1": ("taylorseer", 1),
    "taylorseer_o2": ("taylorseer", 2),
    "hicache_o2": ("hicache", 2),
    "foca": ("foca", 1),
}


@dataclass(frozen=True)
class HyCaProfile:
    """A channel -> solver map and how it was made.

    Attributes:
        solver_index: int64 [C], entry c indexes `solvers`.
        solvers: solver names (keys of SOLVERS) in index order.
        family: model family the map was calibrated on (ModelSpec.family, e.g. "flux").
        cluster_index: int64 [C] calibration cluster per channel, or None.
        info: calibration record (steps, sampler, scheduler, schedule, solver_errors, created, ...).
        source: where it was loaded from ("" when built in memory); used in error messages.
    """

    solver_index: torch.Tensor
    solvers: tuple[str, ...]
    family: str
    cluster_index: torch.Tensor | None = None
    info: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def hidden_size(self) -> int:
        return int(self.solver_index.numel())

    def groups(self) -> list[tuple[str, torch.Tensor]]:
        """(solver name, sorted channel indices) for every solver that owns at least one channel."""
        out = []
        for k, name in enumerate(self.solvers):
            channels = torch.nonzero(self.solver_index == k).flatten()
            if channels.numel():
                out.append((name, channels))
        return out

    def channel_counts(self) -> dict[str, int]:
        return {name: int((self.solver_index == k).sum()) for k, name in enumerate(self.solvers)}

    def describe(self) -> str:
        return f"HyCa profile {self.source or '(in memory)'} ({self.family}, hidden size {self.hidden_size})"

    def check_compatible(self, family: str | None = None, hidden_size: int | None = None) -> None:
        """Raise ConfigError when the profile was made for another model family or hidden size."""
        if family is not None and family != self.family:
            raise ConfigError(
                f"Forecast Cache: {self.describe()} was calibrated on model family {self.family!r}, "
                f"but the model is {family!r}. {CALIBRATE_HINT}")
        if hidden_size is not None and hidden_size != self.hidden_size:
            raise ConfigError(
                f"Forecast Cache: {self.describe()} maps {self.hidden_size} hidden channels, but the model's "
                f"hidden states have {hidden_size}. {CALIBRATE_HINT}")


def _bad(source: str, problem: str) -> ConfigError:
    return ConfigError(f"Forecast Cache: HyCa profile {source or '(in memory)'} is invalid: {problem}. "
                       f"{CALIBRATE_HINT}")


def _validate(p: HyCaProfile) -> None:
    idx = p.solver_index
    if not isinstance(idx, torch.Tensor) or idx.dim() != 1 or idx.numel() == 0:
        raise _bad(p.source, "solver_index must be a non-empty 1-D tensor (one entry per hidden channel)")
    if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
        raise _bad(p.source, f"solver_index must hold integers, found {idx.dtype}")
    unknown = [s for s in p.solvers if s not in SOLVERS]
    if not p.solvers or unknown:
        raise _bad(p.source, f"unknown solver names {unknown or '(none listed)'}; known: {', '.join(SOLVERS)}")
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= len(p.solvers):
        raise _bad(p.source, f"solver_index values must lie in 0..{len(p.solvers) - 1} "
                             f"({len(p.solvers)} solvers), found {lo}..{hi}")
    if p.cluster_index is not None and p.cluster_index.shape != idx.shape:
        raise _bad(p.source, f"cluster_index has shape {tuple(p.cluster_index.shape)}, "
                             f"expected {tuple(idx.shape)}")
    if not isinstance(p.family, str) or not p.family:
        raise _bad(p.source, "the model family is missing")


# ------------------------------------------------------------------------------------ files
def save_profile(path: str | os.PathLike, profile: HyCaProfile) -> Path:
    """Write `profile` to `path` (safetensors); returns the path."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {"solver_index": profile.solver_index.to(torch.int8).contiguous()}
    if profile.cluster_index is not None:
        tensors["cluster_index"] = profile.cluster_index.to(torch.int16).contiguous()
    meta = {**profile.info, "format_version": FORMAT_VERSION, "family": profile.family,
            "hidden_size": profile.hidden_size, "solvers": list(profile.solvers)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    return path


def load_profile(path: str | os.PathLike) -> HyCaProfile:
    """Read and validate a profile; every problem raises ConfigError naming the file and the fix."""
    from safetensors import SafetensorError, safe_open

    source = str(path)
    if not source:
        raise ConfigError(f"Forecast Cache: method 'hyca' needs a calibration profile (hyca_profile is empty). "
                          f"{CALIBRATE_HINT}")
    if not Path(source).is_file():
        raise ConfigError(f"Forecast Cache: HyCa profile {source} does not exist. {CALIBRATE_HINT}")
    try:
        with safe_open(source, framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
            keys = set(f.keys())
            tensors = {k: f.get_tensor(k) for k in ("solver_index", "cluster_index") if k in keys}
    except (SafetensorError, OSError, ValueError) as e:
        raise _bad(source, f"not a readable safetensors file ({e})") from None
    if raw is None:
        raise _bad(source, f"no '{METADATA_KEY}' metadata (not a HyCa profile)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise _bad(source, f"metadata is not JSON ({e})") from None
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise _bad(source, f"format version {version!r}, this DiT Accel reads version {FORMAT_VERSION}")
    if "solver_index" not in tensors:
        raise _bad(source, "the tensor 'solver_index' is missing")
    solver_index = tensors["solver_index"].to(torch.int64) if not tensors["solver_index"].dtype.is_floating_point \
        else tensors["solver_index"]
    if meta.get("hidden_size") != solver_index.numel():
        raise _bad(source, f"metadata says hidden size {meta.get('hidden_size')!r}, "
                           f"solver_index has {solver_index.numel()} entries")
    cluster = tensors.get("cluster_index")
    info = {k: v for k, v in meta.items() if k not in ("format_version", "family", "hidden_size", "solvers")}
    return HyCaProfile(
        solver_index=solver_index, solvers=tuple(meta.get("solvers") or ()), family=meta.get("family") or "",
        cluster_index=cluster.to(torch.int64) if cluster is not None else None, info=info, source=source,
    )


_CACHE: dict[str, tuple[tuple[int, int], HyCaProfile]] = {}


def load_profile_cached(path: str | os.PathLike) -> HyCaProfile:
    """load_profile, read again only when the file's mtime or size changes."""
    source = str(path)
    try:
        st = os.stat(source)
    except OSError:
        return load_profile(source)  # raises the typed "does not exist" error
    key = os.path.abspath(source)
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    profile = load_profile(source)
    _CACHE[key] = (stamp, profile)
    return profile


def clear_profile_cache() -> None:
    _CACHE.clear()
