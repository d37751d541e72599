"""Forecasters, registered by name. Importing this package registers all of them."""
from __future__ import annotations

from .base import Forecaster
from .registry import FORECASTERS
from . import foca, hicache, hyca, reuse, taylorseer  # noqa: F401  (registration side effects)


def make_forecaster(config) -> Forecaster:
    return FORECASTERS.get(config.method)(config)


__all__ = ["FORECASTERS", "Forecaster", "make_forecaster"]
