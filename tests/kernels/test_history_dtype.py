"""The bf16 history option: config validation, storage dtype, forecast accuracy against fp32 storage."""
from __future__ import annotations

import pytest
import torch

from accel_core import ConfigError, ForecastCacheConfig, make_forecaster, ops


def test_history_dtype_is_validated_with_a_helpful_message():
    with pytest.raises(ConfigError, match="history_dtype must be one of fp32, bf16 \\(got 'fp16'\\)"):
        ForecastCacheConfig(history_dtype="fp16")
    assert ForecastCacheConfig().history_dtype == "fp32"
    assert ForecastCacheConfig(history_dtype="bf16").tag().endswith("-bf16h")
    assert "bf16" not in ForecastCacheConfig().tag()


@pytest.mark.parametrize("method", ["taylorseer", "hicache"])
def test_bf16_history_halves_memory_and_stays_close(method):
    ops.use_references()
    g = torch.Generator().manual_seed(0)
    basis = [torch.randn(2, 33, 40, generator=g) for _ in range(3)]

    def feature(t):  # smooth in t, like a residual trajectory
        return basis[0] + basis[1] * t + 0.5 * basis[2] * t * t

    results = {}
    for dtype in ("fp32", "bf16"):
        forecaster = make_forecaster(ForecastCacheConfig(method=method, order=2, history_dtype=dtype))
        for t in (1.0, 0.9, 0.78):
            forecaster.update(t, feature(t))
        results[dtype] = (forecaster.forecast(0.6), forecaster.memory_bytes(),
                          {d.dtype for d in forecaster.ladder.dd})
    (f32, mem32, dt32), (b16, mem16, dt16) = results["fp32"], results["bf16"]
    assert dt32 == {torch.float32} and dt16 == {torch.bfloat16}
    assert mem16 * 2 == mem32
    assert f32.dtype == b16.dtype == torch.float32  # the forecast itself is fp32 either way
    rel = (b16 - f32).norm() / f32.norm()
    assert rel < 1e-2, rel  # bf16 keeps ~3 significant digits
    assert rel > 0  # and really stores bf16
