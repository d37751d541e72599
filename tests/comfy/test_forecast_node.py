"""The Forecast Cache node inside the real ComfyUI: registration, exactness, robustness."""
from __future__ import annotations

import gc
import logging

import pytest
import torch
from helpers import LATENTS, apply, conditioning, forecast_node, recent_runs, sample

FAMILIES = list(LATENTS)
MODES = ["final_hidden", "per_block"]


def _latent(family: str, batch: int = 1, scale: int = 1) -> torch.Tensor:
    shape = list(LATENTS[family])
    shape[0] = batch
    shape[-1] *= scale
    return torch.zeros(shape)


def test_node_is_registered_with_tooltips_and_registry_combos(comfy_nodes):
    node = forecast_node()
    schema = node.define_schema()
    assert schema.category == "DiT Accel/caching" and schema.display_name == "Forecast Cache"
    for item in schema.inputs:
        assert item.tooltip and len(item.tooltip) > 20, item.id
    method = next(i for i in schema.inputs if i.id == "method")
    assert method.options == ["preset", "foca", "hicache", "hyca", "reuse", "taylorseer"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", MODES)
def test_interval_one_is_bit_identical_to_the_plain_model(micro, family, mode):
    model = micro[family]
    pos, neg = conditioning(1), conditioning(2)
    plain = sample(model, _latent(family), pos, neg, cfg=2.0, steps=4)
    patched = apply(model, cache_mode=mode, interval=1)
    assert torch.equal(sample(patched, _latent(family), pos, neg, cfg=2.0, steps=4), plain)
    assert recent_runs()[-1]["forecast_calls"] == 0


@pytest.mark.parametrize("family,ref_shape", [("flux", (1, 16, 16, 12)), ("qwen_image", (1, 16, 1, 16, 12))])
@pytest.mark.parametrize("mode", MODES)
def test_reference_token_paths(micro, family, ref_shape, mode):
    """Kontext / Qwen-Image-Edit: exact with interval 1; forecast only target tokens otherwise."""
    model = micro[family]
    ref = torch.randn(ref_shape, generator=torch.Generator().manual_seed(5))
    pos, neg = conditioning(1, reference=ref), conditioning(2, reference=ref)
    plain = sample(model, _latent(family), pos, neg, cfg=1.0, steps=6)
    assert torch.equal(sample(apply(model, cache_mode=mode, interval=1), _latent(family), pos, neg, steps=6), plain)
    fast = sample(apply(model, method="taylorseer", cache_mode=mode, interval=3, order=1, warmup=2, final=0),
                  _latent(family),
                  pos, neg, steps=6)
    run = recent_runs()[-1]
    assert run["forecast_calls"] > 0 and torch.isfinite(fast).all()
    if mode == "final_hidden":
        hidden = 128
        target_tokens = 8 * 8  # 16x16 latent, patch 2; the 16x12 reference adds 48 tokens that must not be cached
        assert run["branch_cache_bytes"] and max(run["branch_cache_bytes"].values()) == 2 * target_tokens * hidden * 4


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_forecast_runs_finish_finite_and_skip_work(micro, family, cfg):
    model = apply(micro[family], preset="fast")
    out = sample(model, _latent(family, batch=2), conditioning(1, batch=1), conditioning(2), cfg=cfg, steps=12)
    run = recent_runs()[-1]
    assert torch.isfinite(out).all()
    assert run["forecast_calls"] >= 6 and run["evaluation_speedup"] > 1.5
    assert len(run["branch_cache_bytes"]) == (2 if cfg > 1 else 1)


def test_split_cond_uncond_calls_keep_branches_apart(micro):
    """Contexts whose lengths cannot be batched (77 vs 462 tokens) make ComfyUI call cond and uncond separately."""
    model = micro["flux"]
    pos, neg = conditioning(1, tokens=77), conditioning(2, tokens=462)
    plain = sample(model, _latent("flux"), pos, neg, cfg=3.0, steps=6)
    assert torch.equal(sample(apply(model, interval=1), _latent("flux"), pos, neg, cfg=3.0, steps=6), plain)
    run = recent_runs()[-1]
    assert run["calls"] == 12  # two calls per step
    out = sample(apply(model, interval=3, warmup=2, final=0), _latent("flux"), pos, neg, cfg=3.0, steps=6)
    run = recent_runs()[-1]
    assert torch.isfinite(out).all() and run["forecast_calls"] > 0 and len(run["branch_cache_bytes"]) == 2


@pytest.mark.parametrize("sampler,calls,steps", [
    ("euler", 6, [0, 1, 2, 3, 4, 5]),
    ("dpmpp_2m", 6, [0, 1, 2, 3, 4, 5]),
    ("heun", 11, [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]),
    ("dpm_2", 11, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5]),
])
def test_step_detection_per_sampler(micro, sampler, calls, steps):
    model = apply(micro["flux"], interval=2, warmup=1, final=1)
    out = sample(model, _latent("flux"), conditioning(1), conditioning(2), steps=6, sampler=sampler)
    run = recent_runs()[-1]
    assert torch.isfinite(out).all()
    assert run["calls"] == calls and run["call_steps"] == steps
    assert run["total_steps"] == 6


def test_two_samplers_share_one_patched_model_and_runs_are_repeatable(micro):
    model = apply(micro["flux"], preset="balanced")
    pos, neg = conditioning(1), conditioning(2)
    first = sample(model, _latent("flux"), pos, neg, steps=10, seed=1)
    second = sample(model, _latent("flux"), pos, neg, steps=10, seed=2)
    again = sample(model, _latent("flux"), pos, neg, steps=10, seed=1)
    assert torch.equal(first, again)  # nothing leaks from one run into the next
    assert not torch.equal(first, second)


def test_resolution_change_between_runs(micro):
    model = apply(micro["flux"], preset="fast")
    pos, neg = conditioning(1), conditioning(2)
    small = sample(model, _latent("flux"), pos, neg, steps=10)
    wide = sample(model, _latent("flux", scale=2), pos, neg, steps=10)
    assert small.shape[-1] * 2 == wide.shape[-1] and torch.isfinite(wide).all()
    assert recent_runs()[-1]["resets"] == 0 and recent_runs()[-1]["forecast_calls"] > 0


def test_input_model_is_left_untouched(micro):
    model = micro["flux"]
    before_options = repr(sorted(model.model_options.get("transformer_options", {}).keys()))
    before_wrappers = repr(model.wrappers)
    pos, neg = conditioning(1), conditioning(2)
    plain = sample(model, _latent("flux"), pos, neg, steps=6)
    patched = apply(model, preset="fast")
    sample(patched, _latent("flux"), pos, neg, steps=6)
    assert patched is not model
    assert repr(sorted(model.model_options.get("transformer_options", {}).keys())) == before_options
    assert repr(model.wrappers) == before_wrappers
    assert torch.equal(sample(model, _latent("flux"), pos, neg, steps=6), plain)


def test_lora_patched_model_stays_exact_with_interval_one(micro):
    model = micro["flux"].clone()
    key = "diffusion_model.double_blocks.0.img_attn.qkv.weight"
    weight = model.model.state_dict()[key]
    model.add_patches({key: (torch.randn(weight.shape, generator=torch.Generator().manual_seed(9)) * 0.05,)}, 1.0)
    pos, neg = conditioning(1), conditioning(2)
    plain = sample(model, _latent("flux"), pos, neg, steps=5)
    assert not torch.equal(plain, sample(micro["flux"], _latent("flux"), pos, neg, steps=5))
    assert torch.equal(sample(apply(model, interval=1), _latent("flux"), pos, neg, steps=5), plain)


def test_interrupted_run_frees_state_and_next_run_is_clean(micro):
    import comfy.model_management
    import comfy.utils

    model = apply(micro["flux"], preset="fast")
    pos, neg = conditioning(1), conditioning(2)
    reference = sample(model, _latent("flux"), pos, neg, steps=10)

    def interrupt(value, total, preview, node_id=None):
        if value >= 4:
            raise comfy.model_management.InterruptProcessingException()

    comfy.utils.set_progress_bar_global_hook(interrupt)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            sample(model, _latent("flux"), pos, neg, steps=10)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert recent_runs()[-1]["interrupted"]
    assert torch.equal(sample(model, _latent("flux"), pos, neg, steps=10), reference)


def test_memory_does_not_grow_over_twenty_runs(micro):
    model = apply(micro["flux"], preset="fast", cache_mode="per_block")
    pos, neg = conditioning(1), conditioning(2)

    def live_tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    sample(model, _latent("flux"), pos, neg, steps=8, cfg=2.0)
    baseline = live_tensors()
    for seed in range(20):
        sample(model, _latent("flux"), pos, neg, steps=8, cfg=2.0, seed=seed)
    assert live_tensors() <= baseline


def test_summary_line_once_per_run(micro, caplog):
    model = apply(micro["flux"], preset="balanced")
    with caplog.at_level(logging.INFO):
        sample(model, _latent("flux"), conditioning(1), conditioning(2), steps=20)
    lines = [r.getMessage() for r in caplog.records if "model calls" in r.getMessage()]
    assert len(lines) == 1
    assert "computed" in lines[0] and "forecast" in lines[0] and "fewer model evaluations" in lines[0]
    assert "cache" in lines[0] and "per branch" in lines[0]


def test_unsupported_model_warns_once_and_is_unchanged(comfy_nodes, caplog):
    import comfy.model_management as mm
    import comfy.model_patcher

    class UNetLike(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.diffusion_model = torch.nn.Linear(4, 4)

    patcher = comfy.model_patcher.ModelPatcher(UNetLike(), mm.get_torch_device(), mm.unet_offload_device())
    with caplog.at_level(logging.WARNING):
        out = apply(patcher, preset="fast")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "does not support Linear" in warnings[0] and "runs unchanged" in warnings[0]
    assert out is not patcher and not out.wrappers


def test_invalid_value_names_input_value_range_and_fix(micro):
    from accel_core import ConfigError

    with pytest.raises(ConfigError) as err:
        apply(micro["flux"], interval=25)
    message = str(err.value)
    assert "interval" in message and "(got 25)" in message and "between 1 and 20" in message
    with pytest.raises(ConfigError, match="start_percent"):
        apply(micro["flux"], start=0.9, end=0.2)
