"""SpecEdit's edit discovery: discrepancy between draft and reference, relative thresholds (Otsu,
share of the maximum), union over a batch, rings around the marks, the reference brought to the
target's shape, and bad settings named."""
from __future__ import annotations

import pytest
import torch

from accel_core.errors import ConfigError
from accel_core.tokens.edit_discovery import (discrepancy, mark_batch, mark_edit_tokens, otsu_threshold,
                                              reference_at)
from accel_core.tokens.patches import patchify
from accel_core.tokens.selection import region_rings
from accel_core.tokens.settings import TokenSettings
from accel_core.tokens.state import TokenRun


def _bimodal(n_low=90, n_high=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = 0.1 + 0.05 * torch.rand(n_low, generator=g)
    high = 2.0 + 0.5 * torch.rand(n_high, generator=g)
    return torch.cat([low, high])[torch.randperm(n_low + n_high, generator=g)]


def test_otsu_splits_two_populations_in_the_gap():
    values = _bimodal()
    cut = otsu_threshold(values)
    assert 0.15 <= cut <= 2.0
    assert int((values > cut).sum()) == 10


def test_otsu_of_a_constant_sample_is_its_value():
    assert otsu_threshold(torch.full((20,), 3.0)) == 3.0


def test_marks_do_not_depend_on_the_latent_scale():
    values = _bimodal(seed=3)
    for rule in ("otsu", "max_share"):
        base = mark_edit_tokens(values, rule, share=0.3)
        assert torch.equal(base, mark_edit_tokens(values * 1000.0, rule, share=0.3))
        assert torch.equal(base, mark_edit_tokens(values * 1e-3, rule, share=0.3))
        assert int(base.sum()) == 10


def test_max_share_is_a_share_of_the_largest_value():
    values = torch.tensor([0.0, 1.0, 2.0, 5.0, 10.0])
    assert mark_edit_tokens(values, "max_share", share=0.2).tolist() == [False, False, True, True, True]
    assert mark_edit_tokens(values, "max_share", share=0.6).tolist() == [False, False, False, False, True]


def test_a_draft_equal_to_the_reference_marks_nothing():
    ref = torch.randn(1, 16, 8, 8)
    score = discrepancy(patchify(ref, (2, 2)), patchify(ref, (2, 2)))
    assert not mark_batch(score).any()


def test_the_changed_block_of_a_constructed_edit_is_marked_exactly():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(1, 16, 16, 16, generator=g)
    draft = ref + 0.02 * torch.randn(ref.shape, generator=g)  # the model's small copying error
    draft[:, :, 4:8, 10:14] += 1.5  # the edit: 2 x 2 tokens at token rows 2-3, columns 5-6
    score = discrepancy(patchify(draft, (2, 2)), patchify(ref, (2, 2)))
    assert score.shape == (1, 64)
    marked = mark_batch(score, "otsu")
    expected = {r * 8 + c for r in (2, 3) for c in (5, 6)}
    assert set(marked.nonzero().flatten().tolist()) == expected
    rings = region_rings(marked.float(), (8, 8), 1)
    assert int((rings == 0).sum()) == 4 and int((rings == 1).sum()) == 16 - 4  # a 4 x 4 square with one ring


def test_batch_marks_are_the_union_of_each_samples_own_marks():
    score = torch.zeros(2, 10)
    score[0, 1] = 5.0
    score[1, 7] = 0.001  # a far smaller scale: its own threshold still finds it
    assert mark_batch(score).nonzero().flatten().tolist() == [1, 7]


def test_reference_at_takes_batch_rows_and_resamples_size():
    ref = torch.arange(2 * 16 * 4 * 4, dtype=torch.float32).reshape(2, 16, 4, 4)
    same, resized = reference_at(ref, torch.Size([1, 16, 4, 4]))
    assert not resized and torch.equal(same, ref[:1])
    repeated, _ = reference_at(ref[:1], torch.Size([3, 16, 4, 4]))
    assert repeated.shape[0] == 3 and torch.equal(repeated[2], ref[0])
    small, resized = reference_at(ref[:1], torch.Size([1, 16, 2, 2]))
    assert resized and torch.allclose(small[0, 0, 0, 0], ref[0, 0, :2, :2].mean())  # area: block means
    video, _ = reference_at(ref[:1], torch.Size([1, 16, 1, 4, 4]))  # image latent, one-frame target
    assert torch.equal(video[:, :, 0], ref[:1])
    with pytest.raises(ValueError, match="does not match"):
        reference_at(ref, torch.Size([1, 32, 4, 4]))


def test_run_draft_unions_marks_over_the_draft_steps_and_then_stops():
    run = TokenRun(TokenSettings(method="specedit", draft_steps=2))
    run.patch = (2, 2)
    run.policy.set_reference(torch.zeros(1, 16, 8, 8), (8, 8))
    first = torch.zeros(1, 16, 8, 8)
    first[:, :, :2, :2] = 1.0  # token 0
    second = torch.zeros(1, 16, 8, 8)
    second[:, :, 6:, 6:] = 1.0  # token 15
    third = torch.zeros(1, 16, 8, 8)
    third[:, :, :2, 6:] = 1.0  # token 3: after the draft steps, ignored
    for draft in (first, second, third):
        run.after_full(patchify(draft, (2, 2)))
    assert run.policy.marked.nonzero().flatten().tolist() == [0, 15]
    assert run.ready(measuring=False) is False  # partial steps wait for the first trust measurement
    run.captures["b"] = object()
    assert run.ready(measuring=True)


def test_run_without_reference_switches_token_work_off():
    run = TokenRun(TokenSettings(method="specedit"))
    run.patch = (2, 2)
    run.after_full(torch.zeros(1, 16, 64))
    assert run.disabled and "no reference latent" in run.disabled and run.policy.marked is None


def test_bad_specedit_settings_are_named():
    with pytest.raises(ConfigError, match="lock"):
        TokenSettings(method="specedit", lock="reference")
    with pytest.raises(ConfigError, match="threshold"):
        TokenSettings(method="specedit", threshold="fixed")
    with pytest.raises(ConfigError, match="share"):
        TokenSettings(method="specedit", share=1.5)
    with pytest.raises(ConfigError, match="draft_steps"):
        TokenSettings(method="specedit", draft_steps=0)
