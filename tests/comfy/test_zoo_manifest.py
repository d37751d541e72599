"""The model zoo (tests/assets/zoo/manifest.json, scripts/harness/zoo.py): enough models over the
families, files present and unchanged, tune/validate roles, and every model loads and samples
through ComfyUI's KSampler."""
from __future__ import annotations

import collections

import pytest
import torch

from scripts.harness import zoo

MANIFEST = zoo.load_manifest()
MODELS = MANIFEST["models"]
NAMES = [e["name"] for e in MODELS]


def test_manifest_covers_the_families():
    assert len(MODELS) >= 8
    assert len(set(NAMES)) == len(NAMES)
    fams = collections.defaultdict(list)
    for e in MODELS:
        fams[e["family"]].append(e)
    assert len(fams["flux"]) >= 3 and any(e["edit"] for e in fams["flux"])
    assert len(fams["qwen_image"]) >= 2 and any(e["edit"] for e in fams["qwen_image"])
    assert len(fams["hunyuan_video"]) + len(fams["hunyuan_video15"]) >= 2
    assert set(fams) <= {"flux", "qwen_image", "hunyuan_video", "hunyuan_video15"}


def test_roles_are_tune_or_validate_and_both_present():
    roles = {e["role"] for e in MODELS}
    assert roles == {"tune", "validate"}
    tune = {e["name"] for e in MODELS if e["role"] == "tune"}
    assert {"micro_flux", "micro_qwen_image", "micro_hunyuan_video", "flux_undertrained"} <= tune
    assert zoo.names("tune") + zoo.names("validate") != [] and set(zoo.names("validate")).isdisjoint(tune)


@pytest.mark.parametrize("entry", MODELS, ids=NAMES)
def test_file_exists_and_sha256_matches(entry):
    path = zoo.verify_entry(entry)
    assert path.stat().st_size == entry["bytes"]
    for key in ("config_summary", "data", "resolutions", "default_resolution", "cfg", "edit", "training"):
        assert key in entry, f"{entry['name']} lacks {key}"
    assert entry["cfg"]["kind"] in ("guidance", "true_cfg")
    assert entry["training"]["steps"] > 0 and entry["training"]["minutes"] > 0


def test_verify_entry_rejects_a_changed_file():
    entry = dict(MODELS[0], sha256="0" * 64)
    with pytest.raises(zoo.ZooError, match="sha256"):
        zoo.verify_entry(entry)


@pytest.mark.parametrize("name", NAMES)
def test_model_loads_and_samples(comfy, name):
    import comfy.utils
    import nodes

    comfy.utils.PROGRESS_BAR_ENABLED = False
    m = zoo.ZooModel(name)
    assert m.role == m.entry["role"] and m.family == m.entry["family"]
    assert (m.guidance is None) == (m.entry["cfg"]["kind"] == "true_cfg")
    cases = m.cases(n_prompts=1, n_seeds=1)
    assert len(cases) == 1
    case = cases[0]
    assert case.cfg == m.default_cfg and case.prompt in m.prompts
    if m.edit:
        assert "reference_latents" in case.positive[0][1] and "reference_latents" in case.negative[0][1]
    out = nodes.KSampler().sample(m.model, case.seed, 2, case.cfg, "euler", "simple", case.positive,
                                  case.negative, case.latent, denoise=1.0)[0]["samples"]
    assert out.shape == case.latent["samples"].shape and torch.isfinite(out).all()
    image = m.decode(out)
    h, w = m.resolution
    assert image.shape[-3:] == (h, w, 3) and torch.isfinite(image).all()
    if m.edit:  # the reference reaches the model: another reference gives another result
        other = [[case.positive[0][0], {**case.positive[0][1],
                                        "reference_latents": [m.encode_image(1.0 - case.reference)]}]]
        out2 = nodes.KSampler().sample(m.model, case.seed, 2, case.cfg, "euler", "simple", other,
                                       case.negative, case.latent, denoise=1.0)[0]["samples"]
        assert (out2 - out).abs().max() > 1e-3


def test_validate_models_hold_out_a_training_recipe():
    """Issue 18: the zoo varies how models are trained, and at least one recipe is used by validate models
    only, so a setting chosen on the tune models meets a recipe it never saw."""
    from scripts.harness import recipes

    by_role = collections.defaultdict(set)
    for e in MODELS:
        assert e["recipe"]["name"] in recipes.RECIPES, e["name"]
        by_role[e["role"]].add(e["recipe"]["name"])
    assert len(by_role["tune"] | by_role["validate"]) >= 3
    held_out = by_role["validate"] - by_role["tune"]
    assert held_out, "no recipe is used by validate models only"
    for recipe in held_out:  # the held-out recipe covers an image, a true-CFG and a video family
        fams = {e["family"] for e in MODELS if e["recipe"]["name"] == recipe}
        assert {"flux", "qwen_image"} <= fams and fams & {"hunyuan_video", "hunyuan_video15"}
    tune_fams = {(e["family"], e["recipe"]["name"]) for e in MODELS if e["role"] == "tune"}
    assert len({r for _, r in tune_fams}) >= 2  # tune models span more than one recipe too


def test_recipes_change_text_and_latents_and_round_trip():
    from scripts.harness import recipes

    words, trigrams = recipes.RECIPES["uniform_raw"], recipes.RECIPES["highnoise"]
    a, pa = recipes.encode_text(words, ["a red circle on a blue background", ""], tokens=256)
    b, _ = recipes.encode_text(trigrams, ["a red circle on a blue background"])
    assert a.shape == (2, 256, 768) and pa.shape == (2, 768) and b.shape == (1, 48, 768)
    again, _ = recipes.encode_text(words, ["a red circle on a blue background"], tokens=256)
    assert torch.equal(again[0], a[0])  # deterministic: the same prompt, the same conditioning
    assert not torch.equal(a[0, :24], recipes.encode_text(words, ["a blue circle on a red background"])[0][0])
    z = torch.randn(2, 16, 8, 8)
    for r in recipes.RECIPES.values():
        assert torch.allclose(recipes.from_recipe_latent(r, recipes.to_recipe_latent(r, z)), z, atol=1e-6)
    assert recipes.to_recipe_latent(trigrams, z).mean() > 0.3  # off-centre latents (shift 0.5)
