"""Kernel tests run every Triton kernel on the CPU through Triton's interpreter.

TRITON_INTERPRET must be set before a kernel module is imported (`triton.jit` picks the
interpreter at decoration time), so it is set here, at collection of this folder.
"""
from __future__ import annotations

import os

import pytest
import torch

os.environ["TRITON_INTERPRET"] = "1"

triton = pytest.importorskip("triton", reason="Triton is not installed; kernel tests need it (interpret mode)")

from kernel_helpers import POISON  # noqa: E402


@pytest.fixture
def poison(monkeypatch):
    """Fill every tensor the kernels allocate with NaN (ints with -1), so unwritten elements fail."""
    real_empty = torch.empty

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        return t.fill_(POISON if t.is_floating_point() else -1)

    monkeypatch.setattr(torch, "empty", empty)
    return POISON


@pytest.fixture(scope="session")
def kernel_table():
    import kernels

    table = kernels.load()
    from kernels import forecast

    # A kernel module imported before TRITON_INTERPRET=1 was set would be compiled for a GPU.
    assert type(forecast._combine_kernel).__name__ == "InterpretedFunction", "kernels imported before interpret mode"
    return table
