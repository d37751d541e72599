"""Token nodes (ClusCa, Edit Region, Dynamic Tokens) inside the real ComfyUI: partial steps on every
family, CFG on / off, batch 2, reference tokens, the block-anatomy self-check failing on an altered
block, work accounting, bad combinations."""
from __future__ import annotations

import logging

import pytest
import torch
from helpers import LATENTS, conditioning, forecast_node, recent_runs, sample

from accel_core.errors import ConfigError
from accel_core.tokens.state import TokenRun

FAMILIES = list(LATENTS)


def _latent(family: str, batch: int = 1) -> torch.Tensor:
    shape = list(LATENTS[family])
    shape[0] = batch
    return torch.zeros(shape)


def _tokens(kind: str = "clusters", **kw):
    import nodes  # ComfyUI's module: importable once the comfy fixtures bootstrapped it

    if kind == "clusters":
        node = nodes.NODE_CLASS_MAPPINGS["DiTAccelClusterTokens"]
        args = dict(clusters=4, tokens_per_cluster=2, cluster_layer=0.5, attention_context="cached") | kw
    elif kind == "region":
        node = nodes.NODE_CLASS_MAPPINGS["DiTAccelEditRegion"]
        args = dict(mask=kw.pop("mask"), rings=1, ring_decay=0.8, attention_context="cached") | kw
    else:  # DaTo-style selection: not a registered node (see token_nodes.py), the core settings directly
        from accel_core.tokens.settings import TokenSettings

        return {"settings": TokenSettings(method="dynamics", keep=0.25, kv=kw.get("attention_context", "cached")),
                "mask": None}
    return node.execute(**args)[0]


def _cache(model, tokens=None, cache_mode="output", interval=4):
    return forecast_node().execute(model, "balanced", "preset", cache_mode, interval, -1, 3, 1, 0.0, 1.0,
                                   tokens=tokens)[0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_clusters_make_partial_steps_on_every_family(micro, family, cfg):
    model = _cache(micro[family], _tokens("clusters"))
    out = sample(model, _latent(family), conditioning(1), conditioning(2), cfg=cfg, steps=16)
    run = recent_runs()[-1]
    assert torch.isfinite(out).all()
    assert run["token_note"] == ""  # the anatomy self-check passed on this ComfyUI
    assert run["partial_calls"] > 0 and "P" in run["timeline"]
    work = run["token_work"]
    assert 1.0 < work["token_ratio"] < run["evaluation_speedup"]  # partial steps cost something
    assert work["flops_ratio"] == pytest.approx(work["token_ratio"], rel=1e-6)  # cached keys: same keys per query


def test_measured_propagation_reports_its_gain(micro):
    sample(_cache(micro["flux"], _tokens("clusters", propagation="measured")), _latent("flux"), conditioning(1),
           conditioning(2), steps=16)
    run = recent_runs()[-1]
    assert run["partial_calls"] > 0 and run["token_gain"] is not None and 0.0 <= run["token_gain"] <= 1.0
    assert run["token_trust"] is not None
    sample(_cache(micro["flux"], _tokens("clusters", propagation="off")), _latent("flux"), conditioning(1),
           conditioning(2), steps=16)
    assert recent_runs()[-1]["token_gain"] is None  # propagation off: nothing spread


def test_dynamic_tokens_is_not_a_registered_node(comfy_nodes):
    import nodes

    assert "DiTAccelDynamicTokens" not in nodes.NODE_CLASS_MAPPINGS
    assert {"DiTAccelClusterTokens", "DiTAccelEditRegion"} <= set(nodes.NODE_CLASS_MAPPINGS)


def test_dropped_context_counts_less_attention_work(micro):
    sample(_cache(micro["flux"], _tokens("dynamics", attention_context="drop")), _latent("flux"), conditioning(1),
           conditioning(2), steps=16)
    work = recent_runs()[-1]["token_work"]
    assert work["flops_ratio"] > work["token_ratio"] > 1.0


def test_batch_two_with_cfg(micro):
    out = sample(_cache(micro["flux"], _tokens("clusters")), _latent("flux", 2), conditioning(1), conditioning(2),
                 cfg=3.0, steps=16)
    run = recent_runs()[-1]
    assert out.shape[0] == 2 and torch.isfinite(out).all() and run["partial_calls"] > 0


def test_heun_and_branches_run_apart(micro):
    """Heun (two calls per step) and cond / uncond contexts that cannot be batched (ComfyUI runs the
    branches as separate calls: one capture per branch layout)."""
    model = _cache(micro["flux"], _tokens("clusters"))
    out = sample(model, _latent("flux"), conditioning(1), conditioning(2), steps=12, sampler="heun")
    assert torch.isfinite(out).all() and recent_runs()[-1]["partial_calls"] > 0
    out = sample(model, _latent("flux"), conditioning(1, tokens=77), conditioning(2, tokens=462), cfg=3.0, steps=16)
    assert torch.isfinite(out).all() and recent_runs()[-1]["partial_calls"] > 0


def test_a_new_size_on_the_same_model_starts_clean(micro):
    model = _cache(micro["flux"], _tokens("clusters"))
    for size in (16, 24, 16):
        out = sample(model, torch.zeros(1, 16, size, size), conditioning(1), conditioning(2), steps=16)
        run = recent_runs()[-1]
        assert out.shape[-1] == size and torch.isfinite(out).all() and run["partial_calls"] > 0


def test_reference_tokens_are_never_computed_on_partial_steps(micro, monkeypatch):
    """Kontext-style reference latents: partial calls hand the blocks only selected target rows."""
    seen = []
    original = TokenRun.complete_kv

    def spy(self, capture, block, k, v, mask=None):
        seen.append((capture.image_len, capture.target_start, int(self.partial.rows.max()), k.shape[2]))
        return original(self, capture, block, k, v, mask)

    monkeypatch.setattr(TokenRun, "complete_kv", spy)
    reference = torch.randn(1, 16, 16, 16)
    pos = conditioning(1, reference=reference)
    out = sample(_cache(micro["flux"], _tokens("clusters")), _latent("flux"), pos, conditioning(2), steps=16)
    run = recent_runs()[-1]
    assert torch.isfinite(out).all() and run["token_note"] == "" and run["partial_calls"] > 0
    n_target = 8 * 8
    assert seen and all(image_len == 2 * n_target for image_len, _, _, _ in seen)  # target + reference rows
    assert all(start == 0 and top < n_target for _, start, top, _ in seen)  # only target rows selected
    assert all(q <= 4 * 2 + 1 for _, _, _, q in seen)  # queries: the selected rows + one text token


def test_altered_block_fails_the_self_check_and_sampling_goes_on_unchanged(comfy_nodes, caplog):
    from scripts.harness.micro_models import build_micro_model

    model = build_micro_model("flux", seed=0)
    block = model.model.diffusion_model.double_blocks[0]
    forward = block.forward

    def altered(img, txt, *args, **kwargs):  # mixes tokens outside attention: a subset's rows differ
        img = img + 0.5 * img.mean(dim=1, keepdim=True)
        return forward(img, txt, *args, **kwargs)

    block.forward = altered
    pos, neg = conditioning(1), conditioning(2)
    plain = sample(_cache(model), _latent("flux"), pos, neg, steps=16)
    with caplog.at_level(logging.WARNING, logger="DiTAccel"):
        out = sample(_cache(model, _tokens("clusters")), _latent("flux"), pos, neg, steps=16)
    run = recent_runs()[-1]
    assert "self-check failed" in run["token_note"] and run["partial_calls"] == 0
    assert sum("token method off" in r.getMessage() for r in caplog.records) == 1
    assert torch.equal(out, plain)  # the temporal cache alone, bit for bit


def test_edit_region_computes_mask_and_rings_only(micro, monkeypatch):
    rows_seen = []
    original = TokenRun.select

    def spy(self, n_target, grid):
        call = original(self, n_target, grid)
        if call is not None:
            rows_seen.append(call.rows.clone())
        return call

    monkeypatch.setattr(TokenRun, "select", spy)
    mask = torch.zeros(1, 128, 128)
    mask[:, :64, :64] = 1.0  # top-left quarter of the image = 4x4 of the 8x8 tokens
    out = sample(_cache(micro["flux"], _tokens("region", mask=mask, rings=1)), _latent("flux"), conditioning(1),
                 conditioning(2), steps=16)
    assert torch.isfinite(out).all() and recent_runs()[-1]["partial_calls"] > 0
    expected = {r * 8 + c for r in range(5) for c in range(5)}  # 4x4 inside + one ring (clipped at the edge)
    assert rows_seen and all(set(rows.tolist()) == expected for rows in rows_seen)


def test_empty_mask_runs_without_partial_steps(micro):
    out = sample(_cache(micro["flux"], _tokens("region", mask=torch.zeros(1, 64, 64))), _latent("flux"),
                 conditioning(1), conditioning(2), steps=12)
    assert torch.isfinite(out).all() and recent_runs()[-1]["partial_calls"] == 0


def test_tokens_with_a_hidden_state_mode_is_a_clear_error(micro):
    with pytest.raises(ConfigError, match="cache_mode"):
        _cache(micro["flux"], _tokens("clusters"), cache_mode="final_hidden")


def test_bad_token_setting_names_the_input(comfy_nodes):
    with pytest.raises(ConfigError, match="clusters"):
        _tokens("clusters", clusters=1)


class BlockTokenCounter:
    """Forward pre-hooks on every transformer block: tokens through each block (image + text rows of the
    double blocks' two streams, the single blocks' joint stream), times the batch."""

    def __init__(self, model) -> None:
        dm = model.model.diffusion_model
        self.token_blocks = 0
        self.handles = [block.register_forward_pre_hook(self.count, with_kwargs=True)
                        for group in (dm.double_blocks, dm.single_blocks) for block in group]

    def count(self, module, args, kwargs):
        img = kwargs["img"] if "img" in kwargs else args[0]
        txt = kwargs.get("txt", args[1] if len(args) > 1 and isinstance(args[1], torch.Tensor) else None)
        self.token_blocks += img.shape[0] * (img.shape[1] + (txt.shape[1] if txt is not None else 0))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _counted(model, patched, *args, **kwargs) -> int:
    counter = BlockTokenCounter(model)
    try:
        sample(patched, *args, **kwargs)
    finally:
        counter.remove()
    return counter.token_blocks


@pytest.mark.parametrize("kind,cfg", [("clusters", 1.0), ("clusters", 3.0), ("region", 1.0)])
def test_reported_work_matches_what_every_block_computed(micro, kind, cfg):
    """The token-blocks a run reports (partial and shadow calls included) are the tokens forward hooks on
    every block saw; the uncached run's count is the reported uncached work."""
    model = micro["flux"]
    mask = torch.zeros(1, 8, 8)
    mask[:, :3] = 1.0  # 3 of 8 token rows
    tokens = _tokens(kind, mask=mask, rings=0) if kind == "region" else _tokens(kind)
    patched = _cache(model, tokens)
    inputs = (_latent("flux"), conditioning(1), conditioning(2))
    sample(patched, *inputs, cfg=cfg, steps=20)  # the block self-check (once per block and process) runs here
    seen = _counted(model, patched, *inputs, cfg=cfg, steps=20)
    run = recent_runs()[-1]
    work = run["token_work"]
    assert run["partial_calls"] > 0 and work["counts"].get("shadow", 0) > 0
    assert work["done_token_blocks"] == seen
    assert work["full_token_blocks"] == _counted(model, model, *inputs, cfg=cfg, steps=20)


def _segments(timeline) -> list[str]:
    """The forecast / partial steps between computed ones ("C"), e.g. "CFPPCFFP" -> ["FPP", "FFP"]."""
    return [seg for seg in "".join(timeline).split("C") if seg]


@pytest.mark.parametrize("kind", ["clusters", "region"])
def test_partial_from_keeps_partial_steps_in_the_later_part_of_each_gap(micro, kind):
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:40, 8:32] = 1.0
    extra = {"mask": mask} if kind == "region" else {}
    runs = {}
    for share in (0.0, 0.5):
        out = sample(_cache(micro["flux"], _tokens(kind, partial_from=share, **dict(extra))), _latent("flux"),
                     conditioning(1), conditioning(2), steps=20)
        assert torch.isfinite(out).all()
        runs[share] = recent_runs()[-1]
    every, late = runs[0.0], runs[0.5]
    assert 0 < late["partial_calls"] < every["partial_calls"]
    assert "FP" not in "".join(every["timeline"])  # 0: once partial steps start, every forecast step is one
    for seg in _segments(late["timeline"]):
        assert "PF" not in seg  # within a gap: plain forecasts first, partial steps after
        if len(seg) >= 2:
            assert seg[0] == "F"  # the first half of a gap of 3 or more steps is never partial
    assert late["token_work"]["token_ratio"] > every["token_work"]["token_ratio"]  # less work


def test_gap_weighting_changes_only_the_mid_gap_weights(micro):
    outs = {}
    for weighting in ("flat", "scaled"):
        outs[weighting] = sample(_cache(micro["flux"], _tokens("clusters", propagation="measured", partial_from=0.0,
                                                               gap_weighting=weighting)),
                                 _latent("flux"), conditioning(1), conditioning(2), steps=20)
        run = recent_runs()[-1]
        assert run["partial_calls"] > 0 and run["token_gain"] is not None
    assert not torch.equal(outs["flat"], outs["scaled"])  # mid-gap partial steps weigh fresh tokens differently


def test_partial_from_out_of_range_names_the_input(comfy_nodes):
    with pytest.raises(ConfigError, match="partial_from"):
        _tokens("clusters", partial_from=1.0)
