"""DiT Accel core: host-free forecasting caches for diffusion transformers.

Pure PyTorch. Never imports ComfyUI or `kernels`; the adapter in `nodes/` translates host calls
into tensors, `StepInfo` and plain values.
"""
from __future__ import annotations

from .config import CACHE_MODES, PRESETS, TIME_AXES, ForecastCacheConfig, preset
from .errors import ConfigError, DiTAccelError, UnknownNameError, UnsupportedModelError
from .hidden import FORECASTERS, CallPlan, Forecaster, ForecastRun, make_forecaster
from .models import MODEL_SPECS, ModelSpec, spec_for_class
from .schedule import plan_full_steps
from .stats import RunStats
from .step import StepInfo, StepTracker, locate_step

__all__ = [
    "CACHE_MODES", "PRESETS", "TIME_AXES", "ForecastCacheConfig", "preset", "CallPlan", "ForecastRun",
    "ConfigError", "DiTAccelError", "UnknownNameError", "UnsupportedModelError", "FORECASTERS", "Forecaster",
    "make_forecaster", "MODEL_SPECS", "ModelSpec", "spec_for_class", "plan_full_steps", "RunStats", "StepInfo",
    "StepTracker", "locate_step",
]
