"""L2P calibration in the GUI: "Calibrate Forecasts" records the artist's own uncached runs and
fits a profile; "Learned Forecast Profile" picks one for Forecast Cache's 'learned' input.

Recording hooks only through keyed wrappers on a clone (ARCHITECTURE.md): OUTER_SAMPLE opens the run
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
import dataclasses
import logging
import os
import re
import threading
import time
from dataclasses import dataclass

import comfy.model_patcher
import comfy.patcher_extension
import torch
from comfy_api.latest import io

from accel_core import ConfigError
from accel_core.config import FROM_PRESET, resolve_config
from accel_core.learned import SlopeTrajectory, SplitTrajectory, model_fingerprint, save_l2p
from accel_core.learned.calibrate import (BUDGETS, MIN_RUNS, L2PFit, budget_header, fit_layout, fit_steps,
                                          resolve_layout)
from accel_core.output.run import is_plain_cfg
from accel_core.learned.hyca_profile import is_hyca_profile
from accel_core.learned.profile import profile_method

from . import hyca_calibration as hyca_gui
from .diagnostics import publish_calibration
from .host import detect_spec, sampler_name
from .keys import CALIBRATE_KEY, OPTIONS_KEY, RECORDING_KEY
from .profiles import learned_profiles, outside_folder_error, profile_file, profile_path

log = logging.getLogger("DiTAccel")

METHODS = ("l2p", "lesa", "hyca")  # learned forecasters the node can fit
MAX_RECORDERS = 4  # profile names recorded at once (oldest dropped)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,99}$")
NAME_RULE = ("1-100 characters: letters, digits, spaces, '_', '-', '.', starting with a letter or digit; "
             "no path separators and no '..'; not a name Windows reserves (CON, PRN, AUX, NUL, COM0-9, LPT0-9)")
METHOD_FIELD = "{method}"  # replaced by the method in profile_name, so the default names differ per method
DEFAULT_NAME = "my_model_" + METHOD_FIELD
# Device names Windows reserves whatever the extension ("nul.safetensors" is the null device there).
RESERVED_NAMES = frozenset(["CON", "PRN", "AUX", "NUL"] + [f"{d}{i}" for d in ("COM", "LPT") for i in range(10)])
METHOD_LABELS = {"l2p": "L2P", "lesa": "LESA", "hyca": "HyCa"}

LearnedOptions = io.Custom("DITACCEL_LEARNED")

BUDGET_HELP = ("Which Forecast Cache preset the profile is fitted for (its even full-step plan): quality = 1/3 "
               "of the steps computed, balanced = 1/5, fast = 1/7. Use the same preset in Forecast Cache; "
               "another preset still works (rows are looked up by steps since the last full step).")


# ------------------------------------------------------------------------------------ names and paths
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


def existing_method(stem: str) -> str | None:
    """The method of the profile models/dit_accel/<stem>.safetensors ("l2p", "lesa", "hyca"), None when there
    is none; ConfigError when a file is there that this node must not overwrite (another file, an old-format
    HyCa profile, a link that leads outside the folder)."""
    path = profile_path(stem)
    if not os.path.lexists(path):
        return None
    if profile_file(stem + ".safetensors") is None:
        raise ConfigError(f"Calibrate Forecasts: models/dit_accel/{stem}.safetensors is a link that leads outside "
                          "the profile folder; it is neither read nor overwritten. Choose another profile_name.")
    method = profile_method(path)
    if method not in METHODS:
        raise ConfigError(f"Calibrate Forecasts: models/dit_accel/{stem}.safetensors exists and is not a profile "
                          "this node makes (an old-format HyCa profile or another file); it is not overwritten. "
                          "Choose another profile_name.")
    return method


def check_overwrite(stem: str, method: str) -> str | None:
    """The method of the profile a fit would replace (same method only), or ConfigError when it is another
    method's profile: calibrating L2P over a HyCa profile must not destroy it."""
    old = existing_method(stem)
    if old is not None and old != method:
        raise ConfigError(
            f"Calibrate Forecasts: models/dit_accel/{stem}.safetensors is a {METHOD_LABELS[old]} profile; method "
            f"{method} would overwrite it. Choose another profile_name (e.g. '{stem}_{method}'; the default "
            f"'{DEFAULT_NAME}' names each method's profile apart), or delete that file first.")
    return old


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


# ------------------------------------------------------------------------------------ recorder
@dataclass
class RecordedRun:
    key: tuple  # (fingerprint, steps, sampler, rounded sigmas, CFG layout): runs fitted together share it
    trajectory: SlopeTrajectory | SplitTrajectory
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
    import comfy.samplers

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


# ------------------------------------------------------------------------------------ fitting
def report(settings: dict, payload: dict) -> dict:
    payload = {"profile_name": settings["profile_name"], **payload}
    REPORTS.append(payload)
    publish_calibration(payload, settings.get("node_id"))
    return payload


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
    fit_and_save(settings, group, what)
    rec.fits += 1


LESA_PROGRESS_UNITS = 4  # L2P fit, LESA on the fitting runs, the held-back score, LESA on all runs


def fit_and_save_lesa(settings: dict, group: list[RecordedRun], what: str) -> str:
    """LESA: the L2P table plus stage experts trained closed loop (accel_core/learned/lesa.py); guided layout
    only (a plain-CFG run is fitted on its guided slope)."""
    import comfy.utils

    from accel_core.learned import fit
    from accel_core.learned.calibrate import choose_and_fit
    from accel_core.learned.lesa import choose_and_fit_lesa, save_lesa

    name, budget = settings["profile_name"], settings["budget"]
    started = time.perf_counter()
    trajectories = [r.trajectory.series("guided") if isinstance(r.trajectory, SplitTrajectory) else r.trajectory
                    for r in group]
    sigmas = trajectories[0].sigmas
    plan, budget_entry = budget_header(budget, sigmas)
    bar = comfy.utils.ProgressBar(LESA_PROGRESS_UNITS)
    table, l2p_val = choose_and_fit(trajectories, plan)
    bar.update(1)
    held = l2p_val["held_back_trajectories"]
    table_train = fit(trajectories[:-held], plan, l2p_val["history"], l2p_val["ridge"])
    bar.update(1)
    model, validation = choose_and_fit_lesa(trajectories, table_train, table)
    bar.update(2)
    header = _header(settings, group, trajectories, budget_entry, validation, l2p_validation=l2p_val)
    path = save_lesa(profile_path(name), model, table, header)
    seconds = time.perf_counter() - started
    return _saved(settings, path, trajectories, validation,
                  f"LESA, {budget} {budget_entry['share']}, {what}",
                  f"held-back state error {validation['lesa_state_error']:.4f} vs L2P "
                  f"{validation['l2p_state_error']:.4f} and output reuse {validation['reuse_state_error']:.4f} "
                  f"({versus(validation['lesa_state_error'], validation['reuse_state_error'])}, "
                  f"{versus(validation['lesa_state_error'], validation['l2p_state_error'], 'L2P')}); "
                  f"fit {seconds:.1f} s")


def _header(settings: dict, group: list[RecordedRun], trajectories, budget_entry: dict, validation: dict,
            **more) -> dict:
    """Profile metadata shared by every learned method the node fits."""
    shapes = {str(t.latent_shape if isinstance(t, hyca_gui.HyCaRun) else list(t.slopes().shape[1:]))
              for t in trajectories}
    return {**more, "family": settings["family"], "fingerprint": settings["fingerprint"], "model": settings["model"],
            "sampler": group[0].sampler, "scheduler": group[0].scheduler,
            "sigmas": [round(s, 6) for s in trajectories[0].sigmas], "budget": budget_entry, "validation": validation,
            "calibration": {"source": "Calibrate Forecasts node", "trajectories": len(trajectories),
                            "latent_shapes": sorted(shapes)}}


def _saved(settings: dict, path, trajectories, validation: dict, what: str, scores: str) -> str:
    message = (f"saved {path.name} ({what}) from {len(trajectories)} runs ({held_back(validation, len(trajectories))}):"
               f" {scores}")
    log.info("DiT Accel: Calibrate Forecasts %r: %s", settings["profile_name"], message)
    report(settings, {"status": "saved", "path": str(path), "runs": len(trajectories),
                      "runs_needed": settings["runs_needed"], "validation": validation, "message": message})
    return str(path)


def hyca_config(budget: str, family: str, profile: str = hyca_gui.PLAN_PROFILE):
    """The Forecast Cache config a run with this preset and a HyCa Profile node connected gets."""
    return resolve_config(budget, FROM_PRESET, FROM_PRESET, 0, -1, -1, -1, 0.0, 1.0, family,
                          hyca={"hyca_profile": profile})


def fit_and_save_hyca(settings: dict, group: list[RecordedRun], what: str) -> str:
    """HyCa: clusters and open-loop map from the hidden trajectories, each cluster's solver chosen closed loop
    by sampling the fitting runs again through Forecast Cache (nodes/hyca_calibration.py)."""
    import comfy.utils

    from accel_core.learned.hyca_profile import save_profile

    from .adapter import apply_forecast_cache

    name, budget, family = settings["profile_name"], settings["budget"], settings["family"]
    started = time.perf_counter()
    runs = [r.trajectory for r in group]
    config = hyca_config(budget, family)
    bars: list = []  # the bar is made once the number of candidates is known

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(comfy.utils.ProgressBar(total))
        bars[0].update_absolute(done, total)

    patcher = hyca_gui.uncalibrated(runs[-1].case.guider.model_patcher, CALIBRATE_KEY, record_cfg_branches)
    fit = hyca_gui.fit_closed_loop(runs, patcher, family, config, apply_forecast_cache, progress=progress)
    steps = len(runs[0].sigmas) - 1
    budget_entry = {"preset": budget, "interval": config.interval, "warmup_steps": config.warmup_steps,
                    "final_full_steps": config.final_full_steps, "share": f"{sum(fit.plan)}/{steps}",
                    "full_steps": [i for i, f in enumerate(fit.plan) if f]}
    schedule = {"time_axis": config.time_axis, "warmup_steps": config.warmup_steps,
                "final_full_steps": config.final_full_steps, "intervals": [config.interval],
                "full_steps": [sum(fit.plan)]}
    header = _header(settings, group, runs, budget_entry, fit.validation, steps=steps, schedule=schedule,
                     cfg=runs[0].case.cfg, record_tokens=hyca_gui.RECORD_TOKENS, **fit.profile.info)
    path = save_profile(profile_path(name), dataclasses.replace(fit.profile, info=header))
    seconds = time.perf_counter() - started
    v = fit.validation
    kept = (f"kept the closed-loop map ({', '.join(v['closed_loop']['cluster_solvers'])})" if v["kept"] != "foca"
            else "the closed-loop map lost to FoCa there, so the profile is FoCa on every channel")
    return _saved(settings, path, runs, v, f"HyCa, {budget} {budget_entry['share']}, {what}",
                  f"held-back error {v['hyca_rel_error']:.4f} (worst {v['hyca_worst']:.4f}) vs FoCa "
                  f"{v['foca_rel_error']:.4f} (worst {v['foca_worst']:.4f}) and reuse {v['reuse_rel_error']:.4f} "
                  f"({versus(v['hyca_rel_error'], v['reuse_rel_error'])}, "
                  f"{versus(v['hyca_rel_error'], v['foca_rel_error'], 'FoCa')}), "
                  f"relative L2 of the final latent; {kept}; fit {seconds:.1f} s. Use it with HyCa Profile -> "
                  "Forecast Cache 'hyca'")


def fit_and_save(settings: dict, group: list[RecordedRun], what: str) -> str:
    if settings.get("method", "l2p") == "lesa":
        return fit_and_save_lesa(settings, group, what)
    if settings.get("method") == "hyca":
        return fit_and_save_hyca(settings, group, what)
    import comfy.utils

    name, budget = settings["profile_name"], settings["budget"]
    started = time.perf_counter()
    trajectories = [r.trajectory for r in group]
    sigmas = trajectories[0].sigmas
    plan, budget_entry = budget_header(budget, sigmas)
    layout = resolve_layout(trajectories, l2p_fit=settings["l2p_fit"])
    bar = comfy.utils.ProgressBar(fit_steps(layout))
    tables, validation, layout = fit_layout(trajectories, plan, layout, progress=lambda: bar.update(1))
    cfg = {"cfg": trajectories[0].scale} if isinstance(trajectories[0], SplitTrajectory) else {}
    header = _header(settings, group, trajectories, budget_entry, validation, **cfg)
    path = save_l2p(profile_path(name), tables.get("guided", tables.get("uncond")), header,
                    guidance=tables.get("guidance"))
    seconds = time.perf_counter() - started
    return _saved(settings, path, trajectories, validation, f"{budget} {budget_entry['share']}, {what}",
                  f"held-back error {validation['l2p_rel_error']:.4f} vs output reuse "
                  f"{validation['reuse_rel_error']:.4f} "
                  f"({versus(validation['l2p_rel_error'], validation['reuse_rel_error'])}); fit {seconds:.1f} s")


# ------------------------------------------------------------------------------------ nodes
class DiTAccelCalibrate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelCalibrate",
            display_name="Calibrate Forecasts (L2P / LESA / HyCa)",
            category="DiT Accel/calibration",
            description=(
                "Learns how this model's output evolves from your own runs, for Forecast Cache's L2P forecasts. "
                "Put it between the model loader and a KSampler (no Forecast Cache on this path) and render "
                "your usual prompts: every run is recorded, the image is unchanged. After runs_needed runs "
                "with the same steps / sampler / scheduler, it fits and saves models/dit_accel/"
                "<profile_name>.safetensors (a few KB; refitted on every later run; method lesa adds stage experts "
                "trained closed loop). Load it with Learned "
                "Forecast Profile -> Forecast Cache. Method hyca makes a HyCa profile instead (per-channel "
                "forecasters chosen closed loop), loaded with HyCa Profile -> Forecast Cache 'hyca'. See "
                "docs/CALIBRATION.md."
            ),
            inputs=[
                io.Model.Input("model", tooltip="Diffusion model from a loader (FLUX, Kontext, Qwen-Image, "
                               "HunyuanVideo), with the LoRAs you will use."),
                io.String.Input("profile_name", default=DEFAULT_NAME,
                                tooltip="File name of the profile, saved as models/dit_accel/<profile_name>"
                                ".safetensors; {method} is replaced by the method (my_model_l2p, my_model_lesa, "
                                "my_model_hyca). A profile of the same method and name is replaced; one of another "
                                "method is never overwritten (the node refuses). " + NAME_RULE + "."),
                io.Combo.Input("budget", options=list(BUDGETS), default="balanced", tooltip=BUDGET_HELP),
                io.Int.Input("runs_needed", default=4, min=MIN_RUNS, max=64, step=1,
                             tooltip="Runs (queued prompts) with the same steps, sampler and scheduler before the "
                             "profile is fitted; a quarter of them (at least one) is held back to score the fit, so "
                             "at least 2: one run to fit and one held back (2 fits on a single run). "
                             "Recommended 4-8 different prompts / seeds. Samplers must make one model call per "
                             "step (euler, euler_ancestral, ...)."),
                io.Int.Input("max_runs", default=8, min=MIN_RUNS, max=64, step=1,
                             tooltip="Most runs kept in memory for this profile name (the newest; older ones are "
                             "dropped). Each run keeps one latent-sized float32 tensor per step, on the CPU: "
                             "FLUX 1024x1024 at 20 steps is about 20 MB per run; method hyca adds the hidden "
                             "states of 256 tokens per step and CFG branch (FLUX: about 60 MB per run at 20 steps). "
                             "Must be at least runs_needed."),
                # Optional: API prompts saved before this input existed stay valid (they mean l2p).
                io.Combo.Input("method", options=list(METHODS), default="l2p", optional=True,
                               tooltip="l2p: per-step linear weights, fitted in about a second. lesa: the same "
                               "weights adjusted by small stage experts trained on the closed-loop error (about "
                               "25 s on 2 CPU cores for a micro model; longer on real latents). On our held-out "
                               "prompts LESA beat L2P on every model (+1.1 to +5.2 dB) and the training-free preset "
                               "on every validation model; fitted on the guided output (plain CFG included). "
                               "hyca: a forecaster per hidden channel for the hidden-state cache, chosen closed loop "
                               "by sampling your runs again 22 times each with Forecast Cache (38-50 CPU seconds "
                               "for a micro model at 50 steps; about 20 uncached runs' worth on real models); on our "
                               "models the result was FoCa on every channel. Use the profile with HyCa Profile."),
            ],
            outputs=[io.Model.Output(tooltip="The same model, recording its runs; images are bit-identical to "
                                     "the input model's.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model: io.Model.Type, profile_name: str, budget: str = "balanced", runs_needed: int = 4,
                max_runs: int = 8, method: str = "l2p") -> io.NodeOutput:
        if method not in METHODS:
            raise ConfigError(f"Calibrate Forecasts: method {method!r} is unknown; choose one of {', '.join(METHODS)}.")
        stem = check_profile_name(profile_name, method)
        if budget not in BUDGETS:
            raise ConfigError(f"Calibrate Forecasts: budget {budget!r} is unknown; choose one of "
                              f"{', '.join(BUDGETS)}.")
        if not isinstance(runs_needed, int) or runs_needed < MIN_RUNS:
            raise ConfigError(f"Calibrate Forecasts: runs_needed is {runs_needed!r}; it must be at least {MIN_RUNS}: "
                              "one run to fit the profile and one held back to score it. Set runs_needed to 4-8.")
        if max_runs < runs_needed:
            raise ConfigError(f"Calibrate Forecasts: max_runs ({max_runs}) is below runs_needed ({runs_needed}); "
                              f"keep at least {runs_needed} runs: raise max_runs to {runs_needed} or more, or lower "
                              "runs_needed.")
        if check_overwrite(stem, method) is not None:
            log.info("DiT Accel: Calibrate Forecasts: models/dit_accel/%s.safetensors is a %s profile; the fit replaces "
                     "it.", stem, METHOD_LABELS[method])
        if runs_needed == MIN_RUNS:
            log.info("DiT Accel: Calibrate Forecasts %r: runs_needed %d fits the profile on 1 run and holds 1 back to "
                     "score it; 4-8 runs of different prompts fit better.", stem, runs_needed)
        spec, diffusion_model, class_name = detect_spec(model)
        patched = model.clone()
        if spec is None:
            log.warning("DiT Accel: Calibrate Forecasts does not support %s (supported: Flux/Kontext, "
                        "Qwen-Image/Edit, HunyuanVideo 1.0/1.5); the model runs unchanged and nothing is recorded.",
                        class_name)
            return io.NodeOutput(patched)
        settings = {"profile_name": stem, "budget": budget, "runs_needed": int(runs_needed), "method": method,
                    "max_runs": int(max_runs), "family": spec.family, "model": class_name, "l2p_fit": L2PFit(),
                    "fingerprint": model_fingerprint(diffusion_model.state_dict()),
                    "node_id": getattr(getattr(cls, "hidden", None), "unique_id", None)}
        patched.model_options.setdefault("transformer_options", {})[CALIBRATE_KEY] = settings
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, CALIBRATE_KEY,
                                     outer_sample_wrapper)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, CALIBRATE_KEY,
                                     predict_noise_wrapper)
        patched.set_model_sampler_post_cfg_function(record_cfg_branches)  # cond / uncond of plain-CFG runs
        if method == "hyca":
            hyca_gui.install_hooks(patched, spec, diffusion_model)  # the final-hidden residual per call
        return io.NodeOutput(patched)


class DiTAccelLearnedProfile(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelLearnedProfile",
            display_name="Learned Forecast Profile (L2P / LESA)",
            category="DiT Accel/calibration",
            description=(
                "Picks an L2P profile from models/dit_accel/ (made by Calibrate Forecasts or "
                "scripts/calibrate_l2p.py) for Forecast Cache's 'learned' input: forecasts then use weights "
                "learned on your model instead of the run-time blend. The profile must come from the same "
                "model weights (checked when Forecast Cache runs)."
            ),
            inputs=[
                io.Combo.Input("profile", options=learned_profiles(),
                               tooltip="An L2P profile (*.safetensors) in models/dit_accel/. Refresh the page "
                               "(R) after calibrating to see a new one."),
            ],
            outputs=[LearnedOptions.Output(tooltip="L2P profile for Forecast Cache's 'learned' input.")],
        )

    @classmethod
    def execute(cls, profile: str) -> io.NodeOutput:
        full = profile_file(profile)
        if full is None:
            raise outside_folder_error("Learned Forecast Profile", profile)
        method = profile_method(full)
        if method not in ("l2p", "lesa"):
            hyca = "hyca" if is_hyca_profile(full) else None
            raise ConfigError(f"Learned Forecast Profile: {profile!r} is not an L2P profile nor a LESA profile (method "
                              f"{method or hyca!r}). "
                              + ("It is a HyCa profile (per-channel forecasters for the hidden-state cache): load it "
                                 "with the HyCa Profile node and connect that to Forecast Cache's 'hyca' input."
                                 if hyca else "Pick a profile made by Calibrate Forecasts."))
        return io.NodeOutput({"learned_profile": full})


CALIBRATION_NODES = [DiTAccelCalibrate, DiTAccelLearnedProfile]
