"""HyCa calibration ("one-time choosing"): which solver forecasts each hidden channel best.

Input: a few uncached trajectories of the cached quantity (the final-hidden residual, [T, b, N, C]
fp32 with their time values on the configured axis) and the run's full-step plan
(`plan_full_steps`). Output: a channel -> solver map plus the figures behind it.

The paper leaves the procedure open; our choices:
- Scoring by simulation. Each candidate solver runs along the plan exactly as the engine would
  (update at full steps, and at planned forecast steps until it has the anchors it needs; forecast
  elsewhere, FoCa marching from its own forecasts), on the true trajectory (open loop: in a real
  run forecast errors also perturb later inputs, which this ignores). The score of a channel is its
  squared forecast error summed over forecast steps, tokens and samples: the quantity whose total
  over channels is the squared error of the forecast hidden state, so per-channel choices add up.
- Clustering by dynamics. A channel's dynamics are summarised by how well each solver's model of
  the trajectory (constant, line, parabola, damped parabola, drift ODE) fits it: the log of each
  solver's total error on the channel, minus the channel's mean log error (scale-free, so a quiet
  and a loud channel with the same dynamics land together). k-means (k-means++ seeding, seeded
  generator, several restarts, float64) groups channels into `clusters` (default 8) clusters.
  Measured alternative: a per-forecast-step log-error signature (5 solvers x 40 steps) generalised
  worse (leave-one-out over 16 trajectories of the trained micro FLUX, balanced schedule, relative
  error: 0.0613 vs 0.0609 at k=8; FoCa alone 0.0618, per-channel argmin 0.0608).
- Assignment. Each cluster gets the solver with the lowest summed raw error over its channels.
  Pooling channels guards against fitting calibration noise channel by channel; on the trained
  micro FLUX it was not needed (the per-channel argmin, reported as "oracle", generalised as well
  in the leave-one-out figures above), so the clusters mainly give the paper's structure and a
  map with k decisions. The leave-one-trajectory-out figures in the result measure both.
- Several plans. Errors along several plans (e.g. intervals 4..12) add up, so one profile serves
  every full-step budget it was calibrated for.
- Open loop is optimistic, and can mislead. On the trained micro FLUX (balanced schedule, 3 seeds x
  2 held-out prompts, scripts/calibrate_hyca.py --evaluate) the map beat FoCa's mean PSNR but not
  its worst case: swapping even 18 of 128 channels to TaylorSeer o1 cost one case 5 dB closed loop.
  On the micro Qwen-Image with true CFG, open-loop errors ranked FoCa below reuse and TaylorSeer o1
  while FoCa was clearly the best closed loop; raw-unit errors ignore how the final layer (adaLN
  scale, output projection) and the CFG combination weight each channel. Check a profile with
  --evaluate before relying on it.
- Deterministic: same inputs and seed give the same map (ties go to the earlier solver).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..config import ForecastCacheConfig
from ..errors import ConfigError
from ..hidden.forecasters import FORECASTERS
from ..hidden.forecasters.hyca import SOLVER_MIN_ANCHORS
from .hyca_profile import SOLVERS, HyCaProfile
from ..step import locate_step

DEFAULT_SOLVERS = tuple(SOLVERS)
DEFAULT_CLUSTERS = 8


@dataclass(frozen=True)
class Trajectory:
    """One uncached run of the cached quantity.

    Attributes:
        values: fp32 [T, b, N, C]: entry i is the value of model call i.
        times: T times on the config's time axis (sigma or step time).
        steps: T step indices into the plan (default 0..T-1: one call per step, e.g. euler).
    """

    values: torch.Tensor
    times: Sequence[float]
    steps: Sequence[int] | None = None

    def step_of(self, i: int) -> int:
        return i if self.steps is None else int(self.steps[i])


def trajectory_from_calls(values: torch.Tensor, sigmas: Sequence[float], sample_sigmas: Sequence[float],
                          time_axis: str) -> Trajectory:
    """A recorded run (one value per model call at `sigmas`, the run's schedule `sample_sigmas`) as a
    Trajectory on the config's time axis, with the same sigma -> step mapping as the engine."""
    located = [locate_step(s, sample_sigmas) for s in sigmas]
    times = list(sigmas) if time_axis == "sigma" else [t for _, t in located]
    return Trajectory(values=values, times=times, steps=[step for step, _ in located])


@dataclass
class SolverErrors:
    """Per-channel squared errors of one solver on one trajectory: err [F, C], truth energy [F, C]."""

    err: torch.Tensor
    energy: torch.Tensor


@dataclass
class CalibrationResult:
    """The map and the figures behind it (errors are relative: sqrt(sum sq err / sum sq truth))."""

    solvers: tuple[str, ...]
    solver_index: torch.Tensor  # int64 [C]
    cluster_index: torch.Tensor  # int64 [C]
    cluster_solver: list[int]
    solver_error: dict[str, float]  # each solver alone on every channel
    hyca_error: float
    oracle_error: float  # per-channel argmin on the same data (a lower bound, overfits)
    forecast_steps: int  # forecast steps per trajectory (summed over the plans)
    trajectories: int
    holdout: dict = field(default_factory=dict)

    @property
    def cluster_sizes(self) -> list[int]:
        return [int((self.cluster_index == k).sum()) for k in range(len(self.cluster_solver))]

    def channel_counts(self) -> dict[str, int]:
        return {name: int((self.solver_index == k).sum()) for k, name in enumerate(self.solvers)}

    def to_profile(self, family: str, info: dict | None = None) -> HyCaProfile:
        record = dict(info or {})
        record.update({
            "solver_errors": {k: round(v, 6) for k, v in self.solver_error.items()},
            "hyca_error": round(self.hyca_error, 6), "oracle_error": round(self.oracle_error, 6),
            "cluster_solvers": [self.solvers[s] for s in self.cluster_solver],
            "cluster_sizes": self.cluster_sizes, "channel_counts": self.channel_counts(),
            "calibration_trajectories": self.trajectories, "forecast_steps": self.forecast_steps,
            "holdout": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.holdout.items()},
        })
        return HyCaProfile(solver_index=self.solver_index.clone(), solvers=self.solvers, family=family,
                           cluster_index=self.cluster_index.clone(), info=record)

    def table(self) -> str:
        """Markdown tables: per-solver error and channels, then the clusters."""
        counts = self.channel_counts()
        lines = ["| solver | relative error alone | channels assigned |", "|---|---|---|"]
        for name in self.solvers:
            lines.append(f"| {name} | {self.solver_error[name]:.4f} | {counts[name]} |")
        lines.append(f"| **HyCa map** | {self.hyca_error:.4f} | {self.solver_index.numel()} |")
        lines.append(f"| per-channel oracle | {self.oracle_error:.4f} | |")
        if self.holdout:
            h = self.holdout
            lines += ["", f"Leave-one-trajectory-out ({h['folds']} folds): HyCa {h['hyca']:.4f}, "
                          f"per-channel oracle fitted on the rest {h['oracle']:.4f}, best single solver "
                          f"({h['best_single_name']}) {h['best_single']:.4f}."]
        lines += ["", "| cluster | channels | solver |", "|---|---|---|"]
        for k, (size, s) in enumerate(zip(self.cluster_sizes, self.cluster_solver)):
            lines.append(f"| {k} | {size} | {self.solvers[s]} |")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ simulation
def min_anchors(solvers: Sequence[str]) -> int:
    """Computed anchors a HyCa map over these solvers needs before forecasting (FoCa needs 2)."""
    return max(SOLVER_MIN_ANCHORS.get(SOLVERS[s][0], 1) for s in solvers)


def simulate(trajectory: Trajectory, plan: Sequence[bool], config: ForecastCacheConfig,
             solver: str, need: int | None = None) -> SolverErrors:
    """Run `solver` along the plan over the true trajectory; per forecast step, per-channel errors.

    `need` is the number of computed anchors before the first forecast (default: the solver's own);
    calibration passes the whole pool's, so every solver is scored on the same forecast steps,
    as they run together online.
    """
    method, order = SOLVERS[solver]
    forecaster = FORECASTERS.get(method)(config.replace(method=method, order=order))
    need = SOLVER_MIN_ANCHORS.get(method, 1) if need is None else need
    values = trajectory.values
    channels = values.shape[-1]
    errs, energies = [], []
    anchors = 0
    for i in range(values.shape[0]):
        step = min(trajectory.step_of(i), len(plan) - 1)
        truth = values[i].reshape(-1, channels)
        t = float(trajectory.times[i])
        if plan[step] or anchors < need:  # the engine's rule: full step, or history still too short
            forecaster.update(t, values[i].clone())
            anchors += 1
            continue
        guess = forecaster.forecast(t).reshape(-1, channels)
        errs.append(((guess - truth) ** 2).sum(0, dtype=torch.float64))
        energies.append((truth ** 2).sum(0, dtype=torch.float64))
    if not errs:
        raise ConfigError("HyCa calibration: the plan has no forecast steps for this trajectory. Use a larger "
                          "interval or more steps.")
    return SolverErrors(torch.stack(errs), torch.stack(energies))


def _along_plans(trajectory: Trajectory, plans: list[list[bool]], config: ForecastCacheConfig, solver: str,
                 need: int) -> SolverErrors:
    runs = [simulate(trajectory, plan, config, solver, need) for plan in plans]
    return SolverErrors(torch.cat([r.err for r in runs]), torch.cat([r.energy for r in runs]))


# ------------------------------------------------------------------------------------ clustering
def kmeans(x: torch.Tensor, k: int, seed: int = 0, restarts: int = 4, iters: int = 100) -> torch.Tensor:
    """Deterministic k-means (k-means++ seeding, Lloyd iterations) on rows of x; returns labels [n]."""
    x = x.to(torch.float64)
    n = x.shape[0]
    k = max(1, min(k, n))
    gen = torch.Generator().manual_seed(seed)
    best_labels, best_inertia = None, math.inf
    for _ in range(restarts):
        centers = x[torch.randint(n, (1,), generator=gen)]
        for _ in range(1, k):
            d2 = torch.cdist(x, centers).min(1).values ** 2
            probs = d2 / d2.sum() if d2.sum() > 0 else torch.full((n,), 1.0 / n, dtype=torch.float64)
            centers = torch.cat([centers, x[torch.multinomial(probs, 1, generator=gen)]])
        labels = torch.full((n,), -1, dtype=torch.long)
        for _ in range(iters):
            dist = torch.cdist(x, centers)
            new = dist.argmin(1)
            if torch.equal(new, labels):
                break
            labels = new
            for j in range(k):
                members = labels == j
                if members.any():
                    centers[j] = x[members].mean(0)
                else:  # empty cluster: restart it at the point farthest from its center
                    far = dist.gather(1, labels[:, None]).squeeze(1).argmax()
                    centers[j] = x[far]
        inertia = float(((x - centers[labels]) ** 2).sum())
        if inertia < best_inertia - 1e-12:
            best_labels, best_inertia = labels.clone(), inertia
    return _canonical(best_labels)


def _canonical(labels: torch.Tensor) -> torch.Tensor:
    """Renumber clusters by their first channel, so equal partitions get equal labels."""
    order: dict[int, int] = {}
    for v in labels.tolist():
        order.setdefault(v, len(order))
    return torch.tensor([order[v] for v in labels.tolist()], dtype=torch.long)


def dynamics_features(errors: list[list[SolverErrors]]) -> torch.Tensor:
    """[C, S] per-channel signature: log total error of each solver minus the channel's mean."""
    totals = torch.stack([sum(traj[s].err.sum(0) for traj in errors) for s in range(len(errors[0]))])  # [S, C]
    floor = 1e-12 * float(totals.mean()) + 1e-30
    feats = torch.log(totals + floor).T
    return feats - feats.mean(1, keepdim=True)


def _assign(labels: torch.Tensor, totals: torch.Tensor) -> list[int]:
    """Per cluster, the solver with the lowest summed error; totals [S, C]."""
    return [int(totals[:, labels == j].sum(1).argmin()) for j in range(int(labels.max()) + 1)]


def _rel(err: torch.Tensor, energy: float) -> float:
    return math.sqrt(float(err) / max(energy, 1e-300))


def _fit(errors: list[list[SolverErrors]], clusters: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    totals = torch.stack([sum(traj[s].err.sum(0) for traj in errors) for s in range(len(errors[0]))])  # [S, C]
    labels = kmeans(dynamics_features(errors), clusters, seed=seed)
    cluster_solver = _assign(labels, totals)
    return torch.tensor(cluster_solver, dtype=torch.long)[labels], labels, cluster_solver


def _map_error(errors: list[list[SolverErrors]], solver_index: torch.Tensor) -> tuple[float, float]:
    """Summed squared error of a channel map and the summed truth energy."""
    totals = torch.stack([sum(traj[s].err.sum(0) for traj in errors) for s in range(len(errors[0]))])
    energy = float(sum(traj[0].energy.sum() for traj in errors))
    return float(totals.gather(0, solver_index[None]).sum()), energy


# ------------------------------------------------------------------------------------ entry point
def calibrate(trajectories: Sequence[Trajectory], plans: Sequence[bool] | Sequence[Sequence[bool]],
              config: ForecastCacheConfig, solvers: Sequence[str] = DEFAULT_SOLVERS,
              clusters: int = DEFAULT_CLUSTERS, seed: int = 0) -> CalibrationResult:
    """Choose a solver per hidden channel; see the module docstring for the method.

    Args:
        trajectories: uncached runs, all with the same hidden size C and number of steps.
        plans: one plan (per step, True = full step: plan_full_steps of the schedule the profile is
            for) or several; with several, each trajectory is simulated along every plan and the errors
            add up, so one profile serves all those schedules (e.g. several full-step budgets).
        config: supplies the time axis conventions and HiCache's scale of the inner solvers.
        solvers: candidate names from hyca_profile.SOLVERS, in the index order the profile stores.
        clusters: number of channel clusters (k of k-means).
        seed: k-means seed.
    """
    if not trajectories:
        raise ConfigError("HyCa calibration: no trajectories given. Record at least one uncached run.")
    unknown = [s for s in solvers if s not in SOLVERS]
    if unknown or not solvers:
        raise ConfigError(f"HyCa calibration: unknown solvers {unknown}; choose from {', '.join(SOLVERS)}.")
    widths = {tr.values.shape[-1] for tr in trajectories}
    if len(widths) != 1:
        raise ConfigError(f"HyCa calibration: trajectories have different hidden sizes {sorted(widths)}; "
                          f"calibrate one model at a time.")
    if clusters < 1:
        raise ConfigError(f"HyCa calibration: clusters must be at least 1 (got {clusters}).")
    plan_list = [list(plans)] if plans and isinstance(plans[0], bool) else [list(p) for p in plans]
    need = min_anchors(solvers)
    errors = [[_along_plans(tr, plan_list, config, s, need) for s in solvers] for tr in trajectories]
    if len({traj[0].err.shape[0] for traj in errors}) != 1:
        raise ConfigError("HyCa calibration: trajectories have different numbers of forecast steps; record them "
                          "with the same steps, sampler and scheduler.")
    solver_index, labels, cluster_solver = _fit(errors, clusters, seed)
    energy = float(sum(traj[0].energy.sum() for traj in errors))
    solver_error = {}
    for s, name in enumerate(solvers):
        solver_error[name] = _rel(sum(traj[s].err.sum() for traj in errors), energy)
    totals = torch.stack([sum(traj[s].err.sum(0) for traj in errors) for s in range(len(solvers))])
    hyca_err, _ = _map_error(errors, solver_index)
    return CalibrationResult(
        solvers=tuple(solvers), solver_index=solver_index, cluster_index=labels, cluster_solver=cluster_solver,
        solver_error=solver_error, hyca_error=_rel(hyca_err, energy),
        oracle_error=_rel(totals.min(0).values.sum(), energy),
        forecast_steps=int(errors[0][0].err.shape[0]), trajectories=len(trajectories),
        holdout=_leave_one_out(errors, solvers, clusters, seed),
    )


def _leave_one_out(errors: list[list[SolverErrors]], solvers: Sequence[str], clusters: int, seed: int) -> dict:
    """Fit on all trajectories but one, score on the one left out; summed over folds."""
    if len(errors) < 2:
        return {}
    sums = {"hyca": 0.0, "oracle": 0.0, **{name: 0.0 for name in solvers}}
    energy = 0.0
    for j in range(len(errors)):
        train, test = errors[:j] + errors[j + 1:], [errors[j]]
        solver_index, _, _ = _fit(train, clusters, seed)
        train_totals = torch.stack([sum(traj[s].err.sum(0) for traj in train) for s in range(len(solvers))])
        sums["hyca"] += _map_error(test, solver_index)[0]
        sums["oracle"] += _map_error(test, train_totals.argmin(0))[0]
        for s, name in enumerate(solvers):
            sums[name] += float(test[0][s].err.sum())
        energy += float(test[0][0].energy.sum())
    rel = {k: _rel(torch.tensor(v), energy) for k, v in sums.items()}
    best = min(solvers, key=lambda name: rel[name])
    return {"folds": len(errors), "hyca": rel["hyca"], "oracle": rel["oracle"], "best_single_name": best,
            "best_single": rel[best]}


__all__ = ["CalibrationResult", "DEFAULT_CLUSTERS", "DEFAULT_SOLVERS", "SolverErrors", "Trajectory", "calibrate",
           "dynamics_features", "kmeans", "min_anchors", "simulate", "trajectory_from_calls"]
