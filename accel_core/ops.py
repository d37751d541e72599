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


def relative_error_ref(forecast: torch.Tensor, truth: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Per-sample relative error ||forecast - truth|| / ||truth|| (verification probe), fp32 [B].

    Args:
        forecast, truth: same shape [B, ...], any float dtype; reduced over every dim but 0 in fp32.
        norm: "l2" or "l1".
    """
    diff = (forecast.float() - truth.float()).flatten(1)
    ref = truth.float().flatten(1)
    if norm == "l1":
        return diff.abs().sum(1) / ref.abs().sum(1).clamp_min(1e-12)
    return diff.norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)


REFERENCES: dict[str, Callable] = {"forecast_combine": forecast_combine_ref, "relative_error": relative_error_ref}
OPS: dict[str, Callable] = dict(REFERENCES)


def use_references() -> None:
    """Restore every op to its torch reference."""
    OPS.clear()
    OPS.update(REFERENCES)
