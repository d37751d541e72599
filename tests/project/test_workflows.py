"""The shipped UI workflows against a real ComfyUI 0.3.75 with the pack loaded in-process.

Every node type exists, every workflow converts to an API prompt, widget counts and values match
the node schemas, links are type-consistent, and the UI->API converter handles the frontend's
special cases (seed control values, converted widgets, Reroute, PrimitiveNode, bypass, mute).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # appended: the pack's nodes/ must not shadow ComfyUI's nodes

from scripts.harness import workflow_convert as wc  # noqa: E402
from scripts.harness.ui_graph import FILE_COMBOS  # noqa: E402

WORKFLOW_FILES = sorted((REPO / "workflows").glob("*.json"))
DEMO_API = REPO / "scripts" / "harness" / "demo_workflow_api.json"
FORECAST_INPUTS = ["model", "preset", "method", "cache_mode", "interval", "order", "warmup_steps",
                   "final_full_steps", "start_percent", "end_percent", "schedule"]
FORECAST_DEFAULT_WIDGETS = ["balanced", "preset", "preset", 0, -1, -1, -1, 0.0, 1.0, "preset"]
EXPECTED_FILES = {"flux_forecast_cache.json", "flux_kontext_forecast_cache.json", "qwen_image_forecast_cache.json",
                  "qwen_image_edit_forecast_cache.json", "hunyuan_video_forecast_cache.json",
                  "flux_calibrate_l2p.json", "flux_progressive_resolution.json",
                  "flux_kontext_progressive_resolution.json", "qwen_image_edit_progressive_resolution.json",
                  "hunyuan_video_progressive_resolution.json"}
RESOLUTION_FILES = sorted(p for p in WORKFLOW_FILES if p.stem.endswith("_progressive_resolution"))


@pytest.fixture(scope="module")
def object_info() -> dict[str, dict]:
    from scripts.harness import comfy_env

    comfy_env.bootstrap()
    comfy_env.load_custom_nodes([comfy_env.DEV_NODES_DIR])
    return wc.object_info_in_process()


def _ids(paths):
    return [p.stem for p in paths]


def test_expected_workflows_exist():
    assert EXPECTED_FILES <= {p.name for p in WORKFLOW_FILES}


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids(WORKFLOW_FILES))
def test_no_node_covers_another_or_the_forecast_cache_panel(path: Path):
    """The run panel grows under Forecast Cache after a run: no shipped node may sit there (issue 20 left 14 of
    16 workflows with a node drawn over it), and no two nodes overlap (title bars included)."""
    from scripts.build_workflows import PANEL_ROOM
    from scripts.harness.ui_graph import UIGraph

    class N:  # what UIGraph.bounds reads
        def __init__(self, d):
            self.pos, self.size, self.type = d["pos"], d["size"], d["type"]

    nodes = [N(d) for d in json.loads(path.read_text())["nodes"]]
    boxes = [UIGraph.bounds(n) for n in nodes]
    overlapping = [(a.type, b.type) for i, (a, ra) in enumerate(zip(nodes, boxes))
                   for b, rb in zip(nodes[i + 1:], boxes[i + 1:]) if UIGraph._overlap(ra, rb)]
    assert not overlapping
    for fc, box in zip(nodes, boxes):
        if fc.type != "DiTAccelForecastCache":
            continue
        room = (box[0], box[3], box[2], box[3] + PANEL_ROOM)
        assert not [n.type for n, r in zip(nodes, boxes) if n is not fc and UIGraph._overlap(r, room)]


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids(WORKFLOW_FILES))
def test_ui_format_shape(path: Path):
    wf = json.loads(path.read_text())
    assert wf["version"] == 0.4
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra"):
        assert key in wf, key
    ids = [n["id"] for n in wf["nodes"]]
    assert len(ids) == len(set(ids))
    assert wf["last_node_id"] >= max(ids)
    assert wf["last_link_id"] >= max(link[0] for link in wf["links"])
    for n in wf["nodes"]:
        for key in ("id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties"):
            assert key in n, f"node {n.get('id')} lacks {key}"
        if n["type"] not in ("Note", "MarkdownNote"):
            assert n["properties"].get("Node name for S&R") == n["type"]
    assert any(n["type"] in ("Note", "MarkdownNote") for n in wf["nodes"]), "each workflow explains its settings"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids(WORKFLOW_FILES))
def test_node_types_exist(path: Path, object_info):
    wf = json.loads(path.read_text())
    missing = {t for t in wc.node_types(wf) if t not in object_info and t not in wc.VIRTUAL_NODES}
    assert not missing, f"{path.name}: node types unknown to ComfyUI 0.3.75 + DiT Accel: {sorted(missing)}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids(WORKFLOW_FILES))
def test_widgets_match_schemas(path: Path, object_info):
    wf = json.loads(path.read_text())
    for node in wf["nodes"]:
        if node["type"] in wc.VIRTUAL_NODES:
            continue
        node_def = object_info[node["type"]]
        layout = wc.widget_layout(node_def)
        values = node.get("widgets_values") or []
        assert len(values) == len(layout), f"{node['type']} #{node['id']}: {values} vs {layout}"
        specs = dict(wc.ordered_inputs(node_def))
        for name, value in zip(layout, values):
            if name is wc.UI_ONLY:
                continue
            kind, opts = wc.spec_type(specs[name]), wc.spec_options(specs[name])
            if kind == "COMBO" and name not in FILE_COMBOS:
                choices = specs[name][0] if isinstance(specs[name][0], list) else opts.get("options")
                assert value in choices, f"{node['type']}.{name}={value!r} not in {choices}"
            if kind in ("INT", "FLOAT"):
                assert opts.get("min", -float("inf")) <= value <= opts.get("max", float("inf")), (node["type"], name)
            if kind == "INT":
                assert isinstance(value, int), (node["type"], name, value)


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids(WORKFLOW_FILES))
def test_links_are_consistent(path: Path, object_info):
    wf = json.loads(path.read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, typ in wf["links"]:
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert link_id in (out["links"] or []) and inp["link"] == link_id, f"link {link_id} not mirrored"
        assert out["type"] == typ == inp["type"], f"link {link_id}: {out['type']} -> {inp['type']} ({typ})"
        assert object_info[nodes[src]["type"]]["output"][src_slot] == typ


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=_ids(WORKFLOW_FILES))
def test_converts_with_forecast_cache_before_sampler(path: Path, object_info):
    prompt = wc.convert_file(path, object_info)
    fc = wc.only(prompt, "DiTAccelForecastCache")
    names = list(prompt[fc]["inputs"])
    assert names[:len(FORECAST_INPUTS)] == FORECAST_INPUTS
    # option sockets, when linked
    assert set(names[len(FORECAST_INPUTS):]) <= {"verify", "split", "hyca", "tokens", "learned"}
    wf = json.loads(path.read_text())
    ui_fc = next(n for n in wf["nodes"] if n["type"] == "DiTAccelForecastCache")
    assert ui_fc["widgets_values"] == FORECAST_DEFAULT_WIDGETS
    # The cache's MODEL reaches the sampler directly, and comes from the loader chain.
    users = wc.consumers(prompt, fc)  # the A/B workflow has a second, uncached KSampler
    assert [(prompt[nid]["class_type"], name) for nid, name in users] == [("KSampler", "model")]
    upstream = prompt[fc]["inputs"]["model"][0]
    chain = set()
    while True:
        chain.add(prompt[upstream]["class_type"])
        link = prompt[upstream]["inputs"].get("model")
        if link is None:
            break
        upstream = link[0]
    assert "UNETLoader" in chain
    # Every required input of every node is present.
    for nid, node in prompt.items():
        required = object_info[node["class_type"]]["input"].get("required", {})
        missing = set(required) - set(node["inputs"])
        assert not missing, f"{path.name}: node {nid} ({node['class_type']}) lacks {missing}"


@pytest.mark.parametrize("path", RESOLUTION_FILES, ids=_ids(RESOLUTION_FILES))
def test_progressive_resolution_sits_right_before_the_cache_at_a_divisible_size(path: Path, object_info):
    prompt = wc.convert_file(path, object_info)
    fc = wc.only(prompt, "DiTAccelForecastCache")
    res = wc.only(prompt, "DiTAccelProgressiveResolution")
    assert prompt[fc]["inputs"]["model"][0] == res
    assert prompt[prompt[res]["inputs"]["model"][0]]["class_type"] != "DiTAccelForecastCache"
    for node in prompt.values():  # empty latents of the workflow: a low-res stage exists at factor 2
        if node["class_type"] in ("EmptySD3LatentImage", "EmptyHunyuanLatentVideo"):
            assert node["inputs"]["width"] % 32 == 0 and node["inputs"]["height"] % 32 == 0, path.name


def test_calibration_workflow_records_uncached_and_uses_the_profile(object_info):
    prompt = wc.convert_file(REPO / "workflows" / "flux_calibrate_l2p.json", object_info)
    cal, fc, learned = (wc.only(prompt, k) for k in ("DiTAccelCalibrate", "DiTAccelForecastCache",
                                                     "DiTAccelLearnedProfile"))
    assert [(prompt[n]["class_type"], name) for n, name in wc.consumers(prompt, cal)] == [("KSampler", "model")]
    assert prompt[prompt[cal]["inputs"]["model"][0]]["class_type"] == "UNETLoader"  # no cache on the recorded path
    assert prompt[fc]["inputs"]["learned"] == [learned, 0]
    assert prompt[learned]["inputs"]["profile"] == prompt[cal]["inputs"]["profile_name"] + ".safetensors"


def test_demo_api_prompt_uses_known_nodes(object_info):
    prompt = json.loads(DEMO_API.read_text())
    unknown = {n["class_type"] for n in prompt.values()} - set(object_info)
    assert not unknown, f"demo prompt uses unknown nodes {unknown} (dev nodes not loaded?)"
    for nid, node in prompt.items():
        node_def = object_info[node["class_type"]]
        required = set(node_def["input"].get("required", {}))
        assert required <= set(node["inputs"]), f"node {nid} lacks {required - set(node['inputs'])}"
    samplers = wc.find(prompt, "KSampler")
    assert len(samplers) == 2
    a, b = (prompt[s]["inputs"] for s in samplers)
    assert {k: v for k, v in a.items() if k != "model"} == {k: v for k, v in b.items() if k != "model"}


# ------------------------------------------------------------------------------ converter cases
def _mini_graph(object_info):
    """EmptySD3LatentImage -> Reroute -> KSampler, seed from a PrimitiveNode, a bypassed
    ModelSamplingSD3 and a muted SaveLatent, a Note; built by hand like the frontend saves it."""
    from scripts.harness.ui_graph import UIGraph

    g = UIGraph(object_info)
    unet = g.node("UNETLoader", (0, 0), {"unet_name": "x.safetensors"})
    shift = g.node("ModelSamplingSD3", (0, 100), {"shift": 5.0})
    latent = g.node("EmptySD3LatentImage", (0, 200), {"width": 64, "height": 64})
    clip = g.node("CLIPLoader", (0, 300), {"clip_name": "c.safetensors", "type": "stable_diffusion"})
    text = g.node("CLIPTextEncode", (0, 400), {"text": "hi"})
    ks = g.node("KSampler", (400, 0), {"seed": 7, "steps": 4, "cfg": 1.0})
    save = g.node("SaveLatent", (800, 0), {"filename_prefix": "x"})
    g.note("a note", (0, -200))
    g.link(unet, 0, shift, "model")
    g.link(shift, 0, ks, "model")
    g.link(clip, 0, text, "clip")
    g.link(text, 0, ks, "positive")
    g.link(text, 0, ks, "negative")
    g.link(ks, 0, save, "samples")
    wf = g.to_json()
    nodes = {n["id"]: n for n in wf["nodes"]}
    # Reroute between the latent and the sampler.
    reroute = {"id": 20, "type": "Reroute", "pos": [200, 200], "size": [75, 26], "flags": {}, "order": 3,
               "mode": 0, "inputs": [{"name": "", "type": "*", "link": 100}],
               "outputs": [{"name": "", "type": "LATENT", "links": [101]}], "properties": {}}
    # PrimitiveNode driving the converted seed widget.
    prim = {"id": 21, "type": "PrimitiveNode", "pos": [200, 300], "size": [210, 82], "flags": {}, "order": 0,
            "mode": 0, "inputs": [], "outputs": [{"name": "INT", "type": "INT", "links": [102],
                                                 "widget": {"name": "seed"}}],
            "properties": {"Run widget replace on values": False}, "widgets_values": [1234, "fixed"]}
    wf["nodes"] += [reroute, prim]
    wf["links"] += [[100, latent.id, 0, 20, 0, "LATENT"], [101, 20, 0, ks.id, ks.input_slot("latent_image"), "LATENT"],
                    [102, 21, 0, ks.id, ks.input_slot("seed"), "INT"]]
    nodes[ks.id]["inputs"][ks.input_slot("latent_image")]["link"] = 101
    nodes[ks.id]["inputs"][ks.input_slot("seed")]["link"] = 102
    nodes[shift.id]["mode"] = wc.MODE_BYPASS
    nodes[save.id]["mode"] = wc.MODE_MUTED
    return wf, {"unet": str(unet.id), "latent": str(latent.id), "ks": str(ks.id), "shift": str(shift.id),
                "save": str(save.id), "text": str(text.id)}


def test_converter_special_cases(object_info):
    wf, ids = _mini_graph(object_info)
    prompt = wc.ui_to_api(wf, object_info)
    ks = prompt[ids["ks"]]["inputs"]
    assert ks["seed"] == 1234  # PrimitiveNode value wins over the widget's own
    assert ks["steps"] == 4 and ks["cfg"] == 1.0 and ks["sampler_name"] == "euler"  # seed control skipped
    assert ks["latent_image"] == [ids["latent"], 0]  # Reroute resolved
    assert ks["model"] == [ids["unet"], 0]  # bypassed ModelSamplingSD3 passed through
    assert ids["shift"] not in prompt and ids["save"] not in prompt
    assert {n["class_type"] for n in prompt.values()} == {"UNETLoader", "EmptySD3LatentImage", "CLIPLoader",
                                                         "CLIPTextEncode", "KSampler"}


def test_converter_rejects_wrong_widget_count(object_info):
    wf, ids = _mini_graph(object_info)
    node = next(n for n in wf["nodes"] if str(n["id"]) == ids["ks"])
    node["widgets_values"] = node["widgets_values"][:-1]
    with pytest.raises(wc.WorkflowError, match="widget values"):
        wc.ui_to_api(wf, object_info)
    wc.ui_to_api(wf, object_info, strict=False)


def test_converter_rejects_unknown_node(object_info):
    wf, _ = _mini_graph(object_info)
    wf["nodes"][0]["type"] = "NoSuchNode"
    with pytest.raises(wc.WorkflowError, match="NoSuchNode"):
        wc.ui_to_api(wf, object_info)


def test_load_image_upload_value(object_info):
    assert wc.widget_layout(object_info["LoadImage"]) == ["image", wc.UI_ONLY]
    assert wc.widget_layout(object_info["KSampler"])[:2] == ["seed", wc.UI_ONLY]


def test_prompt_edit_helpers(object_info):
    prompt = wc.convert_file(REPO / "workflows" / "hunyuan_video_forecast_cache.json", object_info)
    ks = wc.only(prompt, "KSampler")
    wc.set_inputs(prompt, ks, steps=4)
    assert prompt[ks]["inputs"]["steps"] == 4
    clip = wc.only(prompt, "DualCLIPLoader")
    wc.replace_node(prompt, clip, "CLIPLoader", {"clip_name": "c.safetensors", "type": "stable_diffusion"})
    assert prompt[clip]["class_type"] == "CLIPLoader"
    stats = wc.add_node(prompt, "SaveLatent", {"samples": [ks, 0], "filename_prefix": "x"})
    pruned = wc.prune(prompt, [stats])
    assert "VAEDecodeTiled" not in {n["class_type"] for n in pruned.values()}
    with pytest.raises(wc.WorkflowError):
        wc.remove_nodes(prompt, [ks])
