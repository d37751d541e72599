"""Another step cache on the same model is never stacked with Forecast Cache: ComfyUI's EasyCache
before or after it, and Forecast Cache applied twice on one path."""
from __future__ import annotations

import logging
import math

import pytest
import torch
from helpers import LATENTS, conditioning, forecast_node, recent_runs, sample


def _latent() -> torch.Tensor:
    return torch.zeros(LATENTS["flux"])


def _cache(model, interval: int, tokens=None):
    return forecast_node().execute(model, "balanced", "preset", "output", interval, -1, 2, 1, 0.0, 1.0,
                                   tokens=tokens)[0]


def _easycache(model):
    from comfy_extras.nodes_easycache import EasyCacheNode

    return EasyCacheNode.execute(model, 0.2, 0.15, 0.95, False)[0]


def _warnings(caplog, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


def test_easycache_first_means_forecast_cache_is_not_applied(micro, caplog):
    model = micro["flux"]
    pos, neg = conditioning(1), conditioning(2)
    alone = sample(_easycache(model), _latent(), pos, neg, steps=12)
    recent_runs().clear()
    with caplog.at_level(logging.WARNING, logger="DiTAccel"):
        both = _cache(_easycache(model), 3)
    assert _warnings(caplog, "another step cache") == 1
    assert torch.equal(sample(both, _latent(), pos, neg, steps=12), alone)
    assert len(recent_runs()) == 0  # no Forecast Cache run happened


def test_easycache_after_forecast_cache_makes_it_step_aside(micro, caplog):
    model = micro["flux"]
    pos, neg = conditioning(1), conditioning(2)
    alone = sample(_easycache(model), _latent(), pos, neg, steps=12)
    with caplog.at_level(logging.WARNING, logger="DiTAccel"):
        out = sample(_easycache(_cache(model, 3)), _latent(), pos, neg, steps=12)
    assert _warnings(caplog, "steps aside") == 1
    assert torch.equal(out, alone)


@pytest.mark.parametrize("with_tokens", [False, True])
def test_forecast_cache_twice_keeps_only_the_later_node(micro, caplog, with_tokens):
    import nodes

    tokens = None
    if with_tokens:
        tokens = nodes.NODE_CLASS_MAPPINGS["DiTAccelClusterTokens"].execute(
            clusters=4, tokens_per_cluster=2, cluster_layer=0.5, attention_context="cached")[0]
    model = micro["flux"]
    pos, neg = conditioning(1), conditioning(2)
    once = sample(_cache(model, 3, tokens), _latent(), pos, neg, steps=16)
    with caplog.at_level(logging.WARNING, logger="DiTAccel"):
        twice = _cache(_cache(model, 5, tokens), 3, tokens)
    assert _warnings(caplog, "applied twice") == 1
    recent_runs().clear()  # a bounded deque: count from empty
    assert torch.equal(sample(twice, _latent(), pos, neg, steps=16), once)
    assert len(recent_runs()) == 1  # one run, not two nested ones
    assert recent_runs()[-1]["budget"] == math.ceil(16 / 3)  # what output reuse every 3 computes
