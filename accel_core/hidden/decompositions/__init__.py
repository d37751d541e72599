"""Decompositions: which part of a cached feature is forecast and which part is reused.

A decomposition wraps any registered forecaster (see `DecomposedForecaster`). Importing this
package registers all of them.
"""
from __future__ import annotations

from .base import DECOMPOSITIONS, Decomposition, DecomposedForecaster, TokenGrid
from . import freq, svd  # noqa: F401  (registration side effects)

__all__ = ["DECOMPOSITIONS", "Decomposition", "DecomposedForecaster", "TokenGrid"]
