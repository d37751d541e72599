"""torch.compile with inductor through ComfyUI's own TorchCompileModel node, over Forecast Cache, on
the CPU (inductor's C++ backend needs a C compiler): same result as eager, one graph, no graph breaks and
no recompiles per step or per run (dynamo counters). Compile time and speed-up: bench/bench_inductor.py.

ComfyUI picks sub-quadratic attention on a CPU; it reads the free memory inside the model, which dynamo
turns into a guard (a recompile whenever free memory changes, with or without this pack). The test runs
PyTorch attention, what ComfyUI uses on GPUs, through ComfyUI's optimized_attention_override."""
from __future__ import annotations

import shutil

import pytest
import torch
from helpers import conditioning, forecast_node, recent_runs, sample

pytestmark = [pytest.mark.slow,  # 29-76 s cold on the shared 2 CPU cores (inductor compiles one C++ graph)
              pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                                 reason="inductor on the CPU needs a C compiler (gcc / cc); none on PATH")]

STEPS = 20


def pytorch_attention(func, *args, **kwargs):
    from comfy.ldm.modules.attention import attention_pytorch

    return attention_pytorch(*args, **kwargs)


def small_flux():
    from scripts.harness.micro_models import build_micro_model, micro_config

    config = micro_config("flux")
    config.update(depth=1, depth_single_blocks=1)  # one block of each kind: the shortest compile
    model = build_micro_model("flux", seed=0, config=config)
    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = pytorch_attention
    return model


def test_inductor_compiled_model_with_forecast_cache(comfy_nodes):
    from comfy_extras.nodes_torch_compile import TorchCompileModel
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = small_flux()
    cached = forecast_node().execute(model, "balanced", "preset", "preset", 0, -1, -1, -1, 0.0, 1.0)[0]
    latent, pos, neg = torch.zeros(1, 16, 16, 16), conditioning(1), conditioning(2)
    eager = sample(cached, latent, pos, neg, steps=STEPS)
    compiled = TorchCompileModel.execute(cached, "inductor")[0]
    out = sample(compiled, latent, pos, neg, steps=STEPS)
    run = recent_runs()[-1]
    assert 0 < run["computed_calls"] < STEPS and run["forecast_calls"] > 0
    torch.testing.assert_close(out, eager, atol=1e-3, rtol=1e-3)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == 1, dict(counters["stats"])  # the whole model in one graph: the pack adds no break
    assert not counters["graph_break"], dict(counters["graph_break"])
    for steps in (STEPS, 28):  # another run, another step count: nothing recompiles
        sample(compiled, latent, pos, neg, steps=steps)
        assert counters["stats"]["unique_graphs"] == graphs, (steps, dict(counters["stats"]))
    torch._dynamo.reset()
