"""A weighted mix of the procedural image generators, with one joint prompt list.

Each generator module has ``PROMPTS`` and ``sample_batch(gen, n, height, width) -> (images,
prompt indices)``. A mix concatenates the prompt lists in the order of its weights (so indices are
stable for a fixed mix) and draws each sample's generator from the weights.
"""
from __future__ import annotations

from types import ModuleType

import torch

from scripts.harness import glyphs_data, gradients_data, shapes_sized, textures_data

GENERATORS: dict[str, ModuleType] = {
    "shapes": shapes_sized,
    "glyphs": glyphs_data,
    "textures": textures_data,
    "gradients": gradients_data,
}


class ImageMix:
    """Images from several generators; ``prompts`` is the joint list, ``sample`` returns joint indices."""

    def __init__(self, weights: dict[str, float]):
        unknown = set(weights) - set(GENERATORS)
        if unknown:
            raise ValueError(f"unknown generators {sorted(unknown)}; choose from {list(GENERATORS)}")
        self.names = [k for k, w in weights.items() if w > 0]
        total = sum(weights[k] for k in self.names)
        self.probs = torch.tensor([weights[k] / total for k in self.names])
        self.offsets, prompts = {}, []
        for k in self.names:
            self.offsets[k] = len(prompts)
            prompts += list(GENERATORS[k].PROMPTS)
        self.prompts: tuple[str, ...] = tuple(prompts)

    def sample(self, gen: torch.Generator, n: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n images [n, H, W, 3] and joint prompt indices [n]."""
        which = torch.multinomial(self.probs, n, replacement=True, generator=gen)
        images, idx = [], []
        for g, name in enumerate(self.names):
            count = int((which == g).sum())
            if count:
                im, ix = GENERATORS[name].sample_batch(gen, count, height, width)
                images.append(im)
                idx.append(ix + self.offsets[name])
        return torch.cat(images), torch.cat(idx)

    def source_of(self, index: int) -> str:
        """The generator that a joint prompt index belongs to."""
        return max((off, k) for k, off in self.offsets.items() if off <= index)[1]
