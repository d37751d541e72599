"""Where a model call sits in the sampling schedule.

ComfyUI passes no step index to the model, only the current sigma(s) and the whole schedule
(`sample_sigmas`, ending with 0). Heun-type samplers evaluate the model several times per step,
at sigmas that may fall between schedule entries (dpm_2) or coincide with the next entry (heun).
So sigma is the time axis, and the step index is the schedule interval that holds the sigma.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

# Relative tolerance when comparing a call's sigma with schedule entries (fp32 round trips).
_SIGMA_RTOL = 1e-5


@dataclass(frozen=True)
class StepInfo:
    """One model call's position.

    Attributes:
        step: index i of the schedule interval (sigma_{i+1}, sigma_i] holding the call's sigma.
        total_steps: number of steps of the run (len(sample_sigmas) - 1).
        sigma: the call's sigma (noise level), the forecasting time axis by default.
        step_time: continuous step coordinate: i + fraction of the way to sigma_{i+1}.
            Equals the step index for calls on schedule entries; used as the "step" time axis.
        call_index: 0-based count of model calls in this run (Heun-type samplers make several per step).
    """

    step: int
    total_steps: int
    sigma: float
    step_time: float
    call_index: int

    @property
    def progress(self) -> float:
        """Fraction of the run done before this step, in [0, 1)."""
        return self.step / max(1, self.total_steps)


def locate_step(sigma: float, sample_sigmas: Sequence[float]) -> tuple[int, float]:
    """Return (step index, continuous step time) of `sigma` in a descending schedule."""
    total = len(sample_sigmas) - 1
    if total < 1:
        return 0, 0.0
    tol = _SIGMA_RTOL * max(abs(sample_sigmas[0]), 1e-8)
    step = 0
    for i in range(total):
        if sample_sigmas[i] + tol >= sigma:
            step = i
        else:
            break
    hi, lo = sample_sigmas[step], sample_sigmas[step + 1]
    if sigma >= hi - tol or hi - lo <= 0:
        frac = 0.0
    else:
        frac = min(1.0, max(0.0, (hi - sigma) / (hi - lo)))
    # A sigma that equals sigma_{i+1} (heun's corrector) belongs to step i+1, which starts there.
    if frac >= 1.0 - 1e-9 and step + 1 < total:
        return step + 1, float(step + 1)
    return step, step + frac


class StepTracker:
    """Turns (sigma, schedule) pairs into StepInfo, counting calls per run."""

    def __init__(self, sample_sigmas: Sequence[float]) -> None:
        self.sample_sigmas = [float(s) for s in sample_sigmas]
        self.total_steps = max(1, len(self.sample_sigmas) - 1)
        self.calls = 0

    def locate(self, sigma: float) -> StepInfo:
        step, step_time = locate_step(sigma, self.sample_sigmas)
        info = StepInfo(step, self.total_steps, float(sigma), step_time, self.calls)
        self.calls += 1
        return info
