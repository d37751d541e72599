"""PREDICT_NOISE wrapper of the output-level cache: the guider's whole call (every CFG branch,
ControlNet, patches) is either computed or replaced by the forecast denoised estimate."""
from __future__ import annotations

import torch

from accel_core.output import OutputCacheRun

from .block_hooks import RUN_KEY


@torch.compiler.disable
def predict_noise_wrapper(executor, x, timestep, model_options=None, seed=None, *args, **kwargs):
    options = model_options if isinstance(model_options, dict) else {}
    run = options.get("transformer_options", {}).get(RUN_KEY)
    if not isinstance(run, OutputCacheRun):
        return executor(x, timestep, model_options, seed, *args, **kwargs)
    sigma = float(timestep.detach().flatten().max().item())
    if sigma <= 0:
        return executor(x, timestep, model_options, seed, *args, **kwargs)
    call = run.begin(sigma, x)
    if call.compute:
        run.pending_branches = None
        out = executor(x, timestep, model_options, seed, *args, **kwargs)
        run.record(call, x, out, run.pending_branches)
        run.pending_branches = None
        return out
    return run.forecast(call, x).to(x.dtype)


def record_cfg_branches(args: dict) -> torch.Tensor:
    """Post-CFG hook: hand the call's branch outputs to the run (the guided output is unchanged)."""
    options = args.get("model_options") or {}
    run = options.get("transformer_options", {}).get(RUN_KEY)
    if isinstance(run, OutputCacheRun) and args.get("uncond_denoised") is not None:
        run.pending_branches = (args["cond_denoised"].detach(), args["uncond_denoised"].detach(),
                                float(args["cond_scale"]))
    return args["denoised"]
