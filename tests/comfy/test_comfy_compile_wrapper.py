"""ComfyUI's own torch.compile wrapper over a Forecast-Cache model: same output, bounded graphs."""
from __future__ import annotations

import pytest
import torch
from helpers import apply, conditioning, recent_runs, sample


def test_compiled_model_with_forecast_cache_matches_eager(micro):
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = apply(micro["flux"], method="taylorseer", interval=3, order=1, warmup=2, final=1)
    latent = torch.zeros(1, 16, 16, 16)
    eager = sample(model, latent, conditioning(1), conditioning(2), steps=8)
    compiled = model.clone()
    set_torch_compile_wrapper(compiled, backend="aot_eager")
    out = sample(compiled, latent, conditioning(1), conditioning(2), steps=8)
    again = sample(compiled, latent, conditioning(1), conditioning(2), steps=8)
    assert recent_runs()[-1]["forecast_calls"] > 0
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, out, atol=0, rtol=0)
    # Host decisions stay out of the graphs: a second identical run compiles nothing new.
    assert counters["stats"]["unique_graphs"] > 0
    graphs_after_first = counters["stats"]["unique_graphs"]
    sample(compiled, latent, conditioning(1), conditioning(2), steps=8)
    assert counters["stats"]["unique_graphs"] == graphs_after_first
    assert not any("dit_accel" in str(reason) or "block_hooks" in str(reason)
                   for reason in counters["graph_break"]), dict(counters["graph_break"])
    torch._dynamo.reset()
