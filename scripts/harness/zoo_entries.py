"""The model zoo as data: every zoo model, how it was (or is) trained and how it is sampled.

Two roles: ``tune`` models are where method defaults may be chosen; ``validate`` models differ from
them in what real models vary (width, depth, double/single split, heads, data, resolutions and
aspect ratios, edit conditioning, latent channels, guidance kind) and are only for reporting.

Entries with ``"trainer": "train_zoo"`` are trained by ``scripts/train_zoo.py --name <name>`` from the
fields here; the other three are the project's original trained micro models (their own scripts).
``tests/assets/zoo/manifest.json`` is written from this table plus the training sidecars by
``scripts/train_zoo.py --manifest``.

Fields: family; role; file (repo-relative); config (the diffusion model's constructor kwargs; None:
the family's micro config); data (generator -> weight, see data_mix / edit_pairs / moving_data /
shapes_video); resolutions ([H, W] px, one drawn per batch); default_resolution (what ``cases`` use);
frames (video: latent frames); cfg ({"kind": "guidance", "guidance": g, "range": [lo, hi]} for
guidance-distilled models, fed random values in range during training; {"kind": "true_cfg", "scale": s}
for real CFG); edit; minutes; seed; batch; lr; dropout (prompt dropout); vae; recipe (a name in
scripts/harness/recipes.py: noise-level sampler, loss weighting, EMA, text encoder, latent scale; absent:
"zoo", the original recipe); init (optional: a zoo model file of the same config the training starts
from, for the fine-tunes at real token counts); text_tokens (optional: padded text length).

Recipes and roles (issue 18): "zoo" is used by tune and validate models alike; "uniform_raw" and
"shift_only" only by tune models; "highnoise" only by validate models, so every recipe-held-out figure
comes from a recipe no default was chosen on.
"""
from __future__ import annotations

import copy
from typing import Any

IMAGE_RESOLUTIONS = [[64, 64], [48, 64], [64, 48], [32, 48], [48, 32]]
EDIT_RESOLUTIONS = [[48, 48], [48, 64], [64, 48], [32, 48], [48, 32]]


def _flux(hidden: int, heads: int, double: int, single: int, axes: list[int]) -> dict[str, Any]:
    """A micro FLUX config (ComfyUI's Flux constructor kwargs) of the given width and depth."""
    return {"image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2, "vec_in_dim": 768,
            "context_in_dim": 768, "hidden_size": hidden, "mlp_ratio": 4.0, "num_heads": heads, "depth": double,
            "depth_single_blocks": single, "axes_dim": axes, "theta": 10000, "qkv_bias": True,
            "guidance_embed": True}

ZOO: dict[str, dict[str, Any]] = {
    # --- tune: the project's trained micro models (scripts/train_micro_flux.py, scripts/train_micro.py) ---
    "micro_flux": {
        "family": "flux", "role": "tune", "trainer": "scripts/train_micro_flux.py",
        "file": "tests/assets/micro_flux_trained.safetensors", "config": None,
        "data": {"shapes": 1.0}, "resolutions": [[64, 64]], "default_resolution": [64, 64],
        "cfg": {"kind": "guidance", "guidance": 3.5, "range": [3.5, 3.5]}, "edit": False, "vae": "shapes_data",
        "retrain": ".venv/bin/python scripts/train_micro_flux.py --minutes 15, then "
                   "--resume tests/assets/micro_flux_trained.safetensors --lr 5e-4 (53 min in all; "
                   "the exact split was not recorded)",
    },
    "micro_qwen_image": {
        "family": "qwen_image", "role": "tune", "trainer": "scripts/train_micro.py",
        "file": "tests/assets/micro_qwen_image_trained.safetensors", "config": None,
        "data": {"shapes": 1.0}, "resolutions": [[64, 64]], "default_resolution": [64, 64],
        "cfg": {"kind": "true_cfg", "scale": 3.0}, "edit": False, "vae": "shapes_data",
        "retrain": ".venv/bin/python scripts/train_micro.py --family qwen_image --minutes 45 --batch 12 && "
                   ".venv/bin/python scripts/train_micro.py --family qwen_image --minutes 18 --lr 5e-4 "
                   "--resume tests/assets/micro_qwen_image_trained.safetensors",
    },
    "micro_hunyuan_video": {
        "family": "hunyuan_video", "role": "tune", "trainer": "scripts/train_micro.py",
        "file": "tests/assets/micro_hunyuan_video_trained.safetensors", "config": None,
        "data": {"shapes_video": 1.0}, "resolutions": [[32, 32]], "default_resolution": [32, 32], "frames": 4,
        "cfg": {"kind": "guidance", "guidance": 6.0, "range": [1.0, 8.0]}, "edit": False, "vae": "shapes_data",
        "retrain": ".venv/bin/python scripts/train_micro.py --family hunyuan_video --minutes 45 --batch 10 && "
                   ".venv/bin/python scripts/train_micro.py --family hunyuan_video --minutes 18 --lr 5e-4 "
                   "--resume tests/assets/micro_hunyuan_video_trained.safetensors",
    },
    # --- tune: an under-trained FLUX (same config and data as micro_flux, 3 minutes) ---
    "flux_undertrained": {
        "family": "flux", "role": "tune", "trainer": "train_zoo",
        "file": "tests/assets/zoo/flux_undertrained.safetensors", "config": None,
        "data": {"shapes": 1.0}, "resolutions": [[64, 64]], "default_resolution": [64, 64],
        "cfg": {"kind": "guidance", "guidance": 3.5, "range": [3.5, 3.5]}, "edit": False, "vae": "shapes_data",
        "minutes": 3.0, "seed": 7, "batch": 16, "lr": 1e-3, "dropout": 0.1,
    },
    # --- tune: added for dynamic resolution and edit methods (issues 11, 10): low-resolution drafts need a
    # model that has seen small sizes, and edit-region choices need an edit model that is not a validate one ---
    "flux_multires": {
        "family": "flux", "role": "tune", "trainer": "train_zoo",
        "file": "tests/assets/zoo/flux_multires.safetensors", "config": None,
        "data": {"shapes": 0.5, "gradients": 0.25, "glyphs": 0.25},
        "resolutions": [[32, 32], [32, 48], [48, 32], [48, 48], [64, 64], [48, 64], [64, 48]],
        "default_resolution": [64, 64],
        "cfg": {"kind": "guidance", "guidance": 3.5, "range": [1.0, 5.0]}, "edit": False, "vae": "shapes_data",
        "minutes": 10.0, "seed": 29, "batch": 12, "lr": 1e-3, "dropout": 0.1,
    },
    "kontext_edit_tune": {
        "family": "flux", "role": "tune", "trainer": "train_zoo",
        "file": "tests/assets/zoo/kontext_edit_tune.safetensors",
        "config": {
            "image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2,
            "vec_in_dim": 768, "context_in_dim": 768, "hidden_size": 96, "mlp_ratio": 4.0,
            "num_heads": 3, "depth": 2, "depth_single_blocks": 2, "axes_dim": [4, 14, 14],
            "theta": 10000, "qkv_bias": True, "guidance_embed": True,
        },
        "data": {"edit_pairs": 1.0}, "resolutions": [[32, 32]] + EDIT_RESOLUTIONS, "default_resolution": [48, 48],
        "cfg": {"kind": "guidance", "guidance": 2.5, "range": [1.0, 4.0]}, "edit": True, "vae": "shapes_data",
        "minutes": 10.0, "seed": 31, "batch": 8, "lr": 1e-3, "dropout": 0.1,
    },
    "hunyuan_video_multires": {
        "family": "hunyuan_video", "role": "tune", "trainer": "train_zoo",
        "file": "tests/assets/zoo/hunyuan_video_multires.safetensors", "config": None,
        "data": {"moving_shapes_glyphs": 1.0},
        "resolutions": [[16, 16], [16, 32], [32, 16], [32, 32], [32, 48], [48, 32]],
        "default_resolution": [32, 32], "frames": 4,
        "cfg": {"kind": "guidance", "guidance": 6.0, "range": [1.0, 8.0]}, "edit": False, "vae": "shapes_data",
        "minutes": 10.0, "seed": 37, "batch": 8, "lr": 1e-3, "dropout": 0.1,
    },
    # --- validate ---
    "flux_glyphs": {
        "family": "flux", "role": "validate", "trainer": "train_zoo",
        "file": "tests/assets/zoo/flux_glyphs.safetensors",
        "config": {
            "image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2,
            "vec_in_dim": 768, "context_in_dim": 768, "hidden_size": 96, "mlp_ratio": 4.0,
            "num_heads": 3, "depth": 1, "depth_single_blocks": 5, "axes_dim": [4, 14, 14],
            "theta": 10000, "qkv_bias": True, "guidance_embed": True,
        },
        "data": {"glyphs": 0.35, "textures": 0.25, "gradients": 0.15, "shapes": 0.25},
        "resolutions": IMAGE_RESOLUTIONS, "default_resolution": [48, 64],
        "cfg": {"kind": "guidance", "guidance": 3.5, "range": [1.0, 6.0]}, "edit": False, "vae": "shapes_data",
        "minutes": 12.0, "seed": 11, "batch": 16, "lr": 1e-3, "dropout": 0.1,
    },
    "qwen_image_edit": {
        "family": "qwen_image", "role": "validate", "trainer": "train_zoo",
        "file": "tests/assets/zoo/qwen_image_edit.safetensors",
        "config": {
            "image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16,
            "num_layers": 3, "attention_head_dim": 32, "num_attention_heads": 3,
            "joint_attention_dim": 768, "axes_dims_rope": [4, 14, 14],
        },
        "data": {"edit_pairs": 1.0}, "resolutions": EDIT_RESOLUTIONS, "default_resolution": [48, 64],
        "cfg": {"kind": "true_cfg", "scale": 3.0}, "edit": True, "vae": "shapes_data",
        "minutes": 12.0, "seed": 13, "batch": 16, "lr": 1e-3, "dropout": 0.15,
    },
    "flux_kontext_edit": {
        "family": "flux", "role": "validate", "trainer": "train_zoo",
        "file": "tests/assets/zoo/flux_kontext_edit.safetensors",
        "config": {
            "image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2,
            "vec_in_dim": 768, "context_in_dim": 768, "hidden_size": 128, "mlp_ratio": 4.0,
            "num_heads": 4, "depth": 3, "depth_single_blocks": 3, "axes_dim": [8, 12, 12],
            "theta": 10000, "qkv_bias": True, "guidance_embed": True,
        },
        "data": {"edit_pairs": 1.0}, "resolutions": EDIT_RESOLUTIONS, "default_resolution": [48, 48],
        "cfg": {"kind": "guidance", "guidance": 2.5, "range": [1.0, 4.0]}, "edit": True, "vae": "shapes_data",
        "minutes": 12.0, "seed": 17, "batch": 8, "lr": 1e-3, "dropout": 0.1,
    },
    "hunyuan_video15": {
        "family": "hunyuan_video15", "role": "validate", "trainer": "train_zoo",
        "file": "tests/assets/zoo/hunyuan_video15.safetensors", "config": None,
        "data": {"moving_shapes_glyphs": 1.0}, "resolutions": [[32, 32], [32, 48], [48, 32]],
        "default_resolution": [32, 48], "frames": 2,
        "cfg": {"kind": "true_cfg", "scale": 3.0}, "edit": False, "vae": "vae32",
        # lr 2e-3 and 2 latent frames: text conditioning (tokens only, no pooled vector in 1.5) is learnt
        # slowly; a first run at lr 1e-3 with 3 frames ignored the prompt entirely after 12 minutes.
        "minutes": 12.0, "seed": 19, "batch": 8, "lr": 2e-3, "dropout": 0.15,
    },
    "hunyuan_video_glyphs": {
        "family": "hunyuan_video", "role": "validate", "trainer": "train_zoo",
        "file": "tests/assets/zoo/hunyuan_video_glyphs.safetensors",
        "config": {
            "image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "patch_size": [1, 2, 2],
            "vec_in_dim": 768, "context_in_dim": 768, "hidden_size": 128, "mlp_ratio": 4.0,
            "num_heads": 2, "depth": 1, "depth_single_blocks": 3, "axes_dim": [16, 24, 24],
            "theta": 256, "qkv_bias": True, "guidance_embed": True, "byt5": False, "meanflow": False,
            "use_cond_type_embedding": False, "vision_in_dim": None,
        },
        "data": {"moving_shapes_glyphs": 1.0}, "resolutions": [[32, 32], [32, 48], [48, 32]],
        "default_resolution": [48, 32], "frames": 4,
        "cfg": {"kind": "guidance", "guidance": 6.0, "range": [1.0, 8.0]}, "edit": False, "vae": "shapes_data",
        "minutes": 12.0, "seed": 23, "batch": 8, "lr": 1e-3, "dropout": 0.1,
    },
    # --- issue 18: models trained by other recipes (scripts/harness/recipes.py). Tune: uniform_raw and
    # shift_only; validate: highnoise, a recipe no tune model uses (leave one recipe out) ---
    "flux_uniform_raw": {
        "family": "flux", "role": "tune", "trainer": "train_zoo", "recipe": "uniform_raw",
        "file": "tests/assets/zoo/flux_uniform_raw.safetensors", "config": None,
        "data": {"shapes": 0.6, "gradients": 0.4}, "resolutions": [[64, 64], [48, 64], [64, 48]],
        "default_resolution": [64, 64],
        "cfg": {"kind": "guidance", "guidance": 3.5, "range": [1.0, 8.0]}, "edit": False, "vae": "shapes_data",
        "minutes": 3.0, "seed": 41, "batch": 12, "lr": 2e-3, "dropout": 0.1,
    },
    "qwen_uniform_raw": {
        "family": "qwen_image", "role": "tune", "trainer": "train_zoo", "recipe": "uniform_raw",
        "file": "tests/assets/zoo/qwen_uniform_raw.safetensors", "config": None,
        "data": {"shapes": 0.5, "gradients": 0.5}, "resolutions": [[64, 64], [48, 64], [64, 48]],
        "default_resolution": [64, 64],
        "cfg": {"kind": "true_cfg", "scale": 3.0}, "edit": False, "vae": "shapes_data",
        "minutes": 3.0, "seed": 43, "batch": 12, "lr": 2e-3, "dropout": 0.15,
    },
    "flux_shift_only": {
        "family": "flux", "role": "tune", "trainer": "train_zoo", "recipe": "shift_only",
        "file": "tests/assets/zoo/flux_shift_only.safetensors", "config": None,
        "data": {"shapes": 0.5, "glyphs": 0.5}, "resolutions": [[64, 64], [48, 48], [32, 32]],
        "default_resolution": [64, 64],
        "cfg": {"kind": "guidance", "guidance": 3.5, "range": [3.5, 3.5]}, "edit": False, "vae": "shapes_data",
        "minutes": 6.0, "seed": 47, "batch": 12, "lr": 1e-3, "dropout": 0.1,
    },
    "hv_shift_only": {
        "family": "hunyuan_video", "role": "tune", "trainer": "train_zoo", "recipe": "shift_only",
        "file": "tests/assets/zoo/hv_shift_only.safetensors", "config": None,
        "data": {"moving_shapes_glyphs": 1.0}, "resolutions": [[32, 32], [32, 48]],
        "default_resolution": [32, 32], "frames": 4,
        "cfg": {"kind": "guidance", "guidance": 6.0, "range": [1.0, 8.0]}, "edit": False, "vae": "shapes_data",
        "minutes": 6.0, "seed": 53, "batch": 8, "lr": 1e-3, "dropout": 0.1,
    },
    "flux_highnoise": {
        "family": "flux", "role": "validate", "trainer": "train_zoo", "recipe": "highnoise",
        "file": "tests/assets/zoo/flux_highnoise.safetensors",
        "config": _flux(96, 3, 2, 3, [4, 14, 14]),
        "data": {"gradients": 0.3, "glyphs": 0.3, "shapes": 0.2, "textures": 0.2},
        "resolutions": [[64, 64], [48, 64], [64, 48]], "default_resolution": [64, 64],
        "cfg": {"kind": "guidance", "guidance": 3.5, "range": [2.0, 5.0]}, "edit": False, "vae": "shapes_data",
        "minutes": 6.0, "seed": 59, "batch": 16, "lr": 7e-4, "dropout": 0.1,
    },
    "qwen_highnoise": {
        "family": "qwen_image", "role": "validate", "trainer": "train_zoo", "recipe": "highnoise",
        "file": "tests/assets/zoo/qwen_highnoise.safetensors",
        "config": {
            "image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16,
            "num_layers": 3, "attention_head_dim": 32, "num_attention_heads": 3,
            "joint_attention_dim": 768, "axes_dims_rope": [4, 14, 14],
        },
        "data": {"shapes": 0.4, "glyphs": 0.3, "textures": 0.3}, "resolutions": [[64, 64], [48, 64], [64, 48]],
        "default_resolution": [64, 64],
        "cfg": {"kind": "true_cfg", "scale": 4.0}, "edit": False, "vae": "shapes_data",
        "minutes": 6.0, "seed": 61, "batch": 16, "lr": 7e-4, "dropout": 0.15,
    },
    "hv_highnoise": {
        "family": "hunyuan_video", "role": "validate", "trainer": "train_zoo", "recipe": "highnoise",
        "file": "tests/assets/zoo/hv_highnoise.safetensors", "config": None,
        "data": {"moving_shapes_glyphs": 1.0}, "resolutions": [[32, 32], [48, 32]],
        "default_resolution": [32, 32], "frames": 4,
        "cfg": {"kind": "guidance", "guidance": 6.0, "range": [2.0, 8.0]}, "edit": False, "vae": "shapes_data",
        "minutes": 6.0, "seed": 67, "batch": 8, "lr": 7e-4, "dropout": 0.1,
    },
    # --- issue 19: scale-faithful models (image tokens of real sizes, 4x fewer text tokens, several
    # resolutions so that a half-resolution sketch is in distribution); micro width and depth ---
    "flux_1k_tune": {
        "family": "flux", "role": "tune", "trainer": "train_zoo", "recipe": "uniform_raw", "text_tokens": 256,
        "file": "tests/assets/zoo/flux_1k_tune.safetensors",
        "config": _flux(96, 3, 1, 2, [4, 14, 14]),
        "data": {"shapes": 0.4, "gradients": 0.3, "glyphs": 0.3},
        "resolutions": [[64, 64], [96, 96], [128, 128], [128, 128]], "default_resolution": [128, 128],
        "cfg": {"kind": "guidance", "guidance": 3.5, "range": [1.0, 6.0]}, "edit": False, "vae": "shapes_data",
        "minutes": 10.0, "seed": 71, "batch": 6, "lr": 1.5e-3, "dropout": 0.1,
    },
    "flux_1k_validate": {
        "family": "flux", "role": "validate", "trainer": "train_zoo", "recipe": "highnoise", "text_tokens": 256,
        "file": "tests/assets/zoo/flux_1k_validate.safetensors",
        "config": _flux(96, 3, 2, 1, [4, 14, 14]),
        "data": {"shapes": 0.3, "gradients": 0.3, "glyphs": 0.2, "textures": 0.2},
        "resolutions": [[64, 64], [96, 96], [128, 128], [128, 128]], "default_resolution": [128, 128],
        "cfg": {"kind": "guidance", "guidance": 3.5, "range": [2.0, 5.0]}, "edit": False, "vae": "shapes_data",
        "minutes": 10.0, "seed": 73, "batch": 6, "lr": 1e-3, "dropout": 0.1,
    },
    # Fine-tuned at real token counts from the models above (same config and recipe; "init" names the
    # starting weights): 4096 image + 512 text tokens (FLUX.1 at 1024 px), and edit models at 1024 target +
    # 1024 reference tokens. Mixed resolutions keep the half-resolution sketch in distribution.
    "flux_4k_tune": {
        "family": "flux", "role": "tune", "trainer": "train_zoo", "recipe": "uniform_raw", "text_tokens": 512,
        "file": "tests/assets/zoo/flux_4k_tune.safetensors", "init": "tests/assets/zoo/flux_1k_tune.safetensors",
        "config": _flux(96, 3, 1, 2, [4, 14, 14]),
        "data": {"shapes": 0.4, "gradients": 0.3, "glyphs": 0.3},
        "resolutions": [[128, 128], [192, 192], [256, 256], [256, 256]], "default_resolution": [256, 256],
        "cfg": {"kind": "guidance", "guidance": 3.5, "range": [1.0, 6.0]}, "edit": False, "vae": "shapes_data",
        "minutes": 12.0, "seed": 81, "batch": 2, "lr": 7e-4, "dropout": 0.1,
    },
    "flux_4k_validate": {
        "family": "flux", "role": "validate", "trainer": "train_zoo", "recipe": "highnoise", "text_tokens": 512,
        "file": "tests/assets/zoo/flux_4k_validate.safetensors",
        "init": "tests/assets/zoo/flux_1k_validate.safetensors",
        "config": _flux(96, 3, 2, 1, [4, 14, 14]),
        "data": {"shapes": 0.3, "gradients": 0.3, "glyphs": 0.2, "textures": 0.2},
        "resolutions": [[128, 128], [192, 192], [256, 256], [256, 256]], "default_resolution": [256, 256],
        "cfg": {"kind": "guidance", "guidance": 3.5, "range": [2.0, 5.0]}, "edit": False, "vae": "shapes_data",
        "minutes": 12.0, "seed": 83, "batch": 2, "lr": 5e-4, "dropout": 0.1,
    },
    "kontext_1k_tune": {
        "family": "flux", "role": "tune", "trainer": "train_zoo", "text_tokens": 256,
        "file": "tests/assets/zoo/kontext_1k_tune.safetensors",
        "init": "tests/assets/zoo/kontext_edit_tune.safetensors",
        "config": _flux(96, 3, 2, 2, [4, 14, 14]),
        "data": {"edit_pairs": 1.0}, "resolutions": [[64, 64], [96, 96], [128, 128], [128, 128]],
        "default_resolution": [128, 128],
        "cfg": {"kind": "guidance", "guidance": 2.5, "range": [1.0, 4.0]}, "edit": True, "vae": "shapes_data",
        "minutes": 10.0, "seed": 85, "batch": 3, "lr": 5e-4, "dropout": 0.1,
    },
    "kontext_1k_validate": {
        "family": "flux", "role": "validate", "trainer": "train_zoo", "text_tokens": 256,
        "file": "tests/assets/zoo/kontext_1k_validate.safetensors",
        "init": "tests/assets/zoo/flux_kontext_edit.safetensors",
        "config": _flux(128, 4, 3, 3, [8, 12, 12]),
        "data": {"edit_pairs": 1.0}, "resolutions": [[64, 64], [96, 96], [128, 128], [128, 128]],
        "default_resolution": [128, 128],
        "cfg": {"kind": "guidance", "guidance": 2.5, "range": [1.0, 4.0]}, "edit": True, "vae": "shapes_data",
        "minutes": 12.0, "seed": 87, "batch": 3, "lr": 5e-4, "dropout": 0.1,
    },
    # a video model at FLUX-class token counts: 16 latent frames x 16 x 16 tokens = 4096 video tokens at 64 px
    "hv_4k_validate": {
        "family": "hunyuan_video", "role": "validate", "trainer": "train_zoo", "recipe": "highnoise",
        "file": "tests/assets/zoo/hv_4k_validate.safetensors", "init": "tests/assets/zoo/hv_highnoise.safetensors",
        "config": None,
        "data": {"moving_shapes_glyphs": 1.0}, "resolutions": [[64, 64], [48, 48]],
        "default_resolution": [64, 64], "frames": 16,
        "cfg": {"kind": "guidance", "guidance": 6.0, "range": [2.0, 8.0]}, "edit": False, "vae": "shapes_data",
        "minutes": 12.0, "seed": 89, "batch": 1, "lr": 5e-4, "dropout": 0.1,
    },
    # its tune-role twin: another recipe (shift_only, from the tune model hv_shift_only), same token count
    "hv_4k_tune": {
        "family": "hunyuan_video", "role": "tune", "trainer": "train_zoo", "recipe": "shift_only",
        "file": "tests/assets/zoo/hv_4k_tune.safetensors", "init": "tests/assets/zoo/hv_shift_only.safetensors",
        "config": None,
        "data": {"moving_shapes_glyphs": 1.0}, "resolutions": [[64, 64], [48, 48]],
        "default_resolution": [64, 64], "frames": 16,
        "cfg": {"kind": "guidance", "guidance": 6.0, "range": [1.0, 8.0]}, "edit": False, "vae": "shapes_data",
        "minutes": 12.0, "seed": 91, "batch": 1, "lr": 5e-4, "dropout": 0.1,
    },
}

ROLES = ("tune", "validate")


def zoo_entry(name: str) -> dict[str, Any]:
    """A copy of one table entry with its config filled in (the family's micro config when None)."""
    if name not in ZOO:
        raise ValueError(f"unknown zoo model {name!r}; choose one of {list(ZOO)}")
    entry = copy.deepcopy(ZOO[name])
    if entry["config"] is None:
        from scripts.harness.micro_models import micro_config

        entry["config"] = micro_config(entry["family"])
    return {"name": name, **entry}
