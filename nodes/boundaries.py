"""Where the model's function changes within a run: the host knowledge, in one place.

A step cache may only forecast from steps that ran the same function. ComfyUI switches parts of the
function by noise level, all of it visible on the guider's processed conds:
- a cond's own range (ConditioningSetTimestepRange: 'timestep_start' / 'timestep_end');
- ControlNets, T2I adapters and Control LoRAs on a cond (ControlNetApplyAdvanced start / end percent),
  chained through `previous_controlnet`; one is active where sigma lies in its `timestep_range`
  (the test ComfyUI's ControlBase.get_control makes);
- hook keyframes (CreateHookKeyframe -> SetHookKeyframes -> ConditioningSetProperties): the strength
  each hook of a cond uses at this sigma, found by running ComfyUI's own keyframe logic on a copy.

`step_context` sums this up as a hashable value per call. The output hooks restart the cache (the
call computes, nothing older is forecast from) whenever it changes. When the conds cannot be read
(another ComfyUI version, another guider), every call counts as a change: that run is computed in
full, never reused across a change the pack could not see.

Not covered (documented in the README): functions that switch inside the model call itself by sigma
(e.g. Skip Layer Guidance's post-CFG ranges); with those, set the cache's start / end percent around
the switch.
"""
from __future__ import annotations

import copy
import logging

import torch

from .keys import WATCH_KEY

log = logging.getLogger("DiTAccel")

_UNSET = object()


class Unreadable:
    """A context that equals nothing (not even itself): every call is a change."""

    def __eq__(self, other) -> bool:
        return False

    def __hash__(self) -> int:
        return id(self)


def step_context(conds: dict, timestep, transformer_options: dict, probes: dict | None = None):
    """What ComfyUI switches by noise level at `timestep` (the guider call's sigma tensor), as a
    hashable tuple; an `Unreadable` when the conds are not what this version of the pack knows.
    `probes`: keyframe copies kept across calls, to walk a whole schedule ahead (`planned_boundaries`)."""
    try:
        t = timestep.flatten()[0]
        sigma = float(t)
        entries = []
        for name in sorted(conds):
            for index, cond in enumerate(conds[name] or []):
                if not _cond_active(cond, sigma):
                    entries.append((name, index))
                    continue
                entries.append((name, index, _controls(cond.get("control"), sigma),
                                _hook_strengths(cond.get("hooks"), t, transformer_options, probes)))
        return tuple(entries)
    except Exception as error:  # an unexpected host structure: compute rather than guess
        log.debug("DiT Accel: conds not readable (%s: %s)", type(error).__name__, error)
        return Unreadable()


def _cond_active(cond: dict, sigma: float) -> bool:
    if "default" in cond:  # ConditioningSetDefaultAndCombine: filled in wherever nothing else applies
        return True
    if "timestep_start" in cond and sigma > cond["timestep_start"]:
        return False
    return not ("timestep_end" in cond and sigma < cond["timestep_end"])


def _controls(control, sigma: float) -> tuple:
    out, seen = [], set()
    while control is not None and id(control) not in seen:
        seen.add(id(control))
        span = getattr(control, "timestep_range", None)
        out.append((id(control), span is None or not (sigma > span[0] or sigma < span[1])))
        control = getattr(control, "previous_controlnet", None)
    return tuple(out)


def _hook_strengths(group, t, transformer_options: dict, probes: dict | None) -> tuple:
    if group is None:
        return ()
    out = []
    for hook in group.hooks:
        keyframes = hook.hook_keyframe
        # prepare_current_keyframe only rebinds attributes: a shallow copy leaves ComfyUI's state untouched
        probe = copy.copy(keyframes) if probes is None else probes.setdefault(id(hook), copy.copy(keyframes))
        probe.prepare_current_keyframe(curr_t=t, transformer_options=transformer_options)
        out.append((id(hook), float(probe.strength)))
    return tuple(out)


def planned_boundaries(conds: dict, timestep, transformer_options: dict) -> list[int]:
    """Steps of the run's schedule where the context changes, walked ahead from the first call (hook
    keyframes advance step by step as in an uncached run). Lets the budget put full steps there; the
    per-call check stays the authority."""
    sigmas = transformer_options.get("sample_sigmas")
    if sigmas is None:
        return []
    probes: dict = {}
    contexts = [step_context(conds, torch.full_like(timestep, float(s)), transformer_options, probes)
                for s in sigmas.flatten()[:-1].tolist()]
    return [i for i in range(1, len(contexts)) if contexts[i] != contexts[i - 1]]


def advance_hook_keyframes(guider, timestep, model_options: dict) -> None:
    """A forecast step skips ComfyUI's cond batching, where hook keyframes count their steps
    (guarantee_steps): count this step as ComfyUI would have, so keyframes switch where they would
    in the uncached run. No-op without hooks."""
    conds = getattr(guider, "conds", None) or {}
    patcher = getattr(getattr(guider, "inner_model", None), "current_patcher", None)
    sigma = float(timestep.flatten()[0])
    for name in conds:
        for cond in conds[name] or []:
            hooks = cond.get("hooks")
            if hooks is not None and patcher is not None and _cond_active(cond, sigma):
                patcher.prepare_hook_patches_current_keyframe(timestep, hooks, model_options)


class BoundaryWatch:
    """Per run: the previous call's context; `changed` says when the function switched."""

    def __init__(self) -> None:
        self.previous = _UNSET
        self.planned = False  # boundaries of the whole schedule handed to the budget (first call)
        self.warned = False

    def changed(self, context) -> bool:
        if isinstance(context, Unreadable) and not self.warned:
            self.warned = True
            log.warning("DiT Accel: could not read this graph's ControlNet / hook / conditioning ranges; every "
                        "step of this run is computed (no caching) rather than risk reusing across a change.")
        changed = self.previous is not _UNSET and context != self.previous
        self.previous = context
        return changed


def check(guider, run, timestep, model_options: dict) -> None:
    """Restart `run` when the function changed since the previous call (both cache modes)."""
    options = model_options.get("transformer_options", {}) if isinstance(model_options, dict) else {}
    watch = options.get(WATCH_KEY)
    if watch is None:
        return
    conds = getattr(guider, "conds", None) or {}
    if not watch.planned:
        watch.planned = True
        if hasattr(run, "plan_boundaries"):
            run.plan_boundaries(planned_boundaries(conds, timestep, options))
    context = step_context(conds, timestep, options)
    if watch.changed(context):
        run.restart(float(timestep.detach().flatten().max()))
