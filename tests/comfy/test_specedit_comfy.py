"""Spec Edit (auto region) inside the real ComfyUI: Kontext-style FLUX and Qwen-Image-Edit-style
reference latents, cfg on / off, batch 2, the marked region wired to what partial steps compute,
reference tokens never computed, the input lock, and a model without a reference latent."""
from __future__ import annotations

import logging

import pytest
import torch
from helpers import conditioning, forecast_node, recent_runs, sample

from accel_core.errors import ConfigError
from accel_core.tokens.edit_discovery import discrepancy, mark_batch
from accel_core.tokens.patches import patchify
from accel_core.tokens.policies.specedit import SpecEditPolicy
from accel_core.tokens.selection import region_rings
from accel_core.tokens.state import TokenRun

SHAPES = {"flux": (1, 16, 16, 16), "qwen_image": (1, 16, 1, 16, 16)}  # 8 x 8 target tokens each


def _latent(family: str, batch: int = 1) -> torch.Tensor:
    return torch.zeros((batch,) + SHAPES[family][1:])


def _reference(family: str, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    shape = list(SHAPES[family])
    shape[-2:] = [size, size]
    ref = torch.randn(shape, generator=g) * 0.3
    ref[..., :8, :8] += 2.0  # a distinct quarter: drafts differ from the reference unevenly
    return ref


def _specedit(**kw):
    import nodes

    args = dict(rings=0, lock="forecast", threshold="otsu", share=0.25, draft_steps=1,
                attention_context="cached") | kw
    return nodes.NODE_CLASS_MAPPINGS["DiTAccelSpecEdit"].execute(**args)[0]


def _cache(model, tokens=None, interval=4):
    return forecast_node().execute(model, "balanced", "preset", "output", interval, -1, 3, 1, 0.0, 1.0,
                                   tokens=tokens)[0]


def _edit_conds(family: str, batch: int = 1, size: int = 16):
    ref = _reference(family, size).repeat(batch, *([1] * (len(SHAPES[family]) - 1)))
    return conditioning(1, batch=batch, reference=ref), conditioning(2, batch=batch, reference=ref)


@pytest.mark.parametrize("family", list(SHAPES))
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_specedit_marks_a_region_and_makes_partial_steps(micro, family, cfg):
    pos, neg = _edit_conds(family)
    out = sample(_cache(micro[family], _specedit()), _latent(family), pos, neg, cfg=cfg, steps=16)
    run = recent_runs()[-1]
    assert torch.isfinite(out).all()
    assert run["token_note"] == ""
    assert run["token_method"].startswith("specedit (") and "tokens marked" in run["token_method"]
    assert run["partial_calls"] > 0 and "P" in run["timeline"]
    work = run["token_work"]
    assert 1.0 < work["token_ratio"] < run["evaluation_speedup"]
    assert 0.0 < work["selected_share"] < 1.0  # a region, not the whole image


def test_batch_two_with_cfg(micro):
    pos, neg = _edit_conds("flux", batch=2)
    out = sample(_cache(micro["flux"], _specedit()), _latent("flux", 2), pos, neg, cfg=3.0, steps=16)
    run = recent_runs()[-1]
    assert out.shape[0] == 2 and torch.isfinite(out).all() and run["partial_calls"] > 0


def test_partial_steps_compute_the_marked_tokens_and_their_rings(micro, monkeypatch):
    """The rows of every partial step are the draft's marks (recomputed here from the draft and the
    reference the run saw) dilated by one ring."""
    drafts, selected = [], []
    original_draft, original_select = SpecEditPolicy.draft, TokenRun.select

    def spy_draft(self, run, out_rows):
        if self.drafts < self.settings.draft_steps:
            drafts.append((out_rows.clone(), self.reference_rows(out_rows.shape[0], run.patch).clone(), run.patch))
        return original_draft(self, run, out_rows)

    def spy_select(self, n_target, grid):
        call = original_select(self, n_target, grid)
        if call is not None:
            selected.append((call.rows.clone(), tuple(grid)))
        return call

    monkeypatch.setattr(SpecEditPolicy, "draft", spy_draft)
    monkeypatch.setattr(TokenRun, "select", spy_select)
    pos, neg = _edit_conds("flux")
    sample(_cache(micro["flux"], _specedit(rings=1)), _latent("flux"), pos, neg, steps=16)
    assert len(drafts) == 1 and selected
    out_rows, ref_rows, _ = drafts[0]
    marked = mark_batch(discrepancy(out_rows, ref_rows), "otsu")
    grid = selected[0][1]
    expected = set((region_rings(marked.float(), grid, 1) >= 0).nonzero().flatten().tolist())
    assert 0 < marked.sum() < marked.numel()
    assert all(set(rows.tolist()) == expected for rows, _ in selected)


def test_reference_tokens_are_never_computed(micro, monkeypatch):
    seen = []
    original = TokenRun.complete_kv

    def spy(self, capture, block, k, v, mask=None):
        seen.append((capture.image_len, capture.target_start, int(self.partial.rows.max()), k.shape[2],
                     self.partial.rows.numel()))
        return original(self, capture, block, k, v, mask)

    monkeypatch.setattr(TokenRun, "complete_kv", spy)
    for family in SHAPES:
        seen.clear()
        pos, neg = _edit_conds(family)
        sample(_cache(micro[family], _specedit()), _latent(family), pos, neg, steps=16)
        n_target = 8 * 8
        assert seen and all(image_len == 2 * n_target for image_len, *_ in seen)  # target + reference rows
        assert all(start == 0 and top < n_target for _, start, top, _, _ in seen)  # target rows only
        assert all(queries == m + 1 for *_, queries, m in seen)  # the selected rows + one text token


def test_input_lock_gives_the_reference_outside_the_computed_rows(micro, monkeypatch):
    merged = []
    original = TokenRun.merge

    def spy(self, forecast_rows, fresh_rows, call):
        out = original(self, forecast_rows, fresh_rows, call)
        merged.append((out.clone(), call.rows.clone(), self.policy.reference_rows(out.shape[0], self.patch).clone()))
        return out

    monkeypatch.setattr(TokenRun, "merge", spy)
    pos, neg = _edit_conds("flux")
    sample(_cache(micro["flux"], _specedit(lock="input", rings=0)), _latent("flux"), pos, neg, cfg=3.0, steps=16)
    assert merged and "locked to the input" in recent_runs()[-1]["token_method"]
    for out, rows, ref in merged:
        locked = torch.ones(out.shape[1], dtype=torch.bool)
        locked[rows] = False
        assert locked.any()
        assert torch.equal(out[:, locked], ref[:, locked].float())


def test_forecast_lock_differs_from_input_lock(micro):
    pos, neg = _edit_conds("flux")
    a = sample(_cache(micro["flux"], _specedit(lock="forecast", rings=0)), _latent("flux"), pos, neg, steps=16)
    b = sample(_cache(micro["flux"], _specedit(lock="input", rings=0)), _latent("flux"), pos, neg, steps=16)
    assert torch.isfinite(a).all() and torch.isfinite(b).all() and not torch.equal(a, b)


def test_a_reference_of_another_size_is_resampled(micro):
    pos, neg = _edit_conds("flux", size=24)
    out = sample(_cache(micro["flux"], _specedit()), _latent("flux"), pos, neg, steps=16)
    run = recent_runs()[-1]
    assert torch.isfinite(out).all() and "reference resized" in run["token_method"] and run["partial_calls"] > 0


def test_no_reference_latent_warns_once_and_runs_as_forecast_cache_alone(micro, caplog):
    pos, neg = conditioning(1), conditioning(2)
    plain = sample(_cache(micro["flux"]), _latent("flux"), pos, neg, steps=16)
    with caplog.at_level(logging.WARNING, logger="DiTAccel"):
        out = sample(_cache(micro["flux"], _specedit()), _latent("flux"), pos, neg, steps=16)
    run = recent_runs()[-1]
    assert "no reference latent" in run["token_note"] and run["partial_calls"] == 0
    warnings = [r for r in caplog.records if "no reference latent" in r.getMessage()]
    assert len(warnings) == 1
    assert torch.equal(out, plain)


def test_bad_setting_names_the_input(comfy_nodes):
    with pytest.raises(ConfigError, match="share"):
        _specedit(share=0.0)
    with pytest.raises(ConfigError, match="draft_steps"):
        _specedit(draft_steps=0)


def test_patchify_of_the_reference_matches_the_target_rows(micro):
    """The reference rows are in the DiT's token order: patchify of the same latent gives the same rows."""
    ref = _reference("qwen_image")
    run = TokenRun(_specedit()["settings"])
    run.patch = (2, 2)
    run.policy.set_reference(ref, tuple(ref.shape[2:]))
    assert torch.equal(run.policy.reference_rows(1, run.patch), patchify(ref.float(), (2, 2)))
