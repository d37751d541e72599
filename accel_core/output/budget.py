"""Where to spend a fixed number of full model evaluations: spacing adapted to the measured error.

A preset is a fraction of model evaluations (quality 1/3, balanced 1/5, fast 1/7), so the same
preset means the same at 20, 28 or 50 steps. The budget is ceil(steps * fraction) full steps,
never fewer than the forced ones (warm-up, final steps, steps outside the caching window) plus one.

After each full step the next one is placed:
  base gap   = (flexible steps left + 1) / (evaluations left + 1)   (even spacing of what is left)
  error rate = backtest error / horizon (in steps) at this full step
  gap        = base gap * (reference rate / this rate) ** (1 / order), clamped to [1/2, 2] x base
where the reference is the geometric mean of the rates seen so far in this run. Where the model's
output changes faster than usual, full steps come closer; where it is calm, further apart. The
base gap is recomputed from what is left at every full step, so the total stays on budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence


def evaluation_budget(total_steps: int, fraction: float, forced: int) -> int:
    """Full steps a run of `total_steps` may compute: ceil(total * fraction), at least forced + 1. With
    fraction 1/k that is exactly what reusing the output every k steps computes (steps 0, k, 2k, ...), so a
    preset and its naive baseline spend the same evaluations at every step count (round() gave fast 7 of 50
    against the baseline's 8, and quality 9 of 28 against 10)."""
    return min(total_steps, max(forced + 1, int(math.ceil(total_steps * fraction - 1e-9))))


@dataclass
class BudgetSchedule:
    """Per-run full-step planner.

    Attributes:
        allowed: per step, True when the step may be forecast (caching window minus warm-up and
            final steps); False steps are always computed.
        fraction: share of steps to compute (1 / interval).
        adapt: False spaces the budget evenly (still budget-driven, no error feedback).
        order: error growth assumed with the horizon (error ~ horizon ** order).
        max_stretch: gaps stay within [base / max_stretch, base * max_stretch].
    """

    allowed: Sequence[bool]
    fraction: float
    adapt: bool = True
    order: float = 1.0
    max_stretch: float = 2.0
    max_lengthen: float = 1.0  # > 1 lets calm stretches use longer gaps than the even spacing
    budget: int = 0
    used: int = 0
    next_full: int = 0
    last_full: int = -1
    rates: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        total = len(self.allowed)
        forced = sum(1 for a in self.allowed if not a)
        self.budget = evaluation_budget(total, self.fraction, forced)

    @property
    def total_steps(self) -> int:
        return len(self.allowed)

    def is_full(self, step: int) -> bool:
        """True when `step` must run the full model (called with the step's first call)."""
        step = min(max(step, 0), self.total_steps - 1)
        return (not self.allowed[step]) or self.last_full < 0 or step >= self.next_full or step == self.last_full

    def completed(self, step: int, error: float | None = None, horizon_steps: float | None = None) -> None:
        """A full step ran at `step`; `error` is its backtest error at `horizon_steps` (if any)."""
        if step == self.last_full:
            return  # second call of the same step (Heun-type samplers): already planned
        self.used += 1
        self.last_full = step
        scale = 1.0
        if self.adapt and error is not None and horizon_steps and error > 0:
            rate = error / max(horizon_steps, 1e-6) ** self.order
            self.rates.append(rate)
            reference = math.exp(sum(math.log(r) for r in self.rates) / len(self.rates))
            # A growing error keeps growing over the next gap (the last steps of a run change fastest).
            trend = min(4.0, max(1.0, rate / self.rates[-2])) if len(self.rates) > 1 else 1.0
            scale = (reference / (rate * trend)) ** (1.0 / self.order)
            scale = min(self.max_lengthen, max(1.0 / self.max_stretch, scale))
        self.next_full = step + self._gap(step, scale)

    def _gap(self, step: int, scale: float) -> int:
        later = range(step + 1, self.total_steps)
        flexible = sum(1 for i in later if self.allowed[i])
        forced = sum(1 for i in later if not self.allowed[i])
        left = self.budget - self.used - forced
        if left <= 0 or flexible == 0:
            # No evaluation to spare: forecast until the next forced step.
            nxt = next((i for i in later if not self.allowed[i]), self.total_steps)
            gap = nxt - step
        else:
            base = (flexible + 1) / (left + 1)
            gap = max(1, int(math.floor(base * scale + 0.5)))
            gap = min(gap, max(1, int(math.floor(base * self.max_stretch + 0.5))))
        return gap
