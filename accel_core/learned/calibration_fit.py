"""The Calibrate Forecasts node's fit, host-free: recorded runs become an L2P or LESA profile saved under
the name the node was given, with the header every learned method shares and one message that scores the fit
on the runs held back (nodes/calibrate_fit.py adds the progress bar, the profile folder and HyCa's closed
loop; nodes/calibrate_recorder.py records the runs).

Runs are kept per profile name (`Recorder`, newest last); the runs of one group (`RecordedRun.key`: model
fingerprint, steps, sampler, rounded sigmas, CFG layout) are fitted together. A quarter of them (at least
one) is held back to score the fit (accel_core/learned/calibrate.py, lesa.py); the message gives that
error against output reuse's as a percentage.
"""
from __future__ import annotations

import collections
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from .calibrate import DEFAULT_FIT, budget_header, choose_and_fit, fit_layout, fit_steps, resolve_layout
from .l2p import SlopeTrajectory, SplitTrajectory, fit
from .lesa import choose_and_fit_lesa, save_lesa
from .profile import save_l2p

METHODS = ("l2p", "lesa", "hyca")  # learned forecasters the node can fit
METHOD_LABELS = {"l2p": "L2P", "lesa": "LESA", "hyca": "HyCa"}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,99}$")
NAME_RULE = ("1-100 characters: letters, digits, spaces, '_', '-', '.', starting with a letter or digit; "
             "no path separators and no '..'; not a name Windows reserves (CON, PRN, AUX, NUL, COM0-9, LPT0-9)")
METHOD_FIELD = "{method}"  # replaced by the method in profile_name, so the default names differ per method
DEFAULT_NAME = "my_model_" + METHOD_FIELD
# Device names Windows reserves whatever the extension ("nul.safetensors" is the null device there).
RESERVED_NAMES = frozenset(["CON", "PRN", "AUX", "NUL"] + [f"{d}{i}" for d in ("COM", "LPT") for i in range(10)])
LESA_PROGRESS_UNITS = 4  # L2P fit, LESA on the fitting runs, the held-back score, LESA on all runs

# progress(total) -> update(units): a progress bar of `total` units, advanced by `units` per call
Progress = Callable[[int], Callable[[int], None]]


# ------------------------------------------------------------------------------------ names
def check_profile_name(name: str, method: str = "l2p") -> str:
    """The profile's file stem for `name` ({method} replaced by the method), or ConfigError naming the input,
    the value and the rule."""
    stem = name.strip().replace(METHOD_FIELD, method)
    if stem.lower().endswith(".safetensors"):
        stem = stem[: -len(".safetensors")]
    if not NAME_PATTERN.match(stem) or ".." in stem:
        raise ConfigError(
            f"Calibrate Forecasts: profile_name {name!r} is not a plain file name. Allowed: {NAME_RULE}. "
            "Give a name such as 'my_flux_balanced'; the profile is saved as "
            "models/dit_accel/<profile_name>.safetensors.")
    device = stem.split(".")[0].strip().upper()
    if device in RESERVED_NAMES:
        raise ConfigError(
            f"Calibrate Forecasts: profile_name {name!r} is {device}, a device name Windows reserves (with any "
            f"extension); a profile of that name could not be saved or shared there. Allowed: {NAME_RULE}. "
            f"Give another name, e.g. '{device.lower()}_{method}' or 'my_flux_{method}'.")
    return stem


# ------------------------------------------------------------------------------------ recorded runs
@dataclass
class RecordedRun:
    key: tuple  # (fingerprint, steps, sampler, rounded sigmas, CFG layout): runs fitted together share it
    trajectory: object  # SlopeTrajectory | SplitTrajectory, or HyCa's recorded run (nodes/hyca_calibration.py)
    sampler: str | None  # None: not a k-diffusion sampler the pack can name (matches any at run time)
    scheduler: str
    seconds: float


class Recorder:
    """The recorded runs of one profile name, newest last, at most `max_runs` (oldest dropped)."""

    def __init__(self, name: str):
        self.name = name
        self.runs: collections.deque[RecordedRun] = collections.deque()
        self.fits = 0

    def add(self, run: RecordedRun, max_runs: int) -> list[RecordedRun]:
        """Keep `run` (and the newest max_runs - 1 before it); returns the runs of its group."""
        self.runs.append(run)
        while len(self.runs) > max_runs:
            self.runs.popleft()
        return [r for r in self.runs if r.key == run.key]

    @property
    def nbytes(self) -> int:
        return sum(r.trajectory.nbytes for r in self.runs)


# ------------------------------------------------------------------------------------ messages
def versus(error: float, reference: float, name: str = "output reuse") -> str:
    """'4 % lower than output reuse': a held-back error against a baseline's, as a percentage."""
    if not reference > 0 or error != error:
        return f"no {name} error to compare with"
    change = (error - reference) / reference * 100.0
    if abs(change) < 0.05:
        return f"same as {name}"
    digits = 0 if abs(change) >= 1 else 1
    return f"{abs(change):.{digits}f} % {'lower' if change < 0 else 'higher'} than {name}"


def held_back(validation: dict, runs: int) -> str:
    """'2 fitted, 1 held back' from a fit's validation record."""
    held = validation.get("held_back_trajectories", validation.get("held_back_runs", max(1, runs // 4)))
    return f"{runs - held} fitted, {held} held back"


@dataclass
class Fitted:
    """A saved profile: where, from how many runs, its held-back record and the message that says so."""

    path: Path
    runs: int
    validation: dict
    message: str


def saved(path: Path, trajectories: list, validation: dict, what: str, scores: str) -> Fitted:
    message = (f"saved {path.name} ({what}) from {len(trajectories)} runs ({held_back(validation, len(trajectories))}):"
               f" {scores}")
    return Fitted(path, len(trajectories), validation, message)


# ------------------------------------------------------------------------------------ fits
def profile_header(settings: dict, group: list[RecordedRun], trajectories, budget_entry: dict, validation: dict,
                   **more) -> dict:
    """Profile metadata shared by every learned method the node fits. A HyCa run names its latent shape
    (`latent_shape`); a slope trajectory's is its slopes' shape."""
    shapes = {str(t.latent_shape if hasattr(t, "latent_shape") else list(t.slopes().shape[1:]))
              for t in trajectories}
    return {**more, "family": settings["family"], "fingerprint": settings["fingerprint"], "model": settings["model"],
            "sampler": group[0].sampler, "scheduler": group[0].scheduler,
            "sigmas": [round(s, 6) for s in trajectories[0].sigmas], "budget": budget_entry, "validation": validation,
            "calibration": {"source": "Calibrate Forecasts node", "trajectories": len(trajectories),
                            "latent_shapes": sorted(shapes)}}


def fit_l2p(settings: dict, group: list[RecordedRun], what: str, path: str | os.PathLike,
             progress: Progress) -> Fitted:
    """L2P: the table (one series, or two with the split CFG layout) chosen on held-back runs, saved at `path`."""
    budget = settings["budget"]
    started = time.perf_counter()
    trajectories = [r.trajectory for r in group]
    sigmas = trajectories[0].sigmas
    plan, budget_entry = budget_header(budget, sigmas)
    layout = resolve_layout(trajectories, l2p_fit=settings.get("l2p_fit", DEFAULT_FIT))  # the node sets it
    bar = progress(fit_steps(layout))
    tables, validation, layout = fit_layout(trajectories, plan, layout, progress=lambda: bar(1))
    cfg = {"cfg": trajectories[0].scale} if isinstance(trajectories[0], SplitTrajectory) else {}
    header = profile_header(settings, group, trajectories, budget_entry, validation, **cfg)
    path = save_l2p(path, tables.get("guided", tables.get("uncond")), header, guidance=tables.get("guidance"))
    seconds = time.perf_counter() - started
    return saved(path, trajectories, validation, f"{budget} {budget_entry['share']}, {what}",
                 f"held-back error {validation['l2p_rel_error']:.4f} vs output reuse "
                 f"{validation['reuse_rel_error']:.4f} "
                 f"({versus(validation['l2p_rel_error'], validation['reuse_rel_error'])}); fit {seconds:.1f} s")


def fit_lesa(settings: dict, group: list[RecordedRun], what: str, path: str | os.PathLike,
             progress: Progress) -> Fitted:
    """LESA: the L2P table plus stage experts trained closed loop (accel_core/learned/lesa.py); guided layout
    only (a plain-CFG run is fitted on its guided slope)."""
    budget = settings["budget"]
    started = time.perf_counter()
    trajectories: list[SlopeTrajectory] = [
        r.trajectory.series("guided") if isinstance(r.trajectory, SplitTrajectory) else r.trajectory for r in group]
    sigmas = trajectories[0].sigmas
    plan, budget_entry = budget_header(budget, sigmas)
    bar = progress(LESA_PROGRESS_UNITS)
    table, l2p_val = choose_and_fit(trajectories, plan)
    bar(1)
    held = l2p_val["held_back_trajectories"]
    table_train = fit(trajectories[:-held], plan, l2p_val["history"], l2p_val["ridge"])
    bar(1)
    model, validation = choose_and_fit_lesa(trajectories, table_train, table)
    bar(2)
    header = profile_header(settings, group, trajectories, budget_entry, validation, l2p_validation=l2p_val)
    path = save_lesa(path, model, table, header)
    seconds = time.perf_counter() - started
    return saved(path, trajectories, validation, f"LESA, {budget} {budget_entry['share']}, {what}",
                 f"held-back state error {validation['lesa_state_error']:.4f} vs L2P "
                 f"{validation['l2p_state_error']:.4f} and output reuse {validation['reuse_state_error']:.4f} "
                 f"({versus(validation['lesa_state_error'], validation['reuse_state_error'])}, "
                 f"{versus(validation['lesa_state_error'], validation['l2p_state_error'], 'L2P')}); "
                 f"fit {seconds:.1f} s")
