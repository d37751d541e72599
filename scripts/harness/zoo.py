"""The model zoo: load tests/assets/zoo/manifest.json, check files, and build sampling cases.

    from scripts.harness import zoo
    for entry in zoo.load_manifest()["models"]:
        zoo.verify_entry(entry)                     # file exists and its sha256 matches
    m = zoo.ZooModel("flux_glyphs")
    m.role, m.family, m.default_cfg, m.guidance     # "validate", "flux", 1.0, 3.5
    for case in m.cases(n_prompts=2, n_seeds=2):
        out = nodes.KSampler().sample(m.model, case.seed, 20, case.cfg, "euler", "simple",
                                      case.positive, case.negative, case.latent)[0]["samples"]
        image = m.decode(out)                       # [B, H, W, 3]; video: [B, T, H, W, 3]

Roles: ``tune`` models are where defaults may be chosen; ``validate`` models are for reporting only.
Cases follow bench/bench_methods.py's Family for the three original micro models (same prompts for the
same n_prompts, seeds 1000 + i, guidance in the conditioning, empty-prompt negative). Edit models get
a procedural reference image per case (edit_pairs.make_pair, scene seeded by seed * 1009 + the
instruction's index), passed the way
ComfyUI's ReferenceLatent node does (``reference_latents`` in both positive and negative).
Needs a bootstrapped ComfyUI (done here when missing, with the default harness base directory).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST = REPO_ROOT / "tests" / "assets" / "zoo" / "manifest.json"
SEED_OFFSET = 1000  # case seeds are 1000, 1001, ... like bench_methods


class ZooError(ValueError):
    """A zoo entry that is missing, unknown or does not match its manifest record."""


def load_manifest(path: Path = MANIFEST) -> dict[str, Any]:
    """The manifest document: {"about": str, "models": [entry, ...]} (entries as written by train_zoo)."""
    return json.loads(Path(path).read_text())


def entry_for(name: str, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest entry named ``name``."""
    models = (manifest or load_manifest())["models"]
    for entry in models:
        if entry["name"] == name:
            return entry
    raise ZooError(f"no zoo model {name!r}; the manifest lists {[e['name'] for e in models]}")


def names(role: str | None = None) -> list[str]:
    """Model names in manifest order, optionally only one role ("tune" or "validate")."""
    return [e["name"] for e in load_manifest()["models"] if role is None or e["role"] == role]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_entry(entry: dict[str, Any]) -> Path:
    """Check that the entry's file exists and its sha256 matches the manifest; returns the path.

    Raises ZooError naming the file and what to do otherwise.
    """
    path = REPO_ROOT / entry["file"]
    if not path.is_file():
        raise ZooError(f"zoo model {entry['name']!r}: {entry['file']} does not exist; "
                       f"retrain it with: {entry['training']['command']}")
    got = file_sha256(path)
    if got != entry["sha256"]:
        raise ZooError(f"zoo model {entry['name']!r}: sha256 of {entry['file']} is {got}, manifest says "
                       f"{entry['sha256']}; the file changed without the manifest (rewrite it with "
                       "scripts/train_zoo.py --manifest if the change is intended)")
    return path


@dataclass
class Case:
    """One sampling case: pass ``positive``, ``negative``, ``latent``, ``seed`` and ``cfg`` to KSampler."""

    prompt: str
    seed: int
    positive: list
    negative: list
    latent: dict[str, torch.Tensor]
    cfg: float
    reference: torch.Tensor | None = None  # edit models: the reference IMAGE [1, H, W, 3]
    target: torch.Tensor | None = None  # edit models: the exact edit of the reference, IMAGE [1, H, W, 3]
    extras: dict[str, Any] = field(default_factory=dict)


def _comfy_base() -> Path:
    from scripts.harness import comfy_env

    return comfy_env._state["base"] or comfy_env.bootstrap()


class ZooModel:
    """One zoo model: manifest entry, ComfyUI ModelPatcher, sampling defaults, cases and decode."""

    def __init__(self, name: str, manifest: dict[str, Any] | None = None, verify: bool = True):
        from scripts.harness.micro_models import load_micro_model, read_micro_metadata

        self.entry = entry_for(name, manifest)
        self.name = name
        path = verify_entry(self.entry) if verify else REPO_ROOT / self.entry["file"]
        _comfy_base()
        self.model = load_micro_model(path)
        self.prompts: list[str] = list(read_micro_metadata(path).get("prompts", []))
        if not self.prompts:
            raise ZooError(f"zoo model {name!r}: {self.entry['file']} carries no training prompts")

    @property
    def role(self) -> str:
        return self.entry["role"]

    @property
    def recipe(self):
        """How the model was trained (scripts/harness/recipes.py); its text encoder and latent scale are
        what sampling must use too."""
        from scripts.harness import recipes

        return recipes.recipe((self.entry.get("recipe") or {}).get("name"))

    @property
    def family(self) -> str:
        return self.entry["family"]

    @property
    def edit(self) -> bool:
        return bool(self.entry["edit"])

    @property
    def default_cfg(self) -> float:
        """KSampler cfg: 1.0 for guidance-distilled models, the usual true-CFG scale otherwise."""
        cfg = self.entry["cfg"]
        return float(cfg["scale"]) if cfg["kind"] == "true_cfg" else 1.0

    @property
    def guidance(self) -> float | None:
        """The embedded guidance value put in the conditioning (None for true-CFG models)."""
        cfg = self.entry["cfg"]
        return float(cfg["guidance"]) if cfg["kind"] == "guidance" else None

    @property
    def resolution(self) -> tuple[int, int]:
        """Default image size [H, W] in pixels."""
        h, w = self.entry["default_resolution"]
        return int(h), int(w)

    def empty_latent(self, batch: int = 1) -> torch.Tensor:
        """Zeros in the family's latent layout at the default resolution (what EmptyLatent nodes give)."""
        h, w = (s // 2 for s in self.resolution)
        channels = self.model.model.latent_format.latent_channels
        if self.family == "flux":
            return torch.zeros(batch, channels, h, w)
        frames = int(self.entry.get("frames") or 1)
        return torch.zeros(batch, channels, frames, h, w)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """IMAGE [B, H, W, 3] -> raw latent in the family's layout (the stand-in VAE's encode)."""
        from scripts.harness import shapes_data, vae32

        from scripts.harness import recipes

        if self.entry["vae"] == "vae32":
            return recipes.to_recipe_latent(self.recipe, vae32.encode(image).unsqueeze(2))
        lat = recipes.to_recipe_latent(self.recipe, shapes_data.encode(image))
        return lat if self.family == "flux" else lat.unsqueeze(2)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Raw latent (a KSampler output) -> IMAGE [B, H, W, 3]; video families: frames [B, T, H, W, 3]."""
        from scripts.harness import recipes, shapes_data, shapes_video, vae32

        latent = recipes.from_recipe_latent(self.recipe, latent)
        if self.entry["vae"] == "vae32":
            return vae32.decode_frames(latent)
        if self.family == "hunyuan_video":
            return shapes_video.decode_frames(latent)
        return shapes_data.decode(latent[:, :, 0] if latent.dim() == 5 else latent)

    def pick_prompts(self, n_prompts: int) -> list[str]:
        """n prompts spread over the training prompts (bench_methods.Family's rule)."""
        return list(self.prompts[:: max(1, len(self.prompts) // n_prompts)][:n_prompts])

    def calibration_prompts(self, n_prompts: int) -> list[str]:
        """n prompts half a stride after `pick_prompts`' (none of them is a bench prompt when the
        stride is at least 2), for calibrating learned predictors on prompts the benches hold out."""
        stride = max(1, len(self.prompts) // n_prompts)
        return list(self.prompts[stride // 2:: stride][:n_prompts])

    def cases(self, n_prompts: int, n_seeds: int, cfg: float | None = None, prompts: list[str] | None = None,
              seed_offset: int = SEED_OFFSET) -> list[Case]:
        """n_prompts x n_seeds cases (seed-major, like bench_methods) at the default resolution.

        ``cfg`` overrides the KSampler cfg (default: ``default_cfg``); the embedded guidance of
        guidance-distilled models stays ``guidance`` either way. ``prompts`` / ``seed_offset``
        replace the bench's prompt picks and seeds (calibration sets).
        """
        from scripts.harness import edit_pairs, recipes
        from scripts.harness.assets import ensure_assets

        ensure_assets(_comfy_base())
        picks = list(prompts) if prompts is not None else self.pick_prompts(n_prompts)
        # The text encoder (and padded length) it was trained with.
        cond, pooled = recipes.encode_text(self.recipe, picks + [""], self.entry.get("text_tokens"))
        scale = self.default_cfg if cfg is None else float(cfg)

        def conditioning(i: int, extra: dict[str, Any]) -> list:
            extras = {"pooled_output": pooled[i:i + 1].clone()}
            if self.guidance is not None:
                extras["guidance"] = self.guidance
            extras.update(extra)
            return [[cond[i:i + 1].clone(), extras]]

        out = []
        for s in range(n_seeds):
            seed = seed_offset + s
            for i, prompt in enumerate(picks):
                extra, ref_img, tgt_img = {}, None, None
                if self.edit:
                    h, w = self.resolution
                    k = edit_pairs.PROMPTS.index(prompt)
                    ref, tgt = edit_pairs.make_pair(torch.Generator().manual_seed(seed * 1009 + k), k, h, w)
                    ref_img, tgt_img = ref[None], tgt[None]
                    extra = {"reference_latents": [self.encode_image(ref_img)]}
                out.append(Case(prompt=prompt, seed=seed, positive=conditioning(i, extra),
                                negative=conditioning(len(picks), extra),
                                latent={"samples": self.empty_latent()}, cfg=scale, reference=ref_img,
                                target=tgt_img))
        return out

    def __repr__(self) -> str:
        return f"ZooModel({self.name!r}, role={self.role!r}, family={self.family!r})"
