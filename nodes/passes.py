"""Split and chained sampling: a pass may continue the output cache of the pass before it.

KSamplerAdvanced pairs (start / end step, leftover noise) and SamplerCustomAdvanced on the halves of
SplitSigmas run one trajectory as two sampler runs. Each is its own run (own budget, own summary);
the second starts with the first's forecast series when all of these hold, else it restarts cleanly:
- the same ModelPatcher object, the same conditioning (objects and values) and cfg;
- no new noise (the sampler's noise is all zero: add_noise disable / DisableNoise);
- the same latent shape (an upscale pass restarts);
- it starts at the sigma the first stopped at (a new schedule or denoise restarts).
The control / hook context where the first pass stopped becomes the second's starting point, so a
switch exactly at the split still restarts (boundaries.py).

Held: at most one handoff, the newest run that stopped above sigma 0 (its series: a few latents),
taken or dropped when the next run starts, so nothing outlives the next run.
"""
from __future__ import annotations

import weakref

import torch

_SLOT: dict = {}
_PER_RUN_KEYS = {"uuid"}  # convert_cond gives every cond a fresh uuid per run


def _value_key(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _value_key(v)) for k, v in value.items() if k not in _PER_RUN_KEYS))
    if isinstance(value, (list, tuple)):
        return tuple(_value_key(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return ("id", id(value))  # tensors, ControlNets, hooks: the same object (pinned in the slot)


def _identity(guider) -> tuple:
    conds = getattr(guider, "original_conds", None) or {}
    return _value_key(conds), float(getattr(guider, "cfg", 1.0))


def store(guider, run, watch) -> None:
    """After a run (before `run.close()`): keep what the next pass may continue from, drop the rest."""
    _SLOT.clear()
    carried = run.carry() if hasattr(run, "carry") and not run.stats.interrupted else None
    if carried is None:
        return
    _SLOT.update(carried=carried, patcher=weakref.ref(guider.model_patcher), identity=_identity(guider),
                 pinned=guider.original_conds, context=watch.previous)


def take(guider, run, watch, noise: torch.Tensor | None, latent: torch.Tensor | None) -> None:
    """At a run's start: continue the previous pass's series when it is the same trajectory."""
    slot = dict(_SLOT)
    _SLOT.clear()
    if not slot or not hasattr(run, "adopt") or noise is None or latent is None:
        return
    if slot["patcher"]() is not guider.model_patcher or slot["identity"] != _identity(guider):
        return
    if torch.count_nonzero(noise) or tuple(latent.shape) != tuple(slot["carried"]["signature"][0]):
        return
    run.adopt(slot["carried"])
    if run.stats.output.continued:
        watch.previous = slot["context"]
