"""Calibrate Forecasts' fit, the host side: which file a fit may write in models/dit_accel/ (a profile of
another method is never overwritten), ComfyUI's progress bar, and method hyca's closed loop, which samples the
recorded runs again through Forecast Cache (nodes/hyca_calibration.py). L2P and LESA are fitted host-free
(accel_core/learned/calibration_fit.py).
"""
from __future__ import annotations

import dataclasses
import os
import time

import comfy.utils

from accel_core import ConfigError
from accel_core.config import FROM_PRESET, resolve_config
from accel_core.learned.calibration_fit import (DEFAULT_NAME, METHOD_LABELS, METHODS, Fitted, RecordedRun, fit_l2p,
                                                fit_lesa, profile_header, saved, versus)
from accel_core.learned.hyca_profile import save_profile
from accel_core.learned.profile import profile_method

from . import hyca_calibration as hyca_gui
from .adapter import apply_forecast_cache
from .keys import CALIBRATE_KEY
from .profiles import profile_file, profile_path


# ------------------------------------------------------------------------------------ the profile folder
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


# ------------------------------------------------------------------------------------ fits
def progress_bar(total: int):
    """ComfyUI's progress bar of `total` units; returns its update(units)."""
    return comfy.utils.ProgressBar(total).update


def hyca_config(budget: str, family: str, profile: str = hyca_gui.PLAN_PROFILE):
    """The Forecast Cache config a run with this preset and a HyCa Profile node connected gets."""
    return resolve_config(budget, FROM_PRESET, FROM_PRESET, 0, -1, -1, -1, 0.0, 1.0, family,
                          hyca={"hyca_profile": profile})


def fit_hyca(settings: dict, group: list[RecordedRun], what: str, post_cfg_fn) -> Fitted:
    """HyCa: clusters and open-loop map from the hidden trajectories, each cluster's solver chosen closed loop
    by sampling the fitting runs again through Forecast Cache (nodes/hyca_calibration.py); `post_cfg_fn` is the
    recorder's post-CFG hook, removed from the model the runs are sampled again with."""
    name, budget, family = settings["profile_name"], settings["budget"], settings["family"]
    started = time.perf_counter()
    runs = [r.trajectory for r in group]
    config = hyca_config(budget, family)
    bars: list = []  # the bar is made once the number of candidates is known

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(comfy.utils.ProgressBar(total))
        bars[0].update_absolute(done, total)

    patcher = hyca_gui.uncalibrated(runs[-1].case.guider.model_patcher, CALIBRATE_KEY, post_cfg_fn)
    fit = hyca_gui.fit_closed_loop(runs, patcher, family, config, apply_forecast_cache, progress=progress)
    steps = len(runs[0].sigmas) - 1
    budget_entry = {"preset": budget, "interval": config.interval, "warmup_steps": config.warmup_steps,
                    "final_full_steps": config.final_full_steps, "share": f"{sum(fit.plan)}/{steps}",
                    "full_steps": [i for i, f in enumerate(fit.plan) if f]}
    schedule = {"time_axis": config.time_axis, "warmup_steps": config.warmup_steps,
                "final_full_steps": config.final_full_steps, "intervals": [config.interval],
                "full_steps": [sum(fit.plan)]}
    header = profile_header(settings, group, runs, budget_entry, fit.validation, steps=steps, schedule=schedule,
                            cfg=runs[0].case.cfg, record_tokens=hyca_gui.RECORD_TOKENS, **fit.profile.info)
    path = save_profile(profile_path(name), dataclasses.replace(fit.profile, info=header))
    seconds = time.perf_counter() - started
    v = fit.validation
    kept = (f"kept the closed-loop map ({', '.join(v['closed_loop']['cluster_solvers'])})" if v["kept"] != "foca"
            else "the closed-loop map lost to FoCa there, so the profile is FoCa on every channel")
    return saved(path, runs, v, f"HyCa, {budget} {budget_entry['share']}, {what}",
                 f"held-back error {v['hyca_rel_error']:.4f} (worst {v['hyca_worst']:.4f}) vs FoCa "
                 f"{v['foca_rel_error']:.4f} (worst {v['foca_worst']:.4f}) and reuse {v['reuse_rel_error']:.4f} "
                 f"({versus(v['hyca_rel_error'], v['reuse_rel_error'])}, "
                 f"{versus(v['hyca_rel_error'], v['foca_rel_error'], 'FoCa')}), "
                 f"relative L2 of the final latent; {kept}; fit {seconds:.1f} s. Use it with HyCa Profile -> "
                 "Forecast Cache 'hyca'")


def fit_and_save(settings: dict, group: list[RecordedRun], what: str, post_cfg_fn) -> Fitted:
    """Fit the group's runs with the node's method and save models/dit_accel/<profile_name>.safetensors."""
    method = settings.get("method", "l2p")
    if method == "hyca":
        return fit_hyca(settings, group, what, post_cfg_fn)
    fit = fit_lesa if method == "lesa" else fit_l2p
    return fit(settings, group, what, profile_path(settings["profile_name"]), progress_bar)
