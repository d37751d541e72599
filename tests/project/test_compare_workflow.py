"""The shipped A/B workflow: one seed, the plain model vs Forecast Cache, both into DiTAccelCompare."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # appended: the pack's nodes/ must not shadow ComfyUI's nodes

from scripts.harness import workflow_convert as wc  # noqa: E402

WORKFLOW = REPO / "workflows" / "flux_compare_forecast_cache.json"


@pytest.fixture(scope="module")
def prompt() -> dict:
    from scripts.harness import comfy_env

    comfy_env.bootstrap()
    comfy_env.load_custom_nodes()
    return wc.convert_file(WORKFLOW, wc.object_info_in_process())


def _upstream_model(prompt: dict, node_id: str) -> str:
    return prompt[prompt[node_id]["inputs"]["model"][0]]["class_type"]


def test_same_seed_and_settings_with_and_without_acceleration(prompt):
    samplers = wc.find(prompt, "KSampler")
    assert len(samplers) == 2
    by_model = {_upstream_model(prompt, ks): ks for ks in samplers}
    assert set(by_model) == {"UNETLoader", "DiTAccelForecastCache"}
    a, b = (prompt[ks]["inputs"] for ks in samplers)
    assert {k: v for k, v in a.items() if k != "model"} == {k: v for k, v in b.items() if k != "model"}
    seed_src = a["seed"]
    assert isinstance(seed_src, list) and prompt[seed_src[0]]["class_type"] == "PrimitiveInt"
    fc = wc.only(prompt, "DiTAccelForecastCache")
    assert prompt[fc]["inputs"]["model"][0] == wc.only(prompt, "UNETLoader")


def test_compare_gets_baseline_and_accelerated_images_in_order(prompt):
    compare = prompt[wc.only(prompt, "DiTAccelCompare")]["inputs"]

    def sampler_model(image_link) -> str:
        decode = prompt[image_link[0]]
        assert decode["class_type"] == "VAEDecode"
        return _upstream_model(prompt, decode["inputs"]["samples"][0])

    assert sampler_model(compare["baseline"]) == "UNETLoader"
    assert sampler_model(compare["accelerated"]) == "DiTAccelForecastCache"
    heatmap_users = [prompt[n]["class_type"] for n, _ in wc.consumers(prompt, wc.only(prompt, "DiTAccelCompare"))]
    assert heatmap_users == ["PreviewImage"]


def test_note_explains_how_to_read_it():
    wf = json.loads(WORKFLOW.read_text())
    note = next(n for n in wf["nodes"] if n["type"] == "Note")["widgets_values"][0]
    for word in ("PSNR", "SSIM", "timeline", "seed"):
        assert word.lower() in note.lower(), word
