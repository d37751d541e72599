"""torch.library custom ops (`torch.ops.ditaccel.*`) over the op table, for torch.compile.

A model compiled by ComfyUI's TorchCompileModel node traces through our block replacements. Each
op is one opaque custom op there, with a fake (meta) implementation giving output shapes, so
Dynamo neither graph-breaks on a Triton launcher nor specializes on its host-side choices. The
real implementation runs whatever `ops.OPS[name]` holds at call time (reference or kernel).

Per-step scalars (coefficients, gaps) are 1-D tensors in these schemas: as Python floats they
would be baked into the graph and force a recompile every step.

`accel_core/ops.py` imports this module and binds its table here (`bind`); this module never imports
ops, so the two form no import circle.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

_NS = "ditaccel"
# The op table the custom ops run: ops.OPS, bound by `bind` when ops is imported. Looked up at call time,
# so a kernel installed later (nodes/dispatch.py) is what runs.
_table: dict[str, Callable] = {}


def bind(table: dict[str, Callable]) -> dict[str, Callable]:
    """Run the custom ops from `table` (the op table itself, not a copy); returns name -> compile-safe entry
    for `ops.call` to use while torch.compile traces."""
    global _table
    _table = table
    return dict(COMPILED_ENTRIES)


def _math_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)  # as ops._math_dtype (the references' math dtype)


def _scalars(values) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


# ---------------------------------------------------------------- forecast_combine
@torch.library.custom_op(f"{_NS}::forecast_combine", mutates_args=())
def forecast_combine(history: list[torch.Tensor], coefficients: torch.Tensor) -> torch.Tensor:
    return _table["forecast_combine"](history, coefficients)


@forecast_combine.register_fake
def _(history, coefficients):
    return torch.empty_like(history[0], dtype=_math_dtype(history[0].dtype),
                            memory_format=torch.contiguous_format)


# ---------------------------------------------------------------- forecast_residual_add
@torch.library.custom_op(f"{_NS}::forecast_residual_add", mutates_args=())
def forecast_residual_add(base: torch.Tensor, history: list[torch.Tensor], coefficients: torch.Tensor) -> torch.Tensor:
    return _table["forecast_residual_add"](base, history, coefficients)


@forecast_residual_add.register_fake
def _(base, history, coefficients):
    return torch.empty_like(base, memory_format=torch.contiguous_format)


# ---------------------------------------------------------------- ladder_update
@torch.library.custom_op(f"{_NS}::ladder_update", mutates_args=())
def ladder_update(value: torch.Tensor, ladder: list[torch.Tensor], gaps: torch.Tensor,
                  storage_dtype: Optional[torch.dtype] = None) -> list[torch.Tensor]:
    return _table["ladder_update"](value, ladder, gaps, storage_dtype)


@ladder_update.register_fake
def _(value, ladder, gaps, storage_dtype=None):
    storage = storage_dtype or value.dtype
    # The output count is len(ladder) + 1: a list length, so it stays static under dynamic shapes.
    return [torch.empty_like(value, dtype=storage, memory_format=torch.contiguous_format)
            for _ in range(len(ladder) + 1)]


# ---------------------------------------------------------------- relative_error
@torch.library.custom_op(f"{_NS}::relative_error", mutates_args=())
def relative_error(forecast: torch.Tensor, truth: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    return _table["relative_error"](forecast, truth, norm)


@relative_error.register_fake
def _(forecast, truth, norm="l2"):
    return forecast.new_empty((forecast.shape[0],), dtype=torch.float32)


# ---------------------------------------------------------------- token methods
@torch.library.custom_op(f"{_NS}::token_gather", mutates_args=())
def token_gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return _table["token_gather"](x, index)


@token_gather.register_fake
def _(x, index):
    return x.new_empty((x.shape[0], index.shape[1], x.shape[2]))


@torch.library.custom_op(f"{_NS}::token_scatter", mutates_args=())
def token_scatter(dst: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    return _table["token_scatter"](dst, index, src)


@token_scatter.register_fake
def _(dst, index, src):
    return torch.empty_like(dst, memory_format=torch.contiguous_format)


@torch.library.custom_op(f"{_NS}::cluster_propagate", mutates_args=())
def cluster_propagate(cache: torch.Tensor, fresh: torch.Tensor, assign: torch.Tensor, gamma: float) -> torch.Tensor:
    return _table["cluster_propagate"](cache, fresh, assign, gamma)


@cluster_propagate.register_fake
def _(cache, fresh, assign, gamma):
    return torch.empty_like(cache, memory_format=torch.contiguous_format)


# ---------------------------------------------------------------- entries used by ops.call while compiling
def _combine_entry(history: Sequence[torch.Tensor], coefficients) -> torch.Tensor:
    return forecast_combine(list(history), _scalars(coefficients))


def _residual_add_entry(base: torch.Tensor, history: Sequence[torch.Tensor], coefficients) -> torch.Tensor:
    return forecast_residual_add(base, list(history), _scalars(coefficients))


def _ladder_entry(value: torch.Tensor, ladder: Sequence[torch.Tensor], gaps, storage_dtype=None):
    return ladder_update(value, list(ladder), _scalars(gaps), storage_dtype)


COMPILED_ENTRIES: dict[str, Callable] = {
    "forecast_combine": _combine_entry,
    "forecast_residual_add": _residual_add_entry,
    "ladder_update": _ladder_entry,
    "relative_error": relative_error,
    "token_gather": token_gather,
    "token_scatter": token_scatter,
    "cluster_propagate": cluster_propagate,
}
