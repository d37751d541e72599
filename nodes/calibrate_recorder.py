"""Calibrate Forecasts' recorder: the wrappers that record the artist's uncached runs, and the runs kept per
profile name until a group is complete and fitted (nodes/calibrate_fit.py).

Recording hooks only through keyed wrappers on a clone (docs/ARCHITECTURE.md): OUTER_SAMPLE opens the run
(schedule, sampler), PREDICT_NOISE stores each step's slope (x - denoised) / sigma, the only thing the
fit reads, and returns the model's output object untouched. With plain CFG (cfg != 1, both branches),
a post-CFG hook hands it the cond / uncond outputs and it stores the unconditional slope and the
guidance slope (uncond - cond) / sigma instead: the profile is then fitted as those two series ("split"
layout, accel_core/learned/calibrate.py); runs without (cfg 1, guidance-distilled models) give the
one-series ("guided") profile. Runs of the two kinds are never fitted together. Finished runs go to a process-level
recorder per profile name (the newest `max_runs` kept, at most MAX_RECORDERS names); when `runs_needed`
runs share one schedule (steps, sampler, sigmas) and model, the profile is fitted with a progress bar
and saved to models/dit_accel/<profile_name>.safetensors (refitted on every later run of that group).
Method hyca (nodes/hyca_calibration.py) also records the final-hidden residual per call through block
hooks and keeps each run's inputs, so that the closed-loop fit can sample the runs again through Forecast
Cache; its profile is loaded with the HyCa Profile node.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

import comfy.model_patcher
import comfy.samplers
import torch

from accel_core import ConfigError
from accel_core.learned import SlopeTrajectory, SplitTrajectory
from accel_core.learned.calibrate import resolve_layout
from accel_core.learned.calibration_fit import METHOD_LABELS, RecordedRun, Recorder
from accel_core.output.run import is_plain_cfg

from . import hyca_calibration as hyca_gui
from .calibrate_fit import check_overwrite, fit_and_save
from .diagnostics import publish_calibration
from .host import sampler_name
from .keys import CALIBRATE_KEY, OPTIONS_KEY, RECORDING_KEY

log = logging.getLogger("DiTAccel")

MAX_RECORDERS = 4  # profile names recorded at once (oldest dropped)

RECORDERS: collections.OrderedDict[str, Recorder] = collections.OrderedDict()
_LOCK = threading.Lock()
# Reports of recent calibration events (plain dicts), newest last, for diagnostics and tests.
REPORTS: collections.deque = collections.deque(maxlen=32)


def recorder(name: str) -> Recorder:
    with _LOCK:
        rec = RECORDERS.pop(name, None) or Recorder(name)
        RECORDERS[name] = rec  # newest last
        while len(RECORDERS) > MAX_RECORDERS:
            dropped, _ = RECORDERS.popitem(last=False)
            log.info("DiT Accel: calibration runs of profile %r dropped (at most %d profile names are "
                     "recorded at once)", dropped, MAX_RECORDERS)
        return rec


def clear_recorders() -> None:
    with _LOCK:
        RECORDERS.clear()


def report(settings: dict, payload: dict) -> dict:
    payload = {"profile_name": settings["profile_name"], **payload}
    REPORTS.append(payload)
    publish_calibration(payload, settings.get("node_id"))
    return payload


# ------------------------------------------------------------------------------------ wrappers
class _Recording:
    """One run being recorded: the schedule and each step's slope; with plain CFG also (uncond slope,
    guidance slope, scale)."""

    def __init__(self, sigmas: list[float]):
        self.sigmas = sigmas
        self.calls: list[tuple[float, torch.Tensor, tuple | None]] = []
        self.pending = None  # (cond, uncond, scale) of the call in progress, from the post-CFG hook
        self.hidden: hyca_gui.HiddenRecording | None = None  # method hyca only
        self.case: hyca_gui.ReplayCase | None = None


def scheduler_label(model_sampling, sigmas: list[float]) -> str:
    """The ComfyUI scheduler whose sigmas at this step count match the run's, else "custom"."""
    steps = len(sigmas) - 1
    run = torch.tensor(sigmas, dtype=torch.float64)
    for name in getattr(comfy.samplers, "SCHEDULER_NAMES", []):
        try:
            ref = comfy.samplers.calculate_sigmas(model_sampling, name, steps).double().cpu()
        except Exception:  # noqa: BLE001 - a scheduler that cannot serve this model is simply not it
            continue
        if ref.shape == run.shape and torch.allclose(ref, run, rtol=1e-4, atol=1e-6):
            return name
    return "custom"


def outer_sample_wrapper(executor, *args, **kwargs):
    guider = executor.class_obj
    settings = guider.model_options.get("transformer_options", {}).get(CALIBRATE_KEY)
    if settings is None:
        return executor(*args, **kwargs)
    cache = guider.model_options.get("transformer_options", {}).get(OPTIONS_KEY)
    if cache is not None and getattr(cache.get("config"), "enabled", False):
        log.warning("DiT Accel: Calibrate Forecasts needs uncached runs, but a Forecast Cache is applied to this "
                    "model too; this run is not recorded. Connect Calibrate Forecasts straight to the sampler.")
        return executor(*args, **kwargs)
    sigmas = args[3] if len(args) > 3 else kwargs["sigmas"]
    sampler = sampler_name(args[2] if len(args) > 2 else kwargs.get("sampler"))
    schedule = [float(s) for s in sigmas.flatten().tolist()]
    recording = _Recording(schedule)
    orig_model_options = guider.model_options
    guider.model_options = comfy.model_patcher.create_model_options_clone(orig_model_options)
    transformer_options = guider.model_options.setdefault("transformer_options", {})
    transformer_options[RECORDING_KEY] = recording
    if settings.get("method") == "hyca":  # hidden states per call, and what samples the run again
        recording.case = hyca_gui.ReplayCase.capture(guider, args, kwargs)
        recording.hidden = transformer_options[hyca_gui.HIDDEN_KEY] = hyca_gui.HiddenRecording(recording.case.seed)
    started = time.perf_counter()
    try:
        out = executor(*args, **kwargs)
    finally:
        guider.model_options = orig_model_options
    seconds = time.perf_counter() - started
    if recording.case is not None:
        recording.case.truth = out.detach().clone()
    try:
        model_sampling = guider.model_patcher.get_model_object("model_sampling")
        finish_run(settings, recording, sampler, scheduler_label(model_sampling, schedule), seconds)
    except ConfigError as e:  # e.g. another method's profile appeared under this name: said, not a traceback
        log.warning("DiT Accel: %s This run is not fitted.", e)
        report(settings, {"status": "error", "message": f"calibration failed: {e}"})
    except Exception as e:  # noqa: BLE001 - the image is done; a failed fit must not lose it
        log.exception("DiT Accel: Calibrate Forecasts could not record or fit this run")
        report(settings, {"status": "error", "message": f"calibration failed: {e}"})
    return out


@torch.compiler.disable
def predict_noise_wrapper(executor, x, timestep, model_options=None, seed=None, *args, **kwargs):
    out = executor(x, timestep, model_options, seed, *args, **kwargs)
    options = model_options if isinstance(model_options, dict) else {}
    recording = options.get("transformer_options", {}).get(RECORDING_KEY)
    if isinstance(recording, _Recording):
        sigma = float(timestep.detach().flatten().max().item())
        if sigma > 0:
            xf = x.detach().float()
            slope = (xf - out.detach().float()) / sigma  # new tensors: `out` is returned as is
            split = None
            # The branches are kept only when plain-CFG runs are fitted as two series (twice the memory).
            l2p_fit = options["transformer_options"][CALIBRATE_KEY]["l2p_fit"]  # the node's settings
            if l2p_fit.cfg_layout == "split" and is_plain_cfg(out.detach(), recording.pending):
                cond, uncond, scale = recording.pending
                split = (((xf - uncond.float()) / sigma).cpu(), ((uncond.float() - cond.float()) / sigma).cpu(), scale)
            recording.calls.append((sigma, slope.cpu(), split))
        recording.pending = None
    return out


def record_cfg_branches(args: dict) -> torch.Tensor:
    """Post-CFG hook: hand the call's branch outputs to the run being recorded (output unchanged)."""
    options = args.get("model_options") or {}
    recording = options.get("transformer_options", {}).get(RECORDING_KEY)
    if isinstance(recording, _Recording) and args.get("uncond_denoised") is not None:
        recording.pending = (args["cond_denoised"].detach(), args["uncond_denoised"].detach(),
                             float(args["cond_scale"]))
    return args["denoised"]


# ------------------------------------------------------------------------------------ finished runs
def finish_run(settings: dict, recording: _Recording, sampler: str | None, scheduler: str, seconds: float) -> None:
    """Store a finished run; fit and save the profile once its group has runs_needed runs."""
    name, sigmas = settings["profile_name"], recording.sigmas
    steps = len(sigmas) - 1
    calls = recording.calls
    matches = len(calls) == steps and all(
        abs(c[0] - s) <= 1e-4 * max(s, 1e-8) for c, s in zip(calls, sigmas[:steps]))
    if not matches:
        log.warning("DiT Accel: Calibrate Forecasts: %d model calls for %d steps (sampler %s); L2P calibration "
                    "needs a one-call-per-step sampler (euler, euler_ancestral, ...). This run is not recorded.",
                    len(calls), steps, sampler or "unknown")
        report(settings, {"status": "skipped", "message": f"{len(calls)} model calls for {steps} steps: use a "
                          "one-call-per-step sampler such as euler"})
        return
    scales = {c[2][2] for c in calls if c[2] is not None}
    if recording.hidden is not None:  # hyca: the hidden residuals (branches stacked) and the replay case
        values, call_sigmas, branches = recording.hidden.values()
        trajectory = hyca_gui.HyCaRun(values, call_sigmas, sigmas, branches, recording.case)
        layout = f"hidden, {branches} branch(es)"
    elif all(c[2] is not None for c in calls) and len(scales) == 1:  # plain CFG at every step: two series
        trajectory = SplitTrajectory(sigmas, torch.stack([c[2][0] for c in calls]),
                                     torch.stack([c[2][1] for c in calls]), scales.pop())
        layout = resolve_layout([trajectory], l2p_fit=settings["l2p_fit"])
    else:
        trajectory = SlopeTrajectory(sigmas, torch.stack([c[1] for c in calls]))
        layout = resolve_layout([trajectory], l2p_fit=settings["l2p_fit"])
    key = (settings["fingerprint"], steps, sampler, tuple(round(s, 4) for s in sigmas), layout)
    rec = recorder(name)
    group = rec.add(RecordedRun(key, trajectory, sampler, scheduler, seconds), settings["max_runs"])
    needed = settings["runs_needed"]
    what = f"{steps} steps, {sampler or 'unknown sampler'}, {scheduler}" + (
        f", cfg {trajectory.scale:g} ({layout} layout)" if isinstance(trajectory, SplitTrajectory) else "")
    if len(group) < needed:
        log.info("DiT Accel: Calibrate Forecasts %r: recorded run %d of %d (%s; %.1f MB kept)", name, len(group),
                 needed, what, rec.nbytes / 2 ** 20)
        report(settings, {"status": "recording", "runs": len(group), "runs_needed": needed,
                          "message": f"recorded {len(group)}/{needed} runs ({what})"})
        return
    method = settings.get("method", "l2p")
    if check_overwrite(name, method) is not None:  # checked again: the folder may have changed since the node ran
        what += ("; refitted with this run" if rec.fits else
                 f"; replaces the earlier {METHOD_LABELS[method]} profile of that name")
    fitted = fit_and_save(settings, group, what, record_cfg_branches)
    log.info("DiT Accel: Calibrate Forecasts %r: %s", name, fitted.message)
    report(settings, {"status": "saved", "path": str(fitted.path), "runs": fitted.runs,
                      "runs_needed": settings["runs_needed"], "validation": fitted.validation,
                      "message": fitted.message})
    rec.fits += 1
