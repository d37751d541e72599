"""Op table: torch reference implementations, replaceable by fused kernels (installed by nodes/).

Each entry's reference is the ground truth its kernel is tested against.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch


def forecast_combine_ref(history: Sequence[torch.Tensor], coefficients: Sequence[float]) -> torch.Tensor:
    """sum_i coefficients[i] * history[i] over the available orders, in fp32.

    Args:
        history: divided-difference ladder, each [*, N, C] fp32, newest anchor first.
        coefficients: per-order weights (Newton or Hermite), len >= 1; extra entries are ignored.
    Returns:
        A new fp32 tensor shaped like history[0].
    """
    n = min(len(history), len(coefficients))
    out = history[0] * coefficients[0] if coefficients[0] != 1.0 else history[0].clone()
    for i in range(1, n):
        out.add_(history[i], alpha=float(coefficients[i]))
    return out


REFERENCES: dict[str, Callable] = {"forecast_combine": forecast_combine_ref}
OPS: dict[str, Callable] = dict(REFERENCES)


def use_references() -> None:
    """Restore every op to its torch reference."""
    OPS.clear()
    OPS.update(REFERENCES)
