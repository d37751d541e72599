"""Dispatch decisions (nodes/dispatch.py) and the forecast path end to end on interpreted kernels.

nodes/dispatch.py imports no ComfyUI, so it is loaded here from its file (its `kernels` import
falls back to the top-level package). The last test drives the pack as ComfyUI loaded it.
"""
from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import pytest
import torch

from accel_core import ForecastCacheConfig, ForecastRun, ops, spec_for_class

REPO = Path(__file__).resolve().parents[2]


def _load_dispatch():
    spec = importlib.util.spec_from_file_location("ditaccel_dispatch_under_test", REPO / "nodes" / "dispatch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def dispatch(monkeypatch):
    monkeypatch.delenv("DITACCEL_KERNELS", raising=False)
    module = _load_dispatch()
    yield module
    ops.use_references()


def test_kernels_off_forces_references(dispatch, monkeypatch):
    monkeypatch.setenv("DITACCEL_KERNELS", "off")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dispatch.install(allow_interpret=True) == dispatch.REFERENCE
    assert dispatch.STATE["reason"] == "DITACCEL_KERNELS=off"
    assert ops.OPS == ops.REFERENCES


def test_no_cuda_means_references(dispatch, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dispatch.decide() == (dispatch.REFERENCE, "no CUDA device")


def test_no_triton_means_references(dispatch, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(dispatch.kernel_pkg, "triton_importable", lambda: False)
    assert dispatch.decide() == (dispatch.REFERENCE, "Triton is not installed")


def test_a_foreign_kernels_package_is_not_used(dispatch, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delattr(dispatch.kernel_pkg, "DITACCEL_KERNELS")
    backend, reason = dispatch.decide()
    assert backend == dispatch.REFERENCE and "another package" in reason


def test_cuda_and_triton_install_guarded_kernels(dispatch, monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")
    with caplog.at_level(logging.INFO, logger="DiTAccel"):
        assert dispatch.install() == dispatch.TRITON
    assert [r.getMessage() for r in caplog.records] == ["DiT Accel: kernel backend: triton (CUDA device Test GPU)"]
    assert all(ops.OPS[name] is not ops.REFERENCES[name] for name in ops.REFERENCES)
    # CPU tensors (interpreter off) are not supported by a kernel: the guard hands them to the reference.
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    history = [torch.randn(2, 3, 4) for _ in range(2)]
    torch.testing.assert_close(ops.OPS["forecast_combine"](history, [1.0, 0.5]),
                               ops.forecast_combine_ref(history, [1.0, 0.5]), rtol=0, atol=0)


def test_guard_routes_unsupported_calls_to_the_reference(dispatch):
    import kernels

    calls = []
    fake = kernels.Kernel(launcher=lambda x: calls.append("kernel"), supports=lambda x: x == "ok")
    run = dispatch.guarded("demo", fake, lambda x: calls.append("reference"))
    run("ok")
    run("fp64")
    assert calls == ["kernel", "reference"]


def test_a_broken_kernel_import_falls_back_with_one_warning(dispatch, monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Test GPU")

    def broken():
        raise ImportError("triton too old")

    monkeypatch.setattr(dispatch.kernel_pkg, "load", broken)
    with caplog.at_level(logging.INFO, logger="DiTAccel"):
        assert dispatch.install() == dispatch.REFERENCE
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
    assert ops.OPS == ops.REFERENCES


def test_backend_line_is_logged_once_per_process(dispatch, monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="DiTAccel"):
        for _ in range(3):
            assert dispatch.ensure_installed() == dispatch.REFERENCE
    assert len([r for r in caplog.records if "kernel backend" in r.getMessage()]) == 1


# --------------------------------------------------------------------------- end to end
SIGMAS = [1.0 - i / 12 for i in range(13)]


def _drive(config: ForecastCacheConfig, dtype=torch.bfloat16) -> list[torch.Tensor]:
    """A whole run through the engine on a smooth synthetic trajectory; returns every forecast output."""
    run = ForecastRun(config, spec_for_class("Flux"), SIGMAS)
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(2, 19, 24, generator=g) for _ in range(3))
    outputs = []
    for sigma in SIGMAS[:-1]:
        plan = run.begin_call(sigma, ["cond", "uncond"], 19, 2, dtype, torch.device("cpu"))
        h_in = (a * sigma).to(dtype)
        if plan.compute:
            run.capture_input(plan, h_in)
            run.record_final(plan, (h_in.float() + b + c * sigma ** 2).to(dtype))
            plan.scratch["recorded"] = True
        else:
            outputs.append(run.forecast_final(plan, h_in))
        run.end_call(plan)
    run.close()
    return outputs


@pytest.mark.parametrize("settings", [dict(method="taylorseer", order=2), dict(method="hicache", order=2),
                                      dict(method="foca", order=1), dict(method="reuse", order=0),
                                      dict(method="taylorseer", order=3)])
def test_forecast_path_on_interpreted_kernels_equals_references(dispatch, settings):
    config = ForecastCacheConfig(interval=4, warmup_steps=4, final_full_steps=1, **settings)
    ops.use_references()
    expected = _drive(config)
    assert dispatch.install(allow_interpret=True) == dispatch.TRITON_INTERPRET
    got = _drive(config)
    assert len(got) == len(expected) > 0
    for out, ref in zip(got, expected):
        assert out.dtype == torch.bfloat16
        # bf16 outputs; the interpreter rounds fp32 -> bf16 toward zero (see kernel_helpers)
        torch.testing.assert_close(out.float(), ref.float(), atol=3e-2, rtol=2e-2)


def test_micro_flux_in_comfyui_with_interpreted_kernels_matches_references(monkeypatch):
    """The pack as ComfyUI loads it: same latent with kernels (interpreted) as with the references."""
    from scripts.harness.comfy_env import bootstrap, load_custom_nodes
    from scripts.harness.micro_models import build_micro_model

    bootstrap()
    load_custom_nodes()
    import nodes as comfy_nodes

    sys.path.append(str(REPO / "tests" / "comfy"))
    from helpers import apply, conditioning

    pack_dispatch = next(m for name, m in sys.modules.items()
                         if name.endswith("nodes.dispatch") and "dit_accel" in name)
    model = build_micro_model("flux", seed=0)
    pos, neg = conditioning(1), conditioning(2)

    def sample(patched):
        out = comfy_nodes.KSampler().sample(patched, 3, 10, 1.0, "euler", "simple", pos, neg,
                                            {"samples": torch.zeros(1, 16, 16, 16)}, denoise=1.0)
        return out[0]["samples"]

    try:
        pack_dispatch.install()  # CPU: references
        assert pack_dispatch.STATE["backend"] == pack_dispatch.REFERENCE
        expected = sample(apply(model, preset="balanced"))
        calls = []
        assert pack_dispatch.install(allow_interpret=True) == pack_dispatch.TRITON_INTERPRET
        spy = ops.OPS["forecast_residual_add"]
        monkeypatch.setitem(ops.OPS, "forecast_residual_add", lambda *a: calls.append(1) or spy(*a))
        got = sample(apply(model, preset="balanced"))
    finally:
        pack_dispatch.install()
    assert calls, "the forecast path never reached the kernel op"
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
