"""Host-free Fresco math: noise field, re-noise, stage plan, promotion criterion, work accounting."""
from __future__ import annotations

import pytest
import torch

from accel_core.errors import ConfigError
from accel_core.resolution import (PromotionTracker, ResolutionConfig, converged_share, downsample_latent,
                                   downsample_noise, plan_stages, pooled_sigma, renoise, spatial_dims_ok, stage_work,
                                   token_change, upsample)
from accel_core.resolution.plan import plan_for, steps_for_share
from accel_core.resolution.work import flux_size_work


@pytest.mark.parametrize("factor", [2, 4])
def test_downsampled_noise_keeps_unit_variance(factor):
    eps = torch.randn(4, 16, 128, 128, generator=torch.Generator().manual_seed(0))
    coarse = downsample_noise(eps, factor)
    assert coarse.shape == (4, 16, 128 // factor, 128 // factor)
    assert abs(float(coarse.var()) - 1.0) < 0.03 and abs(float(coarse.mean())) < 0.02
    # Plain average pooling (no rescale) would have variance 1 / f^2: the factor is what fixes it.
    assert abs(float(downsample_latent(eps, factor).var()) - 1 / factor ** 2) < 0.03 / factor


def test_coarse_noise_is_exactly_the_pooled_fine_field():
    eps = torch.randn(2, 16, 3, 8, 12, generator=torch.Generator().manual_seed(1))  # video: frames kept
    coarse = downsample_noise(eps, 2)
    assert coarse.shape == (2, 16, 3, 4, 6)
    block = eps[1, 5, 2, 2:4, 6:8]
    assert torch.allclose(coarse[1, 5, 2, 1, 3], 2 * block.mean())


def test_nearest_upsample_keeps_block_means_and_bilinear_is_smoother():
    x = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(2))
    up = upsample(x, 2, "nearest")
    assert up.shape == (1, 4, 12, 12) and torch.equal(downsample_latent(up, 2), x)
    smooth = upsample(x, 2, "bilinear")
    assert smooth.diff(dim=-1).abs().mean() < up.diff(dim=-1).abs().mean()
    with pytest.raises(ConfigError, match="upsample mode"):
        upsample(x, 2, "cubic")


def test_renoise_is_the_flow_matching_interpolation_with_the_same_field():
    eps = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    x0 = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(4))
    x = renoise(upsample(x0, 2), eps, 0.3)
    assert torch.allclose(x, 0.3 * eps + 0.7 * upsample(x0, 2))
    assert torch.equal(renoise(upsample(x0, 2), eps, 1.0), eps)  # sigma 1: pure field
    with pytest.raises(ConfigError, match="differ in shape"):
        renoise(x0, eps, 0.5)


def test_divisibility_and_bad_factor():
    assert spatial_dims_ok((1, 16, 32, 48), 2, 2) and not spatial_dims_ok((1, 16, 30, 48), 2, 2)
    with pytest.raises(ConfigError, match="not divisible"):
        downsample_noise(torch.zeros(1, 1, 6, 5), 2)


@pytest.mark.parametrize("factor", [2, 4])
def test_pooled_sigma_is_the_noise_level_of_the_pooled_state(factor):
    """avg_pool of a flow state s*eps + (1-s)*x0, rescaled to unit noise, is a flow state at
    pooled_sigma(s, f): its noise part has unit variance and the weights sum to one."""
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(4, 16, 64, 64, generator=g)
    x0 = torch.randn(4, 16, 64, 64, generator=g).clamp(-1, 1)
    for s in (0.2, 0.5, 0.9):
        sp = pooled_sigma(s, factor)
        a = 1.0 / (s / factor + 1 - s)
        pooled = downsample_latent(s * eps + (1 - s) * x0, factor) * a
        noise_part = (pooled - (1 - sp) * downsample_latent(x0, factor)) / sp
        assert torch.allclose(noise_part, downsample_noise(eps, factor), atol=1e-4)  # the unit-variance field
        assert abs(noise_part.std().item() - 1.0) < 0.03
        assert sp < s  # averaging pixels averages noise away: the coarse grid is less noisy
        # the inverse of SD3's time shift with shift f
        assert factor * sp / (1 + (factor - 1) * sp) == pytest.approx(s)
    assert pooled_sigma(1.0, factor) == 1.0 and pooled_sigma(0.0, factor) == 0.0 and pooled_sigma(0.3, 1) == 0.3


def test_stage_plan_from_the_schedule():
    sigmas = torch.linspace(1, 0, 11)
    plan = plan_stages(sigmas, (2,), (0.6,))
    assert [(s.factor, s.start, s.end) for s in plan.stages] == [(2, 0, 6), (1, 6, 10)]
    assert plan.stages[1].sigma_start == pytest.approx(0.4) and plan.switches == (6,)
    three = plan_stages(sigmas, (4, 2), (0.3, 0.4))
    assert [(s.factor, s.steps) for s in three.stages] == [(4, 3), (2, 4), (1, 3)]
    assert three.factor_at(0) == 4 and three.factor_at(5) == 2 and three.factor_at(9) == 1
    # The full-resolution stage always keeps at least one step; tiny shares still get one low step.
    assert steps_for_share(10, 0.99) == 9 and steps_for_share(10, 0.01) == 1 and steps_for_share(1, 0.5) == 0
    assert plan_for(ResolutionConfig(low_res_share=0.5), sigmas, low_res_steps=8).switches == (8,)
    # Two coarse stages: factor^2 then factor, the low-res share split in halves, coarsest first.
    two = plan_for(ResolutionConfig(factor=2, low_res_share=0.6, coarse_stages=2), sigmas)
    assert [(s.factor, s.start, s.end) for s in two.stages] == [(4, 0, 3), (2, 3, 6), (1, 6, 10)]
    assert ResolutionConfig(factor=2, coarse_stages=2).coarsest == 4 and ResolutionConfig(factor=3).coarsest == 3
    with pytest.raises(ConfigError, match="descending"):
        plan_stages(sigmas, (2, 4), (0.3, 0.3))
    with pytest.raises(ConfigError, match="sum below 1"):
        plan_stages(sigmas, (2,), (1.0,))


@pytest.mark.parametrize("kw, match", [({"factor": 1}, "factor"), ({"low_res_share": 1.0}, "low_res_share"),
                                       ({"low_res_share": 0.5, "max_low_res_share": 0.4}, "max_low_res_share"),
                                       ({"upsample": "area"}, "upsample"), ({"positions": "x"}, "positions"),
                                       ({"coarse_stages": 3}, "coarse_stages"),
                                       ({"coarse_stages": 2, "low_res_share": 0.2, "max_low_res_share": 0.6},
                                        "coarse_stages = 1")])
def test_config_errors_name_the_input(kw, match):
    with pytest.raises(ConfigError, match=match):
        ResolutionConfig(**kw)


def test_token_change_marks_moving_regions_on_constructed_data():
    prev = torch.ones(2, 16, 8, 8)
    cur = prev.clone()
    cur[0, :, 0:2, 0:2] += 1.0  # one token (patch 2) of the first image moves
    change = token_change(prev, cur, dsigma=0.1, patch=2)
    assert change.shape == (2, 4, 4)
    assert change[0, 0, 0] == pytest.approx(10.0) and float(change.flatten()[1:].abs().max()) == 0.0
    assert converged_share(change, 1.0) == pytest.approx(31 / 32)
    video = token_change(torch.ones(1, 16, 3, 4, 4), torch.ones(1, 16, 3, 4, 4), 0.1)
    assert video.shape == (1, 3, 2, 2)


def test_promotion_tracker_settles_when_the_share_is_reached():
    tracker = PromotionTracker(threshold=1.0, share=0.9, patch=2)
    base = torch.ones(1, 16, 8, 8)
    assert tracker.observe(base, 0.9) is None and not tracker.settled()
    moving = base.clone()
    moving[..., :4, :] += 1.0  # half the tokens move
    assert tracker.observe(moving, 0.8) == pytest.approx(0.5) and not tracker.settled()
    assert tracker.observe(moving.clone(), 0.7) == pytest.approx(1.0) and tracker.settled()
    tracker.close()
    assert tracker.prev is None


def test_work_ratio_counts_quadratic_attention():
    # Image tokens only: a 2x-down stage is 1/4 of the token-blocks and 1/16 of the attention.
    half = stage_work([(2, 1)], image_tokens=4096, txt_tokens=0, hidden=3072)
    assert half.token_ratio == pytest.approx(4.0) and half.attention_ratio == pytest.approx(16.0)
    assert 4.0 < half.flops_ratio < 16.0
    plan = stage_work([(2, 40), (1, 10)], image_tokens=4096, txt_tokens=0, hidden=3072)
    assert plan.token_ratio == pytest.approx(50 / (40 / 4 + 10))
    # Text tokens do not shrink: they cap the gain.
    assert flux_size_work([(2, 40), (1, 10)]).token_ratio < plan.token_ratio


def test_temporal_pooling_keeps_unit_variance_and_frame_means():
    """Video reduction: pooling 2 frames and 2x2 pixels (n = 8 values) rescaled by sqrt(8) is unit
    variance and exactly the pooled field; nearest up-sampling in time keeps each frame pair's mean."""
    g = torch.Generator().manual_seed(1)
    eps = torch.randn(2, 16, 4, 32, 32, generator=g)
    coarse = downsample_noise(eps, 2, frames=2)
    assert coarse.shape == (2, 16, 2, 16, 16)
    assert abs(coarse.std().item() - 1.0) < 0.03
    assert torch.allclose(coarse[0, 0, 0, 0, 0], eps[0, 0, 0:2, 0:2, 0:2].mean() * 8 ** 0.5, atol=1e-5)
    temporal = downsample_noise(eps, 1, frames=2)
    assert temporal.shape == (2, 16, 2, 32, 32) and abs(temporal.std().item() - 1.0) < 0.03
    x = torch.randn(1, 4, 2, 8, 8, generator=g)
    up = upsample(x, 2, "nearest", frames=2)
    assert up.shape == (1, 4, 4, 16, 16) and torch.allclose(downsample_latent(up, 2, frames=2), x, atol=1e-6)
    smooth = upsample(x, 1, "bilinear", frames=2)
    assert smooth.shape == (1, 4, 4, 8, 8)  # linear in time: the ends are the coarse ends, between them a blend
    assert torch.allclose(smooth[:, :, 0], x[:, :, 0], atol=1e-6) and torch.allclose(smooth[:, :, 3], x[:, :, 1],
                                                                                          atol=1e-6)
    assert torch.allclose(smooth[:, :, 1], 0.75 * x[:, :, 0] + 0.25 * x[:, :, 1], atol=1e-5)
    assert pooled_sigma(0.5, 2, frames=2) == pytest.approx(0.5 / (0.5 + 2 * 2 ** 0.5 * 0.5))
    with pytest.raises(ConfigError, match="frame axis"):
        downsample_latent(torch.zeros(1, 4, 3, 8, 8), 2, frames=2)


def test_motion_and_detail_on_constructed_clips():
    from accel_core.resolution.strategy import choose_reduction, motion_and_detail

    g = torch.Generator().manual_seed(2)
    still = torch.randn(1, 4, 1, 16, 16, generator=g).repeat(1, 1, 4, 1, 1)
    unrelated = torch.randn(1, 4, 4, 16, 16, generator=g)
    smooth = upsample(torch.randn(1, 4, 4, 4, 4, generator=g), 4, "bilinear")
    m_still, d_still = motion_and_detail(still)
    m_rand, d_rand = motion_and_detail(unrelated)
    m_smooth, d_smooth = motion_and_detail(smooth)
    assert m_still == pytest.approx(0.0, abs=1e-6) and d_still > 0.5  # white-noise frames: all high-pass
    assert m_rand == pytest.approx(1.0, abs=0.1) and d_rand == pytest.approx(0.75, abs=0.1)
    assert d_smooth < 0.2 * d_rand
    assert choose_reduction(m_still, d_still, 0.05) == "temporal"  # nothing moves: merge frames
    assert choose_reduction(m_smooth, d_smooth, 0.05) == "spatial"  # moves but smooth: shrink the grid
    assert choose_reduction(0.01, 0.02, 0.05) == "joint"
    with pytest.raises(ValueError, match="2 frames"):
        motion_and_detail(torch.zeros(1, 4, 1, 8, 8))


def test_video_plans_halve_frames():
    sigmas = torch.linspace(1, 0, 11)
    temporal = plan_for(ResolutionConfig(low_res_share=0.4, video_reduction="temporal"), sigmas, video=True)
    assert [(s.factor, s.frames, s.start, s.end) for s in temporal.stages] == [(1, 2, 0, 4), (1, 1, 4, 10)]
    assert temporal.stages[0].coarse and temporal.stages[0].token_scale == 2
    joint = plan_for(ResolutionConfig(low_res_share=0.4, video_reduction="joint"), sigmas, video=True)
    assert (joint.stages[0].factor, joint.stages[0].frames, joint.stages[0].token_scale) == (2, 2, 8)
    image = plan_for(ResolutionConfig(low_res_share=0.4, video_reduction="joint"), sigmas, video=False)
    assert image.stages[0].frames == 1
    with pytest.raises(ConfigError, match="coarse_stages = 2 needs a spatial"):
        ResolutionConfig(video_reduction="temporal", coarse_stages=2)


@pytest.mark.parametrize("coarse, fine", [((2, 1), (1, 1)), ((4, 1), (2, 1)), ((2, 2), (1, 1)), ((2, 2), (2, 1))])
def test_carry_state_rebuilds_the_finer_pooled_state_exactly_for_block_constant_content(coarse, fine):
    """carry: the finer grid's unit-noise state = up(coarse state, unscaled) + sigma x the field's detail
    between the grids, rescaled. When the image is constant on the coarse blocks, that is exact."""
    from accel_core.resolution import carry_state, pooled_scale

    g = torch.Generator().manual_seed(3)
    (cf, ct), (ff, ft) = coarse, fine
    eps = torch.randn(1, 4, 4, 16, 16, generator=g)
    x0 = upsample(torch.randn(1, 4, 4 // ct, 16 // cf, 16 // cf, generator=g), cf, "nearest", frames=ct)
    for s in (0.3, 0.8):
        x = s * eps + (1 - s) * x0
        coarse_state = downsample_latent(x, cf, ct) * pooled_scale(s, cf, ct)
        fine_state = downsample_latent(x, ff, ft) * pooled_scale(s, ff, ft)
        got = carry_state(coarse_state, eps, s, coarse, fine)
        assert torch.allclose(got, fine_state, atol=1e-5)
        # the fine state is a flow state at pooled_sigma: its noise part is the unit-variance pooled field
        sp = pooled_sigma(s, ff, ft)
        noise = (got - (1 - sp) * downsample_latent(x0, ff, ft)) / sp
        assert torch.allclose(noise, downsample_noise(eps, ff, ft), atol=1e-4)
    with pytest.raises(ConfigError, match="does not divide"):
        carry_state(torch.zeros(1, 4, 4, 8, 8), eps, 0.5, (2, 1), (4, 1))


def test_carry_needs_the_pooled_sigma():
    with pytest.raises(ConfigError, match="coarse_sigma"):
        ResolutionConfig(transition="carry", coarse_sigma="schedule")
    assert ResolutionConfig().transition == "carry" and ResolutionConfig().coarse_sigma == "pooled"  # chosen on tune
    assert "carry" in ResolutionConfig(transition="carry", coarse_sigma="pooled").tag()
