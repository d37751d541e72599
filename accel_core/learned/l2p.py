"""L2P: a learned linear predictor of the sampler slope at forecast steps (output level).

What is forecast: the sampler's ODE slope d = (x - denoised) / sigma (k-diffusion's `to_d`, the
velocity of flow models), not the denoised estimate. Why:
- reusing d is exactly "reuse the model's output", the baseline every method must beat, so it is the
  natural point to shrink a fit toward (ridge toward reuse, never toward a zero output);
- d is smooth over sigma on flow models, while denoised = x - sigma * d carries the latent x, whose
  change between steps is the solver's own update;
- the current latent x is deliberately not a feature: for a deterministic solver x - x_newest_full is
  a linear combination of the slopes the solver used since the newest full step, themselves linear in
  the history, so it adds nothing; for stochastic samplers it only adds the injected noise.

The forecast at a forecast step s from the J newest full points (sigma_0 newest, slopes d_0 ... d_J-1):
    d^(sigma) = d_0 + sum_k c[s, k] b_k
    b_0 = d_0,  b_k = prod_{i<k} (sigma - sigma_i) * D[sigma_0 .. sigma_k]  (Newton divided differences)
This is a reparametrisation of F^_s = sum_j w[s, j] d_j (arXiv 2604.26365): the span of
{b_0 .. b_J-1} is the span of {d_0 .. d_J-1} whenever the sigmas are distinct, and
`raw_weights` converts c to w. The Newton form is used because its coefficients are dimensionless
(c = 0: reuse; c_0 = 0, c_1.. = 1: polynomial extrapolation), so ridge shrinks toward reuse and the
coefficients of a neighbouring step count are comparable (interpolation over normalized time).

Fitting: for every forecast step of a full-step plan, gather (basis, truth - d_0) from recorded
uncached trajectories, each sample scaled by its truth's norm (every trajectory weighs the same),
and solve the ridge normal equations in closed form (float64).

Plain CFG ("split" layout): the guided slope is d_u + s * d_g with the unconditional slope
d_u = (x - uncond) / sigma and the guidance slope d_g = (x - cond) / sigma - (x - uncond) / sigma =
(uncond - cond) / sigma, the two series the training-free output cache forecasts
(accel_core/output/run.py). Each series gets its own table (per-step weights, history, ridge), fitted
independently, so the forecast u^ + s g^ holds at any CFG scale s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

_EPS = 1e-12


@dataclass
class Trajectory:
    """Every step of one uncached sampling run.

    Attributes:
        sigmas: the schedule, descending, with the final 0 (len = steps + 1).
        x: [steps, *latent] input latent of the model call at each step.
        denoised: [steps, *latent] the (guided) denoised output of that call.
    """

    sigmas: list[float]
    x: torch.Tensor
    denoised: torch.Tensor

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def slopes(self) -> torch.Tensor:
        sig = torch.tensor(self.sigmas[:-1], dtype=torch.float64).view(-1, *([1] * (self.x.dim() - 1)))
        return ((self.x.double() - self.denoised.double()) / sig).float()


@dataclass
class SlopeTrajectory:
    """A recorded run reduced to what the fit reads: the schedule and every step's slope
    (x - denoised) / sigma. Half the memory of a `Trajectory`; fits and evaluates the same."""

    sigmas: list[float]
    slope: torch.Tensor  # [steps, *latent], float32

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def slopes(self) -> torch.Tensor:
        return self.slope

    @property
    def nbytes(self) -> int:
        return self.slope.numel() * self.slope.element_size()


@dataclass
class SplitTrajectory:
    """A plain-CFG run as the split layout's two series: every step's unconditional slope
    (x - uncond) / sigma and guidance slope (uncond - cond) / sigma; the guided slope is
    uncond + scale * guidance. `slopes()` gives the guided slope, so it also fits the one-series layout."""

    sigmas: list[float]
    uncond: torch.Tensor  # [steps, *latent], float32
    guidance: torch.Tensor  # [steps, *latent], float32
    scale: float

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def slopes(self) -> torch.Tensor:
        return self.uncond + self.scale * self.guidance

    def series(self, name: str) -> SlopeTrajectory:
        """"uncond", "guidance" or "guided" as a one-series trajectory."""
        slope = {"uncond": self.uncond, "guidance": self.guidance}.get(name)
        return SlopeTrajectory(self.sigmas, self.slopes() if slope is None else slope)

    @property
    def nbytes(self) -> int:
        return 2 * self.uncond.numel() * self.uncond.element_size()


def newton_basis(sigmas: Sequence[float], slopes: Sequence[torch.Tensor], sigma: float) -> torch.Tensor:
    """[len(slopes), *shape] basis b_k at `sigma` from history points, newest first."""
    dd = [s.double() for s in slopes]  # divided differences, rebuilt in place level by level
    out = [dd[0]]
    prod = 1.0
    for k in range(1, len(dd)):
        dd = [(dd[i] - dd[i + 1]) / (sigmas[i] - sigmas[i + k]) for i in range(len(dd) - 1)]
        prod *= sigma - sigmas[k - 1]
        out.append(prod * dd[0])
    return torch.stack(out).float()


def predict(coef: Sequence[float], sigmas: Sequence[float], slopes: Sequence[torch.Tensor], sigma: float) -> torch.Tensor:
    """d_0 + sum_k c_k b_k over the first min(len(coef), len(slopes)) history points."""
    k = min(len(coef), len(slopes))
    basis = newton_basis(sigmas[:k], slopes[:k], sigma)
    c = torch.as_tensor(list(coef[:k]), dtype=torch.float32).view(-1, *([1] * (basis.dim() - 1)))
    return slopes[0].float() + (c * basis).sum(dim=0)


def raw_weights(coef: Sequence[float], sigmas: Sequence[float], sigma: float) -> list[float]:
    """The same predictor as weights w_j on the history slopes d_j (sum_j w_j d_j)."""
    k = len(coef)
    eye = [torch.eye(k, dtype=torch.float64)[j] for j in range(k)]  # slope j = unit vector j
    return [float(v) for v in predict(coef, sigmas, eye, sigma)]


def history_before(plan: Sequence[bool], step: int, length: int) -> list[int]:
    """The `length` newest full steps before `step` in `plan`, newest first."""
    return [i for i in range(step - 1, -1, -1) if plan[i]][:length]


@dataclass
class L2PTable:
    """Fitted coefficients, one row per forecast step of the plan fitted on.

    Attributes:
        coef: [F, J] Newton coefficients (rows with fewer history points have zeros beyond).
        time: [F] normalized time of the forecast step: step / steps.
        sigma: [F] the step's sigma.
        since_full: [F] steps since the newest full step before it.
        steps: the step count fitted on; plan: its full-step plan.
    """

    coef: torch.Tensor
    time: torch.Tensor
    sigma: torch.Tensor
    since_full: torch.Tensor
    steps: int
    plan: list[bool] = field(default_factory=list)

    @property
    def history(self) -> int:
        return int(self.coef.shape[1])


def forecast_rows(traj: Trajectory, plan: Sequence[bool], history: int):
    """Yield (step, history steps, basis [K, B, n], residual [B, n], truth norm [B]) per forecast step."""
    slopes = traj.slopes()
    for s in range(traj.steps):
        if plan[s]:
            continue
        hist = history_before(plan, s, history)
        if not hist:
            continue
        sig = [traj.sigmas[i] for i in hist]
        basis = newton_basis(sig, [slopes[i] for i in hist], traj.sigmas[s]).double()
        truth = slopes[s].double()
        residual = truth - slopes[hist[0]].double()
        batch = truth.shape[0]
        yield s, hist, basis.reshape(len(hist), batch, -1), residual.reshape(batch, -1), \
            truth.reshape(batch, -1).norm(dim=1).clamp_min(_EPS)


def fit(trajectories: Sequence[Trajectory], plan: Sequence[bool], history: int = 3, ridge: float = 1e-3) -> L2PTable:
    """Closed-form ridge fit of the Newton coefficients for every forecast step of `plan`.

    `ridge` is relative to the mean diagonal of each step's normal equations (0 = plain least
    squares; with exact data and a well-posed system this recovers the generating weights).
    """
    if not trajectories:
        raise ValueError("L2P fit needs at least one trajectory")
    steps = trajectories[0].steps
    if any(t.steps != steps for t in trajectories) or len(plan) != steps:
        raise ValueError(f"L2P fit: every trajectory and the plan must have {steps} steps")
    grams: dict[int, torch.Tensor] = {}
    rhss: dict[int, torch.Tensor] = {}
    sizes: dict[int, int] = {}
    for traj in trajectories:
        for s, hist, basis, residual, norm in forecast_rows(traj, plan, history):
            b = basis / norm.view(1, -1, 1)
            r = residual / norm.view(-1, 1)
            g = torch.einsum("kbn,jbn->kj", b, b)
            h = torch.einsum("kbn,bn->k", b, r)
            grams[s] = grams.get(s, 0) + g
            rhss[s] = rhss.get(s, 0) + h
            sizes[s] = len(hist)
    rows = sorted(grams)
    coef = torch.zeros(len(rows), history, dtype=torch.float64)
    since, times, sigmas = [], [], []
    for r, s in enumerate(rows):
        g, h = grams[s], rhss[s]
        k = sizes[s]
        scale = g.diagonal().mean().clamp_min(_EPS)
        system = g + ridge * scale * torch.eye(k, dtype=torch.float64)
        coef[r, :k] = torch.linalg.lstsq(system, h.unsqueeze(-1)).solution.squeeze(-1)
        since.append(s - history_before(plan, s, 1)[0])
        times.append(s / steps)
        sigmas.append(trajectories[0].sigmas[s])
    return L2PTable(coef=coef.float(), time=torch.tensor(times, dtype=torch.float32),
                    sigma=torch.tensor(sigmas, dtype=torch.float32),
                    since_full=torch.tensor(since, dtype=torch.int32), steps=steps, plan=list(plan))


def evaluate(table: L2PTable, trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Teacher-forced relative L2 error of the forecast and of output reuse, mean over every
    (trajectory, sample, forecast step), on the plan and step count the table was fitted on."""
    row_of = {round(float(t) * table.steps): r for r, t in enumerate(table.time)}
    l2p, reuse, n = 0.0, 0.0, 0
    for traj in trajectories:
        for s, hist, basis, residual, norm in forecast_rows(traj, table.plan, table.history):
            c = table.coef[row_of[s], :len(hist)].double().view(-1, 1, 1)
            err = residual - (c * basis).sum(dim=0)
            l2p += float((err.norm(dim=1) / norm).sum())
            reuse += float((residual.norm(dim=1) / norm).sum())
            n += residual.shape[0]
    n = max(n, 1)
    return {"l2p_rel_error": l2p / n, "reuse_rel_error": reuse / n, "forecasts": n}


def evaluate_split(uncond: L2PTable, guidance: L2PTable, trajectories: Sequence[SplitTrajectory]) -> dict[str, float]:
    """`evaluate` of the split layout on the guided slope: the two series' forecasts combined with each
    trajectory's CFG scale (u^ + s g^) against the guided truth; reuse is guided output reuse."""
    rows = [{round(float(t) * tab.steps): r for r, t in enumerate(tab.time)} for tab in (uncond, guidance)]
    l2p, reuse, n = 0.0, 0.0, 0
    for traj in trajectories:
        u_rows = forecast_rows(traj.series("uncond"), uncond.plan, uncond.history)
        g_rows = forecast_rows(traj.series("guidance"), guidance.plan, guidance.history)
        g_by_step = {row[0]: row for row in g_rows}
        guided = traj.slopes().double()
        for s, hist, basis, residual, _ in u_rows:
            g = g_by_step[s]
            cu = uncond.coef[rows[0][s], :len(hist)].double().view(-1, 1, 1)
            cg = guidance.coef[rows[1][s], :len(g[1])].double().view(-1, 1, 1)
            batch = residual.shape[0]
            truth = guided[s].reshape(batch, -1)
            newest = guided[hist[0]].reshape(batch, -1)
            forecast = newest + (cu * basis).sum(dim=0) + traj.scale * (cg * g[2]).sum(dim=0)
            norm = truth.norm(dim=1).clamp_min(_EPS)
            l2p += float(((forecast - truth).norm(dim=1) / norm).sum())
            reuse += float(((newest - truth).norm(dim=1) / norm).sum())
            n += batch
    n = max(n, 1)
    return {"l2p_rel_error": l2p / n, "reuse_rel_error": reuse / n, "forecasts": n}
