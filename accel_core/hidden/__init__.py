"""Hidden-state cache (the `final_hidden` / `per_block` modes): the per-run engine (`ForecastRun`), the
forecasters that extrapolate a block's output from its history, and the decompositions that choose which
part of it is forecast. The presets use the output-level cache in `accel_core/output/` instead."""
from __future__ import annotations

from .decompositions import DECOMPOSITIONS, DecomposedForecaster, Decomposition, TokenGrid
from .engine import CallPlan, ForecastRun
from .forecasters import FORECASTERS, Forecaster, make_forecaster

__all__ = ["DECOMPOSITIONS", "DecomposedForecaster", "Decomposition", "TokenGrid", "CallPlan", "ForecastRun",
           "FORECASTERS", "Forecaster", "make_forecaster"]
