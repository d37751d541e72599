"""Per-prompt cache of CLIP-L encodings (ComfyUI's CLIPLoader + CLIPTextEncode on the random CLIP-L).

training.encode_prompts caches one whole prompt list; the zoo's models share many prompts across
different lists, so this keeps one entry per prompt in ``.cache/zoo_prompts.pt`` and encodes only the
missing ones (through training.encode_prompts, i.e. exactly the workflow path). The cache is keyed by
the CLIP-L asset's size; the asset is deterministic, so its encodings do not change between machines.
"""
from __future__ import annotations

from pathlib import Path

import torch

from scripts.harness.assets import CLIP_L_NAME
from scripts.harness.training import REPO_ROOT, encode_prompts

CACHE = REPO_ROOT / ".cache" / "zoo_prompts.pt"


def _clip_key() -> str:
    import folder_paths

    path = Path(folder_paths.get_full_path_or_raise("text_encoders", CLIP_L_NAME))
    return f"{CLIP_L_NAME}:{path.stat().st_size}"


def encode(prompts: list[str], cache: Path = CACHE) -> tuple[torch.Tensor, torch.Tensor]:
    """cond [N, 77, 768] and pooled [N, 768] for ``prompts`` (ComfyUI must be bootstrapped, assets ensured)."""
    key = _clip_key()
    data: dict = {"key": key, "prompts": {}}
    if cache.is_file():
        loaded = torch.load(cache, weights_only=True)
        if loaded.get("key") == key:
            data = loaded
    missing = list(dict.fromkeys(p for p in prompts if p not in data["prompts"]))
    if missing:
        cond, pooled = encode_prompts(missing)
        for i, p in enumerate(missing):
            data["prompts"][p] = (cond[i].clone(), pooled[i].clone())
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save(data, tmp)
        tmp.replace(cache)
    return (torch.stack([data["prompts"][p][0] for p in prompts]),
            torch.stack([data["prompts"][p][1] for p in prompts]))
