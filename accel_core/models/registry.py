"""Model spec registry."""
from __future__ import annotations

from ..registry import Registry

MODEL_SPECS: Registry = Registry("model family")
