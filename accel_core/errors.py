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


class ProfileError(ConfigError):
    """A calibration profile cannot be used: base class of the three below."""


class ProfileFormatError(ProfileError):
    """The file is not a profile this DiT Accel reads (not safetensors, other format version or method,
    missing fields, too large)."""


class ProfilePathError(ProfileError):
    """The profile path leaves the profile folder (`..`, an absolute path elsewhere, a symlink out) or
    does not exist."""


class ProfileMismatchError(ProfileError):
    """The profile was calibrated on another model family or other model weights."""
