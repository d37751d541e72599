"""The output-level cache (the default presets) inside the real ComfyUI: exactness at interval 1,
the share of evaluations at any step count, CFG (batched and split branches), two-call samplers,
batches, interrupted runs."""
from __future__ import annotations

import pytest
import torch
from helpers import LATENTS, apply, conditioning, recent_runs, sample

from accel_core.config import PRESET_SHARES
from accel_core.output.run import FEW_STEPS

FAMILIES = list(LATENTS)


def _latent(family: str, batch: int = 1) -> torch.Tensor:
    shape = list(LATENTS[family])
    shape[0] = batch
    return torch.zeros(shape)


def _output(model, **kw):
    return apply(model, cache_mode="output", **kw)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_interval_one_is_bit_identical_to_the_plain_model(micro, family, cfg):
    model = micro[family]
    pos, neg = conditioning(1), conditioning(2)
    plain = sample(model, _latent(family), pos, neg, cfg=cfg, steps=5)
    assert torch.equal(sample(_output(model, interval=1), _latent(family), pos, neg, cfg=cfg, steps=5), plain)
    assert recent_runs()[-1]["forecast_calls"] == 0


@pytest.mark.parametrize("name", sorted(PRESET_SHARES))
@pytest.mark.parametrize("steps", [20, 28, 50])
def test_presets_keep_their_share_at_any_step_count_through_ksampler(micro, name, steps):
    out = sample(apply(micro["flux"], preset=name, cache_mode="preset"), _latent("flux"), conditioning(1),
                 conditioning(2), steps=steps)
    run = recent_runs()[-1]
    assert torch.isfinite(out).all() and run["tag"].startswith("output-backtest")
    assert abs(run["computed_calls"] - steps / PRESET_SHARES[name]) <= 1.0, run["computed_calls"]
    assert run["calls"] == steps


@pytest.mark.parametrize("family", FAMILIES)
def test_cfg_branches_share_one_schedule_and_one_forecast(micro, family):
    """cfg 3: one decision per step for both branches (computed together or not at all); the forecast
    keeps the unconditional output and the guidance direction as two series."""
    model = _output(micro[family], interval=3, warmup=2, final=1)
    out = sample(model, _latent(family), conditioning(1), conditioning(2), cfg=3.0, steps=12)
    run = recent_runs()[-1]
    assert torch.isfinite(out).all()
    assert run["calls"] == 12 and run["computed_calls"] == 4  # one guider call per step, budget 12 / 3
    assert list(run["branch_cache_bytes"]) == ["guidance+uncond"]  # plain CFG: uncond + guidance direction
    assert sum(run["cfg_layouts"].values()) == run["forecast_calls"]
    sample(model, _latent(family), conditioning(1), conditioning(2), cfg=1.0, steps=12)
    assert list(recent_runs()[-1]["branch_cache_bytes"]) == ["guided"]  # no uncond branch at cfg 1


def test_split_cond_uncond_calls_are_still_one_decision_per_step(micro):
    """Contexts that cannot be batched (77 vs 462 tokens) make ComfyUI run the branches apart; the
    output cache sits above that split."""
    model = micro["flux"]
    pos, neg = conditioning(1, tokens=77), conditioning(2, tokens=462)
    out = sample(_output(model, interval=3, warmup=2, final=1), _latent("flux"), pos, neg, cfg=3.0, steps=12)
    run = recent_runs()[-1]
    assert torch.isfinite(out).all() and run["calls"] == 12 and run["computed_calls"] == 4


@pytest.mark.parametrize("steps", [4, 8])
def test_few_step_runs_compute_every_step_and_say_why(micro, steps):
    """Few-step / distilled schedules (<= FEW_STEPS): no step is skipped, the panel and the summary say so,
    and the result is the plain model's."""
    pos, neg = conditioning(1), conditioning(2)
    plain = sample(micro["flux"], _latent("flux"), pos, neg, steps=steps)
    out = sample(apply(micro["flux"], preset="fast", cache_mode="preset"), _latent("flux"), pos, neg, steps=steps)
    run = recent_runs()[-1]
    assert torch.equal(out, plain)
    assert run["computed_calls"] == steps and run["forecast_calls"] == 0
    assert run["schedule_note"].startswith(f"{steps} steps: too few to cache")
    nine = sample(apply(micro["flux"], preset="fast", cache_mode="preset"), _latent("flux"), pos, neg, steps=FEW_STEPS + 1)
    assert torch.isfinite(nine).all() and recent_runs()[-1]["forecast_calls"] > 0  # longer runs keep caching


@pytest.mark.parametrize("sampler", ["heun", "dpm_2"])
def test_two_call_samplers_group_calls_at_one_noise_level(micro, sampler):
    model = _output(micro["flux"], interval=5, warmup=2, final=1)
    out = sample(model, _latent("flux"), conditioning(1), conditioning(2), steps=20, sampler=sampler)
    run = recent_runs()[-1]
    assert torch.isfinite(out).all() and run["calls"] == 39
    by_step: dict[int, set[str]] = {}
    for step, mark in zip(run["call_steps"], run["timeline"]):
        by_step.setdefault(step, set()).add(mark)
    assert all(len(marks) == 1 for marks in by_step.values()), by_step  # one decision per noise level
    assert abs(run["computed_calls"] / run["calls"] - 1 / 5) <= 0.06


def test_batch_samples_are_fitted_apart(micro):
    """Per-sample backtest weights: a batch of two gives each image what it gets alone."""
    model = _output(micro["flux"], interval=4, warmup=2, final=1)
    pos, neg = conditioning(1), conditioning(2)
    gen = torch.Generator().manual_seed(0)
    latent = torch.randn(2, 16, 16, 16, generator=gen) * 0.1
    both = sample(model, latent, pos, neg, steps=16)
    first = sample(model, latent[:1], pos, neg, steps=16)
    assert torch.allclose(both[:1], first, atol=1e-4)


def test_interrupted_run_leaves_nothing_behind(micro):
    import comfy.patcher_extension

    model = _output(micro["flux"], interval=3, warmup=2, final=1)
    pos, neg = conditioning(1), conditioning(2)
    clean = sample(model, _latent("flux"), pos, neg, steps=12)
    calls = {"n": 0}

    def boom(executor, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("interrupted")
        return executor(*args, **kwargs)

    broken = model.clone()
    broken.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_boom", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        sample(broken, _latent("flux"), pos, neg, steps=12)
    assert recent_runs()[-1]["interrupted"]
    assert torch.equal(sample(model, _latent("flux"), pos, neg, steps=12), clean)


def test_verify_node_selects_the_hidden_state_mode(comfy_nodes, micro):
    from accel_core import config as module  # resolve_config: the node's inputs -> one config (host-free)

    verify = {"verify": "last_block", "verify_mode": "rollback", "verify_threshold": 0.1, "verify_decay": 0.5,
              "verify_floor": 0.02, "min_forecasts": 1}
    config = module.resolve_config("balanced", "preset", "preset", 0, -1, -1, -1, 0.0, 1.0, "flux", verify=verify)
    assert config.cache_mode == "final_hidden" and config.verify == "last_block" and config.schedule == "fixed"
    plain = module.resolve_config("balanced", "preset", "preset", 0, -1, -1, -1, 0.0, 1.0, "flux")
    assert plain.cache_mode == "output" and plain.schedule == "budget"


@pytest.mark.parametrize("steps", [12, 30])
def test_sampler_custom_advanced_with_basic_guider_and_split_sigmas(micro, steps):
    """SamplerCustomAdvanced (BasicGuider, custom sigmas) reaches the output cache through the same
    PREDICT_NOISE hook; a second pass on the tail of the sigmas is its own run with its own budget."""
    from comfy_extras import nodes_custom_sampler as cs

    model = apply(micro["flux"], preset="balanced", cache_mode="preset")
    guider = cs.BasicGuider.execute(model, conditioning(1))[0]
    sampler = cs.KSamplerSelect.execute("euler")[0]
    sigmas = cs.BasicScheduler.execute(model, "simple", steps, 1.0)[0]
    noise = cs.RandomNoise.execute(5)[0]
    first, second = sigmas[: steps // 2 + 1], sigmas[steps // 2:]
    latent = {"samples": torch.zeros(LATENTS["flux"])}
    out = cs.SamplerCustomAdvanced.execute(noise, guider, sampler, first, latent)[0]
    run_a = recent_runs()[-1]
    out = cs.SamplerCustomAdvanced.execute(cs.DisableNoise.execute()[0], guider, sampler, second, out)[0]
    run_b = recent_runs()[-1]
    assert torch.isfinite(out["samples"]).all()
    for run, n in ((run_a, steps // 2), (run_b, steps - steps // 2)):
        assert run["calls"] == n and run["total_steps"] == n
        if n <= FEW_STEPS:  # a pass this short computes every step (and says so)
            assert run["computed_calls"] == n and "too few to cache" in run["schedule_note"]
        else:
            assert abs(run["computed_calls"] - n / 5) <= 1.0
