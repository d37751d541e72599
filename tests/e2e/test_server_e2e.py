"""End to end: a real ComfyUI server with the pack loaded runs the shipped HunyuanVideo workflow.

What cannot exist here is swapped for test assets: the HunyuanVideo weights for the micro
HunyuanVideo (loader-legal, so UNETLoader itself loads it), the CLIP-L + llava text encoders for
one random CLIP-L, the VAE decode and video save for the stats output node. About 40 s, mostly
server start-up.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # appended: the pack's nodes/ must not shadow ComfyUI's nodes

from scripts.harness import workflow_convert as wc  # noqa: E402
from scripts.harness.run_summary import parse_summaries  # noqa: E402
from scripts.harness.server import ComfyServer  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]

HV_WORKFLOW = REPO / "workflows" / "hunyuan_video_forecast_cache.json"
FORECAST_INPUTS = ["model", "preset", "method", "cache_mode", "interval", "order", "warmup_steps",
                   "final_full_steps", "start_percent", "end_percent", "schedule"]
STATS_KEY = "dit_accel_stats"


@pytest.fixture(scope="module")
def assets() -> dict[str, Path]:
    from scripts.harness import comfy_env
    from scripts.harness.assets import ensure_assets

    return ensure_assets(comfy_env.bootstrap())


@pytest.fixture(scope="module")
def server(assets):
    with ComfyServer() as srv:
        pid = srv.proc.pid
        yield srv
    with pytest.raises(ProcessLookupError):  # nothing outlives the context manager
        os.kill(pid, 0)


def test_object_info_lists_forecast_cache(server):
    info = server.object_info("DiTAccelForecastCache")
    assert info["display_name"] == "Forecast Cache"
    assert info["category"] == "DiT Accel/caching"
    assert info["output"] == ["MODEL"]
    assert info["input_order"]["required"] == FORECAST_INPUTS
    req = info["input"]["required"]
    preset = wc.spec_options(req["preset"])
    assert preset["options"] == ["off", "quality", "balanced", "fast"] and preset["default"] == "balanced"
    assert set(wc.spec_options(req["method"])["options"]) == {"preset", "reuse", "taylorseer", "hicache", "foca", "hyca"}
    assert wc.spec_options(req["cache_mode"])["options"] == ["preset", "output", "final_hidden", "per_block"]
    assert wc.spec_options(req["schedule"])["options"] == ["preset", "adaptive", "budget", "fixed"]
    assert wc.widget_names(info) == FORECAST_INPUTS[1:]


def _hv_prompt(server, assets, steps: int) -> tuple[dict, str, str]:
    from scripts.harness.assets import CLIP_L_NAME

    prompt = wc.convert_file(HV_WORKFLOW, server.object_info())
    wc.set_inputs(prompt, wc.only(prompt, "UNETLoader"), unet_name=assets["micro_hunyuan_video"].name)
    wc.replace_node(prompt, wc.only(prompt, "DualCLIPLoader"), "CLIPLoader",
                    {"clip_name": CLIP_L_NAME, "type": "stable_diffusion", "device": "default"})
    wc.set_inputs(prompt, wc.only(prompt, "EmptyHunyuanLatentVideo"), width=64, height=64, length=9)
    ks = wc.only(prompt, "KSampler")
    wc.set_inputs(prompt, ks, steps=steps, seed=3)
    stats = wc.add_node(prompt, "DiTAccelDevStats", {"samples": [ks, 0]})
    # The VAE decode, video and save nodes go; the sampler feeds the stats node instead.
    return wc.prune(prompt, [stats]), ks, stats


def _numbers(obj):
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield float(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _numbers(v)


def test_hunyuan_video_workflow_runs_with_forecast_cache(server, assets):
    steps = 10
    prompt, ks, stats = _hv_prompt(server, assets, steps)
    classes = {n["class_type"] for n in prompt.values()}
    assert {"UNETLoader", "ModelSamplingSD3", "DiTAccelForecastCache", "KSampler"} <= classes
    assert not classes & {"VAELoader", "VAEDecodeTiled", "SaveVideo", "DualCLIPLoader"}

    log_before = len(server.log_text())
    entry = server.run(prompt, timeout=300)
    assert entry["status"]["status_str"] == "success"

    ui = entry["outputs"][stats][STATS_KEY]
    assert ui, "stats node returned nothing"
    values = list(_numbers(ui))
    assert values and all(math.isfinite(v) for v in values), ui
    for item in ui if isinstance(ui, list) else [ui]:
        if isinstance(item, dict) and "finite" in item:
            assert item["finite"] is True, item

    summaries = parse_summaries(server.log_text()[log_before:])
    assert len(summaries) == 1, server.log_tail()
    run = summaries[0]
    assert run.family == "hunyuan_video" and run.steps == steps and not run.interrupted
    assert run.forecast >= 1 and run.computed + run.forecast == run.calls, run.line
    assert run.evaluation_speedup > 1.0, run.line


def test_rejected_prompt_reports_node_errors(server):
    from scripts.harness.server import PromptRejected

    bad = {"1": {"class_type": "DiTAccelForecastCache", "inputs": {"preset": "nope"}}}
    with pytest.raises(PromptRejected) as err:
        server.submit(bad)
    assert err.value.node_errors or err.value.error
