"""Real browser: the ComfyUI frontend shows what DiT Accel did, with the numbers the server reported.

A real ComfyUI server runs the pack; headless Debian Chromium (driven by playwright-core from
npm, tests/browser/ui_diagnostics.mjs) opens its bundled frontend, loads every shipped workflow
(no missing nodes), then loads the A/B workflow and queues it with test models swapped in (the
trained micro FLUX, a random CLIP-L, the shapes decoder) under the same node ids. The test then
checks that the Forecast Cache node draws one timeline cell per model call with the counts of the
server's "DiT Accel:" summary line, in the right colours on screen, and that the Compare node
shows the PSNR / SSIM the server computed. Last it queues the Progressive Resolution workflow (the cache
runs once per stage) and checks the stage band under the joined strip against the server's runs.
Screenshots land in out/browser/;
DITACCEL_UPDATE_SCREENSHOTS=1 also copies them to docs/screenshots/ for the README.

Setup: scripts/setup_browser.sh (Debian chromium + npm ci here). About 1-2 minutes.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # appended: the pack's nodes/ must not shadow ComfyUI's nodes

from scripts.harness import workflow_convert as wc  # noqa: E402
from scripts.harness.run_summary import parse_summaries  # noqa: E402
from scripts.harness.server import ComfyServer  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.browser, pytest.mark.timeout(900)]

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "ui_diagnostics.mjs"
MAIN = "flux_compare_forecast_cache"
STAGES = "flux_progressive_resolution"  # Progressive Resolution before Forecast Cache: one cache run per stage
OUT = REPO / "out" / "browser"
SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM = os.environ.get("DITACCEL_CHROMIUM", "/usr/bin/chromium")
STEPS = 50  # the presets were chosen at 50 steps (README table)
# web/js/dit_accel_timeline.js CELL_COLORS
CELL_RGB = {"C": (0x4C, 0x8B, 0xF5), "F": (0x2F, 0xBF, 0x71), "R": (0xE5, 0x53, 0x4B), "P": (0xD4, 0xA7, 0x2C)}
# web/js/dit_accel_timeline.js STAGE_COLORS: the stage band's shades (the anchor call runs at full resolution)
STAGE_RGB = {"full": (0xC9, 0xD1, 0xD9), "anchor": (0xC9, 0xD1, 0xD9), "1/2": (0xA3, 0x71, 0xF7)}


def _require_browser() -> None:
    missing = [what for what, ok in [
        ("node", shutil.which("node")), (CHROMIUM, Path(CHROMIUM).exists()),
        ("tests/browser/node_modules/playwright-core", (HERE / "node_modules" / "playwright-core").is_dir()),
    ] if not ok]
    if missing:
        msg = f"browser test needs {missing}: run `bash scripts/setup_browser.sh`"
        if os.environ.get("CI"):
            pytest.fail(msg)  # CI installs them; a missing piece there is a broken setup
        pytest.skip(msg)


def _test_prompt(object_info: dict, assets: dict, workflow: str = MAIN) -> dict:
    """A shipped workflow as an API prompt, with the test models in place of the real ones (same node ids)."""
    from scripts.harness.assets import CLIP_L_NAME, TRAINED_FLUX_NAME

    prompt = wc.convert_file(REPO / "workflows" / f"{workflow}.json", object_info)
    wc.replace_node(prompt, wc.only(prompt, "UNETLoader"), "DiTAccelDevMicroLoader", {"unet_name": TRAINED_FLUX_NAME})
    wc.replace_node(prompt, wc.only(prompt, "DualCLIPLoader"), "CLIPLoader",
                    {"clip_name": CLIP_L_NAME, "type": "stable_diffusion", "device": "default"})
    for dec in wc.find(prompt, "VAEDecode"):
        wc.replace_node(prompt, dec, "DiTAccelDevShapesDecode", keep=["samples"])
    for save in wc.find(prompt, "SaveImage"):  # nothing written to the output folder
        wc.replace_node(prompt, save, "PreviewImage", keep=["images"])
    wc.set_inputs(prompt, wc.only(prompt, "EmptySD3LatentImage"), width=256, height=256)  # 32x32 latent
    for ks in wc.find(prompt, "KSampler"):
        wc.set_inputs(prompt, ks, steps=STEPS)
    outputs = wc.find(prompt, "PreviewImage") + wc.find(prompt, "DiTAccelCompare")
    return wc.prune(prompt, outputs)


@pytest.fixture(scope="module")
def browser_run(tmp_path_factory):
    _require_browser()
    from scripts.harness import comfy_env
    from scripts.harness.assets import ensure_assets

    assets = ensure_assets(comfy_env.bootstrap())
    user_dir = tmp_path_factory.mktemp("comfy_user")
    (user_dir / "default").mkdir()
    # A first visit would open the template browser over the canvas; the minimap would hide a corner.
    settings = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}
    (user_dir / "default" / "comfy.settings.json").write_text(json.dumps(settings))
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    workflows = {p.stem: json.loads(p.read_text()) for p in sorted((REPO / "workflows").glob("*.json"))}
    with ComfyServer(extra_args=["--user-directory", str(user_dir)], env={"OMP_NUM_THREADS": "1"}) as server:
        prompt = _test_prompt(server.object_info(), assets)
        config = {"url": server.url, "chromium": CHROMIUM, "out_dir": str(OUT), "timeout_ms": 300_000,
                  "workflows": workflows, "main": MAIN, "prompt": prompt,
                  "stages": {"workflow": STAGES, "prompt": _test_prompt(server.object_info(), assets, STAGES)}}
        config_path = OUT / "config.json"
        config_path.write_text(json.dumps(config))
        log_start = len(server.log_text())
        proc = subprocess.run(["node", str(DRIVER), str(config_path)], cwd=HERE, capture_output=True, text=True,
                              timeout=600)
        result_path = OUT / "result.json"
        result = json.loads(result_path.read_text()) if result_path.is_file() else {}
        assert proc.returncode == 0 and "error" not in result, (
            f"browser driver failed (rc {proc.returncode}): {result.get('error')}\n{proc.stderr[-3000:]}\n"
            f"console: {result.get('console', [])[-20:]}\nserver log:\n{server.log_tail(40)}")
        entry = server.wait(result["queued"]["body"]["prompt_id"], timeout=60)
        stages_entry = server.wait(result["stages"]["queued"]["body"]["prompt_id"], timeout=60)  # no error
        log = server.log_text()[log_start:]
    if os.environ.get("DITACCEL_UPDATE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name in ("overview.png", "closeup.png"):
            shutil.copy2(OUT / name, SCREENSHOTS / f"browser_{name}")
    return {"result": result, "entry": entry, "stages_entry": stages_entry, "log": log, "prompt": prompt}


def test_every_shipped_workflow_opens_without_missing_nodes(browser_run):
    workflows = browser_run["result"]["workflows"]
    assert MAIN in workflows and len(workflows) >= 6
    for name, seen in workflows.items():
        assert seen["nodes"] > 0, name
        assert seen["missing"] == [], f"{name}: missing node types {seen['missing']}"
        assert not [d for d in seen["dialogs"] if "missing" in d.lower()], f"{name}: {seen['dialogs']}"


def test_extension_loaded_once_with_its_setting(browser_run):
    assert browser_run["result"]["extension"] == {"setting": True, "loaded_once": True}


def test_setting_hides_and_shows_the_panels(browser_run):
    assert browser_run["result"]["hide_setting"] == {"drawn_while_hidden": [False, False],
                                                     "drawn_when_shown": [True, True]}


def test_frontend_queues_the_forecast_cache_as_saved(browser_run):
    """The frontend's own graph-to-prompt conversion sends the node's widgets as our converter does."""
    result, prompt = browser_run["result"], browser_run["prompt"]
    fc = str(result["forecast"])
    assert result["frontend_prompt"][fc]["class_type"] == "DiTAccelForecastCache"
    ours = {k: v for k, v in prompt[fc]["inputs"].items() if k != "model"}
    theirs = {k: v for k, v in result["frontend_prompt"][fc]["inputs"].items() if k != "model"}
    assert theirs == ours


def _summaries(browser_run, stages: bool):
    """The run summaries of the main prompt, or of the Progressive Resolution prompt (theirs name the stages)."""
    return [s for s in parse_summaries(browser_run["log"]) if ("; resolution stages " in s.line) == stages]


def test_timeline_matches_the_server_summary(browser_run):
    summaries = _summaries(browser_run, stages=False)
    assert len(summaries) == 1, "one accelerated sampler -> exactly one run summary"
    run = summaries[0]
    assert run.steps == STEPS and run.forecast > 0 and run.computed + run.forecast == run.calls

    panel = browser_run["result"]["forecast_panel"]
    strip = panel["strips"][0]
    assert strip["cells"] == run.calls == len(strip["letters"])
    assert set(strip["letters"]) <= {"C", "F"}  # no verification in this workflow: nothing can be rejected
    assert strip["counts"].get("F", 0) == run.forecast and strip["counts"].get("C", 0) == run.computed
    assert f"{run.computed}/{run.calls} calls computed" in panel["text"][0]
    assert f"{run.evaluation_speedup:.2f}x fewer model evals" in panel["text"][0]
    assert "cache " in panel["text"][1] and "peak" in panel["text"][1]


def test_timeline_cells_are_on_screen_in_their_colours(browser_run):
    strip = browser_run["result"]["forecast_panel"]["strips"][0]
    assert len(strip["pixels"]) == len(strip["letters"])
    for i, (letter, rgb) in enumerate(zip(strip["letters"], strip["pixels"])):
        want = CELL_RGB[letter]
        assert max(abs(a - b) for a, b in zip(rgb, want)) <= 12, f"cell {i} ({letter}): pixel {rgb}, want {want}"


def _near(rgb, want, tolerance: int = 12) -> bool:
    return max(abs(a - b) for a, b in zip(rgb, want)) <= tolerance


def test_stage_band_shows_which_calls_ran_at_low_resolution(browser_run):
    """Progressive Resolution before Forecast Cache: the cache runs once for the anchor call and once per stage;
    the panel joins the runs into one strip and draws one band segment per stage right under the cells of
    that stage's calls, in the stage's shade, with the counts of the server's summaries."""
    stages = browser_run["result"]["stages"]
    assert browser_run["stages_entry"]["status"]["status_str"] == "success"
    runs = _summaries(browser_run, stages=True)
    assert [r.calls for r in runs][0] == 1 and len(runs) == 3, [r.line for r in runs]  # anchor, 1/2, full
    panel = stages["panel"]
    strip = panel["strips"][0]
    assert strip["cells"] == sum(r.calls for r in runs) == len(strip["letters"])
    assert strip["counts"].get("C", 0) == sum(r.computed for r in runs)
    assert f"{sum(r.computed for r in runs)}/{sum(r.calls for r in runs)} calls computed" in panel["text"][0]
    assert "3 cache runs, one per stage" in panel["text"][1]
    band = panel["band"]
    assert [g["label"] for g in band] == ["anchor", "1/2", "full"]
    first = 0
    for segment, run in zip(band, runs):  # each segment spans exactly its stage's calls, in order
        assert (segment["first"], segment["last"]) == (first, first + run.calls - 1), (segment, run.line)
        first += run.calls
    low = next(r for r in runs if "1/2" in r.line)
    half = re.search(r"resolution stages 1/2 steps (\d+)-(\d+)", low.line)
    assert half and band[1]["last"] - band[1]["first"] + 1 == int(half.group(2)) - int(half.group(1)) + 1
    centres = strip["centres"]
    for segment in band:
        for side, cell in (("left", segment["first"]), ("right", segment["last"])):
            rgb = segment[f"{side}_pixel"]
            assert _near(rgb, STAGE_RGB[segment["label"]]), f"{segment['label']} {side} edge: {rgb}"
            # under its own cells: the cells' horizontal span, below the strip
            assert abs(segment[side]["x"] - centres[cell]["x"]) < (centres[1]["x"] - centres[0]["x"]), (segment, cell)
            assert 0 < segment[side]["y"] - centres[cell]["y"] < 30
    for i, (letter, rgb) in enumerate(zip(strip["letters"], strip["pixels"])):
        assert _near(rgb, CELL_RGB[letter]), f"cell {i} ({letter}): pixel {rgb}"


def test_compare_node_shows_the_server_numbers(browser_run):
    result, entry = browser_run["result"], browser_run["entry"]
    compare_id = str(result["compare"])
    server_numbers = entry["outputs"][compare_id]["dit_accel_compare"][0]
    assert result["forecast_panel"]["compare_result"] == server_numbers
    psnr = server_numbers["psnr_db"]
    assert psnr is not None and 10 < psnr < 80  # a forecast run differs a little from the uncached one
    shown = result["forecast_panel"]["compare_text"][0]
    assert shown == f"PSNR {psnr:.2f} dB · SSIM {server_numbers['ssim']:.4f}"


def test_progress_bar_moves_through_every_step_of_the_accelerated_sampler(browser_run):
    result, prompt = browser_run["result"], browser_run["prompt"]
    accelerated = next(ks for ks in wc.find(prompt, "KSampler")
                       if prompt[prompt[ks]["inputs"]["model"][0]]["class_type"] == "DiTAccelForecastCache")
    values = [p["value"] for p in result["progress"] if str(p.get("node")) == accelerated]
    assert values and values == sorted(values) and values[-1] == STEPS, values
    assert {p["max"] for p in result["progress"] if str(p.get("node")) == accelerated} == {STEPS}


def test_no_browser_errors_from_the_extension(browser_run):
    ours = [c for c in browser_run["result"]["console"] if "dit_accel" in c.lower() or "dit accel" in c.lower()]
    assert not ours, ours


def test_screenshots_saved(browser_run):
    for name in ("overview.png", "closeup.png", "stages.png"):
        data = (OUT / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, name
