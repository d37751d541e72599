"""DiTAccelCompare inside the real ComfyUI: outputs, UI payload, latent pairs and error messages."""
from __future__ import annotations

import math

import pytest
import torch


def _node():
    import nodes

    return nodes.NODE_CLASS_MAPPINGS["DiTAccelCompare"]


def _images(seed: int = 0, shape=(1, 32, 32, 3)) -> torch.Tensor:
    return 0.2 + 0.6 * torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_registered_with_tooltips(comfy_nodes):
    schema = _node().define_schema()
    assert schema.node_id == "DiTAccelCompare" and schema.category == "DiT Accel/diagnostics"
    assert schema.is_output_node
    assert [i.id for i in schema.inputs] == ["baseline", "accelerated", "baseline_latent", "accelerated_latent",
                                             "amplify"]
    for item in list(schema.inputs) + list(schema.outputs):
        assert item.tooltip and len(item.tooltip) > 20


def test_identical_images(comfy_nodes):
    x = _images()
    out = _node().execute(baseline=x, accelerated=x.clone())
    psnr, ssim, heat = out.args
    assert psnr == math.inf and ssim == pytest.approx(1.0)
    assert heat.shape == (1, 32, 32, 3) and heat.abs().sum() == 0
    ui = out.ui["dit_accel_compare"][0]
    assert ui["identical"] is True and ui["psnr_db"] is None and ui["source"] == "image"


def test_known_noise_and_latent_pair(comfy_nodes):
    x = _images()
    signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(1)).float() * 2 - 1
    y = x + 0.05 * signs
    la = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(2))  # a video / Qwen latent
    out = _node().execute(baseline=x, accelerated=y, baseline_latent={"samples": la},
                          accelerated_latent={"samples": la + 0.01})
    psnr, ssim, heat = out.args
    assert psnr == pytest.approx(20 * math.log10(1 / 0.05), abs=1e-3)
    assert 0 < ssim < 1 and heat.shape == (1, 32, 32, 3)
    ui = out.ui["dit_accel_compare"][0]
    span = float(la.max() - la.min())
    assert ui["latent_psnr_db"] == pytest.approx(10 * math.log10(span ** 2 / 0.01 ** 2), abs=1e-3)


def test_latents_only_give_per_frame_heatmaps(comfy_nodes):
    la = torch.randn(2, 16, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    psnr, ssim, heat = _node().execute(baseline_latent={"samples": la}, accelerated_latent={"samples": la}).args
    assert psnr == math.inf and ssim == pytest.approx(1.0)
    assert heat.shape == (6, 8, 8, 3)  # batch x frames images


def test_shape_mismatch_names_inputs_shapes_and_fix(comfy_nodes):
    from accel_core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        _node().execute(baseline=_images(shape=(1, 64, 64, 3)), accelerated=_images(shape=(1, 32, 32, 3)))
    msg = str(err.value)
    assert "'baseline' is 1x64x64x3" in msg and "'accelerated' is 1x32x32x3" in msg and "same latent size" in msg


def test_half_connected_pair_and_nothing_connected(comfy_nodes):
    from accel_core.errors import ConfigError

    with pytest.raises(ConfigError, match="'baseline' is connected but 'accelerated' is not"):
        _node().execute(baseline=_images())
    with pytest.raises(ConfigError, match="nothing to compare"):
        _node().execute()
