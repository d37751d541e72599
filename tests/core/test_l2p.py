"""L2P (learned linear predictor, output level): the closed-form fit recovers generating weights,
forecasts are exact on the data they were generated from, normalized-time interpolation, and the
output cache uses a profile (and falls back outside its range)."""
from __future__ import annotations

import pytest
import torch

from accel_core import ConfigError, ForecastCacheConfig, preset
from accel_core.learned import (L2PForecaster, Trajectory, evaluate, fit, load_l2p, newton_basis, predict,
                                raw_weights, register_profile_dir, save_l2p)
from accel_core.learned import profile as profile_mod
from accel_core.learned.l2p import history_before
from accel_core.learned.plan import budget_plan
from accel_core.output import OutputCacheRun


def _sigmas(steps: int) -> list[float]:
    return [1.0 - i / steps for i in range(steps)] + [0.0]


def _plan(steps: int, every: int) -> list[bool]:
    return [i < 3 or i % every == 0 for i in range(steps)]


def _polynomial_trajectory(sigmas, seed: int, degree: int = 2, shape=(2, 3, 4, 4)) -> Trajectory:
    """Slopes exactly polynomial in sigma (per element): Newton extrapolation of that degree is exact."""
    g = torch.Generator().manual_seed(seed)
    coefs = [torch.randn(shape, generator=g) for _ in range(degree + 1)]
    steps = len(sigmas) - 1
    x = torch.randn((steps, *shape), generator=g)
    slopes = torch.stack([sum(c * s ** k for k, c in enumerate(coefs)) for s in sigmas[:-1]])
    sig = torch.tensor(sigmas[:-1]).view(-1, 1, 1, 1, 1)
    return Trajectory(list(sigmas), x, x - sig * slopes)


def test_fit_recovers_known_linear_weights_per_forecast_step():
    """History slopes are random; each forecast step's slope is sum_j w[s, j] * history_j with known
    random weights w: the least-squares fit (ridge 0) must give back w, as raw weights."""
    steps, sigmas = 20, _sigmas(20)
    plan = _plan(steps, 5)
    g = torch.Generator().manual_seed(3)
    truth_w: dict[int, torch.Tensor] = {}
    trajectories = []
    for t in range(3):
        slopes = torch.randn((steps, 2, 16), generator=g)
        for s in range(steps):
            if plan[s]:
                continue
            hist = history_before(plan, s, 3)
            if s not in truth_w:
                truth_w[s] = torch.randn(len(hist), generator=torch.Generator().manual_seed(100 + s))
            slopes[s] = sum(w * slopes[h] for w, h in zip(truth_w[s], hist))
        x = torch.randn((steps, 2, 16), generator=g)
        sig = torch.tensor(sigmas[:-1]).view(-1, 1, 1)
        trajectories.append(Trajectory(sigmas, x, x - sig * slopes))
    table = fit(trajectories, plan, history=3, ridge=0.0)
    assert table.coef.shape[0] == sum(1 for p in plan if not p)
    for r, t in enumerate(table.time):
        s = round(float(t) * steps)
        hist = history_before(plan, s, 3)
        got = raw_weights(table.coef[r, :len(hist)].tolist(), [sigmas[h] for h in hist], sigmas[s])
        assert got == pytest.approx(truth_w[s].tolist(), abs=1e-3), s
    assert evaluate(table, trajectories)["l2p_rel_error"] < 1e-4


def test_polynomial_slopes_fit_the_exact_extrapolation_and_beat_reuse():
    sigmas = _sigmas(30)
    plan = _plan(30, 6)
    trajectories = [_polynomial_trajectory(sigmas, seed) for seed in range(3)]
    table = fit(trajectories, plan, history=3, ridge=0.0)
    three = list(range(table.coef.shape[0]))  # three full steps before the first forecast: all rows
    assert torch.allclose(table.coef[three], torch.tensor([0.0, 1.0, 1.0]).expand(len(three), 3), atol=1e-3)
    held = evaluate(table, [_polynomial_trajectory(sigmas, 99)])
    assert held["l2p_rel_error"] < 1e-3 * held["reuse_rel_error"]


def test_ridge_shrinks_toward_output_reuse():
    sigmas = _sigmas(30)
    plan = _plan(30, 6)
    trajectories = [_polynomial_trajectory(sigmas, seed) for seed in range(2)]
    loose = fit(trajectories, plan, history=3, ridge=0.0).coef.abs().sum()
    tight = fit(trajectories, plan, history=3, ridge=1e6).coef.abs().sum()
    assert tight < 1e-3 * loose


def test_newton_basis_is_the_polynomial_extrapolation():
    sig = [0.5, 0.6, 0.7]
    f = lambda s: torch.tensor([1.0 + 2 * s - 3 * s * s])  # noqa: E731
    basis = newton_basis(sig, [f(s) for s in sig], 0.3)
    assert float(basis.sum()) == pytest.approx(float(f(0.3)), abs=1e-5)
    # c = (0, 1, 1) is full quadratic extrapolation: its raw weights are the Lagrange weights
    lagrange = [(0.3 - 0.6) * (0.3 - 0.7) / ((0.5 - 0.6) * (0.5 - 0.7)),
                (0.3 - 0.5) * (0.3 - 0.7) / ((0.6 - 0.5) * (0.6 - 0.7)),
                (0.3 - 0.5) * (0.3 - 0.6) / ((0.7 - 0.5) * (0.7 - 0.6))]
    assert raw_weights([0.0, 1.0, 1.0], sig, 0.3) == pytest.approx(lagrange, abs=1e-5)
    assert raw_weights([0.0, 0.0, 0.0], sig, 0.3) == pytest.approx([1.0, 0.0, 0.0])


def _profile(tmp_path, steps=30, every=6, sampler="euler", name="p.safetensors", family="flux"):
    sigmas = _sigmas(steps)
    plan = _plan(steps, every)
    table = fit([_polynomial_trajectory(sigmas, s) for s in range(2)], plan, history=3, ridge=0.0)
    header = {"family": family, "fingerprint": "sha256:test", "sampler": sampler, "scheduler": "simple",
              "sigmas": sigmas, "budget": {"interval": every}, "validation": {}}
    save_l2p(tmp_path / name, table, header)
    return load_l2p(name, tmp_path), table


def test_runtime_returns_the_fitted_rows_on_the_fitted_schedule(tmp_path):
    prof, table = _profile(tmp_path)
    fc = L2PForecaster(prof, _sigmas(30), "euler")
    assert fc.outside == ""
    for r, t in enumerate(table.time):
        s = round(float(t) * 30)
        last = history_before(table.plan, s, 1)[0]
        fc.history = [(last, 0.0, torch.zeros(1))]
        coef, reason = fc.coefficients(s)
        assert reason == ""
        assert coef == pytest.approx(table.coef[r].tolist())


def test_runtime_interpolates_over_normalized_time(tmp_path):
    prof, _ = _profile(tmp_path)
    table = prof.table
    # Make the coefficients a known linear function of time, then ask between two rows of one since_full.
    table.coef[:] = torch.stack([table.time, 2 * table.time, -table.time], dim=1)
    fc = L2PForecaster(prof, _sigmas(40), "euler")
    assert fc.outside == ""
    fc.history = [(24, 0.0, torch.zeros(1))]  # step 25 of 40: time 0.625, since_full 1
    coef, reason = fc.coefficients(25)
    assert reason == ""
    rows = sorted((float(table.time[r]), r) for r in range(len(table.time)) if int(table.since_full[r]) == 1)
    assert rows[0][0] < 0.625 < rows[-1][0]
    assert coef == pytest.approx([0.625, 1.25, -0.625], abs=1e-6)


def test_runtime_flags_runs_outside_the_profile(tmp_path):
    prof, _ = _profile(tmp_path)
    assert "sampler" in L2PForecaster(prof, _sigmas(30), "heun").outside
    assert "steps" in L2PForecaster(prof, _sigmas(100), "euler").outside
    shifted = [s ** 3 for s in _sigmas(30)]
    assert "schedule" in L2PForecaster(prof, shifted, "euler").outside
    fc = L2PForecaster(prof, _sigmas(30), "euler")
    fc.history = [(10, 0.0, torch.zeros(1))]
    assert "since the last full step" in fc.coefficients(29)[1]


def _euler(denoiser, sigmas, run=None, x=None):
    x = torch.ones(1, 2, 4, 4) if x is None else x.clone()
    xs, dens = [], []
    for i in range(len(sigmas) - 1):
        s = sigmas[i]
        if run is None:
            den = denoiser(x, s)
        else:
            call = run.begin(s, x)
            if call.compute:
                den = denoiser(x, s)
                run.record(call, x, den)
            else:
                den = run.forecast(call, x)
        xs.append(x.clone())
        dens.append(den.clone())
        x = x + (x - den) / s * (sigmas[i + 1] - s)
    return x, Trajectory(list(sigmas), torch.stack(xs), torch.stack(dens))


def _denoiser(seed):
    g = torch.Generator().manual_seed(seed)
    a, b, c = (torch.randn(1, 2, 4, 4, generator=g) for _ in range(3))
    return lambda x, s: a + b * s + c * s * s + 0.4 * s * x


def test_output_cache_uses_a_profile_and_beats_the_backtest_blend(tmp_path, monkeypatch):
    """Calibrate on two denoisers' uncached runs, run a third through OutputCacheRun with the profile."""
    monkeypatch.setattr(profile_mod, "_DIRS", [])
    register_profile_dir(tmp_path)
    steps, config = 30, preset("balanced")
    sigmas = _sigmas(steps)
    plan = budget_plan(config, sigmas)
    trajectories = [_euler(_denoiser(s), sigmas)[1] for s in range(4)]
    table = fit(trajectories, plan, history=3, ridge=1e-6)
    save_l2p(tmp_path / "toy.safetensors", table,
             {"family": "test", "fingerprint": "sha256:x", "sampler": "euler", "scheduler": "simple",
              "sigmas": sigmas, "budget": {"interval": 5}, "validation": {}})
    truth, _ = _euler(_denoiser(7), sigmas)
    learned_run = OutputCacheRun(config.replace(learned_profile="toy.safetensors"), "test", sigmas, sampler="euler")
    learned, _ = _euler(_denoiser(7), sigmas, learned_run)
    stats = learned_run.close()
    blend, _ = _euler(_denoiser(7), sigmas, OutputCacheRun(config, "test", sigmas))
    assert stats.learned.forecasts == sum(1 for p in plan if not p) and stats.learned.outside == ""
    assert (learned - truth).norm() < 0.5 * (blend - truth).norm()
    # Outside its range (another sampler) the run forecasts with the blend instead, and says so.
    other = OutputCacheRun(config.replace(learned_profile="toy.safetensors"), "test", sigmas, sampler="heun")
    fallback, _ = _euler(_denoiser(7), sigmas, other)
    stats = other.close()
    assert stats.learned.forecasts == 0 and "sampler" in stats.learned.outside
    assert torch.allclose(fallback, blend)


def test_config_validates_learned_profile():
    with pytest.raises(ConfigError, match="cache_mode 'output'"):
        ForecastCacheConfig(learned_profile="a.safetensors")
    with pytest.raises(ConfigError, match="safetensors"):
        preset("balanced").replace(learned_profile="a.pt")
    assert "l2p" in preset("balanced").replace(learned_profile="a.safetensors").tag()


def test_learned_needs_output_mode_is_one_check_naming_field_or_socket():
    """The field (configs built in code) and the node's 'learned' socket share one check; each error names the
    input, the value and the fix."""
    from accel_core.config import check_learned_needs_output, with_connected_options

    check_learned_needs_output("output")
    check_learned_needs_output("output", connected=True)
    with pytest.raises(ConfigError, match="learned_profile needs cache_mode 'output'.*'per_block'.*clear "):
        ForecastCacheConfig(cache_mode="per_block", learned_profile="a.safetensors")
    with pytest.raises(ConfigError, match="'learned'.*needs cache_mode 'output'.*'final_hidden'.*disconnect 'learned'"):
        with_connected_options(ForecastCacheConfig(), learned_profile="a.safetensors")
    config = with_connected_options(preset("balanced"), learned_profile="a.safetensors")
    assert config.learned_profile == "a.safetensors"
