"""Op table: torch reference implementations, replaceable by fused kernels (installed by nodes/).

Each entry's reference is the ground truth its kernel is tested against (tests/kernels/). `OPS`
holds the implementation that runs now: the reference, or a kernel installed by
`nodes/dispatch.py`. Core code calls ops through `call(name, ...)`: eagerly that is `OPS[name]`
(no dispatcher overhead on the hot path); while torch.compile traces, it is the registered
`torch.ops.ditaccel.<name>` custom op (accel_core/custom_ops.py), opaque to the compiler.

Math is fp32 (fp64 inputs stay fp64): differences of near-equal bf16 tensors cancel
catastrophically. Coefficients and gaps may be Python floats or a 1-D tensor; a tensor keeps
their values out of compiled graphs (no recompile when they change every step).
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

import torch

from . import custom_ops

Scalars = Union[Sequence[float], torch.Tensor]


def _math_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _combine(history: Sequence[torch.Tensor], coefficients: Scalars, dtype: torch.dtype) -> torch.Tensor:
    n = min(len(history), len(coefficients))
    out = torch.mul(history[0].to(dtype), coefficients[0])
    for i in range(1, n):
        c = coefficients[i]
        if isinstance(c, torch.Tensor):
            out.add_(history[i].to(dtype) * c)
        else:
            out.add_(history[i].to(dtype), alpha=float(c))
    return out


def forecast_combine_ref(history: Sequence[torch.Tensor], coefficients: Scalars) -> torch.Tensor:
    """sum_i coefficients[i] * history[i] over the available orders, in fp32.

    Args:
        history: divided-difference ladder (or FoCa's value/slope/curvature), each [*, N, C], fp32 or
            bf16 storage, newest anchor first; all the same shape.
        coefficients: per-order weights (Newton, Hermite, FoCa), len >= 1; extra entries are ignored.
    Returns:
        A new fp32 tensor shaped like history[0] (fp64 if the history is fp64).
    """
    return _combine(history, coefficients, _math_dtype(history[0].dtype))


def forecast_residual_add_ref(base: torch.Tensor, history: Sequence[torch.Tensor],
                              coefficients: Scalars) -> torch.Tensor:
    """base + sum_i coefficients[i] * history[i], added in fp32, returned in base's dtype.

    The forecast-step output of a skipped block range: `base` is the hidden state entering it
    ([B, N, C], any float dtype, may be a strided slice), history as in `forecast_combine_ref`.
    """
    dtype = _math_dtype(torch.promote_types(base.dtype, history[0].dtype))
    return _combine(history, coefficients, dtype).add_(base.to(dtype)).to(base.dtype)


def ladder_update_ref(value: torch.Tensor, ladder: Sequence[torch.Tensor], gaps: Scalars,
                      storage_dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Newton divided-difference ladder after a new anchor, in one pass over the tensors.

    new[0] = value; new[i+1] = (new[i] - ladder[i]) / gaps[i], with gaps[i] = t_new - t_i, in fp32
    (new[i] unrounded, so bf16 storage rounds each entry once).

    Args:
        value: the new anchor's tensor [*, N, C], any float dtype.
        ladder: the old ladder entries that feed the new one, newest first (drop the oldest
            beforehand when the ladder is at its maximum order).
        gaps: t_new - t_i, one per ladder entry (len(gaps) == len(ladder)).
        storage_dtype: dtype of the stored entries; None keeps value's dtype.
    Returns:
        len(ladder) + 1 new tensors (never aliasing the inputs).
    """
    storage = storage_dtype or value.dtype
    dtype = _math_dtype(value.dtype)
    current = value.to(dtype)
    out = [current.to(storage, copy=True)]
    for i in range(len(ladder)):
        current = (current - ladder[i].to(dtype)) / gaps[i]
        out.append(current.to(storage))
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


def token_gather_ref(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """out[b, m] = x[b, index[b, m]]: the tokens a token method computes. x [B, N, C], index [B, M] int."""
    return torch.gather(x, 1, index.long().unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def token_scatter_ref(dst: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """A copy of dst [B, N, C] with rows index[b, m] replaced by src[b, m] (in dst's dtype).

    Indices within a sample must be distinct (with duplicates, which write wins is undefined).
    """
    idx = index.long().unsqueeze(-1).expand(-1, -1, dst.shape[-1])
    return dst.scatter(1, idx, src.to(dst.dtype))


def cluster_propagate_ref(cache: torch.Tensor, fresh: torch.Tensor, assign: torch.Tensor,
                          gamma: float) -> torch.Tensor:
    """ClusCa propagation: (1 - gamma) * cache[b, n] + gamma * fresh[b, assign[b, n]], in fp32.

    Args:
        cache: cached token features [B, N, C]; fresh: one freshly computed value per cluster [B, K, C];
        assign: cluster of each token [B, N] int, in [0, K); gamma: propagation ratio in [0, 1].
    Returns:
        A new tensor [B, N, C] in cache's dtype.
    """
    dtype = _math_dtype(cache.dtype)
    spread = token_gather_ref(fresh, assign).to(dtype)
    return torch.lerp(cache.to(dtype), spread, gamma).to(cache.dtype)


REFERENCES: dict[str, Callable] = {
    "forecast_combine": forecast_combine_ref,
    "forecast_residual_add": forecast_residual_add_ref,
    "ladder_update": ladder_update_ref,
    "relative_error": relative_error_ref,
    "token_gather": token_gather_ref,
    "token_scatter": token_scatter_ref,
    "cluster_propagate": cluster_propagate_ref,
}
OPS: dict[str, Callable] = dict(REFERENCES)
# name -> compile-safe entry (a torch.library custom op over this table, accel_core/custom_ops.py).
COMPILED: dict[str, Callable] = custom_ops.bind(OPS)


def use_references() -> None:
    """Restore every op to its torch reference."""
    OPS.clear()
    OPS.update(REFERENCES)


def install(implementations: dict[str, Callable]) -> None:
    """Replace ops by other implementations (kernels); unknown names are refused."""
    unknown = sorted(set(implementations) - set(REFERENCES))
    if unknown:
        raise KeyError(f"ops.install: unknown op(s) {unknown}. Known ops: {', '.join(REFERENCES)}.")
    OPS.update(implementations)


def call(name: str, *args):
    """Run op `name`: `OPS[name]` eagerly, the `ditaccel::` custom op while torch.compile traces."""
    if name in COMPILED and torch.compiler.is_compiling():
        return COMPILED[name](*args)
    return OPS[name](*args)

