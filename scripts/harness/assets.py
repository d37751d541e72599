"""Deterministic test assets under the harness base dir: random CLIP-L, random 16-ch TAESD, micro
models of every family, and copies of the trained micro models (FLUX, Qwen-Image, HunyuanVideo).

Each generated file carries a content marker in its safetensors metadata; a file whose marker
matches is kept, so a second call only reads a few headers.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from scripts.harness.micro_models import (FAMILIES, METADATA_KEY, deterministic_init_, micro_config,
                                          save_micro_model)

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAINED_FLUX = REPO_ROOT / "tests" / "assets" / "micro_flux_trained.safetensors"
TRAINED_FLUX_NAME = "dit_accel_micro_flux_trained.safetensors"
TRAINED_QWEN_IMAGE = REPO_ROOT / "tests" / "assets" / "micro_qwen_image_trained.safetensors"
TRAINED_HUNYUAN_VIDEO = REPO_ROOT / "tests" / "assets" / "micro_hunyuan_video_trained.safetensors"
# family -> (committed file, name in the diffusion_models folder)
TRAINED_MODELS: dict[str, tuple[Path, str]] = {
    "flux": (TRAINED_FLUX, TRAINED_FLUX_NAME),
    "qwen_image": (TRAINED_QWEN_IMAGE, "dit_accel_micro_qwen_image_trained.safetensors"),
    "hunyuan_video": (TRAINED_HUNYUAN_VIDEO, "dit_accel_micro_hunyuan_video_trained.safetensors"),
}
CLIP_L_NAME = "dit_accel_clip_l_random.safetensors"
TAESD16_NAME = "dit_accel_taesd16_random.safetensors"
MARKER_KEY = "dit_accel_asset"
ASSET_VERSION = 1
SEED = 0


def _marker(kind: str, extra: dict | None = None) -> str:
    return json.dumps({"kind": kind, "version": ASSET_VERSION, "seed": SEED, **(extra or {})}, sort_keys=True)


def _read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception:  # unreadable or partial file: regenerate it
        return {}


def _save(sd: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)


def build_random_clip_l(path: Path) -> None:
    """Full-size CLIP-L text model with random weights; CLIPLoader(type=stable_diffusion) detects it."""
    import comfy.sd1_clip

    clip = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
    deterministic_init_(clip.transformer, seed=SEED)
    sd = {k: v.to(torch.bfloat16) for k, v in clip.transformer.state_dict().items()}
    _save(sd, path, {MARKER_KEY: _marker("clip_l")})


def build_random_taesd16(path: Path) -> None:
    """16-channel TAESD with random weights; VAELoader detects it via taesd_decoder.1.weight."""
    import comfy.taesd.taesd

    vae = comfy.taesd.taesd.TAESD(latent_channels=16)
    deterministic_init_(vae, seed=SEED)
    with torch.no_grad():  # identity latent scaling, like a fresh TAESD
        vae.vae_scale.fill_(1.0)
        vae.vae_shift.fill_(0.0)
    _save(vae.state_dict(), path, {MARKER_KEY: _marker("taesd16")})


def _ensure(path: Path, marker: str, build) -> Path:
    if path.is_file() and _read_metadata(path).get(MARKER_KEY) == marker:
        return path
    log.info("building test asset %s", path)
    build(path)
    return path


def _copy_if_changed(src: Path, dst: Path) -> Path:
    if dst.is_file():
        s, d = src.stat(), dst.stat()
        if s.st_size == d.st_size and d.st_mtime >= s.st_mtime:
            return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    return dst


def ensure_assets(base_dir: Path) -> dict[str, Path]:
    """Create (once) every harness asset under ``<base_dir>/models``; returns name -> path.

    Names: ``clip_l``, ``taesd16``, ``micro_<family>`` for each family, and ``micro_<family>_trained``
    for each trained model in TRAINED_MODELS whose tests/assets file exists. Requires bootstrap() first.
    """
    models = Path(base_dir) / "models"
    out: dict[str, Path] = {}
    out["clip_l"] = _ensure(models / "text_encoders" / CLIP_L_NAME, _marker("clip_l"), build_random_clip_l)
    out["taesd16"] = _ensure(models / "vae" / TAESD16_NAME, _marker("taesd16"), build_random_taesd16)
    for family in FAMILIES:
        path = models / "diffusion_models" / f"dit_accel_micro_{family}.safetensors"
        marker = _marker("micro", {"family": family, "config": micro_config(family)})
        if not _micro_marker_ok(path, marker):
            log.info("building test asset %s", path)
            save_micro_model(family, path, seed=SEED, extra_metadata={MARKER_KEY: marker})
        out[f"micro_{family}"] = path
    for family, (src, name) in TRAINED_MODELS.items():
        if src.is_file():
            out[f"micro_{family}_trained"] = _copy_if_changed(src, models / "diffusion_models" / name)
    # The zoo's FLUX-class models (the demo runs a validation model beside the tune one).
    manifest = REPO_ROOT / "tests" / "assets" / "zoo" / "manifest.json"
    if manifest.is_file():
        for entry in json.loads(manifest.read_text())["models"]:
            src = REPO_ROOT / entry["file"]
            if entry["family"] == "flux" and src.parent.name == "zoo" and src.is_file():
                out[f"zoo_{entry['name']}"] = _copy_if_changed(
                    src, models / "diffusion_models" / f"dit_accel_zoo_{entry['name']}.safetensors")
    return out


def _micro_marker_ok(path: Path, marker: str) -> bool:
    # Micro files keep their marker inside the dit_accel_micro JSON (one metadata key).
    if not path.is_file():
        return False
    raw = _read_metadata(path).get(METADATA_KEY)
    if raw is None:
        return False
    try:
        return json.loads(raw).get(MARKER_KEY) == marker
    except ValueError:
        return False
