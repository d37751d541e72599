"""HyCa profiles: the per-channel solver map of one model, on the shared learned-profile format.

A profile (accel_core/learned/profile.py: safetensors + one JSON header, method "hyca", cache level
"final_hidden") holds the tensor "solver_index" (int8, [C]: which solver forecasts each hidden channel)
and optionally "cluster_index" (int16, [C]: the calibration cluster of each channel). The header has the
shared fields (family, weight fingerprint, steps, sampler, scheduler, sigmas, budget, validation, created)
plus hidden_size, solvers (names in index order), schedule (time axis, warm-up / final steps, intervals)
and the calibration record. Made by the Calibrate Forecasts node (method hyca) or scripts/calibrate_hyca.py;
read like L2P / LESA profiles: confined to the profile folder, safetensors only, family and fingerprint
checked.

Old profiles (metadata key "dit_accel_hyca", before the shared format) still load: they carry family,
hidden size and solvers, everything a run needs, and the shipped micro-model profiles and benches use
them; they have no weight fingerprint, so only family and hidden size are checked, and one info line per
file says so and how to recreate it. They are never written any more.

Loaded profiles are cached by (path, mtime, size): every forecaster of a run asks for the profile,
and the file is read once until it changes on disk. `in_memory` lends a profile under a name no file
has, for the closed-loop calibration's candidate maps (no files written, nothing outside the folder read).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from ..errors import ConfigError, ProfileFormatError, ProfileMismatchError
from .file_cache import load_by_stamp
from .profile import (MAX_PROFILE_BYTES, METADATA_KEY, check_header, read_profile, resolve_profile_path,
                              write_profile)
from .validation import check_schedule

log = logging.getLogger(__name__)

LEGACY_KEY = "dit_accel_hyca"  # metadata key of profiles made before the shared format
LEGACY_VERSION = 1
METHOD = "hyca"
CACHE_LEVEL = "final_hidden"
MEMORY_PREFIX = "memory:"
CALIBRATE_HINT = ("Make a profile for this model with the Calibrate Forecasts node (method hyca, "
                  "docs/CALIBRATION.md) or `.venv/bin/python scripts/calibrate_hyca.py` (see its --help), or pick "
                  "another forecast method.")
_OWN_FIELDS = ("format_version", "method", "family", "hidden_size", "solvers")  # header fields that are not info

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
        info: the rest of the header: the shared fields (fingerprint, steps, sampler, scheduler, sigmas,
            budget, validation, created, ...), schedule and the calibration record.
        source: where it was loaded from ("" when built in memory); used in error messages.
        legacy: read from an old-format file (no weight fingerprint).
    """

    solver_index: torch.Tensor
    solvers: tuple[str, ...]
    family: str
    cluster_index: torch.Tensor | None = None
    info: dict = field(default_factory=dict)
    source: str = ""
    legacy: bool = False

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def hidden_size(self) -> int:
        return int(self.solver_index.numel())

    @property
    def fingerprint(self) -> str | None:
        """Fingerprint of the weights it was calibrated on (None for old-format files)."""
        return self.info.get("fingerprint")

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
        """Raise ProfileMismatchError when the profile was made for another model family or hidden size."""
        if family is not None and family != self.family:
            raise ProfileMismatchError(
                f"Forecast Cache: {self.describe()} was calibrated on model family {self.family!r}, "
                f"but the model is {family!r}. {CALIBRATE_HINT}")
        if hidden_size is not None and hidden_size != self.hidden_size:
            raise ProfileMismatchError(
                f"Forecast Cache: {self.describe()} maps {self.hidden_size} hidden channels, but the model's "
                f"hidden states have {hidden_size}. {CALIBRATE_HINT}")


def _bad(source: str, problem: str) -> ProfileFormatError:
    return ProfileFormatError(f"Forecast Cache: HyCa profile {source or '(in memory)'} is invalid: {problem}. "
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
    """Write `profile` in the shared format; its info must hold the shared header fields (fingerprint,
    steps, sampler, scheduler, sigmas, budget, validation). Returns the path."""
    tensors = {"solver_index": profile.solver_index.to(torch.int8)}
    if profile.cluster_index is not None:
        tensors["cluster_index"] = profile.cluster_index.to(torch.int16)
    header = {**profile.info, "method": METHOD, "cache_level": CACHE_LEVEL, "family": profile.family,
              "hidden_size": profile.hidden_size, "solvers": list(profile.solvers)}
    return write_profile(path, tensors, header)


def load_profile(path: str | os.PathLike, root: str | os.PathLike | None = None, family: str | None = None,
                 fingerprint: str | None = None) -> HyCaProfile:
    """Read and validate a profile inside `root` (or a registered profile folder); family and fingerprint
    are checked when given (an old-format file has no fingerprint: see the module docstring). Every problem
    raises a ConfigError (ProfileError) naming the file and the fix."""
    if not str(path):
        raise ConfigError(f"Forecast Cache: method 'hyca' needs a calibration profile (hyca_profile is empty). "
                          f"{CALIBRATE_HINT}")
    full = resolve_profile_path(path, root, CALIBRATE_HINT)
    if _metadata_key(full) == LEGACY_KEY:
        profile = _load_legacy(full)
        profile.check_compatible(family)
        return profile
    header, tensors, full = read_profile(full, full.parent, CALIBRATE_HINT)
    check_header(header, full.name, METHOD, family, fingerprint, CALIBRATE_HINT)
    return _from_parts(str(full), header, tensors)


def _metadata_key(full: Path) -> str | None:
    """Which profile header the file has (the shared one, the legacy HyCa one, or None)."""
    from safetensors import SafetensorError, safe_open

    if full.stat().st_size > MAX_PROFILE_BYTES:
        return None  # read_profile reports the size
    try:
        with safe_open(str(full), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None  # read_profile reports it as unreadable
    if METADATA_KEY in meta:
        return METADATA_KEY
    return LEGACY_KEY if LEGACY_KEY in meta else None


def _from_parts(source: str, header: dict, tensors: dict[str, torch.Tensor], legacy: bool = False) -> HyCaProfile:
    """A HyCaProfile from a header (shared or legacy) and its tensors, with the format's own checks."""
    if "solver_index" not in tensors:
        raise _bad(source, "the tensor 'solver_index' is missing")
    solvers = header.get("solvers")
    if not isinstance(solvers, list) or not all(isinstance(s, str) for s in solvers):
        raise _bad(source, f"header field 'solvers' is {solvers!r}; it must be a list of solver names "
                           f"({', '.join(SOLVERS)})")
    check_schedule(header, Path(source).name, CALIBRATE_HINT)
    index = tensors["solver_index"]
    index = index if index.dtype.is_floating_point else index.to(torch.int64)
    if header.get("hidden_size") != index.numel():
        raise _bad(source, f"the header says hidden size {header.get('hidden_size')!r}, solver_index has "
                           f"{index.numel()} entries")
    cluster = tensors.get("cluster_index")
    return HyCaProfile(solver_index=index, solvers=tuple(header.get("solvers") or ()),
                       family=header.get("family") or "",
                       cluster_index=cluster.to(torch.int64) if cluster is not None else None,
                       info={k: v for k, v in header.items() if k not in _OWN_FIELDS}, source=source,
                       legacy=legacy)


_LEGACY_LOGGED: set[str] = set()


def _load_legacy(full: Path) -> HyCaProfile:
    """An old-format profile (metadata key LEGACY_KEY), with one info line per file."""
    from safetensors import safe_open

    source = str(full)
    with safe_open(source, framework="pt", device="cpu") as f:
        raw = (f.metadata() or {})[LEGACY_KEY]
        tensors = {k: f.get_tensor(k) for k in ("solver_index", "cluster_index") if k in set(f.keys())}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise _bad(source, f"metadata is not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise _bad(source, f"its header is a JSON {type(meta).__name__}, not an object with family, hidden_size "
                           "and solvers")
    version = meta.get("format_version")
    if version != LEGACY_VERSION:
        raise _bad(source, f"old-format version {version!r}, this DiT Accel reads version {LEGACY_VERSION}")
    profile = _from_parts(source, meta, tensors, legacy=True)
    if source not in _LEGACY_LOGGED:
        _LEGACY_LOGGED.add(source)
        log.info("DiT Accel: HyCa profile %s is in the old format (no weight fingerprint): its family and hidden "
                 "size are checked, not that it was calibrated on these weights. Recreate it with the Calibrate "
                 "Forecasts node (method hyca) or scripts/calibrate_hyca.py to get that check.", full.name)
    return profile


def is_hyca_profile(path: str | os.PathLike) -> bool:
    """Whether `path` is a HyCa profile (shared format with method hyca, or the old format); reads only the
    header, never raises (for listing a folder)."""
    from safetensors import safe_open

    try:
        p = Path(path)
        if p.suffix.lower() != ".safetensors" or p.stat().st_size > MAX_PROFILE_BYTES:
            return False
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
        if LEGACY_KEY in meta:
            return True
        header = json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else None
    except Exception:  # noqa: BLE001 - an unreadable file is simply not a profile
        return False
    return isinstance(header, dict) and header.get("method") == METHOD


# ------------------------------------------------------------------------------------ cache, in-memory profiles
_CACHE: dict[str, tuple[tuple[int, int], HyCaProfile]] = {}
_MEMORY: dict[str, HyCaProfile] = {}
_MEMORY_IDS = itertools.count()


def load_profile_cached(path: str | os.PathLike, root: str | os.PathLike | None = None) -> HyCaProfile:
    """load_profile (no family / fingerprint check: the node checked them), read again only when the file's
    mtime or size changes; a name lent by `in_memory` returns that profile."""
    name = str(path)
    if name.startswith(MEMORY_PREFIX):
        if name not in _MEMORY:
            raise ConfigError(f"Forecast Cache: HyCa profile {name!r} is a calibration candidate that no longer "
                              f"exists. Pick a profile file. {CALIBRATE_HINT}")
        return _MEMORY[name]
    if not name:
        return load_profile(name)  # raises the typed "empty" error
    full = resolve_profile_path(name, root, CALIBRATE_HINT)
    return load_by_stamp(_CACHE, full, lambda f: load_profile(f, f.parent))


def clear_profile_cache() -> None:
    _CACHE.clear()


@contextlib.contextmanager
def in_memory(profile: HyCaProfile) -> Iterator[str]:
    """Lend `profile` to Forecast Cache for the duration of the block under a name (`memory:<n>`) usable as
    ForecastCacheConfig.hyca_profile; the closed-loop calibration scores candidate maps this way."""
    name = f"{MEMORY_PREFIX}hyca-candidate-{next(_MEMORY_IDS)}"
    _MEMORY[name] = profile
    try:
        yield name
    finally:
        _MEMORY.pop(name, None)
