"""Shared pieces of the micro-model trainers (scripts/train_micro.py, scripts/train_micro_flux.py).

Everything that must match how ComfyUI samples a family (noise schedule, timestep mapping, latent
format) is read from the ComfyUI model object itself, not re-typed here.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import torch

from scripts.harness.assets import CLIP_L_NAME

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
CONDITIONING_CACHE = REPO_ROOT / ".cache" / "shapes_conditioning.pt"


def encode_prompts(prompts: list[str], cache: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cond [N, 77, 768] and pooled [N, 768] via CLIPLoader + CLIPTextEncode (the workflow path).

    CLIP-L runs in fp16 on CPU (~3 s a prompt), so results are cached, keyed by prompts + CLIP file.
    """
    import folder_paths
    import nodes

    clip_path = Path(folder_paths.get_full_path_or_raise("text_encoders", CLIP_L_NAME))
    st = clip_path.stat()
    key = hashlib.sha256(json.dumps([prompts, st.st_size, st.st_mtime]).encode()).hexdigest()
    if cache is not None and cache.is_file():
        data = torch.load(cache, weights_only=True)
        if data.get("key") == key:
            return data["cond"], data["pooled"]
    clip = nodes.CLIPLoader().load_clip(CLIP_L_NAME, type="stable_diffusion")[0]
    conds, pooled = [], []
    for p in prompts:
        c = nodes.CLIPTextEncode().encode(clip, p)[0]
        conds.append(c[0][0][0].float())
        pooled.append(c[0][1]["pooled_output"][0].float())
    cond_t, pooled_t = torch.stack(conds), torch.stack(pooled)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "cond": cond_t, "pooled": pooled_t}, cache)
    return cond_t, pooled_t


def rel(path: Path) -> str:
    """Repo-relative path for logs and JSON (absolute if outside the repo)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def schedule_sigma(model_sampling, u: torch.Tensor) -> torch.Tensor:
    """Map uniform u in (0, 1) through the family's own shifted schedule (what "simple" visits).

    ModelSamplingFlux.sigma takes t in [0, 1]; ModelSamplingDiscreteFlow.sigma takes t * multiplier.
    """
    return model_sampling.sigma(u * float(getattr(model_sampling, "multiplier", 1.0)))


def sample_sigmas(gen: torch.Generator, n: int, model_sampling, p_schedule: float = 0.6) -> torch.Tensor:
    """Noise levels: p_schedule from the family's shifted uniform, the rest logit-normal(0, 1).

    The shifted part puts weight where the sampler spends its steps; the logit-normal part keeps
    the low-sigma end (fine detail) trained even for strongly shifted schedules.
    """
    u = torch.rand(n, generator=gen).clamp(1e-4, 1 - 1e-4)
    shifted = schedule_sigma(model_sampling, u).to(torch.float32)
    logit_normal = torch.sigmoid(torch.randn(n, generator=gen))
    pick = torch.rand(n, generator=gen) < p_schedule
    return torch.where(pick, shifted, logit_normal).clamp(1e-3, 1.0)


def lr_at(step: int, frac_time: float, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 % over the wall-clock budget."""
    warm = min(1.0, (step + 1) / warmup)
    return base * warm * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac_time))))


def smooth_sinusoid_inputs_(layers: list[torch.nn.Linear], k: int) -> list:
    """Zero, and keep at zero, the input weights of the k highest frequencies of sinusoidal embeddings.

    Every family here embeds the timestep with sinusoids up to 1000 rad per unit sigma, laid out as
    [cos(f_0..f_n), sin(f_0..f_n)] with f_0 the highest. At 20-50 steps the top frequencies are
    effectively random from one step to the next; a briefly trained micro model has not learned
    to ignore them, so its features zig-zag between steps (measured on the micro FLUX: consecutive
    feature differences had cosine -0.3 to -0.5; > 0.95 with the top 48 of 128 dropped), which
    real models do not. Returns the gradient hooks (the caller keeps them alive).
    """
    hooks = []
    if k <= 0:
        return hooks
    for layer in layers:
        half = layer.weight.shape[1] // 2
        mask = torch.ones_like(layer.weight)
        mask[:, :k] = 0.0
        mask[:, half:half + k] = 0.0
        with torch.no_grad():
            layer.weight.mul_(mask)
        hooks.append(layer.weight.register_hook(lambda g, m=mask: g * m))
    return hooks


class Ema:
    """Exponential moving average of a module's state dict, warm-started (decay ramps up to max)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        for k, v in module.state_dict().items():
            self.state[k].mul_(d).add_(v.detach(), alpha=1.0 - d)


class LossLog:
    """Running loss, a 10-step-mean loss curve, and periodic INFO lines."""

    def __init__(self, every: int = 10):
        self.every, self.window, self.curve, self.smoothed = every, [], [], None

    def add(self, step: int, loss: float, elapsed: float, lr: float) -> None:
        self.window.append(loss)
        self.smoothed = loss if self.smoothed is None else 0.95 * self.smoothed + 0.05 * loss
        if step % self.every == 0:
            self.curve.append({"step": step, "loss": sum(self.window) / len(self.window), "t": round(elapsed, 1)})
            self.window = []
            log.info("step %d loss %.4f (smoothed %.4f) lr %.2e %.2f s/step", step, self.curve[-1]["loss"],
                     self.smoothed, lr, elapsed / step)
