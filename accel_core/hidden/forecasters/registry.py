"""The forecaster registry; node combos read `FORECASTERS.names()`."""
from __future__ import annotations

from ...registry import Registry

FORECASTERS: Registry = Registry("forecaster")
