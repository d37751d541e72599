"""Progressive Resolution (Fresco) inside the real ComfyUI: three families, cfg 1 and 3, batch 2,
full-resolution output shape, determinism, fallbacks, RoPE positions, interrupted runs."""
from __future__ import annotations

import sys

import pytest
import torch
from helpers import conditioning, sample

FAMILIES = {  # 32 x 32 latents: divisible by factor 2 x patch 2
    "flux": (2, 16, 32, 32),
    "qwen_image": (2, 16, 1, 32, 32),
    "hunyuan_video": (2, 16, 2, 32, 32),
}


def _node():
    import nodes

    return nodes.NODE_CLASS_MAPPINGS["DiTAccelProgressiveResolution"]


def _hooks():
    found = [m for n, m in list(sys.modules.items()) if n.endswith("nodes.resolution_hooks") and "dit_accel" in n]
    assert len(found) == 1, found
    return found[0]


def _apply(model, **kw):
    """The node on `model`; the anchor correction (one extra full call) is off unless a test asks for it,
    so the stage mechanics below can be checked call by call."""
    kw.setdefault("anchor", 0.0)
    return _node().execute(model, **kw)[0]


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_staged_run_has_full_shape_is_finite_and_deterministic(micro, family, cfg):
    model = _apply(micro[family], factor=2, low_res_share=0.5)
    latent = torch.zeros(FAMILIES[family])
    pos, neg = conditioning(1, batch=1), conditioning(2, batch=1)
    out = sample(model, latent, pos, neg, cfg=cfg, steps=6)
    run = _hooks().RECENT_RUNS[-1]
    assert out.shape == latent.shape and torch.isfinite(out).all()
    assert run["switch_step"] == 3 and run["calls_by_factor"] == {2: 3, 1: 3}
    # 3 of 6 steps at a quarter of the image tokens (text tokens do not shrink)
    assert run["token_ratio"] > 1.3 and run["flops_ratio"] >= run["token_ratio"]
    again = sample(model, latent, pos, neg, cfg=cfg, steps=6)
    assert torch.equal(out, again)
    plain = sample(micro[family], latent, pos, neg, cfg=cfg, steps=6)
    assert not torch.equal(out, plain)  # the low-res stage really ran


def test_unpatched_model_is_untouched(micro):
    model = micro["flux"]
    _apply(model, factor=2, low_res_share=0.5)
    assert "dit_accel_resolution" not in model.model_options.get("transformer_options", {})
    assert not model.wrappers or "dit_accel_resolution" not in str(model.wrappers)


@pytest.mark.parametrize("shape", [(1, 16, 30, 32), (1, 16, 32, 18)])
def test_indivisible_size_runs_unchanged_with_a_warning(micro, shape, caplog):
    hooks = _hooks()
    hooks._WARNED.clear()
    latent = torch.zeros(shape)
    pos, neg = conditioning(1), conditioning(2)
    with caplog.at_level("WARNING", logger="DiTAccel"):
        out = sample(_apply(micro["flux"], factor=2, low_res_share=0.5), latent, pos, neg, steps=4)
    assert torch.equal(out, sample(micro["flux"], latent, pos, neg, steps=4))
    assert "not divisible by factor 2" in caplog.text and "multiples of 32 px" in caplog.text
    assert "fallback" in hooks.RECENT_RUNS[-1]


def test_spatial_conditioning_runs_unchanged(micro, caplog):
    hooks = _hooks()
    hooks._WARNED.clear()
    latent = torch.zeros(1, 16, 32, 32)
    pos = conditioning(1)
    pos[0][1]["mask"] = torch.ones(1, 32, 32)
    with caplog.at_level("WARNING", logger="DiTAccel"):
        out = sample(_apply(micro["flux"], low_res_share=0.5), latent, pos, conditioning(2), steps=4)
    assert torch.equal(out, sample(micro["flux"], latent, pos, conditioning(2), steps=4))
    assert "carries mask" in caplog.text


def test_switch_state_is_the_renoised_upsampled_estimate(micro):
    """The coarse stage starts from the pooled-and-rescaled noise field; the full-resolution stage
    starts from s * eps + (1 - s) * up(x0_hat) with the SAME field and the coarse stage's last
    denoised estimate (captured at the guider's predict_noise)."""
    import comfy.patcher_extension
    import comfy.sample
    import nodes

    from accel_core.resolution import downsample_noise, upsample

    seen = []

    def capture(executor, x, timestep, model_options, seed):
        out = executor(x, timestep, model_options, seed)
        seen.append((float(timestep.flatten()[0]), x.clone(), out.clone()))
        return out

    model = _apply(micro["flux"], factor=2, low_res_share=0.5, upsample="nearest", coarse_sigma="schedule",
                   transition="renoise").clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "test_capture", capture)
    latent = torch.zeros(1, 16, 32, 32)
    eps = comfy.sample.prepare_noise(latent, 5)
    nodes.KSampler().sample(model, 5, 4, 1.0, "euler", "simple", conditioning(1), conditioning(2), {"samples": latent})
    coarse = [c for c in seen if c[1].shape[-1] == 16]
    full = [c for c in seen if c[1].shape[-1] == 32]
    assert len(coarse) == 2 and len(full) == 2
    s0, x0_in, _ = coarse[0]
    assert torch.allclose(x0_in, s0 * downsample_noise(eps, 2), atol=1e-6)
    s, x_switch, _ = full[0]
    assert s < coarse[-1][0]
    expect = s * eps + (1 - s) * upsample(coarse[-1][2], 2, "nearest")
    assert torch.allclose(x_switch, expect, atol=1e-5)


def test_flux_coarse_positions_are_the_means_of_the_full_grid(micro):
    """rope_options made by the hook put each coarse token at the mean position of the f x f fine
    tokens it covers (checked through Flux.process_img itself)."""
    hooks = _hooks()
    dm = micro["flux"].model.diffusion_model
    for factor in (2, 4):
        fine = torch.zeros(1, 16, 32, 48)
        _, ids_full = dm.process_img(fine)
        coarse = torch.zeros(1, 16, 32 // factor, 48 // factor)
        _, ids_c = dm.process_img(coarse, transformer_options={"rope_options": hooks._rope_options(None, factor)})
        grid = ids_full[0, :, 1:].reshape(16, 24, 2).permute(2, 0, 1)[None]
        expect = torch.nn.functional.avg_pool2d(grid, factor)[0].permute(1, 2, 0).reshape(-1, 2)
        assert torch.allclose(ids_c[0, :, 1:], expect), factor
        _, ids_native = dm.process_img(coarse)
        assert not torch.allclose(ids_native[0, :, 1:], expect)


def test_interrupted_run_leaves_nothing_behind(micro):
    import comfy.model_management

    hooks = _hooks()
    model = _apply(micro["flux"], low_res_share=0.5)
    options_before = repr(sorted(model.model_options.get("transformer_options", {})))
    latent = torch.zeros(1, 16, 32, 32)
    calls = {"n": 0}

    def stop(executor, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # inside the full-resolution stage
            comfy.model_management.interrupt_current_processing(True)
            comfy.model_management.throw_exception_if_processing_interrupted()
        return executor(*args, **kwargs)

    import comfy.patcher_extension

    stopping = model.clone()
    stopping.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_stop", stop)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        sample(stopping, latent, conditioning(1), conditioning(2), steps=6)
    comfy.model_management.interrupt_current_processing(False)
    assert hooks.RECENT_RUNS[-1]["interrupted"] is True
    assert repr(sorted(model.model_options.get("transformer_options", {}))) == options_before
    assert "rope_options" not in stopping.model_options.get("transformer_options", {})
    # The next run is exactly a fresh run.
    out = sample(model, latent, conditioning(1), conditioning(2), steps=6)
    fresh = sample(_apply(micro["flux"], low_res_share=0.5), latent, conditioning(1), conditioning(2), steps=6)
    assert torch.equal(out, fresh)


def test_adaptive_promotion_extends_the_sketch_until_tokens_settle(micro):
    hooks = _hooks()
    latent = torch.zeros(1, 16, 32, 32)
    strict = _apply(micro["flux"], low_res_share=0.25, max_low_res_share=0.75, converge_threshold=1e-6)
    sample(strict, latent, conditioning(1), conditioning(2), steps=8)
    run = hooks.RECENT_RUNS[-1]
    assert run["switch_step"] == 6 and run["calls_by_factor"] == {2: 6, 1: 2}  # never settles: the max
    loose = _apply(micro["flux"], low_res_share=0.25, max_low_res_share=0.75, converge_threshold=10.0)
    sample(loose, latent, conditioning(1), conditioning(2), steps=8)
    run = hooks.RECENT_RUNS[-1]
    assert run["switch_step"] == 2 and run["promotion"] == [1.0]  # settled at once: the min


def test_adaptive_at_fixed_share_matches_the_fixed_switch(micro):
    """Chunking the low-res stage one step per sampler call (adaptive mode) continues euler exactly."""
    latent = torch.zeros(1, 16, 32, 32)
    fixed = sample(_apply(micro["flux"], low_res_share=0.5), latent, conditioning(1), conditioning(2), steps=8)
    chunked = sample(_apply(micro["flux"], low_res_share=0.25, max_low_res_share=0.5, converge_threshold=1e-6),
                     latent, conditioning(1), conditioning(2), steps=8)
    assert _hooks().RECENT_RUNS[-1]["switch_step"] == 4
    assert torch.allclose(fixed, chunked, atol=1e-4, rtol=1e-4)


def test_full_res_positions_reach_flux_and_change_the_result(micro):
    latent = torch.zeros(1, 16, 32, 32)
    pos, neg = conditioning(1), conditioning(2)
    coarse = sample(_apply(micro["flux"], low_res_share=0.5, positions="coarse"), latent, pos, neg, steps=4)
    assert _hooks().RECENT_RUNS[-1]["positions"] == "coarse"
    full = sample(_apply(micro["flux"], low_res_share=0.5, positions="full_res"), latent, pos, neg, steps=4)
    assert _hooks().RECENT_RUNS[-1]["positions"] == "full_res"
    assert not torch.equal(coarse, full)
    sample(_apply(micro["qwen_image"], low_res_share=0.5, positions="full_res"), torch.zeros(1, 16, 1, 32, 32), pos,
           neg, steps=4)
    assert _hooks().RECENT_RUNS[-1]["positions"] == "coarse"  # the host has no rope_options


def _forecast(model, cache_mode="output"):
    from helpers import apply

    return apply(model, preset="balanced", cache_mode=cache_mode)


@pytest.mark.parametrize("order", ["resolution_then_cache", "cache_then_resolution"])
def test_composes_with_forecast_cache_in_either_order(micro, order, caplog):
    """Forecast Cache on a progressive-resolution model (either node first): full-shape finite output,
    the cache restarts at the stage change without a warning, its summary shows the stages, and the
    joint work ratio counts the steps the cache skipped (more than either method alone)."""
    from helpers import recent_runs

    hooks = _hooks()
    latent = torch.zeros(2, 16, 32, 32)
    pos, neg = conditioning(1, batch=1), conditioning(2, batch=1)
    base = micro["flux"]
    if order == "resolution_then_cache":
        model = _forecast(_apply(base, factor=2, low_res_share=0.5))
    else:
        model = _apply(_forecast(base), factor=2, low_res_share=0.5)
    with caplog.at_level("INFO", logger="DiTAccel"):
        out = sample(model, latent, pos, neg, cfg=3.0, steps=20)
    assert out.shape == latent.shape and torch.isfinite(out).all()
    assert "input changed within a run" not in caplog.text
    resolution = hooks.RECENT_RUNS[-1]
    cache = recent_runs()[-1]
    assert resolution["plan"] == [[2, 0, 10], [1, 10, 20]]
    assert cache["stages"]["plan"] == resolution["plan"]
    assert "resolution stages 1/2 steps 0-9, full 10-19" in caplog.text
    sample(_apply(base, factor=2, low_res_share=0.5), latent, pos, neg, cfg=3.0, steps=20)
    alone = hooks.RECENT_RUNS[-1]["token_ratio"]
    cache_alone = cache["evaluation_speedup"]
    assert resolution["steps_without_calls"] > 0  # steps the output cache forecast never reached the model
    assert resolution["token_ratio"] > alone * 2.5 and resolution["token_ratio"] > cache_alone
    assert resolution["flops_ratio"] >= resolution["token_ratio"]


def test_hidden_state_cache_counts_only_the_blocks_it_ran(micro):
    """With a block-level cache the model is still called on forecast steps: those calls count as
    forecast (no block work), so the joint ratio exceeds the resolution-only ratio."""
    hooks = _hooks()
    latent = torch.zeros(1, 16, 32, 32)
    sample(_forecast(_apply(micro["flux"], low_res_share=0.5), "final_hidden"), latent, conditioning(1),
           conditioning(2), steps=20)
    joint = hooks.RECENT_RUNS[-1]
    assert joint["cached_calls"] > 0 and joint["steps_without_calls"] == 0
    sample(_apply(micro["flux"], low_res_share=0.5), latent, conditioning(1), conditioning(2), steps=20)
    assert joint["token_ratio"] > hooks.RECENT_RUNS[-1]["token_ratio"] * 1.3


def test_two_coarse_stages_run_four_then_two_then_full(micro, caplog):
    from helpers import recent_runs

    hooks = _hooks()
    latent = torch.zeros(1, 16, 32, 32)
    model = _forecast(_apply(micro["flux"], factor=2, low_res_share=0.6, coarse_stages=2))
    out = sample(model, latent, conditioning(1), conditioning(2), steps=20)
    run = hooks.RECENT_RUNS[-1]
    assert out.shape == latent.shape and torch.isfinite(out).all()
    assert run["plan"] == [[4, 0, 6], [2, 6, 12], [1, 12, 20]]
    assert run["switch_step"] == 12 and set(run["calls_by_factor"]) <= {4, 2, 1}
    # The stages are 6-8 steps long, but the few-step rule judges the whole 20-step schedule.
    assert recent_runs()[-1]["schedule_note"] == ""
    sample(_apply(micro["flux"], factor=2, low_res_share=0.6, coarse_stages=2), latent, conditioning(1),
           conditioning(2), steps=20)
    three = hooks.RECENT_RUNS[-1]["token_ratio"]
    sample(_apply(micro["flux"], factor=2, low_res_share=0.6), latent, conditioning(1), conditioning(2), steps=20)
    assert three > hooks.RECENT_RUNS[-1]["token_ratio"]  # the 1/4 stage saves more than a 1/2 one


def test_two_coarse_stages_need_sizes_divisible_by_factor_squared(micro, caplog):
    hooks = _hooks()
    hooks._WARNED.clear()
    latent = torch.zeros(1, 16, 32, 36)  # 36 / (2 x 2) ok for one stage, not for 4 x 2
    with caplog.at_level("WARNING", logger="DiTAccel"):
        out = sample(_apply(micro["flux"], low_res_share=0.5, coarse_stages=2), latent, conditioning(1),
                     conditioning(2), steps=4)
    assert torch.equal(out, sample(micro["flux"], latent, conditioning(1), conditioning(2), steps=4))
    assert "not divisible by factor 4" in caplog.text and "multiples of 64 px" in caplog.text


def test_pooled_coarse_sigma_runs_the_sketch_at_the_pooled_noise_level(micro):
    """coarse_sigma=pooled: the low-res steps see sigma s / (s + f (1 - s)) and start from the pooled
    initial state rescaled to unit noise; the full-resolution steps keep the schedule's sigmas."""
    import comfy.patcher_extension
    import comfy.sample
    import nodes

    from accel_core.resolution import downsample_noise, pooled_sigma

    seen = []

    def capture(executor, x, timestep, model_options, seed):
        seen.append((float(timestep.flatten()[0]), x.shape[-1], x.clone()))
        return executor(x, timestep, model_options, seed)

    model = _apply(micro["flux"], factor=2, low_res_share=0.5, coarse_sigma="pooled").clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "test_capture", capture)
    latent = torch.zeros(1, 16, 32, 32)
    eps = comfy.sample.prepare_noise(latent, 5)
    nodes.KSampler().sample(model, 5, 6, 1.0, "euler", "simple", conditioning(1), conditioning(2), {"samples": latent})
    plain = []  # the schedule's sigmas, from the same run without the node

    def capture_plain(executor, x, timestep, model_options, seed):
        plain.append(float(timestep.flatten()[0]))
        return executor(x, timestep, model_options, seed)

    reference = micro["flux"].clone()
    reference.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "test_capture", capture_plain)
    nodes.KSampler().sample(reference, 5, 6, 1.0, "euler", "simple", conditioning(1), conditioning(2),
                            {"samples": latent})
    assert len(seen) == len(plain) == 6
    for (sigma, width, _), s in zip(seen, plain):
        expect = pooled_sigma(s, 2) if width == 16 else s
        assert sigma == pytest.approx(expect, rel=1e-4), (sigma, s, width)
    assert [w for _, w, _ in seen] == [16, 16, 16, 32, 32, 32]
    # The schedule starts at sigma 1, where the pooled state rescaled to unit noise is the pooled field.
    assert plain[0] == pytest.approx(1.0) and torch.allclose(seen[0][2], downsample_noise(eps, 2), atol=1e-5)


def _model_input_shapes(model):
    """Clone of `model` that records the latent shape of every sampler-level model call."""
    import comfy.patcher_extension

    shapes = []

    def capture(executor, x, timestep, model_options, seed):
        shapes.append(tuple(x.shape))
        return executor(x, timestep, model_options, seed)

    model = model.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "test_shapes", capture)
    return model, shapes


@pytest.mark.parametrize("reduction, coarse_shape", [("temporal", (1, 16, 2, 32, 32)),
                                                     ("joint", (1, 16, 2, 16, 16)),
                                                     ("spatial", (1, 16, 4, 16, 16))])
def test_video_reductions_halve_frames_space_or_both(micro, reduction, coarse_shape):
    hooks = _hooks()
    latent = torch.zeros(1, 16, 4, 32, 32)
    model, shapes = _model_input_shapes(_apply(micro["hunyuan_video"], low_res_share=0.5, video_reduction=reduction))
    out = sample(model, latent, conditioning(1), conditioning(2), steps=6)
    assert out.shape == latent.shape and torch.isfinite(out).all()
    assert shapes == [coarse_shape] * 3 + [tuple(latent.shape)] * 3
    run = hooks.RECENT_RUNS[-1]
    assert run["token_ratio"] > 1.0 and run["flops_ratio"] >= run["token_ratio"]
    assert run["plan"][0] == ([2, 0, 3] if reduction != "temporal" else [1, 0, 3]) + \
        ([] if reduction == "spatial" else [2])


def test_video_reduction_work_grows_with_the_reduction(micro):
    hooks = _hooks()
    latent = torch.zeros(1, 16, 4, 32, 32)
    ratios = {}
    for reduction in ("temporal", "spatial", "joint"):
        sample(_apply(micro["hunyuan_video"], low_res_share=0.5, video_reduction=reduction), latent, conditioning(1),
               conditioning(2), steps=6)
        ratios[reduction] = hooks.RECENT_RUNS[-1]["token_ratio"]
    assert ratios["temporal"] < ratios["spatial"] < ratios["joint"]  # 1/2, 1/4 and 1/8 of the image tokens


def test_auto_video_reduction_drafts_one_step_then_chooses(micro):
    hooks = _hooks()
    latent = torch.zeros(1, 16, 4, 32, 32)
    model, shapes = _model_input_shapes(_apply(micro["hunyuan_video"], low_res_share=0.5, video_reduction="auto"))
    sample(model, latent, conditioning(1), conditioning(2), steps=8)
    run = hooks.RECENT_RUNS[-1]
    choice = run["video_choice"]
    assert choice["reduction"] in ("spatial", "temporal", "joint") and choice["motion"] >= 0 and choice["detail"] >= 0
    chosen = {"spatial": (1, 16, 4, 16, 16), "temporal": (1, 16, 2, 32, 32), "joint": (1, 16, 2, 16, 16)}
    assert shapes[0] == (1, 16, 2, 16, 16)  # the draft step at the joint scale
    assert shapes[1:4] == [chosen[choice["reduction"]]] * 3 and shapes[4:] == [tuple(latent.shape)] * 4


def test_video_reduction_on_images_reduces_space_and_odd_frames_warn(micro, caplog):
    hooks = _hooks()
    hooks._WARNED.clear()
    latent = torch.zeros(1, 16, 1, 32, 32)  # Qwen-Image: one latent frame, silently space only
    with caplog.at_level("WARNING", logger="DiTAccel"):
        out = sample(_apply(micro["qwen_image"], low_res_share=0.5, video_reduction="temporal"), latent,
                     conditioning(1), conditioning(2), steps=4)
    assert torch.isfinite(out).all() and "latent frames" not in caplog.text
    assert hooks.RECENT_RUNS[-1]["plan"] == [[2, 0, 2], [1, 2, 4]]
    with caplog.at_level("WARNING", logger="DiTAccel"):
        sample(_apply(micro["hunyuan_video"], low_res_share=0.5, video_reduction="temporal"),
               torch.zeros(1, 16, 3, 32, 32), conditioning(1), conditioning(2), steps=4)
    assert "even number of latent frames, got (1, 16, 3, 32, 32)" in caplog.text
    assert hooks.RECENT_RUNS[-1]["plan"] == [[2, 0, 2], [1, 2, 4]]


def test_carry_transition_hands_over_the_sketch_state(micro):
    """transition=carry: the first full-resolution model input is up(coarse state) + sigma x the
    field's detail (the coarse state recovered from the last coarse model input and output by one
    euler step), not a re-noised estimate."""
    import comfy.patcher_extension
    import comfy.sample
    import nodes

    from accel_core.resolution import carry_state, pooled_sigma

    seen = []

    def capture(executor, x, timestep, model_options, seed):
        out = executor(x, timestep, model_options, seed)
        seen.append((float(timestep.flatten()[0]), x.clone(), out.clone()))
        return out

    model = _apply(micro["flux"], factor=2, low_res_share=0.5, coarse_sigma="pooled", transition="carry").clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "test_capture", capture)
    latent = torch.zeros(1, 16, 32, 32)
    eps = comfy.sample.prepare_noise(latent, 5)
    out = nodes.KSampler().sample(model, 5, 4, 1.0, "euler", "simple", conditioning(1), conditioning(2),
                                  {"samples": latent})[0]["samples"]
    assert torch.isfinite(out).all()
    coarse = [c for c in seen if c[1].shape[-1] == 16]
    full = [c for c in seen if c[1].shape[-1] == 32]
    assert len(coarse) == 2 and len(full) == 2
    s_full = full[0][0]
    s_coarse_end = pooled_sigma(s_full, 2)
    sigma_last, x_last, denoised_last = coarse[-1]
    # euler to the coarse stage's end: x + (s_end - s) * (x - denoised) / s
    state = x_last + (s_coarse_end - sigma_last) * (x_last - denoised_last) / sigma_last
    expect = carry_state(state, eps, s_full, (2, 1), (1, 1))
    assert torch.allclose(full[0][1], expect, atol=1e-4)
    renoised = s_full * eps + (1 - s_full) * torch.nn.functional.interpolate(denoised_last, scale_factor=2)
    assert not torch.allclose(full[0][1], renoised, atol=1e-3)


def test_anchor_measures_one_full_call_and_corrects_the_first_sketch(micro):
    """anchor > 0: one extra full-resolution call at step 0 (output discarded), then every estimate of the
    first low-resolution stage gets anchor x (pooled full estimate - the sketch's first estimate); the
    first corrected estimate is exactly the blend; the full-resolution stage is not corrected; the extra
    call counts as work but not in the uncached baseline."""
    import comfy.patcher_extension
    import nodes

    from accel_core.resolution import downsample_latent

    hooks = _hooks()
    seen = []

    def capture(executor, x, timestep, model_options, seed):  # inside the anchor wrapper: raw estimates
        out = executor(x, timestep, model_options, seed)
        seen.append((x.shape[-1], out.clone()))
        return out

    latent = torch.zeros(1, 16, 32, 32)
    base = _apply(micro["flux"], factor=2, low_res_share=0.5, anchor=0.7)
    model = base.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "test_capture", capture)
    finals = []

    def after(i, denoised, x, total):
        finals.append(denoised.clone())

    import comfy.sample
    import comfy.samplers

    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 6)
    eps = comfy.sample.prepare_noise(latent, 5)
    out = comfy.sample.sample_custom(model, eps, 1.0, comfy.samplers.sampler_object("euler"), sigmas,
                                     conditioning(1), conditioning(2), latent, callback=after, disable_pbar=True,
                                     seed=5)
    assert torch.isfinite(out).all()
    assert [w for w, _ in seen] == [32, 16, 16, 16, 32, 32, 32]  # anchor call, sketch, full
    target = downsample_latent(seen[0][1], 2)
    first_raw = seen[1][1]
    # the sampler saw the corrected estimate: raw + 0.7 (target - raw) (previews come up-sampled: pool back)
    sketch = [downsample_latent(f, 2) for f in finals[:3]]
    assert torch.allclose(sketch[0], first_raw + 0.7 * (target - first_raw), atol=1e-5)
    correction = sketch[0] - first_raw
    assert torch.allclose(sketch[1], seen[2][1] + correction, atol=1e-5)
    assert torch.allclose(finals[3], seen[4][1], atol=1e-6)  # full resolution: uncorrected
    run = hooks.RECENT_RUNS[-1]
    assert run["anchor"] == 0.7 and run["steps_without_calls"] == 0
    nodes.KSampler().sample(_apply(micro["flux"], factor=2, low_res_share=0.5), 5, 6, 1.0, "euler", "simple",
                            conditioning(1), conditioning(2), {"samples": latent})
    without = hooks.RECENT_RUNS[-1]["token_ratio"]
    assert 1.0 < run["token_ratio"] < without  # the extra full call costs work; the baseline is unchanged


def test_anchor_off_and_bad_values(micro):
    from accel_core.errors import ConfigError

    with pytest.raises(ConfigError, match="anchor must be in"):
        _apply(micro["flux"], low_res_share=0.5, anchor=1.5)
    latent = torch.zeros(1, 16, 32, 32)
    sample(_apply(micro["flux"], low_res_share=0.5, anchor=0.0), latent, conditioning(1), conditioning(2), steps=4)
    assert "anchor" not in _hooks().RECENT_RUNS[-1]


@pytest.mark.parametrize("order", ["resolution_then_cache", "cache_then_resolution"])
def test_anchor_composes_with_forecast_cache_without_warnings(micro, order, caplog):
    latent = torch.zeros(1, 16, 32, 32)
    base = micro["flux"]
    if order == "resolution_then_cache":
        model = _forecast(_apply(base, factor=2, low_res_share=0.5, anchor=0.7))
    else:
        model = _apply(_forecast(base), factor=2, low_res_share=0.5, anchor=0.7)
    with caplog.at_level("WARNING"):
        out = sample(model, latent, conditioning(1), conditioning(2), cfg=3.0, steps=20)
    assert torch.isfinite(out).all() and out.shape == latent.shape
    assert "input changed within a run" not in caplog.text
    run = _hooks().RECENT_RUNS[-1]
    assert run["anchor"] == 0.7 and run["token_ratio"] > 2.0


@pytest.mark.parametrize("cache_mode", ["output", "final_hidden"])
@pytest.mark.parametrize("order", ["resolution_then_cache", "cache_then_resolution"])
def test_cache_runs_say_which_resolution_step_each_call_belongs_to(micro, order, cache_mode):
    """The panel's stage band (web/js/dit_accel_timeline.js): every cache call carries the step of the resolution
    schedule it belonged to (-1: the anchor call). A cache around all stages gets one list over the whole
    schedule; a cache inside each stage one per stage, continuing where the previous stopped. The cache's own
    call_steps cannot place the calls (a cache inside counts each stage from 0). Runs without Progressive
    Resolution keep their summary keys."""
    from helpers import recent_runs

    latent = torch.zeros(1, 16, 32, 32)
    base = micro["flux"]
    if order == "resolution_then_cache":
        model = _forecast(_apply(base, factor=2, low_res_share=0.5, anchor=0.7), cache_mode)
    else:
        model = _apply(_forecast(base, cache_mode), factor=2, low_res_share=0.5, anchor=0.7)
    recent_runs().clear()
    sample(model, latent, conditioning(1), conditioning(2), steps=20)
    runs = list(recent_runs())
    assert _hooks().RECENT_RUNS[-1]["plan"] == [[2, 0, 10], [1, 10, 20]]
    for run in runs:
        assert len(run["resolution_steps"]) == len(run["timeline"]) == run["calls"]
    if order == "cache_then_resolution":
        assert len(runs) == 1
        assert runs[0]["resolution_steps"] == [-1] + list(range(20))
    else:
        assert [r["resolution_steps"] for r in runs] == [[-1], list(range(10)), list(range(10, 20))]
        assert runs[2]["call_steps"] == list(range(10))  # the cache's own steps start again in each stage
    sample(_forecast(base, cache_mode), latent, conditioning(1), conditioning(2), steps=20)
    assert "resolution_steps" not in recent_runs()[-1]
