"""Training recipes of the zoo: how a model was trained, apart from its architecture and data.

Real labs differ less in block shapes than in how they train: the noise-level sampler, the loss
weighting, how long, with which text encoder, with which latent statistics, whether the released
weights are an EMA. A zoo whose models all share one recipe cannot tell a default that fits that
recipe from one that holds in general (issue 18: the zoo and models trained elsewhere disagreed by
13-16 dB on the same preset). Every zoo model names its recipe; validate models use recipes that no
tune model uses (leave one recipe out), so a setting chosen on the tune models meets a new recipe
when it is reported.

Fields of a recipe:
- sigma_sampler: "mix" (60 % the family's shifted schedule, 40 % logit-normal(0, 1): the original
  zoo), "uniform" (sigma ~ U(0, 1)), "shifted" (the family's shifted schedule only),
  "logit_normal_high" (sigmoid(N(0.8, 1)): most samples at high noise, as SD3-style samplers shifted
  toward noise);
- loss_weight: "mse" (plain velocity MSE) or "cosmap" (SD3's cosine-map weight 2 / (pi (1 - 2s + 2s^2)),
  heavier in the middle of the schedule);
- ema: EMA decay of the saved weights, 0 = the raw weights;
- text: "clip_l" (the random CLIP-L through ComfyUI's CLIPTextEncode, 77 tokens), "words" (a word
  table: one seeded vector per lower-cased word, 24 tokens), "trigrams" (a character-trigram table,
  48 tokens): three tokenizers with three embedding tables and different token statistics;
- latent_gain / latent_shift: the stand-in VAE's raw latent is encoded as gain * z + shift (the
  original zoo: 1, 0); real VAEs' latents are neither unit-scaled nor centred after the family's
  process_in;
- smooth_time: the highest sinusoid frequencies of the timestep embedding zeroed during training
  (the original zoo: 48; no real model does this, and it makes trajectories smoother than real ones).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch

TEXT_DIM = 768


@dataclass(frozen=True)
class Recipe:
    name: str
    sigma_sampler: str
    loss_weight: str
    ema: float
    text: str
    latent_gain: float
    latent_shift: float
    smooth_time: int
    about: str

    def summary(self) -> dict:
        return {k: getattr(self, k) for k in ("sigma_sampler", "loss_weight", "ema", "text", "latent_gain",
                                              "latent_shift", "smooth_time")}


RECIPES: dict[str, Recipe] = {
    "zoo": Recipe("zoo", "mix", "mse", 0.995, "clip_l", 1.0, 0.0, 48,
                  "the original zoo recipe (every model before issue 18)"),
    "uniform_raw": Recipe("uniform_raw", "uniform", "mse", 0.0, "words", 2.5, 0.0, 0,
                          "uniform noise levels, raw weights, a word-table text encoder, latents 2.5x unit, "
                          "minutes of training"),
    "shift_only": Recipe("shift_only", "shifted", "mse", 0.99, "clip_l", 0.5, 0.0, 0,
                         "the family's shifted schedule only, short EMA, latents at half scale"),
    "highnoise": Recipe("highnoise", "logit_normal_high", "cosmap", 0.999, "trigrams", 1.8, 0.5, 0,
                        "logit-normal shifted toward high noise, cosine-map loss weight, long EMA, a "
                        "character-trigram text encoder, latents 1.8x and off-centre (validate only)"),
}


def recipe(name: str | None) -> Recipe:
    if not name:
        return RECIPES["zoo"]
    if name not in RECIPES:
        raise ValueError(f"unknown training recipe {name!r}; choose one of {list(RECIPES)}")
    return RECIPES[name]


# ------------------------------------------------------------------------------------- noise levels
def sample_sigmas(r: Recipe, gen: torch.Generator, n: int, model_sampling) -> torch.Tensor:
    from scripts.harness.training import sample_sigmas as mix_sigmas, schedule_sigma

    if r.sigma_sampler == "mix":
        return mix_sigmas(gen, n, model_sampling)
    u = torch.rand(n, generator=gen).clamp(1e-4, 1 - 1e-4)
    if r.sigma_sampler == "uniform":
        sigma = u
    elif r.sigma_sampler == "shifted":
        sigma = schedule_sigma(model_sampling, u).to(torch.float32)
    elif r.sigma_sampler == "logit_normal_high":
        sigma = torch.sigmoid(0.8 + torch.randn(n, generator=gen))
    else:
        raise ValueError(f"unknown sigma sampler {r.sigma_sampler!r}")
    return sigma.clamp(1e-3, 1.0)


def loss_weights(r: Recipe, sigma: torch.Tensor) -> torch.Tensor:
    if r.loss_weight == "mse":
        return torch.ones_like(sigma)
    if r.loss_weight == "cosmap":
        return 2.0 / (math.pi * (1.0 - 2.0 * sigma + 2.0 * sigma * sigma))
    raise ValueError(f"unknown loss weighting {r.loss_weight!r}")


# ---------------------------------------------------------------------------------------------- text
_TOKENS = {"words": 24, "trigrams": 48}


def _pieces(kind: str, prompt: str) -> list[str]:
    words = prompt.lower().replace(",", " ").split()
    if kind == "words":
        return words
    text = "^" + "_".join(words) + "$"
    return [text[i:i + 3] for i in range(max(1, len(text) - 2))]


def _vector(kind: str, piece: str) -> torch.Tensor:
    seed = zlib.crc32(f"{kind}:{piece}".encode())
    return torch.randn(TEXT_DIM, generator=torch.Generator().manual_seed(seed))


def encode_text(r: Recipe, prompts: list[str], tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cond [N, T, 768] and pooled [N, 768] of ``prompts`` with the recipe's text encoder. The tables are
    deterministic (seeded by a CRC of the piece), so the same prompt encodes the same on every machine.
    ``tokens``: pad the table encoders to this length with a pad token (as T5 pads FLUX's prompt to 512),
    so that scale-faithful models see a text sequence 4-8x shorter than the image's, not 24 tokens."""
    if r.text == "clip_l":
        from scripts.harness import prompt_cache

        return prompt_cache.encode(prompts)
    length = max(_TOKENS[r.text], tokens or 0)
    conds, pooled = [], []
    for prompt in prompts:
        pieces = _pieces(r.text, prompt)[:length]
        tokens = torch.zeros(length, TEXT_DIM)
        if length > _TOKENS[r.text]:
            tokens[len(pieces):] = 0.5 * _vector(r.text, "<pad>")  # a real pad token has an embedding too
        for i, piece in enumerate(pieces):
            # A position code keeps word order visible, as a real encoder's output is contextual.
            tokens[i] = _vector(r.text, piece) + 0.3 * _vector("pos", str(i))
        conds.append(tokens)
        pooled.append(tokens[:len(pieces)].mean(0) if pieces else torch.zeros(TEXT_DIM))
    return torch.stack(conds), torch.stack(pooled)


# -------------------------------------------------------------------------------------------- latents
def to_recipe_latent(r: Recipe, raw: torch.Tensor) -> torch.Tensor:
    """The stand-in VAE's raw latent -> this recipe's raw latent (gain * z + shift)."""
    return raw * r.latent_gain + r.latent_shift if (r.latent_gain != 1.0 or r.latent_shift) else raw


def from_recipe_latent(r: Recipe, latent: torch.Tensor) -> torch.Tensor:
    return (latent - r.latent_shift) / r.latent_gain if (r.latent_gain != 1.0 or r.latent_shift) else latent
