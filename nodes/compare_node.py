"""The "Compare (A/B)" node: PSNR, SSIM and a difference heatmap of an accelerated result vs its baseline."""
from __future__ import annotations

import logging
import math

import torch
from comfy_api.latest import io

from accel_core.errors import ConfigError
from accel_core.quality import difference_heatmap, psnr_db, ssim, value_range

from .keys import COMPARE_UI_KEY

log = logging.getLogger("DiTAccel")

NODE = "DiT Accel Compare"
IMAGE_LAYOUT = "batch x height x width x channels"
LATENT_LAYOUT = "batch x channels x (frames x) height x width"


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape)


def _check_pair(a, b, name_a: str, name_b: str) -> bool:
    """True when both inputs of a pair are connected; an error when only one is."""
    if a is None and b is None:
        return False
    if a is None or b is None:
        missing, present = (name_a, name_b) if a is None else (name_b, name_a)
        raise ConfigError(f"{NODE}: '{present}' is connected but '{missing}' is not; connect both inputs of "
                          f"the pair (the same output of the uncached and of the accelerated branch)")
    return True


def _same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str, layout: str) -> None:
    if a.shape != b.shape:
        raise ConfigError(
            f"{NODE}: '{name_a}' is {_shape(a)} but '{name_b}' is {_shape(b)} ({layout}); they must match. "
            "Render both branches from the same latent size, batch size and frame count (same Empty Latent "
            "node), or scale one with an Image Scale node before comparing")


def images_to_nchw(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE ``[B, H, W, C]`` -> ``[B, C, H, W]``."""
    return images.movedim(-1, 1)


def latent_to_nchw(samples: torch.Tensor) -> torch.Tensor:
    """4-D latents stay; 5-D video/Qwen latents ``[B, C, T, H, W]`` become frames ``[B*T, C, H, W]``."""
    if samples.dim() == 5:
        b, c, t, h, w = samples.shape
        return samples.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    if samples.dim() == 4:
        return samples
    raise ConfigError(f"{NODE}: a LATENT must be 4-D or 5-D ({LATENT_LAYOUT}), got {_shape(samples)}")


def compare(baseline_image=None, accelerated_image=None, baseline_latent=None, accelerated_latent=None,
            amplify: float = 5.0) -> dict:
    """Metrics and heatmap of the connected pairs; the image pair wins for the outputs when both are given."""
    has_images = _check_pair(baseline_image, accelerated_image, "baseline", "accelerated")
    has_latents = _check_pair(baseline_latent, accelerated_latent, "baseline_latent", "accelerated_latent")
    if not (has_images or has_latents):
        raise ConfigError(f"{NODE}: nothing to compare; connect 'baseline' and 'accelerated' (IMAGE), or "
                          "'baseline_latent' and 'accelerated_latent' (LATENT)")
    result: dict = {}
    if has_latents:
        a, b = baseline_latent["samples"], accelerated_latent["samples"]
        _same_shape(a, b, "baseline_latent", "accelerated_latent", LATENT_LAYOUT)
        a, b = latent_to_nchw(a), latent_to_nchw(b)
        span = value_range(a)
        result.update(latent_psnr=psnr_db(a, b, span), latent_ssim=ssim(a, b, span),
                      latent_heatmap=difference_heatmap(a, b, span, amplify), latent_shape=_shape(a))
    if has_images:
        _same_shape(baseline_image, accelerated_image, "baseline", "accelerated", IMAGE_LAYOUT)
        a, b = images_to_nchw(baseline_image), images_to_nchw(accelerated_image)
        result.update(psnr=psnr_db(a, b, 1.0), ssim=ssim(a, b, 1.0),
                      heatmap=difference_heatmap(a, b, 1.0, amplify), source="image", shape=_shape(baseline_image))
    else:
        result.update(psnr=result["latent_psnr"], ssim=result["latent_ssim"], heatmap=result["latent_heatmap"],
                      source="latent", shape=result["latent_shape"])
    return result


def _finite_or_none(x: float | None) -> float | None:
    # JSON has no Infinity: the UI gets null plus an explicit "identical" flag.
    return x if x is not None and math.isfinite(x) else None


def ui_payload(result: dict) -> dict:
    return {
        "source": result["source"], "shape": result["shape"], "psnr_db": _finite_or_none(result["psnr"]),
        "identical": math.isinf(result["psnr"]), "ssim": result["ssim"],
        "latent_psnr_db": _finite_or_none(result.get("latent_psnr")),
        "latent_identical": "latent_psnr" in result and math.isinf(result["latent_psnr"]),
    }


def format_db(x: float) -> str:
    return "identical (inf dB)" if math.isinf(x) else f"{x:.2f} dB"


class DiTAccelCompare(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelCompare",
            display_name="Compare (A/B quality check)",
            category="DiT Accel/diagnostics",
            description=(
                "Measures what acceleration cost on your own model: run the same seed without and with DiT "
                "Accel, connect both results here. Outputs PSNR (dB, higher is closer; identical = inf), SSIM "
                "(1.0 = identical) and a heatmap of where the images differ; the numbers also appear on the node."
            ),
            is_output_node=True,
            inputs=[
                io.Image.Input("baseline", optional=True,
                               tooltip="The uncached (reference) image: the same seed and settings without "
                               "acceleration, e.g. Forecast Cache preset 'off' or the model straight from the loader."),
                io.Image.Input("accelerated", optional=True,
                               tooltip="The accelerated image to check, same size and batch as 'baseline'."),
                io.Latent.Input("baseline_latent", optional=True,
                                tooltip="Optional: the uncached LATENT (e.g. video or Qwen-Image latents). "
                                "Latent PSNR / SSIM use the baseline's value span as data range. Used for the "
                                "outputs only when no images are connected."),
                io.Latent.Input("accelerated_latent", optional=True,
                                tooltip="Optional: the accelerated LATENT, same shape as 'baseline_latent'."),
                io.Float.Input("amplify", default=5.0, min=1.0, max=100.0, step=0.5,
                               tooltip="Heatmap gain: a pixel turns fully white where the mean absolute "
                               "difference reaches 1/amplify of the value range (5 = 20 %). Black = identical."),
            ],
            outputs=[
                io.Float.Output(display_name="psnr_db", tooltip="PSNR of accelerated vs baseline in dB over "
                                "the whole batch (all frames); inf when identical. Above ~35 dB differences "
                                "are hard to see."),
                io.Float.Output(display_name="ssim", tooltip="Structural similarity (mean over channels and "
                                "windows, 11-pixel Gaussian window); 1.0 when identical."),
                io.Image.Output(display_name="heatmap", tooltip="Where the two differ: black = identical, "
                                "red -> yellow -> white = larger differences (scaled by 'amplify')."),
            ],
        )

    @classmethod
    def execute(cls, amplify: float = 5.0, baseline=None, accelerated=None, baseline_latent=None,
                accelerated_latent=None) -> io.NodeOutput:
        result = compare(baseline, accelerated, baseline_latent, accelerated_latent, amplify)
        log.info("DiT Accel Compare: PSNR %s, SSIM %.4f (%s %s)", format_db(result["psnr"]), result["ssim"],
                 result["source"], result["shape"])
        return io.NodeOutput(result["psnr"], result["ssim"], result["heatmap"],
                             ui={COMPARE_UI_KEY: [ui_payload(result)]})
