"""HyCa (arXiv 2510.04188): a different forecaster per hidden channel, chosen offline.

A calibration profile (accel_core/learned/hyca_profile.py, made by the Calibrate Forecasts node with method hyca
or by scripts/calibrate_hyca.py) maps each hidden channel (the last axis of the cached [b, N, C]
tensors) to one solver of the pool (reuse, TaylorSeer o1/o2, HiCache o2, FoCa). Online, each solver's
channels are gathered into their own inner forecaster (one registered forecaster per used solver, built
with config.replace(method, order)), and the inner forecasts are scattered back into one tensor.
Gather/scatter is the only overhead; the memory is the sum of the inners' histories over their own
channels.

The paper does not say how the solvers run online; ours keep their own histories over their
channel subsets, exactly as each would over the full tensor, so a one-solver profile reproduces
that forecaster bit for bit.
"""
from __future__ import annotations

import logging

import torch

from ...errors import ConfigError
from ...learned.hyca_profile import CALIBRATE_HINT, SOLVERS, HyCaProfile, load_profile_cached
from .base import Forecaster
from .registry import FORECASTERS

log = logging.getLogger(__name__)

# Computed anchors a solver needs before its first forecast (the engine's rule for FoCa).
SOLVER_MIN_ANCHORS = {"foca": 2}
_WARNED: set[tuple] = set()


class _Group:
    """One solver and the channels it owns."""

    def __init__(self, name: str, channels: torch.Tensor, forecaster: Forecaster, full: bool) -> None:
        self.name = name
        self.channels = channels  # int64 [c], on the device of the values once seen
        self.forecaster = forecaster
        self.full = full  # owns every channel: no gather/scatter needed


@FORECASTERS.register("hyca")
class HyCaForecaster(Forecaster):
    """Per-channel solver mix from a calibration profile (config field `hyca_profile`)."""

    def __init__(self, config, profile: HyCaProfile | None = None) -> None:
        super().__init__(config)
        if profile is None:
            profile = load_profile_cached(getattr(config, "hyca_profile", ""))
        self.profile = profile
        self._check_schedule()
        self.groups: list[_Group] = []
        for name, channels in profile.groups():
            method, order = SOLVERS[name]
            inner = FORECASTERS.get(method)(config.replace(method=method, order=order))
            self.groups.append(_Group(name, channels, inner, full=channels.numel() == profile.hidden_size))
        self.reset()

    @classmethod
    def from_profile(cls, config, profile: HyCaProfile) -> "HyCaForecaster":
        """Build with an explicit profile (tests, calibration checks) instead of the config's file."""
        return cls(config, profile=profile)

    @property
    def min_anchors(self) -> int:
        """Computed anchors needed before the first forecast (2 when any channel uses FoCa)."""
        return max(SOLVER_MIN_ANCHORS.get(SOLVERS[g.name][0], 1) for g in self.groups)

    def reset(self) -> None:
        for group in self.groups:
            group.forecaster.reset()
        # Shape and device of the newest update (not the tensor: holding it would keep every
        # channel alive, not only the inners' subsets).
        self._shape: torch.Size | None = None
        self._device: torch.device | None = None

    def update(self, t: float, value: torch.Tensor) -> None:
        if value.shape[-1] != self.profile.hidden_size:
            raise ConfigError(
                f"Forecast Cache: {self.profile.describe()} maps {self.profile.hidden_size} hidden channels, "
                f"but the cached tensor has {value.shape[-1]} (shape {tuple(value.shape)}): the profile belongs "
                f"to another model. {CALIBRATE_HINT}")
        for group in self.groups:
            if group.full:
                group.forecaster.update(t, value)
                continue
            if group.channels.device != value.device:
                group.channels = group.channels.to(value.device)
            group.forecaster.update(t, value.index_select(-1, group.channels))
        self._shape, self._device = value.shape, value.device

    def forecast(self, t: float) -> torch.Tensor:
        assert self._shape is not None, "forecast() before update(): check `ready` first"
        if len(self.groups) == 1:
            return self.groups[0].forecaster.forecast(t)
        out = torch.empty(self._shape, dtype=torch.float32, device=self._device)
        for group in self.groups:
            out.index_copy_(out.dim() - 1, group.channels, group.forecaster.forecast(t).to(torch.float32))
        return out

    @property
    def ready(self) -> bool:
        return bool(self.groups) and all(g.forecaster.ready for g in self.groups)

    def tensors(self) -> list[torch.Tensor]:
        held = [t for g in self.groups for t in g.forecaster.tensors()]
        return held + [g.channels for g in self.groups if not g.full]

    def _check_schedule(self) -> None:
        """Warn once when the run forecasts on another time axis than the profile was calibrated for."""
        axis = (self.profile.info.get("schedule") or {}).get("time_axis")
        key = (self.profile.source, axis, self.config.time_axis)
        if axis and axis != self.config.time_axis and key not in _WARNED:
            _WARNED.add(key)
            log.warning("DiT Accel: %s was calibrated on the %r time axis; this run forecasts over %r, so its "
                        "solver choices may not be the best ones.", self.profile.describe(), axis,
                        self.config.time_axis)
