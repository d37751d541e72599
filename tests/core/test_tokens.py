"""Token methods, host-free math: clustering, selection, propagation, patches, work accounting."""
from __future__ import annotations

import pytest
import torch

from accel_core.errors import ConfigError
from accel_core.tokens import (TokenWork, block_flops, cluster_members, dynamics_top, fit_gain, kmeans, patchify,
                               propagate_corrections, region_rings, unpatchify)
from accel_core.tokens.patches import mask_to_tokens, patch_dims
from accel_core.tokens.policies import PartialCall
from accel_core.tokens.settings import TokenSettings
from accel_core.tokens.state import Capture, TokenRun


def _blobs(k=4, per=50, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * 5
    labels = torch.arange(k).repeat_interleave(per)
    x = centres[labels] + 0.1 * torch.randn(k * per, dim, generator=g)
    perm = torch.randperm(k * per, generator=g)
    return x[perm], labels[perm]


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(((a[:, None] == a[None, :]) == (b[:, None] == b[None, :])).all())


def test_kmeans_recovers_separated_clusters():
    x, labels = _blobs()
    assign, centroids = kmeans(x, 4, generator=torch.Generator().manual_seed(1), iterations=10)
    assert centroids.shape == (4, 8)
    assert _same_partition(assign, labels)


def test_kmeans_warm_start_keeps_labels_and_fills_empty_clusters():
    x, labels = _blobs()
    assign, centroids = kmeans(x, 4, generator=torch.Generator().manual_seed(1), iterations=10)
    again, _ = kmeans(x + 0.01, 4, init=centroids, iterations=1)
    assert torch.equal(again, assign)  # warm start: same clusters, same ids
    # More clusters than blobs: every cluster still gets members (empty ones are re-seeded).
    many, _ = kmeans(x, 12, generator=torch.Generator().manual_seed(2), iterations=10)
    assert torch.bincount(many, minlength=12).min() >= 1


def test_cluster_members_picks_per_cluster_and_varies_with_the_generator():
    assign = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    g = torch.Generator().manual_seed(0)
    rows = cluster_members(assign, 2, g)
    counts = torch.bincount(assign[rows], minlength=3)
    assert counts.tolist() == [2, 2, 2]
    assert torch.equal(rows, rows.sort().values)
    draws = {tuple(cluster_members(assign, 1, g).tolist()) for _ in range(20)}
    assert len(draws) > 1


def test_region_rings_dilate_one_token_per_ring():
    grid = (1, 7, 7)
    coverage = torch.zeros(49)
    coverage[3 * 7 + 3] = 1.0  # the centre token
    rings = region_rings(coverage, grid, rings=2).reshape(7, 7)
    assert rings[3, 3] == 0
    assert rings[2, 2] == 1 and rings[4, 3] == 1
    assert rings[1, 1] == 2 and rings[5, 3] == 2
    assert rings[0, 0] == -1 and (rings >= 0).sum() == 25


def test_mask_to_tokens_resamples_area():
    mask = torch.zeros(64, 64)
    mask[:32, :32] = 1
    cover = mask_to_tokens(mask, (4, 4)).reshape(4, 4)
    assert torch.allclose(cover[:2, :2], torch.ones(2, 2)) and float(cover[2:, 2:].sum()) == 0.0


def test_dynamics_top_takes_largest_changes():
    change = torch.tensor([0.1, 5.0, 0.2, 3.0, 0.0])
    assert dynamics_top(change, 2).tolist() == [1, 3]


@pytest.mark.parametrize("shape,patch", [((2, 16, 12, 10), (2, 2)), ((1, 4, 3, 7, 9), (1, 2, 2)),
                                         ((1, 16, 1, 8, 8), (2, 2))])
def test_patchify_round_trip_and_token_order(shape, patch):
    x = torch.randn(shape)
    tokens = patchify(x, patch)
    dims = patch_dims(shape, patch)
    assert tokens.shape[1] == int(torch.tensor(dims).prod())
    assert torch.equal(unpatchify(tokens, shape, patch), x)
    # Token 1 is the patch right of token 0 (row-major over (t, h, w)), as the DiTs order them.
    ph, pw = patch[-2], patch[-1]
    right = x[..., 0:ph, pw:2 * pw] if len(shape) == 4 else x[:, :, 0, 0:ph, pw:2 * pw]
    assert torch.allclose(tokens[0, 1].reshape(shape[1], -1), right[0].reshape(shape[1], -1))


def test_gain_is_one_when_cluster_errors_are_shared_and_zero_when_independent():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(8).repeat_interleave(4)
    shared = torch.randn(1, 8, 6, generator=g)[:, labels]
    assert fit_gain(shared, labels, 8) == pytest.approx(1.0, abs=1e-5)
    # Errors of one sign per half, opposite in the other: they do not transfer.
    flip = torch.where(torch.arange(32) % 2 == 0, 1.0, -1.0)[None, :, None]
    assert fit_gain(shared * flip, labels, 8) == 0.0


def test_propagation_corrects_members_and_keeps_fresh_rows_exact():
    g = torch.Generator().manual_seed(0)
    assign = torch.arange(4).repeat_interleave(10)  # 40 tokens, 4 clusters
    offsets = torch.randn(1, 4, 3, generator=g)
    truth = torch.randn(1, 40, 3, generator=g)
    forecast = truth - offsets[:, assign]  # the forecast misses a per-cluster offset
    rows = torch.tensor([0, 1, 10, 11, 20, 21, 30, 31])
    out, gain = propagate_corrections(forecast, rows, truth[:, rows], assign, 4)
    assert gain == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(out, truth, atol=1e-5)
    assert not torch.allclose(forecast, truth)


def test_work_counts_quadratic_attention_share():
    work = TokenWork()
    work.add_call(blocks=10, tokens=100, hidden=8)  # full
    work.add_call(blocks=10, tokens=100, hidden=8, queries=10, keys=100)  # partial
    work.add_call(blocks=10, tokens=100, hidden=8, queries=0)  # forecast
    assert work.token_ratio == pytest.approx(3000 / 1100)
    full = block_flops(100, 100, 8)
    assert work.flops_ratio == pytest.approx(3 * full / (full + block_flops(10, 100, 8)))
    assert work.partial_calls == 1


def test_complete_kv_places_fresh_rows_in_the_joint_sequence():
    run = TokenRun(TokenSettings(kv_extrapolate=False))
    capture = Capture(txt_len=3, image_len=6, target_start=0)
    ck = torch.zeros(1, 1, 9, 2)
    capture.kv[("double", 0)] = (ck, ck.clone())
    run.partial = PartialCall(torch.tensor([1, 4]))
    run.image_first = {"double": False}
    fresh = torch.ones(1, 1, 3, 2)  # kept text token + 2 image rows, txt first
    k, v, mask = run.complete_kv(capture, ("double", 0), fresh, fresh, torch.zeros(1, 1, 9))
    assert k[0, 0, :, 0].tolist() == [1, 0, 0, 0, 1, 0, 0, 1, 0]
    drop = TokenRun(TokenSettings(kv="drop", kv_extrapolate=False))
    drop.partial, drop.image_first = run.partial, run.image_first
    k, _, mask = drop.complete_kv(capture, ("double", 0), fresh, fresh, torch.zeros(1, 1, 9))
    assert k.shape[2] == 5 and mask.shape[-1] == 5  # 3 text + 2 image keys


def test_kv_extrapolates_linearly_over_sigma():
    run = TokenRun(TokenSettings())
    capture = Capture(txt_len=1, image_len=2)
    capture.start(1.0)
    capture.kv["b"] = (torch.full((1, 1, 3, 1), 1.0),) * 2
    capture.start(0.8)
    capture.kv["b"] = (torch.full((1, 1, 3, 1), 2.0),) * 2
    run.sigma = 0.6
    k, _ = run.context_kv(capture, "b")
    assert torch.allclose(k, torch.full_like(k, 3.0))


@pytest.mark.parametrize("field,value", [("clusters", 1), ("per_cluster", 0), ("keep", 0.95), ("rings", -1),
                                         ("ring_decay", 1.5), ("method", "tome"), ("kv", "full")])
def test_bad_settings_name_the_input(field, value):
    with pytest.raises(ConfigError) as err:
        TokenSettings(**{field: value})
    assert str(value) in str(err.value)


def test_each_method_is_a_registered_policy():
    """Token methods are policy classes in a registry (like FORECASTERS): the settings accept exactly
    the registered names, and a run asks the policy of its method."""
    from accel_core.tokens.policies import TOKEN_POLICIES, TokenPolicy

    assert TOKEN_POLICIES.names() == ["clusters", "dynamics", "region", "specedit"]
    for name in TOKEN_POLICIES.names():
        run = TokenRun(TokenSettings(method=name))
        assert isinstance(run.policy, TOKEN_POLICIES.get(name)) and isinstance(run.policy, TokenPolicy)
        assert run.label() == name  # before anything is marked
    with pytest.raises(ConfigError, match="'clusters', 'dynamics', 'region', 'specedit'"):
        TokenSettings(method="tome")


def test_projected_ratio_counts_only_the_uncached_runs_calls():
    from accel_core.tokens.work import FLUX_SIZE, block_flops, projected_ratio

    counts = {"full": 10, "partial": 40, "shadow": 8}
    tokens = FLUX_SIZE["image"] + FLUX_SIZE["txt"]
    full = block_flops(tokens, tokens, FLUX_SIZE["hidden"])
    partial = block_flops(33, tokens, FLUX_SIZE["hidden"])
    assert projected_ratio(counts, 32) == pytest.approx(50 * full / (10 * full + 48 * partial))
    assert projected_ratio(counts, 32, drop=True) > projected_ratio(counts, 32)


@pytest.mark.parametrize("shape,patch,weights", [((2, 4, 9, 7), (2, 2), False), ((1, 3, 9, 7), (2, 2), True),
                                                  ((1, 2, 3, 6, 4), (1, 2, 2), True)])
def test_latent_merge_equals_the_token_row_merge(shape, patch, weights):
    """The partial step's merge on the latent (one fused pass) gives what the token-row merge gives."""
    g = torch.Generator().manual_seed(0)
    forecast, fresh = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    run = TokenRun(TokenSettings(method="region"))
    run.patch = patch
    run.trust_num, run.trust_den = 0.7, 1.0
    n = patchify(forecast, patch).shape[1]
    rows = torch.tensor(sorted({0, 3, n // 2, n - 1}))
    call = PartialCall(rows, torch.rand(rows.numel(), generator=g) if weights else None)
    want = unpatchify(run.merge(patchify(forecast, patch), patchify(fresh, patch), call), shape, patch)
    got = run.merge_latent(forecast, fresh, call)
    assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-6)
    untouched = patchify(got, patch)[:, [i for i in range(n) if i not in set(rows.tolist())]]
    assert torch.equal(untouched, patchify(forecast, patch)[:, [i for i in range(n) if i not in set(rows.tolist())]])


def test_shadow_calls_stop_while_the_trust_is_settled_and_resume_when_it_moves():
    from accel_core.tokens.state import SHADOW_EVERY, SHADOW_FIRST

    run = TokenRun(TokenSettings(method="region"))
    call = PartialCall(torch.arange(4))
    forecast = torch.zeros(1, 4, 2)
    shadow = torch.ones(1, 4, 2)

    def measure(trust):  # truth = forecast + trust * (fresh - forecast): the least-squares trust is `trust`
        run.calibrate(forecast, shadow, forecast + trust * (shadow - forecast), call)

    plan = []
    for _ in range(SHADOW_FIRST + 2 * SHADOW_EVERY):
        if run.wants_shadow():
            plan.append("measure")
            measure(0.5)
        else:
            plan.append("skip")
            run.skip_shadow()
    assert plan[:SHADOW_FIRST] == ["measure"] * SHADOW_FIRST  # the first measurements always run
    assert plan[SHADOW_FIRST:] == (["skip"] * (SHADOW_EVERY - 1) + ["measure"]) * 2  # settled: one in SHADOW_EVERY
    assert run.trust == pytest.approx(0.5) and run.shadows_skipped == 2 * (SHADOW_EVERY - 1)
    measure(0.9)  # the trust moves: measured at every full step again
    assert run.wants_shadow()
    run.skip_shadow()
    assert run.wants_shadow()
    always = TokenRun(TokenSettings(method="region", shadow="always"))
    for _ in range(SHADOW_FIRST + 1):
        always.calibrate(forecast, shadow, forecast + 0.5 * (shadow - forecast), call)
    assert always.wants_shadow()
    with pytest.raises(ConfigError):
        TokenSettings(shadow="never")


def test_horizon_weight_keeps_the_gap_end_value_and_shrinks_earlier():
    from accel_core.tokens.state import horizon_weight

    for w in (0.1, 0.5, 0.9):
        assert horizon_weight(w, 1.0) == pytest.approx(w)  # measured there: unchanged
        earlier = [horizon_weight(w, s) for s in (0.2, 0.4, 0.6, 0.8)]
        assert earlier == sorted(earlier) and all(0.0 < e < w for e in earlier)
        # A s^2 / (A s^2 + N) with A / N = w / (1 - w): at half the gap the signal has a quarter the variance
        assert horizon_weight(w, 0.5) == pytest.approx((w / 4) / (w / 4 + 1 - w))
    assert horizon_weight(0.0, 0.5) == 0.0 and horizon_weight(1.0, 0.3) == 1.0


def test_partial_from_skips_the_early_part_of_each_gap():
    run = TokenRun(TokenSettings(method="clusters", partial_from=0.5))
    assert [run.wants_partial(s) for s in (0.2, 0.49, 0.5, 0.8, 1.0)] == [False, False, True, True, True]
    assert run.horizon == 1.0  # the share of the step asked last
    assert all(TokenRun(TokenSettings(method="clusters")).wants_partial(s) for s in (0.01, 0.5))
    with pytest.raises(ConfigError, match="partial_from"):
        TokenSettings(method="clusters", partial_from=1.0)
    with pytest.raises(ConfigError, match="trust_horizon"):
        TokenSettings(method="clusters", trust_horizon="sometimes")
