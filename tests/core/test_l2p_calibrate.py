"""L2P calibration helpers shared by the script and the Calibrate Forecasts node: slope-only
trajectories fit exactly like full ones, choose_and_fit reports progress and holds runs back."""
from __future__ import annotations

import pytest
import torch

from accel_core.learned import SlopeTrajectory, Trajectory, evaluate, fit
from accel_core.learned.calibrate import budget_header, choose_and_fit, fit_steps


def _runs(n: int, steps: int = 16, shape=(1, 4, 6, 6)) -> list[Trajectory]:
    sigmas = [1.0 - i / steps for i in range(steps)] + [0.0]
    out = []
    for seed in range(n):
        g = torch.Generator().manual_seed(seed)
        base, drift = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        slopes = torch.stack([base + s * drift + 0.01 * torch.randn(shape, generator=g) for s in sigmas[:-1]])
        x = torch.randn((steps, *shape), generator=g)
        sig = torch.tensor(sigmas[:-1]).view(-1, 1, 1, 1, 1)
        out.append(Trajectory(sigmas, x, x - sig * slopes))
    return out


def test_slope_trajectory_fits_and_scores_like_the_full_trajectory():
    full = _runs(3)
    slim = [SlopeTrajectory(t.sigmas, t.slopes()) for t in full]
    plan, _ = budget_header("balanced", full[0].sigmas)
    a, b = fit(full, plan, 3, 1e-3), fit(slim, plan, 3, 1e-3)
    torch.testing.assert_close(a.coef, b.coef, rtol=0, atol=0)
    assert evaluate(a, full) == evaluate(b, slim)
    assert slim[0].nbytes == full[0].x.numel() * 4  # half of x + denoised


def test_choose_and_fit_holds_back_a_quarter_and_reports_every_unit():
    runs = [SlopeTrajectory(t.sigmas, t.slopes()) for t in _runs(8)]
    plan, budget = budget_header("fast", runs[0].sigmas)
    ticks = []
    table, validation = choose_and_fit(runs, plan, progress=lambda: ticks.append(1))
    assert len(ticks) == fit_steps()
    assert validation["held_back_trajectories"] == 2 and validation["fit_trajectories"] == 6
    assert validation["l2p_rel_error"] < validation["reuse_rel_error"]  # the drift is linear in sigma
    assert budget["preset"] == "fast" and budget["share"] == "1/7" and budget["evaluations"] == sum(plan)
    assert table.steps == 16 and table.plan == plan


def test_too_few_runs_and_unknown_budget_are_refused():
    runs = _runs(1)
    with pytest.raises(ValueError, match="at least 2 runs"):
        choose_and_fit(runs, budget_header("balanced", runs[0].sigmas)[0])
    with pytest.raises(ValueError, match="unknown budget 'turbo'.*quality, balanced, fast"):
        budget_header("turbo", runs[0].sigmas)


def test_the_calibrate_nodes_fit_runs_without_comfyui(tmp_path):
    """Issue 20: the Calibrate node's L2P fit is host-free (accel_core/learned/calibration_fit.py; no ComfyUI
    import, tests/project/test_boundaries.py): the recorded runs of one group become a saved profile with the
    shared header, one progress unit per fit step, and a message that scores the held-back runs against output
    reuse as a percentage."""
    from accel_core.learned import load_l2p
    from accel_core.learned.calibration_fit import RecordedRun, Recorder, fit_l2p

    rec = Recorder("synthetic")
    for t in _runs(4):
        group = rec.add(RecordedRun(("fp", 16), SlopeTrajectory(t.sigmas, t.slopes()), "euler", "simple", 1.0), 8)
    rec.add(RecordedRun(("other", 16), group[0].trajectory, "euler", "simple", 1.0), 8)  # another group
    assert len(rec.runs) == 5 and len(group) == 4
    settings = {"profile_name": "synthetic", "budget": "balanced", "family": "flux", "fingerprint": "sha256:0",
                "model": "Flux"}
    bars: list[list[int]] = []

    def progress(total: int):
        bars.append([total, 0])
        return lambda units: bars[-1].__setitem__(1, bars[-1][1] + units)

    fitted = fit_l2p(settings, group, "16 steps, euler, simple", tmp_path / "synthetic.safetensors", progress)
    assert bars == [[fit_steps(), fit_steps()]]
    assert fitted.path.is_file() and fitted.runs == 4 and fitted.validation["held_back_trajectories"] == 1
    assert fitted.message.startswith("saved synthetic.safetensors (balanced 1/5, 16 steps, euler, simple) from 4 "
                                     "runs (3 fitted, 1 held back): held-back error ")
    assert " % lower than output reuse" in fitted.message
    header = load_l2p(fitted.path.name, tmp_path, family="flux").header
    assert header["sampler"] == "euler" and header["calibration"]["latent_shapes"] == ["[1, 4, 6, 6]"]
