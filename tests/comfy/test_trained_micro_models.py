"""The trained micro Qwen-Image (true CFG) and micro HunyuanVideo (moving shapes): they load through
ComfyUI's loaders, sample to finite outputs, beat the untrained model on a fixed flow-matching
probe, and follow their prompts (colours; for video also a steady straight motion)."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from scripts.harness import shapes_data, shapes_video
from scripts.harness.assets import TRAINED_MODELS
from scripts.harness.micro_models import build_micro_model, load_micro_model, read_micro_metadata

TRAINED = ("qwen_image", "hunyuan_video")
LATENT = {"qwen_image": (1, 16, 1, 32, 32), "hunyuan_video": (1, 16, shapes_video.FRAMES, 16, 16)}
PROBE = [("circle", "red", "blue"), ("square", "yellow", "black"), ("triangle", "blue", "white"),
         ("circle", "green", "red")]
PROBE_PROMPT = shapes_data.prompt_for(*PROBE[0])
QWEN_CFG = 3.0
HV_GUIDANCE = 6.0
# Cases the trained models get right at seed 0, kept as regression checks; they are picked from
# `scripts/eval_micro.py` runs, which report the accuracy over all prompts (the micro Qwen-Image is
# weak: background right in about a quarter of the prompts, figures under "eval" in its JSON sidecar).
QWEN_CASES = [  # prompt, fg, bg, cfg (negative: the empty prompt)
    ("a green circle on a white background", "green", "white", QWEN_CFG),
    ("a red circle on a yellow background", "red", "yellow", 1.0),
]
HV_CASES = [  # prompt, fg, bg (guidance HV_GUIDANCE, cfg 1)
    ("a red square on a black background", "red", "black"),
    ("a yellow square on a black background", "yellow", "black"),
]


@pytest.fixture(scope="module")
def clip(comfy):
    import nodes

    from scripts.harness.assets import CLIP_L_NAME

    return nodes.CLIPLoader().load_clip(CLIP_L_NAME, type="stable_diffusion")[0]


@pytest.fixture(scope="module")
def encode(clip):
    import nodes

    memo = {}

    def enc(text: str, guidance: float | None = None):
        if text not in memo:
            memo[text] = nodes.CLIPTextEncode().encode(clip, text)[0]
        c = memo[text]
        if guidance is None:
            return c
        return [[c[0][0], {**c[0][1], "guidance": guidance}]]
    return enc


@pytest.fixture(scope="module")
def trained(comfy):
    out = {}
    for family in TRAINED:
        key = f"micro_{family}_trained"
        assert key in comfy.assets, f"{TRAINED_MODELS[family][0]} is missing"
        out[family] = load_micro_model(comfy.assets[key])
    return out


def ksample(model, positive, negative, latent_shape, cfg: float, seed: int = 0, steps: int = 20) -> torch.Tensor:
    import nodes

    out = nodes.KSampler().sample(model, seed, steps, cfg, "euler", "simple", positive, negative,
                                  {"samples": torch.zeros(latent_shape)}, denoise=1.0)
    return out[0]["samples"]


@pytest.mark.parametrize("family", TRAINED)
def test_metadata_and_sidecar(comfy, family):
    src = TRAINED_MODELS[family][0]
    info = read_micro_metadata(src)
    side = json.loads(src.with_suffix(".json").read_text())
    assert info["family"] == family == side["family"]
    t = info["training"]
    assert t["steps"] == side["steps"] > 0 and side["commands"]
    # Recorded at training time on a fixed held-out batch: far below the untrained model.
    # (0.06 for both shipped models; a run stopped after ~100 steps sits near 0.25.)
    assert t["heldout_loss"] < 0.15 * t["heldout_loss_untrained"], t
    assert {c[0] for c in QWEN_CASES + HV_CASES} <= set(info["prompts"])


@pytest.mark.parametrize("family", TRAINED)
def test_loads_through_dev_loader_and_samples_finite(comfy, encode, family):
    import nodes

    from scripts.harness import comfy_env

    comfy_env.load_custom_nodes([comfy_env.DEV_NODES_DIR])
    loader = nodes.NODE_CLASS_MAPPINGS["DiTAccelDevMicroLoader"]
    name = TRAINED_MODELS[family][1]
    assert name in loader.INPUT_TYPES()["required"]["unet_name"][0]
    model = loader().load(name)[0]
    assert type(model.model.model_config).__name__ == {"qwen_image": "QwenImage",
                                                       "hunyuan_video": "HunyuanVideo"}[family]
    out = ksample(model, encode(PROBE_PROMPT), encode(""), LATENT[family], cfg=2.0, steps=3)
    assert out.shape == LATENT[family] and torch.isfinite(out).all() and out.abs().mean() > 0


def test_trained_hunyuan_video_is_loader_legal(comfy):
    """ComfyUI's own UNETLoader detects the trained HunyuanVideo file (no metadata needed)."""
    import nodes

    detected = nodes.UNETLoader().load_unet(TRAINED_MODELS["hunyuan_video"][1], "default")[0]
    assert type(detected.model.model_config).__name__ == "HunyuanVideo"
    ours = load_micro_model(TRAINED_MODELS["hunyuan_video"][0]).model.diffusion_model.state_dict()
    theirs = detected.model.diffusion_model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k].float()) for k in ours)


def probe_loss(family: str, model, encode) -> float:
    """Flow-matching loss on a fixed probe (4 prompts, fixed shapes / noise / sigmas), computed with
    the trainer's own prediction path (scripts/train_micro.py)."""
    from scripts.train_micro import FAMILIES, predict

    spec = FAMILIES[family]
    if family == "qwen_image":
        raw = shapes_data.encode(torch.stack([shapes_data.render(*c, 30, 34, 14) for c in PROBE])).unsqueeze(2)
    else:
        raw = shapes_video.encode_clips(torch.stack(
            [shapes_video.render_clip(*c, (9.0, 12.0), (2.5, 1.5), 6.5)[0] for c in PROBE]))
    x0 = model.model.latent_format.process_in(raw)
    conds = [encode(shapes_data.prompt_for(*c)) for c in PROBE]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    sigma = torch.tensor([0.35, 0.55, 0.75, 0.9])
    s = sigma.view(-1, *([1] * (x0.dim() - 1)))
    batch = {"xt": s * eps + (1 - s) * x0, "sigma": sigma, "context": torch.cat([c[0][0] for c in conds]),
             "pooled": torch.cat([c[0][1]["pooled_output"] for c in conds])}
    if spec.guidance_range is not None:
        batch["guidance"] = torch.full((len(PROBE),), HV_GUIDANCE)
    with torch.no_grad():
        out = predict(spec, model.model, model.model.diffusion_model, batch)
    return float(F.mse_loss(out.float(), eps - x0))


@pytest.mark.parametrize("family", TRAINED)
def test_trained_beats_untrained_on_probe(comfy, encode, trained, family):
    got = probe_loss(family, trained[family], encode)
    base = probe_loss(family, build_micro_model(family, seed=0), encode)
    # Shipped models: 0.21 vs 4.11 (Qwen-Image) and 0.28 vs 4.30 (HunyuanVideo).
    assert math.isfinite(got) and got < 0.15 * base, (got, base)


@pytest.mark.parametrize("prompt,fg,bg,cfg", QWEN_CASES)
def test_qwen_follows_colour_prompt(encode, trained, prompt, fg, bg, cfg):
    lat = ksample(trained["qwen_image"], encode(prompt), encode(""), LATENT["qwen_image"], cfg=cfg)
    got = shapes_data.colour_analysis(shapes_data.decode(lat)[0])
    assert got["background"] == bg, got
    assert got["fg_fraction"] > 0.02, got
    assert got["foreground"] == fg, got


def test_qwen_cfg_changes_the_result(encode, trained):
    """The negative (empty) prompt reaches the model: cfg 3 and cfg 1 give different images."""
    prompt = QWEN_CASES[0][0]
    a = ksample(trained["qwen_image"], encode(prompt), encode(""), LATENT["qwen_image"], cfg=1.0)
    b = ksample(trained["qwen_image"], encode(prompt), encode(""), LATENT["qwen_image"], cfg=QWEN_CFG)
    assert (shapes_data.decode(a) - shapes_data.decode(b)).abs().mean() > 0.01


@pytest.mark.parametrize("prompt,fg,bg", HV_CASES)
def test_hunyuan_video_moving_shape(encode, trained, prompt, fg, bg):
    pos = encode(prompt, guidance=HV_GUIDANCE)
    lat = ksample(trained["hunyuan_video"], pos, pos, LATENT["hunyuan_video"], cfg=1.0)
    frames = shapes_video.decode_frames(lat)[0]
    m = shapes_video.motion_analysis(frames)
    for f in m["frames"]:
        assert f["background"] == bg and f["foreground"] == fg and f["fg_fraction"] > 0.02, f
    assert m["path_residual"] < 1.5, m  # a steady straight path, not a flicker


def test_shapes_video_round_trip_and_track():
    clip, centres = shapes_video.render_clip("circle", "red", "blue", (8.0, 10.0), (3.0, 2.0), 6.0)
    latent = shapes_video.encode_clips(clip[None])
    assert latent.shape == (1, 16, shapes_video.FRAMES, 16, 16)
    assert (shapes_video.decode_frames(latent, clamp=False)[0] - clip).abs().max() < 1e-5
    m = shapes_video.motion_analysis(clip)
    assert all((f["foreground"], f["background"]) == ("red", "blue") for f in m["frames"])
    assert abs(m["velocity"][0] - 3.0) < 0.3 and abs(m["velocity"][1] - 2.0) < 0.3, m
    assert m["path_residual"] < 0.5, m
    assert torch.allclose(centres[-1], torch.tensor([17.0, 16.0]))


def test_sampled_clips_move_and_stay_inside():
    clips, idx, centres = shapes_video.sample_clips(torch.Generator().manual_seed(1), 16)
    assert clips.shape == (16, shapes_video.FRAMES, shapes_video.FRAME_SIZE, shapes_video.FRAME_SIZE, 3)
    steps = (centres[:, 1:] - centres[:, :-1]).norm(dim=-1)
    lo, hi = shapes_video.SPEED_RANGE
    assert (steps > lo - 1e-4).all() and (steps < hi + 1e-4).all()
    r_min = shapes_video.FRAME_SIZE * shapes_video.RADIUS_RANGE[0]
    assert (centres >= r_min - 1e-4).all() and (centres <= shapes_video.FRAME_SIZE - r_min + 1e-4).all()
    assert idx.min() >= 0 and idx.max() < len(shapes_data.PROMPTS)
