"""Run diagnostics published for the web UI: node id, counters and a JSON-safe payload."""
from __future__ import annotations

import json
import math
import sys

import torch
from helpers import LATENTS, conditioning, forecast_node, recent_runs, sample


def _diagnostics():
    found = [m for name, m in list(sys.modules.items())
             if name.endswith("nodes.diagnostics") and "dit_accel" in name and hasattr(m, "PUBLISHED")]
    assert len(found) == 1
    return found[0]


def test_each_run_is_published_once_with_the_node_id(micro):
    from comfy_api.latest import io

    diagnostics = _diagnostics()
    node = forecast_node().PREPARE_CLASS_CLONE({io.Hidden.unique_id: "17"})  # as ComfyUI's executor does
    patched = node.execute(micro["flux"], "balanced", "taylorseer", "final_hidden", 3, 1, 2, 1, 0.0, 1.0)[0]
    diagnostics.PUBLISHED.clear()  # a bounded deque: once full, its length no longer grows
    sample(patched, torch.zeros(LATENTS["flux"]), conditioning(1), conditioning(2), steps=8)
    assert len(diagnostics.PUBLISHED) == 1
    payload = diagnostics.PUBLISHED[-1]
    assert payload["node_id"] == "17"
    run = payload["run"]
    assert run == json.loads(json.dumps(recent_runs()[-1]))  # the same numbers the log line came from
    assert len(run["timeline"]) == run["calls"] == 8
    assert run["timeline"].count("F") == run["forecast_calls"] > 0
    json.dumps(payload, allow_nan=False)  # browsers reject Infinity / NaN


def test_payload_replaces_non_finite_numbers():
    diagnostics = _diagnostics()
    payload = diagnostics.run_payload({"evaluation_speedup": math.inf, "x": [math.nan, 1.0], "t": "CF"}, 5)
    assert payload["node_id"] == "5" and payload["run"] == {"evaluation_speedup": None, "x": [None, 1.0], "t": "CF"}
    assert payload["prompt_id"] is None  # outside a prompt


def test_publishing_never_raises(monkeypatch):
    diagnostics = _diagnostics()

    class Broken:
        client_id = "c"

        def send_sync(self, *a):
            raise RuntimeError("socket gone")

    monkeypatch.setattr(diagnostics, "_prompt_server", lambda: Broken())
    diagnostics.publish_run({"timeline": "C"}, "3")
    assert diagnostics.PUBLISHED[-1]["run"] == {"timeline": "C"}
