"""Issue 21 item 4 (host-free part): Edit Region masks of every common layout map to tokens; empty,
non-finite and multi-channel masks are refused with a message naming the shape and the fix."""
from __future__ import annotations

import pytest
import torch

from accel_core.errors import ConfigError
from accel_core.tokens.mask import batch_note, prepare_mask
from accel_core.tokens.patches import mask_to_tokens


@pytest.mark.parametrize("shape", [(32, 32), (1, 32, 32), (1, 1, 32, 32), (2, 1, 7, 90)])
def test_two_three_and_four_d_masks_give_the_same_coverage(shape):
    mask = torch.zeros(shape)
    mask[..., : shape[-1] // 2] = 1.0
    prepared, note = prepare_mask(mask)
    assert prepared.dim() == 3 and note == ""
    cover = mask_to_tokens(mask, (4, 4))  # the raw 4-D mask too (was: 'Expected 3D or 4D tensor')
    assert cover.shape == (16,) and torch.equal(cover, mask_to_tokens(prepared, (4, 4)))
    assert cover.reshape(4, 4)[:, 0].min() == 1.0 and cover.reshape(4, 4)[:, -1].max() == 0.0


@pytest.mark.parametrize("mask,says", [
    (torch.zeros(1, 0, 0), "which is empty"),
    (torch.full((1, 8, 8), float("nan")), "64 non-finite value(s)"),
    (torch.ones(1, 3, 8, 8), "[1, 3, 8, 8]; allowed: [H, W], [B, H, W] or [B, 1, H, W]"),
    (torch.ones(8), "[8]; allowed"),
    ("mask.png", "is a str, not a MASK tensor"),
])
def test_masks_that_cannot_mean_anything_are_refused(mask, says):
    with pytest.raises(ConfigError) as err:
        prepare_mask(mask)
    assert "Edit Region: mask" in str(err.value) and says in str(err.value) and "Connect a MASK" in str(err.value)


def test_an_all_zero_mask_is_said_and_values_are_clamped():
    _, note = prepare_mask(torch.zeros(1, 8, 8))
    assert "selects no token" in note
    prepared, note = prepare_mask(torch.full((8, 8), 3.0) - 4.0 * (torch.arange(64).reshape(8, 8) % 2))
    assert note == "" and prepared.min() == 0.0 and prepared.max() == 1.0


def test_a_batch_mismatch_is_said_a_match_is_not():
    assert "3 masks for a batch of 1 latent(s); their union" in batch_note(3, 1)
    assert batch_note(1, 4) == "" and batch_note(2, 2) == ""
