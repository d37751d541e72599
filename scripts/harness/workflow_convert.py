"""UI-format workflows (what the ComfyUI frontend saves) -> API prompts (what POST /prompt takes).

Node definitions come from ``/object_info`` (``ComfyServer.object_info()``) or, in-process, from
``object_info_in_process()``; both have the same shape. Widget values are matched to input names
the way frontend 1.32 builds widgets: in ``input_order`` (required, then optional), one value per
widget input, plus UI-only values that are saved but never sent (``control_after_generate`` after
seeds, the upload button after image combos).

Also: small helpers to edit API prompts in tests (swap a loader, change a widget, prune a branch).
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger(__name__)

# Frontend-only nodes: never sent to the server.
VIRTUAL_NODES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
MODE_MUTED, MODE_BYPASS = 2, 4
UI_ONLY = None  # placeholder name for saved widget values that are not inputs


class WorkflowError(ValueError):
    """The workflow cannot be converted (unknown node, bad link, widget count mismatch)."""


# ---------------------------------------------------------------------------------- definitions
def object_info_in_process() -> dict[str, dict]:
    """``/object_info`` computed in this process (needs a bootstrapped ComfyUI with nodes loaded)."""
    import nodes
    from comfy_api.internal import _ComfyNodeInternal

    out: dict[str, dict] = {}
    for name, cls in nodes.NODE_CLASS_MAPPINGS.items():
        if issubclass(cls, _ComfyNodeInternal):
            info = cls.GET_NODE_INFO_V1()
        else:  # mirrors server.py's node_info for classic nodes
            types = cls.INPUT_TYPES()
            info = {
                "input": types,
                "input_order": {k: list(v.keys()) for k, v in types.items()},
                "output": cls.RETURN_TYPES,
                "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES),
                "name": name,
                "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
                "category": getattr(cls, "CATEGORY", "sd"),
            }
        # JSON round trip: enum socket types become plain strings, as over HTTP.
        out[name] = json.loads(json.dumps(info, default=str))
    return out


def spec_type(spec: Any) -> str:
    kind = spec[0] if isinstance(spec, (list, tuple)) else spec
    return "COMBO" if isinstance(kind, list) else str(kind)


def spec_options(spec: Any) -> dict:
    if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict):
        return spec[1]
    return {}


def ordered_inputs(node_def: dict) -> list[tuple[str, Any]]:
    inputs = node_def.get("input") or {}
    order = node_def.get("input_order") or {k: list(v) for k, v in inputs.items()}
    out = []
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        for name in order.get(section, list(specs)):
            if name in specs:
                out.append((name, specs[name]))
    return out


def is_widget(spec: Any) -> bool:
    return spec_type(spec) in WIDGET_TYPES and not spec_options(spec).get("forceInput")


def widget_layout(node_def: dict) -> list[str | None]:
    """Names of the values in a node's saved ``widgets_values``, in order; None = UI-only value."""
    layout: list[str | None] = []
    for name, spec in ordered_inputs(node_def):
        if not is_widget(spec):
            continue
        layout.append(name)
        kind, opts = spec_type(spec), spec_options(spec)
        control = opts.get("control_after_generate")
        if kind == "INT" and (control if control is not None else name in ("seed", "noise_seed")):
            layout.append(UI_ONLY)  # the "control after generate" combo
        elif kind == "COMBO" and control:
            layout += [UI_ONLY, UI_ONLY]  # control combo + its filter list
        if kind == "COMBO" and any(opts.get(k) for k in ("image_upload", "video_upload", "animated_image_upload")):
            layout.append(UI_ONLY)  # the upload button saves "image"
    return layout


def widget_names(node_def: dict) -> list[str]:
    """The real (sent) widget inputs of a node, in order."""
    return [n for n in widget_layout(node_def) if n is not UI_ONLY]


# ---------------------------------------------------------------------------------- conversion
def load_workflow(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def _links_by_id(workflow: dict) -> dict[int, dict]:
    links = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):  # schema 1.0 saves objects
            links[link["id"]] = {"origin": link["origin_id"], "slot": link["origin_slot"], "type": link.get("type")}
        else:  # schema 0.4: [id, origin_id, origin_slot, target_id, target_slot, type]
            links[link[0]] = {"origin": link[1], "slot": link[2], "type": link[5] if len(link) > 5 else None}
    return links


def widget_values_by_name(node: dict, node_def: dict, strict: bool = True) -> dict[str, Any]:
    """Map a UI node's ``widgets_values`` onto input names."""
    values = node.get("widgets_values")
    if values is None:
        return {}
    if isinstance(values, dict):  # some packs save a name -> value mapping
        return {k: v for k, v in values.items() if k in widget_names(node_def)}
    layout = widget_layout(node_def)
    if len(values) != len(layout):
        msg = (f"node {node.get('id')} ({node.get('type')}): {len(values)} widget values but the node has "
               f"{len(layout)} widget slots {layout}")
        if strict:
            raise WorkflowError(msg)
        log.warning("%s; matching by position", msg)
    return {name: value for name, value in zip(layout, values) if name is not UI_ONLY}


def ui_to_api(workflow: dict, object_info: dict[str, dict], strict: bool = True) -> dict[str, dict]:
    """Convert a UI-format workflow to an API prompt ``{id: {class_type, inputs, _meta}}``.

    Notes and Reroutes are dropped (Reroutes resolved), PrimitiveNode values are inlined, muted
    nodes are dropped and bypassed nodes are passed through (matched by socket type), as the
    frontend does when it queues a prompt.
    """
    if (workflow.get("definitions") or {}).get("subgraphs"):
        raise WorkflowError("workflows with subgraphs are not supported by this converter")
    nodes = {n["id"]: n for n in workflow.get("nodes") or []}
    links = _links_by_id(workflow)

    def resolve(link_id: int, seen: frozenset = frozenset()) -> tuple[str, Any] | None:
        if link_id in seen:
            raise WorkflowError(f"link cycle through link {link_id}")
        seen = seen | {link_id}
        link = links.get(link_id)
        if link is None:
            raise WorkflowError(f"link {link_id} is not in the links table")
        src = nodes.get(link["origin"])
        if src is None:
            raise WorkflowError(f"link {link_id} starts at missing node {link['origin']}")
        if src["type"] == "Reroute":
            upstream = (src.get("inputs") or [{}])[0].get("link")
            return None if upstream is None else resolve(upstream, seen)
        if src["type"] == "PrimitiveNode":
            return ("value", (src.get("widgets_values") or [None])[0])
        if src.get("mode") == MODE_MUTED:
            return None
        if src.get("mode") == MODE_BYPASS:
            return _through_bypass(src, link, lambda lid: resolve(lid, seen))
        return ("link", [str(src["id"]), link["slot"]])

    prompt: dict[str, dict] = {}
    for node in sorted(nodes.values(), key=lambda n: n.get("order", 0)):
        kind = node["type"]
        if kind in VIRTUAL_NODES or node.get("mode") in (MODE_MUTED, MODE_BYPASS):
            continue
        node_def = object_info.get(kind)
        if node_def is None:
            raise WorkflowError(f"node {node['id']}: unknown node type {kind!r} (is its pack installed?)")
        inputs = widget_values_by_name(node, node_def, strict=strict)
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            name = (slot.get("widget") or {}).get("name") or slot["name"]
            source = resolve(slot["link"])
            if source is None:
                inputs.pop(name, None)
            else:
                inputs[name] = source[1]
        order = [name for name, _ in ordered_inputs(node_def)]  # schema order reads best
        inputs = dict(sorted(inputs.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
        title = node.get("title") or node_def.get("display_name") or kind
        prompt[str(node["id"])] = {"class_type": kind, "inputs": inputs, "_meta": {"title": title}}
    return prompt


def _through_bypass(node: dict, link: dict, resolve) -> tuple[str, Any] | None:
    # A bypassed node forwards the first input of the same type, preferring the same slot index.
    candidates = [s for s in node.get("inputs") or [] if s.get("link") is not None and s.get("type") == link["type"]]
    same_slot = [s for i, s in enumerate(node.get("inputs") or []) if i == link["slot"] and s in candidates]
    for slot in same_slot + candidates:
        return resolve(slot["link"])
    return None


def convert_file(path: str | Path, object_info: dict[str, dict], strict: bool = True) -> dict[str, dict]:
    return ui_to_api(load_workflow(path), object_info, strict=strict)


def node_types(workflow: dict) -> set[str]:
    """Every node type a UI workflow uses, virtual ones included."""
    return {n["type"] for n in workflow.get("nodes") or []}


# ---------------------------------------------------------------------------------- API prompt edits
def find(prompt: dict, class_type: str) -> list[str]:
    """Ids of the nodes of one class, in id order."""
    return sorted((i for i, n in prompt.items() if n["class_type"] == class_type), key=_id_key)


def only(prompt: dict, class_type: str) -> str:
    """The id of the single node of ``class_type``; raises unless there is exactly one."""
    ids = find(prompt, class_type)
    if len(ids) != 1:
        raise WorkflowError(f"expected exactly one {class_type}, found {len(ids)}: {ids}")
    return ids[0]


def set_inputs(prompt: dict, node_id: str, **values: Any) -> dict:
    """Overwrite inputs of one node (widget values or ``[src_id, slot]`` links)."""
    prompt[str(node_id)]["inputs"].update(values)
    return prompt


def replace_node(prompt: dict, node_id: str, class_type: str, inputs: dict | None = None,
                 keep: Iterable[str] = ()) -> dict:
    """Give node ``node_id`` a new class; its consumers stay wired (same output slots).

    ``keep`` names old inputs (links or values) to carry over; ``inputs`` sets the rest.
    """
    old = prompt[str(node_id)]
    new_inputs = {k: old["inputs"][k] for k in keep if k in old["inputs"]}
    new_inputs.update(inputs or {})
    prompt[str(node_id)] = {"class_type": class_type, "inputs": new_inputs, "_meta": {"title": class_type}}
    return prompt


def add_node(prompt: dict, class_type: str, inputs: dict, node_id: str | None = None) -> str:
    """Add a node; returns its id (the next free integer id unless given)."""
    if node_id is None:
        node_id = str(max((int(i) for i in prompt if str(i).isdigit()), default=0) + 1)
    if node_id in prompt:
        raise WorkflowError(f"node id {node_id} already exists")
    prompt[node_id] = {"class_type": class_type, "inputs": dict(inputs), "_meta": {"title": class_type}}
    return node_id


def remove_nodes(prompt: dict, node_ids: Iterable[str]) -> dict:
    """Remove nodes; raises if a remaining node still reads from one of them."""
    gone = {str(i) for i in node_ids}
    for i in gone:
        prompt.pop(i, None)
    for nid, node in prompt.items():
        for name, value in node["inputs"].items():
            if _is_link(value) and str(value[0]) in gone:
                raise WorkflowError(f"node {nid} ({node['class_type']}) input {name!r} reads removed node {value[0]}")
    return prompt


def prune(prompt: dict, keep_outputs: Iterable[str]) -> dict:
    """A copy with only ``keep_outputs`` and the nodes they depend on."""
    needed: set[str] = set()
    stack = [str(i) for i in keep_outputs]
    while stack:
        nid = stack.pop()
        if nid in needed:
            continue
        if nid not in prompt:
            raise WorkflowError(f"node {nid} is not in the prompt")
        needed.add(nid)
        stack += [str(v[0]) for v in prompt[nid]["inputs"].values() if _is_link(v)]
    return {i: copy.deepcopy(n) for i, n in prompt.items() if i in needed}


def consumers(prompt: dict, node_id: str) -> list[tuple[str, str]]:
    """(node id, input name) pairs that read any output of ``node_id``."""
    return [(nid, name) for nid, node in prompt.items() for name, v in node["inputs"].items()
            if _is_link(v) and str(v[0]) == str(node_id)]


def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and isinstance(value[1], int))


def _id_key(node_id: str) -> tuple:
    return (0, int(node_id), "") if str(node_id).isdigit() else (1, 0, str(node_id))
