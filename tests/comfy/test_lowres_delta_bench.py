"""The low-resolution delta bench (bench/bench_lowres_delta.py, docs/RESOLUTION.md Round 4): the delta is exact
on constructed data where the low-res change is the pooled full change; inside the real ComfyUI on the micro
FLUX its token count equals the forward hook's, its reuse mode is the output-reuse baseline bit for bit, and
every mode runs finite."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import conditioning, sample

sys.path.append(str(Path(__file__).resolve().parents[2]))


def _coarse(shape, factor, g):
    """A field constant over factor x factor blocks (what nearest up-sampling of a pooled change gives back)."""
    low = torch.randn(shape[0], shape[1], shape[2] // factor, shape[3] // factor, generator=g)
    return F.interpolate(low, size=shape[-2:], mode="nearest")


@pytest.mark.parametrize("factor", [2, 4])
def test_delta_is_exact_when_the_low_res_change_is_the_pooled_change(factor):
    from bench.bench_lowres_delta import _down, lowres_change

    g = torch.Generator().manual_seed(0)
    shape = (2, 16, 8, 8)
    d_f = torch.randn(shape, generator=g)
    d_t = d_f + _coarse(shape, factor, g)
    bias = torch.randn(2, 16, 8 // factor, 8 // factor, generator=g)  # the low-res model's own offset cancels
    x_low = torch.zeros_like(bias)
    low_f, low_t = (x_low, _down(d_f, factor) + bias), (x_low, _down(d_t, factor) + bias)
    d_hat = d_f + lowres_change(low_f, low_t, 0.8, 0.7, shape[-2:], "den", "nearest")
    assert torch.allclose(d_hat, d_t, atol=1e-5)
    # Slope space: the velocity's change is coarse; the low-res calls see the pooled latent and output.
    s_f, s_t = 0.8, 0.7
    x_f, x_t, slope_f = (torch.randn(shape, generator=g) for _ in range(3))
    slope_t = slope_f + _coarse(shape, factor, g)
    d_f, d_t = x_f - s_f * slope_f, x_t - s_t * slope_t
    pooled_f = (_down(x_f, factor), _down(d_f, factor))
    pooled_t = (_down(x_t, factor), _down(d_t, factor))
    slope_hat = slope_f + lowres_change(pooled_f, pooled_t, s_f, s_t, shape[-2:], "slope", "nearest")
    assert torch.allclose(slope_hat, slope_t, atol=1e-4)
    # Bilinear is not exact on block fields, and an unrelated low-res change is not the full change.
    wrong = (x_low, _down(d_f, factor) + torch.randn(bias.shape, generator=g))
    assert not torch.allclose(d_f + lowres_change(low_f, wrong, 0.8, 0.7, shape[-2:], "den", "nearest"), d_t)


def test_work_accounting_equals_the_hook_count_and_every_mode_runs(micro):
    from bench.bench_lowres_delta import LowResDelta, TokenCounter, lowres_delta, nominal_tokens

    latent = torch.zeros(1, 16, 32, 32)  # 16 x 16 = 256 image tokens at patch 2; factor 2 and 4 divide it
    pos, neg = conditioning(1), conditioning(2)
    steps = 9
    for text in ("K3 f2 m2 delta den match bilinear", "K4 f4 m1 delta slope pool nearest",
                 "K3 f2 m1 blend den match bilinear", "K3 f4 m2 cand den own bilinear",
                 "K3 f2 m1 delta den oracle bilinear"):
        cfg = LowResDelta.parse(text)
        model = lowres_delta(micro["flux"], cfg)
        counter = TokenCounter(model)
        out = sample(model, latent, pos, neg, steps=steps)
        counter.handle.remove()
        assert out.shape == latent.shape and torch.isfinite(out).all(), text
        if cfg.noise == "oracle":  # the bound makes full calls in place of low-res ones
            assert counter.tokens == nominal_tokens(cfg.__class__(cfg.every, 1, cfg.low_every), steps, 256, 77)
            continue
        assert counter.tokens == nominal_tokens(cfg, steps, 256, 77), text


def test_reuse_mode_is_the_output_reuse_baseline(micro):
    from bench.bench_lowres_delta import LowResDelta, lowres_delta
    from bench.bench_zoo import output_reuse_every

    latent = torch.zeros(1, 16, 32, 32)
    pos, neg = conditioning(1), conditioning(2)
    ours = sample(lowres_delta(micro["flux"], LowResDelta.parse("K3 f2 m1 reuse den match bilinear")), latent, pos,
                  neg, steps=9)
    baseline = sample(output_reuse_every(micro["flux"], 3), latent, pos, neg, steps=9)
    assert torch.equal(ours, baseline)
