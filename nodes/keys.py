"""Every key the pack puts into ComfyUI's model options, in one place (docs/ARCHITECTURE.md, hook table).

Wrapper keys name our entries in `add_wrapper_with_key` (so a later node can find and replace them);
transformer_options keys name what rides in the guider's per-run model_options clone. The values are
what older workflows' models already carry at run time, so they never change.
"""
from __future__ import annotations

# Forecast Cache
WRAPPER_KEY = "dit_accel"  # wrapper key of every Forecast Cache wrapper
OPTIONS_KEY = "dit_accel"  # transformer_options entry with the node's settings (small, deep-copy safe)
RUN_KEY = "dit_accel_run"  # transformer_options entry with the live run (per-run model_options clone)
GUARD_KEY = "dit_accel_guard"  # transformer_options entry with the run's finite-output guard (output/guard.py)
WATCH_KEY = "dit_accel_boundaries"  # transformer_options entry with the run's BoundaryWatch (boundaries.py)
# ComfyUI's own transformer_options key for an attention function override (token methods install one)
ATTENTION_OVERRIDE = "optimized_attention_override"

# Progressive Resolution
RESOLUTION_WRAPPER_KEY = "dit_accel_resolution"
RESOLUTION_OPTIONS_KEY = "dit_accel_resolution"  # transformer_options entry with the node's settings (small)
RESOLUTION_RUN_KEY = "dit_accel_resolution_run"  # transformer_options entry with the live run (per sampling run)

# Calibrate Forecasts
CALIBRATE_KEY = "dit_accel_calibrate"  # wrapper key and transformer_options entry (settings)
RECORDING_KEY = "dit_accel_calibrate_run"  # transformer_options entry of the run being recorded
HIDDEN_KEY = "dit_accel_calibrate_hidden"  # transformer_options entry of the run's HiddenRecording (method hyca)

# Compare: the entry of the node's UI output the web extension draws
COMPARE_UI_KEY = "dit_accel_compare"
