"""End to end: a real ComfyUI server records calibration runs posted as prompts, saves an L2P profile in
models/dit_accel, lists it in Learned Forecast Profile, and Forecast Cache then runs with it; the same
with method hyca (closed-loop fit, HyCa Profile node, hidden-state cache).

The trained micro FLUX (the dev loader of scripts/harness/comfy_nodes) and one random CLIP-L stand in for
FLUX weights.
About 40 s, mostly server start-up.
"""
from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # appended: the pack's nodes/ must not shadow ComfyUI's nodes

from scripts.harness import workflow_convert as wc  # noqa: E402
from scripts.harness.run_summary import parse_summaries  # noqa: E402
from scripts.harness.server import ComfyServer  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]

STEPS = 10
RUNS = 2
FORECAST_DEFAULTS = {"preset": "balanced", "method": "preset", "cache_mode": "preset", "interval": 0,
                     "order": -1, "warmup_steps": -1, "final_full_steps": -1, "start_percent": 0.0,
                     "end_percent": 1.0, "schedule": "preset"}


@pytest.fixture(scope="module")
def base():
    from scripts.harness import comfy_env
    from scripts.harness.assets import ensure_assets

    base = comfy_env.bootstrap()
    return base, ensure_assets(base)


@pytest.fixture(scope="module")
def server(base):
    with ComfyServer() as srv:
        yield srv


def _prompt(assets, model_node: dict, seed: int, extra: dict | None = None) -> dict:
    from scripts.harness.assets import CLIP_L_NAME, TRAINED_FLUX_NAME

    return {
        # The trained micro FLUX through the dev loader (UNETLoader cannot infer its head count).
        "1": {"class_type": "DiTAccelDevMicroLoader", "inputs": {"unet_name": TRAINED_FLUX_NAME}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": CLIP_L_NAME, "type": "stable_diffusion",
                                                     "device": "default"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": f"a red circle {seed}", "clip": ["2", 0]}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "5": model_node,
        "6": {"class_type": "KSampler", "inputs": {"model": ["5", 0], "seed": seed, "steps": STEPS, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "simple",
                                                   "positive": ["3", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "7": {"class_type": "DiTAccelDevStats", "inputs": {"samples": ["6", 0]}},
        **(extra or {}),
    }


@pytest.mark.parametrize("method,profile_node,socket,tag", [
    ("l2p", "DiTAccelLearnedProfile", "learned", "output-l2p-"),  # no method input: old API prompts mean l2p
    ("hyca", "DiTAccelHyCaProfile", "hyca", "hyca-"),  # closed-loop fit, hidden-state cache
])
def test_calibration_prompts_make_a_profile_forecast_cache_uses(server, base, method, profile_node, socket, tag):
    base_dir, assets = base
    name = f"e2e_{method}_{uuid.uuid4().hex[:8]}"
    path = base_dir / "models" / "dit_accel" / f"{name}.safetensors"
    inputs = {"model": ["1", 0], "profile_name": name, "budget": "balanced", "runs_needed": RUNS, "max_runs": 4}
    if method != "l2p":
        inputs["method"] = method
    calibrate = {"class_type": "DiTAccelCalibrate", "inputs": inputs}
    try:
        for seed in range(RUNS):
            log_before = len(server.log_text())
            entry = server.run(_prompt(assets, calibrate, seed), timeout=300)
            assert entry["status"]["status_str"] == "success"
            log = server.log_text()[log_before:]
            assert f"Calibrate Forecasts '{name}'" in log, server.log_tail()
            assert not parse_summaries(log)  # recorded uncached (and the HyCa fit's replays log no summaries)
        assert "saved" in log and "held-back error" in log, server.log_tail()
        assert path.is_file()

        info = server.object_info(profile_node)
        assert f"{name}.safetensors" in wc.spec_options(info["input"]["required"]["profile"]).get(
            "options", info["input"]["required"]["profile"][0])
        use = _prompt(assets, {"class_type": "DiTAccelForecastCache",
                               "inputs": {"model": ["1", 0], **FORECAST_DEFAULTS, socket: ["8", 0]}}, 99,
                      {"8": {"class_type": profile_node, "inputs": {"profile": f"{name}.safetensors"}}})
        log_before = len(server.log_text())
        entry = server.run(use, timeout=300)
        assert entry["status"]["status_str"] == "success"
        log = server.log_text()[log_before:]
        runs = parse_summaries(log)
        assert len(runs) == 1 and runs[0].forecast >= 1, server.log_tail()
        assert tag in runs[0].line and "does not cover this run" not in log, runs[0].line
    finally:
        path.unlink(missing_ok=True)
