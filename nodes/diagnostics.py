"""Sends each finished Forecast Cache run to the ComfyUI web UI, where web/js draws it on the node.

The OUTER_SAMPLE wrapper finishes inside the sampler, after the DiT Accel node has executed, so the
node's own UI output cannot carry the run: a server message (EVENT) does. It names the DiT Accel
node (its UNIQUE_ID, stored in the cache settings by the node), the sampler node and the prompt.
Purely cosmetic: publishing never raises, and without a server (in-process tests, scripts) or
without the web extension nothing changes.
"""
from __future__ import annotations

import collections
import logging
import math
import sys

log = logging.getLogger("DiTAccel")

EVENT = "dit_accel.run"  # websocket message type the web extension listens for
CALIBRATION_EVENT = "dit_accel.calibration"  # Calibrate Forecasts progress / result

# Payloads of recent runs, newest last (what would have been sent; for tests and debugging).
PUBLISHED: collections.deque = collections.deque(maxlen=32)
CALIBRATIONS: collections.deque = collections.deque(maxlen=32)  # the same for calibration reports


def _json_safe(value):
    # JSON has no Infinity/NaN (the browser's JSON.parse rejects them): send null instead.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _executing_context():
    """(prompt_id, node_id) of the node executing now (the sampler), or (None, None) outside a prompt."""
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:  # older ComfyUI without the execution context
        return None, None
    ctx = get_executing_context()
    return (ctx.prompt_id, ctx.node_id) if ctx is not None else (None, None)


def run_payload(stats: dict, node_id) -> dict:
    prompt_id, sampler_node_id = _executing_context()
    return {
        "node_id": None if node_id is None else str(node_id),
        "prompt_id": prompt_id,
        "sampler_node_id": sampler_node_id,
        "run": _json_safe(dict(stats)),
    }


def _prompt_server():
    # Only a server that is already running: importing ComfyUI's server module here would start
    # pulling in aiohttp and friends inside in-process tests.
    module = sys.modules.get("server")
    return getattr(getattr(module, "PromptServer", None), "instance", None)


def publish_run(stats: dict, node_id) -> None:
    """Record and send one run's statistics (RunStats.as_dict()) for the node `node_id`."""
    try:
        payload = run_payload(stats, node_id)
        PUBLISHED.append(payload)
        server = _prompt_server()
        if server is not None:
            # To the client that queued the prompt (like ComfyUI's progress messages); None = everyone.
            server.send_sync(EVENT, payload, getattr(server, "client_id", None))
    except Exception:  # diagnostics must never break a finished run
        log.debug("DiT Accel: could not publish run diagnostics", exc_info=True)


def publish_calibration(report: dict, node_id) -> None:
    """Send a Calibrate Forecasts report ({"profile_name", "status", "message", ...}) for node `node_id`."""
    try:
        prompt_id, sampler_node_id = _executing_context()
        payload = {"node_id": None if node_id is None else str(node_id), "prompt_id": prompt_id,
                   "sampler_node_id": sampler_node_id, "calibration": _json_safe(dict(report))}
        CALIBRATIONS.append(payload)
        server = _prompt_server()
        if server is not None:
            server.send_sync(CALIBRATION_EVENT, payload, getattr(server, "client_id", None))
    except Exception:  # diagnostics must never break a finished run
        log.debug("DiT Accel: could not publish calibration report", exc_info=True)
