"""One validation layer for profile files (L2P, LESA, HyCa): every header field a run reads has a type and
a range, every table is finite and bounded. Host-free.

Profiles are files a user downloads, edits or shares, so a loader never trusts them: `check_fields` runs on
every header (inside `profile.check_header`), `check_table` on every tensor a forecast multiplies with, and
each problem raises ProfileFormatError with the usual message shape (the file, the field, the value found,
what is allowed, and how to get a good profile). A profile that fails is never used: Forecast Cache refuses
it when the node runs, so nothing fails mid-sampling.

Bounds: coefficient tables of the shipped and calibrated profiles stay below 1.1 in magnitude and LESA's
expert weights below 5 (bench/results/l2p_profiles); COEF_LIMIT and WEIGHT_LIMIT leave a factor of about
200 over that and still keep a forecast's size within a few orders of the computed outputs (the run's
finite-output guard, accel_core/output/guard.py, catches what remains).
"""
from __future__ import annotations

import math
from typing import Mapping

import torch

from ..errors import ProfileFormatError

COEF_LIMIT = 1e3  # |coefficient| of an L2P / LESA table
WEIGHT_LIMIT = 1e3  # |parameter| of a LESA stage expert
SIGMA_LIMIT = 1e6  # noise levels (flow models: <= 1; EDM-style schedules: up to about 100)
MAX_STEPS = 10_000  # steps a profile may be fitted on
# LESA expert sizes (the shipped ones: history 4-6, stages 3, width 8, grid 5); the bounds keep a hostile
# header from allocating a huge network before its weights are checked.
LESA_LIMITS = {"history": (1, 16), "stages": (1, 16), "width": (1, 64), "grid": (1, 32)}


def _bad(source: str, what: str, found: object, allowed: str, hint: str) -> ProfileFormatError:
    """`found`: the value (shown with repr, shortened), or a str already formatted for the message."""
    shown = found if isinstance(found, _Shown) else repr(found)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ProfileFormatError(f"Forecast Cache: profile {source} has {what} {shown}; allowed: {allowed}. "
                              f"The file is damaged or was edited by hand. {hint}")


class _Shown(str):
    """A value already formatted for a message (not repr'd again)."""


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_int(header: Mapping, key: str, low: int, high: int, source: str, hint: str) -> int:
    value = header.get(key)
    if not is_int(value) or not low <= value <= high:
        raise _bad(source, f"header field {key!r} =", value, f"an integer in {low}..{high}", hint)
    return value


def check_fields(header: Mapping, source: str, hint: str) -> None:
    """Types and ranges of the shared header fields (format_version, method and presence are checked
    before, by check_header)."""
    steps = check_int(header, "steps", 1, MAX_STEPS, source, hint)
    for key in ("family", "fingerprint", "cache_level", "scheduler"):
        if not isinstance(header.get(key), str):
            raise _bad(source, f"header field {key!r} =", header.get(key), "a string", hint)
    if header.get("sampler") is not None and not isinstance(header.get("sampler"), str):
        raise _bad(source, "header field 'sampler' =", header.get("sampler"), "a sampler name or null", hint)
    budget = header.get("budget")
    if not isinstance(budget, Mapping):
        raise _bad(source, "header field 'budget' =", budget, "a mapping such as {\"preset\": \"balanced\", "
                   "\"full_steps\": [0, 1, 2, ...]}", hint)
    full = budget.get("full_steps", [])
    if not isinstance(full, list) or not all(is_int(s) and 0 <= s < steps for s in full):
        raise _bad(source, "budget 'full_steps' =", full, f"a list of step indices in 0..{steps - 1}", hint)
    sigmas = header.get("sigmas")
    if (not isinstance(sigmas, list) or len(sigmas) < 2 or len(sigmas) > MAX_STEPS + 1
            or not all(is_number(s) and s >= 0 for s in sigmas)
            or any(b > a for a, b in zip(sigmas, sigmas[1:]))):
        raise _bad(source, "header field 'sigmas' =", sigmas, "a list of 2 or more finite sigmas >= 0 in "
                   "sampling order (each no larger than the one before)", hint)
    if not isinstance(header.get("validation"), Mapping):
        raise _bad(source, "header field 'validation' =", header.get("validation"), "a mapping", hint)
    cfg = header.get("cfg")
    if cfg is not None and not is_number(cfg):
        raise _bad(source, "header field 'cfg' =", cfg, "a finite number or absent", hint)
    check_schedule(header, source, hint)


def check_schedule(header: Mapping, source: str, hint: str) -> None:
    """HyCa's optional 'schedule' record: a mapping whose time_axis (if given) is a string."""
    schedule = header.get("schedule")
    if schedule is None:
        return
    if not isinstance(schedule, Mapping) or not isinstance(schedule.get("time_axis", ""), str):
        raise _bad(source, "header field 'schedule' =", schedule, "a mapping with a string 'time_axis'", hint)


def check_table(tensors: Mapping[str, torch.Tensor], name: str, source: str, hint: str,
                low: float = -COEF_LIMIT, high: float = COEF_LIMIT, integer: bool = False) -> None:
    """Tensor `name` is finite and within [low, high] (integers: whole numbers)."""
    t = tensors[name]
    if t.is_complex() or t.dtype == torch.bool:
        raise _bad(source, f"table {name!r} of type", _Shown(str(t.dtype)), "real numbers", hint)
    values = t.detach().double()
    if not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        raise _bad(source, f"table {name!r} with {bad} non-finite value(s), e.g.",
                   float(values[~torch.isfinite(values)].flatten()[0]), f"finite values in [{low:g}, {high:g}]", hint)
    if values.numel():
        lo, hi = float(values.min()), float(values.max())
        if lo < low or hi > high:
            raise _bad(source, f"table {name!r} with values in", _Shown(f"[{lo:g}, {hi:g}]"),
                       f"values in [{low:g}, {high:g}]", hint)
    if integer and values.numel() and not bool((values == values.round()).all()):
        raise _bad(source, f"table {name!r} with", _Shown("fractional values"), "whole numbers", hint)


def check_l2p_tables(tensors: Mapping[str, torch.Tensor], coefs: tuple[str, ...], steps: int, source: str,
                     hint: str) -> None:
    """The forecast rows of an L2P / LESA profile: coefficients, normalized time, sigma, steps since full."""
    for name in coefs:
        check_table(tensors, name, source, hint)
    check_table(tensors, "time", source, hint, 0.0, 1.0)
    check_table(tensors, "sigma", source, hint, 0.0, SIGMA_LIMIT)
    check_table(tensors, "since_full", source, hint, 1, steps, integer=True)


def check_lesa_config(cfg: object, source: str, hint: str) -> dict:
    """The header's 'lesa' record (expert sizes), bounded before any network is built."""
    if not isinstance(cfg, Mapping):
        raise _bad(source, "header field 'lesa' =", cfg, "a mapping with history, stages, width, grid, gap_scale",
                   hint)
    out = {key: check_int(cfg, key, low, high, source, hint) for key, (low, high) in LESA_LIMITS.items()}
    gap = cfg.get("gap_scale")
    if not is_number(gap) or not 0 < gap <= MAX_STEPS:
        raise _bad(source, "LESA field 'gap_scale' =", gap, f"a number in (0, {MAX_STEPS}]", hint)
    out["gap_scale"] = float(gap)
    return out
