"""The README stays true: generated node reference, screenshots and workflows it names exist."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # appended: the pack's nodes/ must not shadow ComfyUI's nodes

README = (REPO / "README.md").read_text()


def test_node_reference_matches_the_node_schemas():
    from scripts import readme_nodes

    assert readme_nodes.render(README, readme_nodes.reference()) == README, (
        "README node reference is stale: run .venv/bin/python -m scripts.readme_nodes")


def test_every_pack_input_tooltip_is_quoted():
    from scripts.harness import comfy_env

    comfy_env.bootstrap()
    comfy_env.load_custom_nodes()
    import nodes  # ComfyUI's (bootstrap puts it first on sys.path)

    for name in ("DiTAccelForecastCache", "DiTAccelCompare"):
        for item in nodes.NODE_CLASS_MAPPINGS[name].define_schema().inputs:
            assert item.tooltip.replace("|", "\\|") in README, f"{name}.{item.id}"


def test_linked_files_exist():
    links = re.findall(r"\]\(((?:docs|workflows|bench|tests)/[^)#]+)\)", README)
    assert any(link.startswith("docs/screenshots/") for link in links)
    for link in links:
        assert (REPO / link).exists(), link
    for name in re.findall(r"`(\w+_forecast_cache)`", README):
        assert (REPO / "workflows" / f"{name}.json").is_file(), name


def test_workflow_notes_follow_the_presets():
    from accel_core import PRESETS, preset

    families = {"flux": "flux", "qwen": "qwen_image", "hunyuan": "hunyuan_video"}
    for path in sorted((REPO / "workflows").glob("*.json")):
        if "compare" in path.stem:
            continue
        family = next(f for prefix, f in families.items() if path.stem.startswith(prefix))
        note = next(n for n in json.loads(path.read_text())["nodes"] if n["type"] == "Note")["widgets_values"][0]
        for name in PRESETS:
            cfg = preset(name, family)
            if cfg.enabled:
                assert re.search(rf"{name}\s+- 1/{cfg.interval} of the steps computed at any step count, first "
                                 rf"{cfg.warmup_steps} and last {cfg.final_full_steps} in full", note), (path.name, name)
