"""SpeCa verification, FreqCa and SVD-Cache inside the real ComfyUI, on every micro family."""
from __future__ import annotations

import pytest
import torch
from helpers import LATENTS, conditioning, recent_runs, sample

FAMILIES = list(LATENTS)


def _latent(family: str, batch: int = 1) -> torch.Tensor:
    shape = list(LATENTS[family])
    shape[0] = batch
    return torch.zeros(shape)


def _patched(model, **cfg):
    import sys

    from accel_core import ForecastCacheConfig

    adapter = next(m for n, m in sys.modules.items() if n.endswith("nodes.adapter") and hasattr(m, "apply_forecast_cache"))
    base = dict(method="taylorseer", order=1, interval=4, warmup_steps=2, final_full_steps=1)
    base.update(cfg)
    return adapter.apply_forecast_cache(model, ForecastCacheConfig(**base))


VARIANTS = {
    "speca_first_rollback": dict(verify="first_block", verify_mode="rollback", verify_threshold=0.5, min_forecasts=0),
    "speca_last_next": dict(verify="last_block", verify_mode="next_step", verify_threshold=0.5, min_forecasts=0),
    "freqca": dict(method="hicache", order=2, decomposition="freq", freq_cutoff=0.2),
    "svdcache": dict(decomposition="svd", svd_energy=0.9, svd_max_rank=16),
}


# Every method on every family, with CFG on for half of the pairs and off for the other half (CI time).
CASES = [(family, variant, 3.0 if (i + j) % 2 == 0 else 1.0)
         for i, family in enumerate(FAMILIES) for j, variant in enumerate(VARIANTS)]


@pytest.mark.parametrize("family,variant,cfg", CASES)
def test_methods_run_on_every_family_with_cfg_and_batch_two(micro, family, variant, cfg):
    model = micro[family]
    out = sample(_patched(model, **VARIANTS[variant]), _latent(family, 2), conditioning(1, batch=2),
                 conditioning(2, batch=2), cfg=cfg, steps=10)
    run = recent_runs()[-1]
    assert torch.isfinite(out).all()
    assert run["forecast_calls"] > 0 and run["computed_calls"] < run["calls"]
    if variant.startswith("speca"):
        assert run["probes"] > 0 and run["probes"] == run["accepted"] + run["rejected"]
        assert run["blocks_per_call"] > 0


# Both probes and both cache modes on every family, split so each family sees both probes.
ROLLBACK_CASES = [(family, probe, mode) for i, family in enumerate(FAMILIES)
                  for probe, mode in ((("first_block", "final_hidden"), ("last_block", "per_block")) if i % 2 == 0
                                      else (("first_block", "per_block"), ("last_block", "final_hidden")))]


@pytest.mark.parametrize("family,probe,mode", ROLLBACK_CASES)
def test_rollback_of_every_forecast_is_bit_identical_to_the_plain_model(micro, family, probe, mode):
    """A threshold nothing passes rejects every probed forecast; rollback must then compute exactly."""
    model = micro[family]
    pos, neg = conditioning(1), conditioning(2)
    plain = sample(model, _latent(family), pos, neg, cfg=2.0, steps=8)
    strict = _patched(model, cache_mode=mode, verify=probe, verify_mode="rollback", verify_threshold=0.001,
                      verify_floor=0.0, min_forecasts=0)
    out = sample(strict, _latent(family), pos, neg, cfg=2.0, steps=8)
    run = recent_runs()[-1]
    assert run["rejected"] == run["probes"] > 0
    assert run["forecast_calls"] == 0 and set(run["timeline"]) <= {"C", "R"}
    assert torch.equal(out, plain)


def test_next_step_rejections_force_the_following_call(micro):
    model = micro["flux"]
    sample(_patched(model, interval=6, verify="first_block", verify_mode="next_step", verify_threshold=0.001,
                    verify_floor=0.0, min_forecasts=0), _latent("flux"), conditioning(1), conditioning(2), steps=12)
    timeline = recent_runs()[-1]["timeline"]
    assert "R" in timeline
    for i, mark in enumerate(timeline[:-1]):
        if mark == "R":
            assert timeline[i + 1] == "C"


@pytest.mark.parametrize("family,ref_shape", [("flux", (1, 16, 16, 12)), ("qwen_image", (1, 16, 1, 16, 12))])
@pytest.mark.parametrize("variant", ["freqca", "speca_last_next"])
def test_reference_tokens_are_never_forecast(micro, family, ref_shape, variant):
    """Kontext / Qwen-Image-Edit: the split and the probe see target tokens only (8x8 grid, not 8x14)."""
    model = micro[family]
    ref = torch.randn(ref_shape, generator=torch.Generator().manual_seed(5))
    pos, neg = conditioning(1, reference=ref), conditioning(2, reference=ref)
    out = sample(_patched(model, **VARIANTS[variant]), _latent(family), pos, neg, steps=8)
    run = recent_runs()[-1]
    assert torch.isfinite(out).all() and run["forecast_calls"] > 0
    if variant == "freqca":
        assert max(run["branch_cache_bytes"].values()) == 3 * 64 * 128 * 4  # Hermite o2: 3 target-token states


def test_option_nodes_feed_the_forecast_cache(micro):
    import nodes

    verify = nodes.NODE_CLASS_MAPPINGS["DiTAccelVerifyOptions"].execute("last_block", "rollback", 0.3, 0.5, 0.02, 1, "absolute", 1.0)[0]
    split = nodes.NODE_CLASS_MAPPINGS["DiTAccelFrequencyOptions"].execute(0.2, "2d")[0]
    node = nodes.NODE_CLASS_MAPPINGS["DiTAccelForecastCache"]
    patched = node.execute(micro["hunyuan_video"], "balanced", "preset", "final_hidden", 0, -1, -1, -1, 0.0, 1.0,
                           verify=verify, split=split)[0]
    sample(patched, _latent("hunyuan_video"), conditioning(1), conditioning(2), steps=12)
    run = recent_runs()[-1]
    assert "-freq0.2a-vl0.3rb" in run["tag"] and run["probes"] > 0
    for node_id in ("DiTAccelVerifyOptions", "DiTAccelFrequencyOptions", "DiTAccelSubspaceOptions",
                    "DiTAccelHyCaProfile"):
        schema = nodes.NODE_CLASS_MAPPINGS[node_id].define_schema()
        assert schema.category == "DiT Accel/caching"
        for item in schema.inputs:
            assert item.tooltip and len(item.tooltip) > 20, (node_id, item.id)


def test_invalid_combinations_get_clear_messages(micro):
    import nodes

    from accel_core import ConfigError

    node = nodes.NODE_CLASS_MAPPINGS["DiTAccelForecastCache"]
    verify = nodes.NODE_CLASS_MAPPINGS["DiTAccelVerifyOptions"].execute("first_block", "rollback", 0.1, 0.5, 0.02, 5)[0]
    with pytest.raises(ConfigError, match="min_forecasts .*interval"):
        node.execute(micro["flux"], "quality", "preset", "final_hidden", 4, -1, -1, -1, 0.0, 1.0, verify=verify)
    with pytest.raises(ConfigError, match="HyCa profile is connected but method is 'foca'"):
        node.execute(micro["flux"], "quality", "foca", "final_hidden", 0, -1, -1, -1, 0.0, 1.0,
                     hyca={"hyca_profile": "x.safetensors"})
    with pytest.raises(ConfigError, match="hyca.*profile"):
        node.execute(micro["flux"], "quality", "hyca", "final_hidden", 0, -1, -1, -1, 0.0, 1.0)


def test_hyca_profile_for_another_family_is_refused_at_the_node(micro, tmp_path, monkeypatch):
    """An old-format profile picked through the HyCa Profile node from models/dit_accel: refused for another
    family, used for its own (profiles are read only from the profile folder)."""
    import shutil
    from pathlib import Path

    import folder_paths
    import nodes

    from accel_core import ConfigError

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "dit_accel", ([str(tmp_path)], {".safetensors"}))
    folder_paths.filename_list_cache.pop("dit_accel", None)
    asset = Path(__file__).resolve().parents[1] / "assets" / "hyca_micro_flux.safetensors"
    shutil.copy(asset, tmp_path / "old.safetensors")
    try:
        hyca = nodes.NODE_CLASS_MAPPINGS["DiTAccelHyCaProfile"].execute("old.safetensors")[0]
        node = nodes.NODE_CLASS_MAPPINGS["DiTAccelForecastCache"]
        with pytest.raises(ConfigError, match="calibrated on model family 'flux'"):
            node.execute(micro["qwen_image"], "balanced", "preset", "final_hidden", 0, -1, -1, -1, 0.0, 1.0,
                         hyca=hyca)
        patched = node.execute(micro["flux"], "balanced", "preset", "final_hidden", 0, -1, -1, -1, 0.0, 1.0,
                               hyca=hyca)[0]
        sample(patched, _latent("flux"), conditioning(1), conditioning(2), steps=12)
        assert recent_runs()[-1]["tag"].startswith("hyca-")
    finally:
        folder_paths.filename_list_cache.pop("dit_accel", None)


def test_explicit_method_drops_the_presets_split_unless_a_split_node_is_connected(comfy_nodes):
    from accel_core import config as module  # resolve_config: the node's inputs -> one config (host-free)

    args = ("balanced", "taylorseer", "final_hidden", 0, -1, -1, -1, 0.0, 1.0, "flux")
    assert module.resolve_config("balanced", "preset", *args[2:]).decomposition == "svd"  # flux balanced
    assert module.resolve_config(*args).decomposition == "none"
    split = {"decomposition": "freq", "freq_cutoff": 0.2, "video_transform": "3d", "split_select": "adaptive"}
    assert module.resolve_config(*args, split=split).decomposition == "freq"
