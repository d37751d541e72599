"""LESA (stage-aware KAN experts over L2P's Newton coefficients): KAN math, stage routing, coefficient
shapes, the lesa profile round trip, the fit beating L2P where the right coefficients depend on the run,
and the output cache using a lesa profile."""
from __future__ import annotations

import math

import pytest
import torch

from accel_core import preset
from accel_core.errors import ProfileFormatError
from accel_core.learned import (L2PForecaster, LESAForecaster, SlopeTrajectory, fit, load_l2p, load_l2p_cached,
                                register_profile_dir, save_l2p)
from accel_core.learned import profile as profile_mod
from accel_core.learned.kan import KAN, bspline_basis
from accel_core.learned.loading import load_learned
from accel_core.learned.lesa import (LESA, LESAProfile, _coefficients, evaluate_lesa, features, load_lesa, prepare,
                                     save_lesa, stage_of, train)
from accel_core.learned.plan import budget_plan
from accel_core.output import OutputCacheRun

HEADER = {"family": "test", "fingerprint": "sha256:x", "sampler": "euler", "scheduler": "simple",
          "budget": {"interval": 5}, "validation": {}}


# ------------------------------------------------------------------------------------ KAN math
def test_bspline_basis_is_a_partition_of_unity_and_clamps():
    x = torch.linspace(-1, 1, 1001)
    b = bspline_basis(x, grid=5)
    assert b.shape == (1001, 8)
    assert torch.allclose(b.sum(-1), torch.ones(1001), atol=1e-6)
    assert (b >= -1e-7).all()
    # cubic B-spline on a uniform grid: an interior knot gets 1/6, 4/6, 1/6
    knot = bspline_basis(torch.tensor([-0.2]), grid=5)[0]
    assert sorted(knot[knot > 1e-7].tolist()) == pytest.approx([1 / 6, 1 / 6, 4 / 6], abs=1e-6)
    # outside the grid the spline input is clamped to the end
    assert torch.allclose(bspline_basis(torch.tensor([3.0, -7.0]), 5), bspline_basis(torch.tensor([1.0, -1.0]), 5))


def test_kan_fits_a_smooth_function_with_finite_gradients():
    torch.manual_seed(0)
    net = KAN([1, 8, 1])
    x = torch.linspace(-1, 1, 200).unsqueeze(-1)
    y = torch.sin(3 * x) + 0.3 * x ** 2
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(800):
        opt.zero_grad()
        loss = ((net(x) - y) ** 2).mean()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters())
        opt.step()
    assert float(loss.detach()) < 1e-3 * float((y ** 2).mean())
    net.zero_output()
    assert torch.equal(net(x), torch.zeros_like(y))


# ------------------------------------------------------------------------------------ stages, shapes
def test_stage_routing_sends_a_time_to_its_expert():
    assert [stage_of(t, 3) for t in (0.0, 0.2, 0.34, 0.5, 0.66, 0.67, 0.99, 1.0)] == [0, 0, 1, 1, 1, 2, 2, 2]
    model = LESA(history=3, stages=3)
    with torch.no_grad():
        model.experts[1].layers[-1].base.fill_(1.0)  # only the mid expert changes coefficients
    feats = features(0.5, 2, 4.0, torch.tensor([[1.0, 0.1, 0.01]]))
    assert feats.shape == (1, 4)
    assert model.delta(0.5, feats).abs().sum() > 0
    assert torch.equal(model.delta(0.1, feats), torch.zeros(1, 3))
    assert torch.equal(model.delta(0.9, feats), torch.zeros(1, 3))


def _sigmas(steps: int) -> list[float]:
    return [1.0 - i / steps for i in range(steps)] + [0.0]


def _plan(steps: int, every: int = 5) -> list[bool]:
    return [i < 3 or i % every == 0 or i >= steps - 2 for i in range(steps)]


def _decay_trajectory(sigmas, seed: int, batch: int = 2, n: int = 24) -> SlopeTrajectory:
    """Slopes a * exp(-lam * sigma) + c with a run-dependent rate lam: the best Newton coefficients depend
    on lam, which the history's divided-difference norms reveal (so a per-step table cannot fit every run)."""
    g = torch.Generator().manual_seed(seed)
    a, c = torch.randn(batch, n, generator=g), torch.randn(batch, n, generator=g)
    lam = 0.5 + 7.5 * torch.rand(batch, 1, generator=g)
    s = torch.tensor(sigmas[:-1]).view(-1, 1, 1)
    return SlopeTrajectory(list(sigmas), (a * torch.exp(-lam * s * 3) + 0.2 * c).float())


def test_coefficients_shape_and_zero_experts_are_l2p():
    sigmas = _sigmas(30)
    plan = _plan(30)
    trajs = [_decay_trajectory(sigmas, s) for s in range(2)]
    table = fit(trajs, plan, history=3, ridge=1e-3)
    samples = prepare(trajs, table)
    assert len(samples) == 4  # two trajectories x two batch samples
    forecasts = sum(1 for s in range(30) if not plan[s])
    model = LESA(history=3, gap_scale=4.0)
    coef = _coefficients(model, samples[0])
    assert coef.shape == (forecasts, 3)
    assert torch.allclose(coef, samples[0].base)  # experts start at zero: exactly L2P


def test_teacher_forced_fit_beats_l2p_when_coefficients_depend_on_the_run():
    sigmas = _sigmas(30)
    plan = _plan(30)
    trajs = [_decay_trajectory(sigmas, s) for s in range(6)]
    table = fit(trajs, plan, history=3, ridge=1e-6)
    samples = prepare(trajs, table)
    l2p = evaluate_lesa(None, samples)
    model = train(samples, 3, 4.0, teacher_epochs=300, closed_epochs=0)
    lesa = evaluate_lesa(model, samples)
    assert l2p["rel_error"] < 0.5 * l2p["reuse_rel_error"]
    assert lesa["rel_error"] < 0.8 * l2p["rel_error"]


def test_closed_loop_stage_lowers_the_state_error():
    sigmas = _sigmas(30)
    plan = _plan(30)
    trajs = [_decay_trajectory(sigmas, s) for s in range(6)]
    table = fit(trajs, plan, history=3, ridge=1e-6)
    samples = prepare(trajs, table)
    teacher = train(samples, 3, 4.0, teacher_epochs=150, closed_epochs=0)
    closed = train(samples, 3, 4.0, teacher_epochs=150, closed_epochs=150)
    assert evaluate_lesa(closed, samples)["state_error"] < evaluate_lesa(teacher, samples)["state_error"]


# ------------------------------------------------------------------------------------ profile
def _lesa_profile(tmp_path, steps: int = 30, trained: bool = True):
    sigmas = _sigmas(steps)
    plan = budget_plan(preset("balanced"), sigmas)
    trajs = [_decay_trajectory(sigmas, s) for s in range(4)]
    table = fit(trajs, plan, history=3, ridge=1e-4)
    gap = float(max(table.since_full.tolist()))
    model = train(prepare(trajs, table), 3, gap, teacher_epochs=60, closed_epochs=0) if trained else \
        LESA(3, gap_scale=gap)
    path = save_lesa(tmp_path / "lesa.safetensors", model, table, {**HEADER, "sigmas": sigmas})
    return path, model, table, trajs


def test_profile_round_trip_with_method_lesa(tmp_path):
    path, model, table, _ = _lesa_profile(tmp_path)
    prof = load_lesa(path, tmp_path, family="test", fingerprint="sha256:x")
    assert isinstance(prof, LESAProfile) and prof.method == "lesa" and prof.header["method"] == "lesa"
    assert torch.equal(prof.table.coef, table.coef) and prof.table.plan == table.plan
    for (name, a), b in zip(model.state_dict().items(), prof.model.state_dict().values()):
        assert torch.equal(a, b), name
    feats = features(0.7, 2, model.gap_scale, torch.tensor([[1.0, 0.2, 0.03]]))
    assert torch.equal(model.delta(0.7, feats), prof.model.delta(0.7, feats))
    assert isinstance(load_learned(path, tmp_path), LESAProfile)
    with pytest.raises(ProfileFormatError, match="expected 'l2p'"):
        load_l2p(path, tmp_path)
    # an L2P profile still loads as L2P through the shared loader
    save_l2p(tmp_path / "l2p.safetensors", table, {**HEADER, "sigmas": _sigmas(30)})
    assert load_learned(tmp_path / "l2p.safetensors", tmp_path).method == "l2p"


def test_runtime_matches_the_training_forecast_and_reports_outside(tmp_path):
    path, model, table, trajs = _lesa_profile(tmp_path)
    prof = load_lesa(path, tmp_path)
    sigmas = _sigmas(30)
    fc = LESAForecaster(prof, sigmas, "euler")
    base = L2PForecaster(prof, sigmas, "euler")
    slopes = trajs[0].slopes()
    step = next(s for s in range(12, 30) if not table.plan[s])
    from accel_core.learned.l2p import history_before
    for i in reversed(history_before(table.plan, step, 3)):
        for f in (fc, base):
            f.history.insert(0, (i, sigmas[i], slopes[i]))
    sample = prepare([trajs[0]], table)[0]
    coef = _coefficients(prof.model, sample)[sample.steps.index(step)]
    got, reason = fc.forecast_slope(step, sigmas[step])
    from accel_core.learned.l2p import predict
    want = predict(coef.tolist(), [h[1] for h in fc.history], [h[2][:1] for h in fc.history], sigmas[step])
    assert reason == ""
    assert torch.allclose(got[:1], want, atol=1e-4)
    assert not torch.allclose(got, base.forecast_slope(step, sigmas[step])[0], atol=1e-5)  # the experts act
    assert "sampler" in LESAForecaster(prof, sigmas, "heun").outside


def test_output_cache_runs_a_lesa_profile(tmp_path, monkeypatch):
    monkeypatch.setattr(profile_mod, "_DIRS", [])
    register_profile_dir(tmp_path)
    _lesa_profile(tmp_path)
    sigmas = _sigmas(30)
    config = preset("balanced").replace(learned_profile="lesa.safetensors")
    run = OutputCacheRun(config, "test", sigmas, sampler="euler")
    assert isinstance(run.learned, LESAForecaster)
    assert isinstance(load_l2p_cached("lesa.safetensors"), LESAProfile)
    g = torch.Generator().manual_seed(3)
    a = torch.randn(1, 2, 4, 4, generator=g)
    x = torch.ones(1, 2, 4, 4)
    for i in range(30):
        s = sigmas[i]
        call = run.begin(s, x)
        if call.compute:
            den = x - s * a * math.exp(-2 * s)
            run.record(call, x, den)
        else:
            den = run.forecast(call, x)
        assert torch.isfinite(den).all()
        x = x + (x - den) / s * (sigmas[i + 1] - s)
    stats = run.close()
    assert stats.learned.forecasts == sum(1 for p in budget_plan(preset("balanced"), sigmas) if not p)
    assert stats.learned.outside == ""
