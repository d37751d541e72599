"""Typed errors of the core. Messages name the input, the value, the allowed range and the fix."""
from __future__ import annotations


class DiTAccelError(Exception):
    """Base class of every error raised on purpose by DiT Accel."""


class ConfigError(DiTAccelError, ValueError):
    """A setting is out of range or an invalid combination."""


class UnknownNameError(DiTAccelError, ValueError):
    """A name (method, preset, model family) is not registered."""


class UnsupportedModelError(DiTAccelError, NotImplementedError):
    """The diffusion model is not one of the supported families."""
