"""torch.compile over our ops: custom ops with fake implementations, no graph break, no recompile.

Runs the reference path on the CPU. `aot_eager` traces the graph with fake tensors (so the fake
implementations are exercised) without needing a C++ compiler.
"""
from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
from torch._dynamo.utils import counters

from accel_core import ops

SAMPLES = {
    "forecast_combine": lambda: ([torch.randn(2, 7, 8) for _ in range(3)], torch.tensor([1.0, 0.5, 0.25])),
    "forecast_residual_add": lambda: (torch.randn(2, 7, 8, dtype=torch.bfloat16),
                                      [torch.randn(2, 7, 8) for _ in range(2)], torch.tensor([1.0, -0.3])),
    "ladder_update": lambda: (torch.randn(2, 7, 8), [torch.randn(2, 7, 8)] * 2, torch.tensor([-0.1, -0.3]),
                              torch.bfloat16),
    "relative_error": lambda: (torch.randn(2, 7, 8), torch.randn(2, 7, 8), "l1"),
    "token_gather": lambda: (torch.randn(2, 7, 8), torch.tensor([[0, 3], [6, 1]])),
    "token_scatter": lambda: (torch.randn(2, 7, 8), torch.tensor([[0, 3], [6, 1]]), torch.randn(2, 2, 8)),
    "cluster_propagate": lambda: (torch.randn(2, 7, 8), torch.randn(2, 3, 8), torch.randint(0, 3, (2, 7)), 0.01),
}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    ops.use_references()
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_custom_op_schema_and_fake_impl(name):
    """torch.library.opcheck: schema, fake (meta) implementation and dispatch agree with the real op."""
    op = getattr(torch.ops.ditaccel, name).default
    torch.library.opcheck(op, SAMPLES[name](), test_utils=("test_schema", "test_faketensor"))


def test_every_op_has_a_custom_op():
    assert set(ops.COMPILED) == set(ops.REFERENCES)


def _forecast_step(base, h0, h1, h2, coefficients, gaps, value):
    """A compiled region doing what a forecast/full step does with our ops."""
    new = ops.call("ladder_update", value, [h0, h1], gaps, None)
    out = ops.call("forecast_residual_add", base, new, coefficients)
    err = ops.call("relative_error", out, base, "l2")
    return out, err


def test_fullgraph_compile_without_recompiles_across_token_counts_and_coefficients():
    backend = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(_forecast_step, backend=backend, fullgraph=True, dynamic=True)
    for step, tokens in enumerate((17, 64, 333, 4096 // 16)):
        t = [torch.randn(1, tokens, 24) for _ in range(4)]
        base = torch.randn(1, tokens, 24, dtype=torch.bfloat16)
        coefficients = torch.tensor([1.0, 0.1 * step - 0.4, 0.02 * step, 0.003])  # new values every step
        gaps = torch.tensor([-0.05 - 0.01 * step, -0.2])
        out, err = compiled(base, t[0], t[1], t[2], coefficients, gaps, t[3])
        ref_out, ref_err = _forecast_step(base, t[0], t[1], t[2], coefficients, gaps, t[3])
        torch.testing.assert_close(out, ref_out)
        torch.testing.assert_close(err, ref_err)
    assert backend.frame_count == 1, f"compiled {backend.frame_count} times; expected one dynamic graph"
    assert not counters["graph_break"], dict(counters["graph_break"])
    # The ops are opaque nodes of the graph (not traced into).
    targets = {str(n.target) for g in backend.graphs for n in g.graph.nodes if n.op == "call_function"}
    assert {"ditaccel.ladder_update.default", "ditaccel.forecast_residual_add.default",
            "ditaccel.relative_error.default"} <= targets, targets


def test_token_ops_compile_fullgraph():
    def token_step(x, index, fresh, assign):
        picked = ops.call("token_gather", x, index)
        x = ops.call("token_scatter", x, index, picked * 2)
        return ops.call("cluster_propagate", x, fresh, assign, 0.005)

    backend = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(token_step, backend=backend, fullgraph=True, dynamic=True)
    for tokens in (20, 45, 96):
        x = torch.randn(2, tokens, 16)
        index = torch.stack([torch.randperm(tokens)[:5] for _ in range(2)])
        fresh, assign = torch.randn(2, 4, 16), torch.randint(0, 4, (2, tokens))
        torch.testing.assert_close(compiled(x, index, fresh, assign), token_step(x, index, fresh, assign))
    assert backend.frame_count == 1
    assert not counters["graph_break"]


def test_eager_calls_skip_the_custom_op_dispatcher(monkeypatch):
    """Outside compiled regions `ops.call` runs the op table entry directly (no dispatcher overhead)."""
    seen = []
    monkeypatch.setitem(ops.OPS, "forecast_combine", lambda h, c: seen.append("table") or h[0])
    monkeypatch.setitem(ops.COMPILED, "forecast_combine", lambda h, c: seen.append("custom") or h[0])
    ops.call("forecast_combine", [torch.zeros(2)], [1.0])
    assert seen == ["table"]
