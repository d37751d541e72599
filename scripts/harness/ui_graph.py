"""Build UI-format (schema 0.4) workflows from node definitions, as frontend 1.32 saves them.

Used by scripts/build_workflows.py. Building from the real ``/object_info`` means socket lists,
widget order and UI-only widget values (seed control, upload button) come out exactly as the
frontend would save them, and every combo value is checked against the node's choices.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from scripts.harness.workflow_convert import (UI_ONLY, ordered_inputs, spec_options, spec_type, is_widget,
                                              widget_layout)

log = logging.getLogger(__name__)

FRONTEND_VERSION = "1.32.9"
COMFY_VERSION = "0.3.75"
# Combos whose choices are files on the user's disk: any name is allowed.
FILE_COMBOS = frozenset({"unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "image", "ckpt_name",
                         "profile"})


@dataclass
class UINode:
    id: int
    type: str
    pos: list[float]
    size: list[float]
    inputs: list[dict]
    outputs: list[dict]
    widgets_values: list[Any] | None
    properties: dict
    title: str | None = None
    color: str | None = None
    bgcolor: str | None = None
    extra: dict = field(default_factory=dict)

    def input_slot(self, name: str) -> int:
        for i, slot in enumerate(self.inputs):
            if slot["name"] == name:
                return i
        raise KeyError(f"{self.type} has no input {name!r}: {[s['name'] for s in self.inputs]}")

    def output_slot(self, name_or_index: str | int) -> int:
        if isinstance(name_or_index, int):
            return name_or_index
        for i, slot in enumerate(self.outputs):
            if slot["name"] == name_or_index:
                return i
        raise KeyError(f"{self.type} has no output {name_or_index!r}")


class UIGraph:
    def __init__(self, object_info: dict[str, dict], pack_nodes: dict[str, str] | None = None):
        self.oi = object_info
        self.pack_nodes = pack_nodes or {}  # node type -> cnr_id of its pack
        self.nodes: list[UINode] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    def node(self, kind: str, pos: tuple[float, float], widgets: dict[str, Any] | None = None,
             size: tuple[float, float] = (315, 110), title: str | None = None) -> UINode:
        node_def = self.oi.get(kind)
        if node_def is None:
            raise KeyError(f"unknown node type {kind!r}")
        widgets = dict(widgets or {})
        sockets, widget_inputs = [], []
        for name, spec in ordered_inputs(node_def):
            slot = {"name": name, "localized_name": name, "type": spec_type(spec), "link": None}
            if is_widget(spec):
                slot["widget"] = {"name": name}
                widget_inputs.append(slot)
            else:
                if name in (node_def.get("input") or {}).get("optional", {}):
                    slot["shape"] = 7  # the frontend draws optional sockets hollow
                sockets.append(slot)
        values = self._widget_values(kind, node_def, widgets)
        names = node_def.get("output_name") or node_def.get("output") or []
        outputs = [{"name": n, "localized_name": n, "type": t, "links": []}
                   for n, t in zip(names, node_def.get("output") or [])]
        props = {"cnr_id": self.pack_nodes.get(kind, "comfy-core"), "Node name for S&R": kind}
        if kind not in self.pack_nodes:
            props["ver"] = COMFY_VERSION
        node = UINode(len(self.nodes) + 1, kind, list(pos), list(size), sockets + widget_inputs, outputs,
                      values, props, title)
        self.nodes.append(node)
        return node

    def _widget_values(self, kind: str, node_def: dict, given: dict[str, Any]) -> list[Any] | None:
        specs = dict(ordered_inputs(node_def))
        unknown = set(given) - {n for n in widget_layout(node_def) if n is not UI_ONLY}
        if unknown:
            raise KeyError(f"{kind}: no widget named {sorted(unknown)}")
        values: list[Any] = []
        layout = widget_layout(node_def)
        for i, name in enumerate(layout):
            if name is UI_ONLY:
                prev = layout[i - 1]
                kind_prev = spec_type(specs[prev]) if prev is not UI_ONLY else None
                values.append("fixed" if kind_prev == "INT" else "image")
                continue
            spec = specs[name]
            if name in given:
                value = given[name]
            elif "default" in spec_options(spec):
                value = spec_options(spec)["default"]
            elif spec_type(spec) == "COMBO" and _choices(spec):
                value = _choices(spec)[0]  # the frontend starts a combo at its first choice
            else:
                raise KeyError(f"{kind}: widget {name!r} has no default; give a value")
            self._check_value(kind, name, spec, value)
            values.append(value)
        return values

    @staticmethod
    def _check_value(kind: str, name: str, spec: Any, value: Any) -> None:
        typ, opts = spec_type(spec), spec_options(spec)
        if typ == "COMBO" and name not in FILE_COMBOS:
            choices = _choices(spec)
            if value not in choices:
                raise ValueError(f"{kind}.{name}: {value!r} is not one of {choices}")
        if typ in ("INT", "FLOAT"):
            lo, hi = opts.get("min"), opts.get("max")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ValueError(f"{kind}.{name}: {value} outside [{lo}, {hi}]")

    def note(self, text: str, pos: tuple[float, float], size: tuple[float, float] = (420, 300),
             markdown: bool = False, title: str | None = None) -> UINode:
        kind = "MarkdownNote" if markdown else "Note"
        node = UINode(len(self.nodes) + 1, kind, list(pos), list(size), [], [], [text], {}, title,
                      color="#432", bgcolor="#653")
        self.nodes.append(node)
        return node

    # Height of a node's title bar above its `pos` (the frontend draws it there).
    TITLE_HEIGHT = 30

    @classmethod
    def bounds(cls, n: UINode) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) of a node on the canvas, title bar included."""
        return n.pos[0], n.pos[1] - cls.TITLE_HEIGHT, n.pos[0] + n.size[0], n.pos[1] + n.size[1]

    @staticmethod
    def _overlap(a, b) -> bool:
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    def make_room_below(self, kind: str, height: float) -> None:
        """Keep `height` px free under every node of `kind` (a panel the pack draws there grows after a run):
        every node in its column from its bottom down moves down by what is missing. Graphs with groups are
        laid out by hand and left alone."""
        if self.groups:
            return
        for anchor in [n for n in self.nodes if n.type == kind]:
            left, _, right, bottom = self.bounds(anchor)
            below = [n for n in self.nodes if n is not anchor and self.bounds(n)[0] < right
                     and self.bounds(n)[2] > left and self.bounds(n)[1] >= bottom - 1e-6]
            if not below:
                continue
            shift = max(0.0, bottom + height - min(self.bounds(n)[1] for n in below))
            for n in below:
                n.pos[1] += shift

    def separate_notes(self, step: float = 10.0) -> None:
        """Move notes up until they cover no other node (they sit above the graph)."""
        for note in [n for n in self.nodes if n.type in ("Note", "MarkdownNote")]:
            others = [n for n in self.nodes if n is not note]
            for _ in range(200):
                if not any(self._overlap(self.bounds(note), self.bounds(n)) for n in others):
                    break
                note.pos[1] -= step

    def link(self, src: UINode, output: str | int, dst: UINode, input_name: str) -> int:
        out_slot, in_slot = src.output_slot(output), dst.input_slot(input_name)
        if dst.inputs[in_slot]["link"] is not None:
            raise ValueError(f"{dst.type}.{input_name} is already linked")
        typ = src.outputs[out_slot]["type"]
        want = dst.inputs[in_slot]["type"]
        if want != "*" and typ != want and "COMBO" not in (typ, want):
            raise TypeError(f"{src.type}.{output} ({typ}) -> {dst.type}.{input_name} ({want})")
        link_id = len(self.links) + 1
        self.links.append([link_id, src.id, out_slot, dst.id, in_slot, typ])
        src.outputs[out_slot]["links"].append(link_id)
        dst.inputs[in_slot]["link"] = link_id
        return link_id

    def insert_before(self, dst: UINode, input_name: str, middle: UINode, middle_input: str,
                      middle_output: str | int = 0) -> None:
        """Re-route the link into dst.input_name through `middle` (src -> middle -> dst)."""
        in_slot = dst.input_slot(input_name)
        link_id = dst.inputs[in_slot]["link"]
        if link_id is None:
            raise ValueError(f"{dst.type}.{input_name} is not linked")
        entry = next(e for e in self.links if e[0] == link_id)
        mid_slot = middle.input_slot(middle_input)
        if middle.inputs[mid_slot]["link"] is not None:
            raise ValueError(f"{middle.type}.{middle_input} is already linked")
        entry[3], entry[4] = middle.id, mid_slot
        middle.inputs[mid_slot]["link"] = link_id
        dst.inputs[in_slot]["link"] = None
        self.link(middle, middle_output, dst, input_name)

    def group(self, title: str, bounding: tuple[float, float, float, float], color: str = "#3f789e") -> None:
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": list(bounding),
                            "color": color, "font_size": 24, "flags": {}})

    def _order(self) -> dict[int, int]:
        # Topological order (Kahn), ties by id, as LiteGraph computes execution order.
        deps = {n.id: set() for n in self.nodes}
        for _, src, _, dst, _, _ in self.links:
            deps[dst].add(src)
        order, done = {}, set()
        while len(done) < len(deps):
            ready = sorted(i for i, d in deps.items() if i not in done and d <= done)
            if not ready:
                raise ValueError("graph has a cycle")
            for i in ready:
                order[i] = len(order)
                done.add(i)
        return order

    def to_json(self, workflow_id: str | None = None) -> dict:
        order = self._order()
        nodes = []
        for n in self.nodes:
            d: dict[str, Any] = {"id": n.id, "type": n.type, "pos": n.pos, "size": n.size, "flags": {},
                                 "order": order[n.id], "mode": 0, "inputs": n.inputs, "outputs": n.outputs,
                                 "properties": n.properties}
            if n.widgets_values is not None:
                d["widgets_values"] = n.widgets_values
            for key in ("title", "color", "bgcolor"):
                if getattr(n, key):
                    d[key] = getattr(n, key)
            nodes.append(d)
        return {
            "id": workflow_id, "revision": 0,
            "last_node_id": len(self.nodes), "last_link_id": len(self.links),
            "nodes": nodes, "links": self.links, "groups": self.groups, "config": {},
            "extra": {"ds": {"scale": 0.75, "offset": [40, 40]}, "frontendVersion": FRONTEND_VERSION},
            "version": 0.4,
        }


def _choices(spec: Any) -> list:
    return spec[0] if isinstance(spec[0], list) else spec_options(spec).get("options", [])
