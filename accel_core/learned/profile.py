"""One file format for learned predictors: safetensors tensors + one JSON header.

The header (safetensors metadata key "dit_accel_learned") holds at least:
  format_version, method ("l2p", "lesa", "hyca"), family, fingerprint (of the model weights,
  `model_fingerprint`), cache_level ("output"; "final_hidden" for hyca), steps, sampler, scheduler, sigmas
  (the schedule fitted on), budget (the full-step plan), validation (held-back score measured at fitting
  time), created (UTC date).
Methods add their own fields. `write_profile` / `read_profile` / `check_header` are the shared
helpers; `save_l2p` / `load_l2p` the L2P profile on top of them (LESA: `lesa.py`, HyCa:
`accel_core/learned/hyca_profile.py`); `loading.py` picks the loader by the header's method.

Loading is confined to a profile folder: only `.safetensors`, no `..`, no absolute path or symlink
that lands outside the folder, at most MAX_PROFILE_BYTES. The folders are passed in (`root`) or
registered once by the host (`register_profile_dir`, or $DIT_ACCEL_PROFILE_DIRS), so a workflow JSON
cannot make the pack read an arbitrary file.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch

from ..errors import ProfileFormatError, ProfileMismatchError, ProfilePathError
from .l2p import L2PTable
from .validation import check_fields, check_l2p_tables

FORMAT_VERSION = 1
METADATA_KEY = "dit_accel_learned"
MAX_PROFILE_BYTES = 1 << 20
SUFFIX = ".safetensors"
REQUIRED = ("format_version", "method", "family", "fingerprint", "cache_level", "steps", "sampler", "scheduler",
            "sigmas", "budget", "validation", "created")
HINT = (
    "Make a profile for this model with the Calibrate Forecasts node (docs/CALIBRATION.md) or "
    "scripts/calibrate_l2p.py, or disconnect the profile (clear learned_profile).")

_DIRS: list[Path] = []


def register_profile_dir(path: str | os.PathLike) -> None:
    """Allow profiles to be loaded from `path` (the host's profile folder)."""
    p = Path(path).resolve()
    if p not in _DIRS:
        _DIRS.append(p)


def profile_dirs() -> list[Path]:
    env = [Path(p).resolve() for p in os.environ.get("DIT_ACCEL_PROFILE_DIRS", "").split(os.pathsep) if p]
    return _DIRS + [p for p in env if p not in _DIRS]


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------ fingerprint
FINGERPRINT_TENSORS = 4  # first and last tensors (by name) whose values are hashed
FINGERPRINT_VALUES = 1 << 14  # values hashed per tensor


def model_fingerprint(named_tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> str:
    """Short hash of a model's weights: every tensor's name and shape, plus the first values of the
    first and last FINGERPRINT_TENSORS tensors (by name). Values are hashed as bf16, so the same
    weights loaded as fp32, fp16 or bf16 give the same fingerprint; retrained weights do not."""
    items = sorted(named_tensors.items() if isinstance(named_tensors, Mapping) else named_tensors,
                   key=lambda kv: kv[0])
    h = hashlib.sha256()
    for name, t in items:
        h.update(f"{name}:{tuple(t.shape)};".encode())
    picked = items[:FINGERPRINT_TENSORS] + items[-FINGERPRINT_TENSORS:] if len(items) > 2 * FINGERPRINT_TENSORS \
        else items
    for name, t in picked:
        values = t.detach().flatten()[:FINGERPRINT_VALUES].to("cpu", torch.bfloat16)
        h.update(values.view(torch.int16).numpy().tobytes())
    return "sha256:" + h.hexdigest()[:24]


# ------------------------------------------------------------------------------------ paths
def resolve_profile_path(path: str | os.PathLike, root: str | os.PathLike | None = None, hint: str = HINT) -> Path:
    """The real path of profile `path` inside `root` (or a registered folder); ProfileError otherwise.
    `hint` (how to make a profile) ends the messages; each method passes its own."""
    raw = str(path)
    p = Path(raw)
    if not raw:
        raise ProfilePathError(f"Forecast Cache: learned_profile is empty. {hint}")
    if p.suffix.lower() != SUFFIX:
        raise ProfileFormatError(f"Forecast Cache: profile {raw!r} is not a {SUFFIX} file; only safetensors "
                                 f"profiles are read. {hint}")
    if ".." in p.parts:
        raise ProfilePathError(f"Forecast Cache: profile path {raw!r} contains '..'; give a file inside the "
                               "profile folder.")
    roots = [Path(root).resolve()] if root is not None else profile_dirs()
    if not roots:
        raise ProfilePathError(f"Forecast Cache: no profile folder is registered, so {raw!r} cannot be read. "
                               "Put profiles in ComfyUI's models/dit_accel folder.")
    for base in roots:
        full = (p if p.is_absolute() else base / p).resolve()  # follows symlinks
        if full.is_relative_to(base):
            if full.suffix.lower() != SUFFIX:
                raise ProfileFormatError(f"Forecast Cache: profile {raw!r} links to {full.name}, not a {SUFFIX} "
                                         f"file. {hint}")
            if not full.is_file():
                raise ProfilePathError(f"Forecast Cache: profile {raw!r} does not exist in {base}. {hint}")
            return full
    raise ProfilePathError(f"Forecast Cache: profile {raw!r} lies outside the profile folder(s) "
                           f"{', '.join(str(r) for r in roots)} (absolute path or symlink elsewhere); copy it "
                           "into the folder.")


def confined(path: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> Path | None:
    """The real path of `path` (symlinks resolved, nothing opened) when it lies inside one of `roots`, else
    None: listing a folder must neither show nor read a link that leads out of it."""
    try:
        real = Path(path).resolve()
        bases = [Path(r).resolve() for r in roots]
    except (OSError, RuntimeError):  # a symlink loop
        return None
    return real if any(real.is_relative_to(b) for b in bases) else None


# ------------------------------------------------------------------------------------ files
def write_profile(path: str | os.PathLike, tensors: dict[str, torch.Tensor], header: dict) -> Path:
    """Write tensors + header; the header gets format_version and created if missing."""
    from safetensors.torch import save_file

    missing = [k for k in REQUIRED if k not in header and k not in ("format_version", "created")]
    if missing:
        raise ProfileFormatError(f"profile header misses {missing}")
    meta = {"format_version": FORMAT_VERSION, "created": utc_now(), **header}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
              metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    size = path.stat().st_size
    if size > MAX_PROFILE_BYTES:
        path.unlink()
        raise ProfileFormatError(f"profile would be {size} bytes, over the {MAX_PROFILE_BYTES} byte limit")
    return path


def read_profile(path: str | os.PathLike, root: str | os.PathLike | None = None,
                 hint: str = HINT) -> tuple[dict, dict[str, torch.Tensor], Path]:
    """(header, tensors, real path) of a confined, size-checked safetensors profile."""
    from safetensors import SafetensorError, safe_open

    full = resolve_profile_path(path, root, hint)
    size = full.stat().st_size
    if size > MAX_PROFILE_BYTES:
        raise ProfileFormatError(f"Forecast Cache: profile {full.name} is {size} bytes, over the "
                                 f"{MAX_PROFILE_BYTES} byte limit of a profile. {hint}")
    try:
        with safe_open(str(full), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ProfileFormatError(f"Forecast Cache: profile {full.name} is not a readable safetensors file "
                                 f"({e}). {hint}") from None
    if raw is None:
        raise ProfileFormatError(f"Forecast Cache: {full.name} has no '{METADATA_KEY}' header (not a DiT Accel "
                                 f"learned profile). {hint}")
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ProfileFormatError(f"Forecast Cache: profile {full.name} header is not JSON ({e}). {hint}") from None
    if not isinstance(header, dict):
        raise ProfileFormatError(f"Forecast Cache: profile {full.name} header is not a JSON object. {hint}")
    return header, tensors, full


def profile_method(path: str | os.PathLike) -> str | None:
    """The "method" of a learned profile file ("l2p", ...), None for anything else (another safetensors
    file, unreadable, too large). Reads only the safetensors header; for listing a folder."""
    from safetensors import safe_open

    try:
        p = Path(path)
        if p.suffix.lower() != SUFFIX or p.stat().st_size > MAX_PROFILE_BYTES:
            return None
        with safe_open(str(p), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
        header = json.loads(raw) if raw else None
    except Exception:  # noqa: BLE001 - any unreadable file is simply not a profile
        return None
    return header.get("method") if isinstance(header, dict) else None


def check_header(header: dict, source: str, method: str, family: str | None = None,
                 fingerprint: str | None = None, hint: str = HINT) -> None:
    """Format version, method and required fields; then family and fingerprint when given."""
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ProfileFormatError(f"Forecast Cache: profile {source} has format version {version!r}; this DiT Accel "
                                 f"reads version {FORMAT_VERSION}. {hint}")
    if header.get("method") != method:
        raise ProfileFormatError(f"Forecast Cache: profile {source} is a {header.get('method')!r} profile, "
                                 f"expected {method!r}. {hint}")
    missing = [k for k in REQUIRED if k not in header]
    if missing:
        raise ProfileFormatError(f"Forecast Cache: profile {source} misses header fields {missing}. {hint}")
    check_fields(header, source, hint)  # types and ranges (validation.py)
    if family is not None and header["family"] != family:
        raise ProfileMismatchError(f"Forecast Cache: profile {source} was calibrated on model family "
                                   f"{header['family']!r}, but the model is {family!r}. {hint}")
    if fingerprint is not None and header["fingerprint"] != fingerprint:
        raise ProfileMismatchError(f"Forecast Cache: profile {source} was calibrated on other model weights "
                                   f"(fingerprint {header['fingerprint']}, this model {fingerprint}). {hint}")


# ------------------------------------------------------------------------------------ L2P profiles
LAYOUTS = ("guided", "split")


@dataclass(frozen=True)
class L2PProfile:
    """`table`: the guided slope's table ("guided" layout) or the unconditional slope's ("split");
    `guidance`: the guidance direction's table (split only). Profiles without a "layout" header field
    (made before the split layout existed) are "guided"."""

    table: L2PTable
    header: dict = field(default_factory=dict)
    source: str = ""
    guidance: L2PTable | None = None

    @property
    def family(self) -> str:
        return self.header.get("family", "")

    @property
    def layout(self) -> str:
        return "split" if self.guidance is not None else "guided"

    @property
    def method(self) -> str:
        return self.header.get("method", "l2p")

    def tables(self) -> dict[str, L2PTable]:
        if self.guidance is None:
            return {"guided": self.table}
        return {"uncond": self.table, "guidance": self.guidance}


def save_l2p(path: str | os.PathLike, table: L2PTable, header: dict, guidance: L2PTable | None = None) -> Path:
    """One-series ("guided") profile of `table`, or with `guidance` a "split" profile: `table` is then the
    unconditional slope's table, tensors coef_uncond / coef_guidance (the rows, i.e. the forecast steps,
    are shared: both are fitted on one plan)."""
    shared = {"time": table.time.float(), "sigma": table.sigma.float(), "since_full": table.since_full.to(torch.int32)}
    if guidance is None:
        tensors = {"coef": table.coef.float(), **shared}
        layout, history = "guided", table.history
    else:
        same = guidance.steps == table.steps and list(guidance.plan) == list(table.plan) and \
            torch.equal(guidance.time.float(), shared["time"]) and \
            torch.equal(guidance.since_full.to(torch.int32), shared["since_full"])
        if not same:
            raise ProfileFormatError("split L2P profile: the uncond and guidance tables must share steps, plan "
                                     "and forecast rows")
        tensors = {"coef_uncond": table.coef.float(), "coef_guidance": guidance.coef.float(), **shared}
        layout, history = "split", {"uncond": table.history, "guidance": guidance.history}
    full = {**header, "method": "l2p", "cache_level": "output", "steps": table.steps, "history": history,
            "layout": layout, "basis": "newton_sigma", "time_axis": "step_fraction",
            "budget": {**header.get("budget", {}), "full_steps": [i for i, f in enumerate(table.plan) if f]}}
    return write_profile(path, tensors, full)


def load_l2p(path: str | os.PathLike, root: str | os.PathLike | None = None, family: str | None = None,
             fingerprint: str | None = None) -> L2PProfile:
    header, tensors, full = read_profile(path, root)
    source = full.name
    check_header(header, source, "l2p", family, fingerprint)
    layout = header.get("layout", "guided")  # profiles from before the split layout: one series
    if layout not in LAYOUTS:
        raise ProfileFormatError(f"Forecast Cache: L2P profile {source} has layout {layout!r}; this DiT Accel "
                                 f"reads {', '.join(LAYOUTS)}. {HINT}")
    coefs = ("coef",) if layout == "guided" else ("coef_uncond", "coef_guidance")
    need = {**{c: 2 for c in coefs}, "time": 1, "sigma": 1, "since_full": 1}
    for name, dim in need.items():
        if name not in tensors or tensors[name].dim() != dim:
            raise ProfileFormatError(f"Forecast Cache: L2P profile {source} ({layout} layout) lacks a {dim}-D "
                                     f"tensor {name!r}. {HINT}")
    rows = tensors["time"].shape[0]
    if any(tensors[n].shape[0] != rows for n in need):
        raise ProfileFormatError(f"Forecast Cache: L2P profile {source} has tables of different lengths "
                                 f"({', '.join(f'{n}: {tensors[n].shape[0]}' for n in need)}); every table has one "
                                 f"row per forecast step. {HINT}")
    steps = header["steps"]
    check_l2p_tables(tensors, coefs, steps, source, HINT)
    full_steps = set(header["budget"].get("full_steps", []))
    plan = [i in full_steps for i in range(steps)]
    tables = [L2PTable(coef=tensors[c].float(), time=tensors["time"].float(), sigma=tensors["sigma"].float(),
                       since_full=tensors["since_full"].to(torch.int64), steps=steps, plan=list(plan))
              for c in coefs]
    return L2PProfile(table=tables[0], header=header, source=str(full),
                      guidance=tables[1] if layout == "split" else None)
