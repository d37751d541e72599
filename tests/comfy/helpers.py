"""Shared helpers for tests that run the real ComfyUI in-process (micro models, conditioning)."""
from __future__ import annotations

import torch

LATENTS = {
    "flux": (1, 16, 16, 16),
    "qwen_image": (1, 16, 1, 16, 16),
    "hunyuan_video": (1, 16, 2, 16, 16),
    "hunyuan_video15": (1, 32, 2, 8, 8),
}


def conditioning(seed: int, tokens: int = 77, width: int = 768, batch: int = 1, guidance: float = 3.5,
                 reference: torch.Tensor | None = None) -> list:
    """ComfyUI CONDITIONING built in Python (random CLIP-L-shaped context + pooled vector)."""
    g = torch.Generator().manual_seed(seed)
    extras = {"pooled_output": torch.randn(batch, 768, generator=g), "guidance": guidance}
    if reference is not None:
        extras["reference_latents"] = [reference]
    return [[torch.randn(batch, tokens, width, generator=g), extras]]


def sample(model, latent: torch.Tensor, positive, negative, cfg: float = 1.0, steps: int = 8,
           sampler: str = "euler", scheduler: str = "simple", seed: int = 3) -> torch.Tensor:
    import nodes

    out = nodes.KSampler().sample(model, seed, steps, cfg, sampler, scheduler, positive, negative,
                                  {"samples": latent}, denoise=1.0)
    return out[0]["samples"]


def forecast_node():
    import nodes

    return nodes.NODE_CLASS_MAPPINGS["DiTAccelForecastCache"]


def apply(model, preset: str = "balanced", method: str = "preset", cache_mode: str = "final_hidden",
          interval: int = 0, order: int = -1, warmup: int = -1, final: int = -1, start: float = 0.0,
          end: float = 1.0):
    return forecast_node().execute(model, preset, method, cache_mode, interval, order, warmup, final, start, end)[0]


def adapter_module():
    """The pack's adapter module as ComfyUI loaded it (module name derived from the custom_nodes path)."""
    import sys

    found = [m for name, m in list(sys.modules.items())
             if name.endswith("nodes.adapter") and hasattr(m, "RECENT_RUNS") and "dit_accel" in name]
    assert len(found) == 1, f"expected the pack's adapter loaded once, found {len(found)}"
    return found[0]


def recent_runs():
    return adapter_module().RECENT_RUNS
