"""LESA (arXiv 2602.20497) at the output level: stage-aware KAN experts that adapt L2P's forecast
coefficients to the run.

The forecast keeps L2P's form (accel_core/learned/l2p.py): at forecast step s, from the K newest full
steps (Newton basis b_0 = d_0, b_k = prod_{i<k} (sigma - sigma_i) D[sigma_0 .. sigma_k]),
    d^ = d_0 + sum_k c_k b_k,   c = c_L2P[s] + expert_{stage(t)}(features)
so the output is still a linear map of the cached history (cheap, stable; c = c_L2P is L2P exactly),
while the coefficients depend on the run through the features:
  - t = step / steps (normalized time), mapped to [-1, 1];
  - the gap: steps since the newest full step, over the longest gap fitted (`gap_scale`);
  - log10 ||b_k|| / ||b_0|| for k = 1 .. K-1 (how curved this run's history is), (v + 3) / 3.
Stages: t in [e / S, (e + 1) / S) goes to expert e (S = 3: early / mid / late). Each expert is a small
B-spline KAN ([features, width, K], accel_core/learned/kan.py) whose output layer starts at zero, so
training starts at the L2P fit it refines (the base table is L2P's closed-form ridge fit).

Training uses only quadratic forms: for every recorded trajectory and sample the Gram matrix of the
vectors {r_s, b_s0 .. b_s,K-1} over all forecast steps s (r_s = d_s - d_0 the residual) is computed once,
so an epoch costs nothing of the latent size.
  (a) teacher forcing: mean over forecasts of ||d^_s - d_s||^2 / ||d_s||^2 on the true history;
  (b) closed loop: the sampler state along the plan with the forecasts in place of the model (euler:
      x_{s+1} = x_s + (sigma_{s+1} - sigma_s) d^_s); the state error at every full step after a gap is
      the running sum of (sigma_{s+1} - sigma_s) (d^_s - d_s) over the forecasts so far, measured
      relative to the true state change over the same steps; its mean square plus 0.1 x the per-step
      loss is minimised. Limitation: the full steps' own slopes are the recorded ones (the model is not
      run again at the drifted state), and forecasts never enter the history (the output cache keeps
      only computed steps), so the closed loop is exact in x but not in the full steps' response to it.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .kan import KAN
from .l2p import L2PTable, _EPS, history_before, newton_basis
from .profile import HINT, L2PProfile, check_header, read_profile, write_profile
from .validation import WEIGHT_LIMIT, check_l2p_tables, check_lesa_config, check_table

log = logging.getLogger(__name__)

STAGES = 3
WIDTH = 8
GRID = 5
TEACHER_EPOCHS = 200
CLOSED_EPOCHS = 200
LR = 1e-2
DELTA_PENALTY = 1e-2  # x mean squared coefficient change from the L2P base (objectives are relative to L2P's)
CLOSED_STEP_WEIGHT = 0.1


def stage_of(t: float, stages: int) -> int:
    """Expert index of normalized time t = step / steps."""
    return min(stages - 1, max(0, int(math.floor(t * stages))))


def features(t: float, since: int, gap_scale: float, norms: torch.Tensor) -> torch.Tensor:
    """[B, 1 + K] expert input from normalized time, steps since the newest full step and the basis norms
    norms [B, K] (norms[:, 0] = ||d_0||; zero for missing history points)."""
    b, k = norms.shape
    ratio = norms[:, 1:] / norms[:, :1].clamp_min(_EPS)
    logs = (torch.log10(ratio + 1e-8) + 3.0) / 3.0
    head = torch.tensor([2.0 * t - 1.0, 2.0 * since / max(gap_scale, 1.0) - 1.0], dtype=norms.dtype)
    return torch.cat([head.expand(b, 2), logs], dim=1).float()


class LESA(nn.Module):
    """S stage experts; `delta(t, feats)` the coefficient change [B, K] from the L2P base."""

    def __init__(self, history: int, stages: int = STAGES, width: int = WIDTH, grid: int = GRID,
                 gap_scale: float = 1.0) -> None:
        super().__init__()
        self.history, self.stages, self.width, self.grid, self.gap_scale = history, stages, width, grid, gap_scale
        self.experts = nn.ModuleList(KAN([1 + history, width, history], grid) for _ in range(stages))
        for e in self.experts:
            e.zero_output()

    def delta(self, t: float, feats: torch.Tensor) -> torch.Tensor:
        return self.experts[stage_of(t, self.stages)](feats)

    def config(self) -> dict:
        return {"history": self.history, "stages": self.stages, "width": self.width, "grid": self.grid,
                "gap_scale": self.gap_scale}


# ------------------------------------------------------------------------------------ training data
@dataclass
class _Sample:
    """One (trajectory, batch sample): Gram of its forecast vectors and the step layout."""

    gram: torch.Tensor  # [M, M] float64, M = F * (K + 1): per forecast step r_s, b_s0 .. b_s,K-1
    steps: list[int]  # forecast steps, ascending
    times: list[float]
    since: list[int]
    dsig: list[float]  # sigma_{s+1} - sigma_s
    base: torch.Tensor  # [F, K] L2P coefficients
    ends: list[int]  # index (in steps) of the last forecast of each gap
    cache: dict = field(default_factory=dict)


def prepare(trajectories: Sequence, table: L2PTable) -> list[_Sample]:
    """Per trajectory and sample the Gram of every forecast step's vectors (teacher history of `table.plan`)."""
    plan, k_hist = table.plan, table.history
    row_of = {round(float(t) * table.steps): r for r, t in enumerate(table.time)}
    out = []
    for traj in trajectories:
        slopes = traj.slopes()
        steps, vecs = [], []
        for s in range(traj.steps):
            hist = history_before(plan, s, k_hist)
            if plan[s] or not hist:
                continue
            sig = [traj.sigmas[i] for i in hist]
            basis = newton_basis(sig, [slopes[i] for i in hist], traj.sigmas[s]).double()
            batch = basis.shape[1]
            basis = basis.reshape(len(hist), batch, -1)
            if len(hist) < k_hist:
                basis = torch.cat([basis, basis.new_zeros(k_hist - len(hist), *basis.shape[1:])])
            residual = slopes[s].double().reshape(batch, -1) - slopes[hist[0]].double().reshape(batch, -1)
            vecs.append(torch.cat([residual.unsqueeze(0), basis]))  # [K + 1, B, n]
            steps.append(s)
        if not steps:
            continue
        v = torch.cat(vecs).transpose(0, 1)  # [B, M, n]
        grams = v @ v.transpose(1, 2)
        ends = [i for i, s in enumerate(steps) if s + 1 >= len(plan) or plan[s + 1]]
        base = torch.stack([table.coef[row_of[s]].double() for s in steps])
        meta = dict(steps=steps, times=[s / traj.steps for s in steps],
                    since=[s - history_before(plan, s, 1)[0] for s in steps],
                    dsig=[traj.sigmas[s + 1] - traj.sigmas[s] for s in steps], base=base, ends=ends)
        for b in range(grams.shape[0]):
            out.append(_Sample(gram=grams[b], **meta))
    return out


def _coefficients(model: LESA | None, sample: _Sample) -> torch.Tensor:
    """[F, K] coefficients (base + expert change; base alone when model is None)."""
    if model is None:
        return sample.base
    feats = features_of(sample, model.gap_scale)
    delta = torch.zeros(sample.base.shape, dtype=torch.float32)
    stage = torch.tensor([stage_of(t, model.stages) for t in sample.times])
    for e in range(model.stages):
        idx = (stage == e).nonzero().flatten()
        if len(idx):
            delta = delta.index_put((idx,), model.experts[e](feats[idx]))
    return sample.base + delta.double()


def features_of(sample: _Sample, gap_scale: float) -> torch.Tensor:
    """[F, 1 + K] expert inputs of every forecast step of a sample (cached on the sample)."""
    key = ("feats", gap_scale)
    if sample.cache.get("key") != key:
        k = sample.base.shape[1]
        diag = sample.gram.diagonal().clamp_min(0).sqrt().view(len(sample.steps), k + 1)[:, 1:]
        sample.cache["feats"] = torch.cat([features(t, since, gap_scale, diag[f:f + 1])
                                           for f, (t, since) in enumerate(zip(sample.times, sample.since))])
        sample.cache["key"] = key
    return sample.cache["feats"]


def _losses(coef: torch.Tensor, sample: _Sample) -> dict[str, torch.Tensor]:
    """Per-step relative errors [F] (squared), closed-loop state errors [gaps] (squared), from the Gram."""
    f_count, k = coef.shape
    m = k + 1
    eye = torch.eye(f_count, dtype=torch.float64)
    # error e_f = r_f - sum c b ; truth d_f = r_f + b_f0  (in the vector coordinates)
    err = torch.cat([torch.ones(f_count, 1, dtype=torch.float64), -coef], dim=1)  # [F, K + 1]
    tru = torch.zeros(f_count, m, dtype=torch.float64)
    tru[:, 0] = 1.0
    tru[:, 1] = 1.0
    err_w = (eye.unsqueeze(-1) * err.unsqueeze(0)).reshape(f_count, f_count * m)  # [F, M]
    tru_w = (eye.unsqueeze(-1) * tru.unsqueeze(0)).reshape(f_count, f_count * m)
    g = sample.gram
    step_err = ((err_w @ g) * err_w).sum(1)
    step_norm = ((tru_w @ g) * tru_w).sum(1).clamp_min(_EPS)
    dsig = torch.tensor(sample.dsig, dtype=torch.float64).unsqueeze(1)
    cum_err = torch.cumsum(dsig * err_w, dim=0)[sample.ends]
    cum_tru = torch.cumsum(dsig * tru_w, dim=0)[sample.ends]
    state_err = ((cum_err @ g) * cum_err).sum(1)
    state_norm = ((cum_tru @ g) * cum_tru).sum(1).clamp_min(_EPS)
    return {"step": step_err / step_norm, "state": state_err / state_norm}


def evaluate_lesa(model: LESA | None, samples: Sequence[_Sample]) -> dict[str, float]:
    """Mean relative (not squared) teacher-forced step error and closed-loop state error, for `model` (None:
    the L2P base) and for output reuse (c = 0)."""
    acc = {"rel_error": 0.0, "state_error": 0.0, "reuse_rel_error": 0.0, "reuse_state_error": 0.0}
    n_step = n_state = 0
    with torch.no_grad():
        for s in samples:
            for prefix, coef in (("", _coefficients(model, s)), ("reuse_", torch.zeros_like(s.base))):
                loss = _losses(coef, s)
                acc[prefix + "rel_error"] += float(loss["step"].clamp_min(0).sqrt().sum())
                acc[prefix + "state_error"] += float(loss["state"].clamp_min(0).sqrt().sum())
            n_step += len(s.steps)
            n_state += len(s.ends)
    return {k: v / max(n_step if "rel" in k else n_state, 1) for k, v in acc.items()}


def train(samples: Sequence[_Sample], history: int, gap_scale: float, stages: int = STAGES, width: int = WIDTH,
          grid: int = GRID, teacher_epochs: int = TEACHER_EPOCHS, closed_epochs: int = CLOSED_EPOCHS,
          lr: float = LR, seed: int = 0) -> LESA:
    """Two-stage training (teacher forcing, then closed loop), full batch Adam."""
    torch.manual_seed(seed)
    model = LESA(history, stages, width, grid, gap_scale)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    started = time.perf_counter()

    def objective(loss: dict, closed: bool) -> torch.Tensor:
        value = loss["step"].mean()
        return loss["state"].mean() + CLOSED_STEP_WEIGHT * value if closed else value

    # Each stage's objective is measured relative to its value at the L2P base, so the pull toward L2P
    # (DELTA_PENALTY) weighs the same against the per-step and the (much smaller) state errors.
    with torch.no_grad():
        ref = [sum(float(objective(_losses(s.base, s), c)) for s in samples) / max(len(samples), 1)
               for c in (False, True)]
    for epoch in range(teacher_epochs + closed_epochs):
        closed = epoch >= teacher_epochs
        opt.zero_grad()
        total = 0.0
        for s in samples:
            coef = _coefficients(model, s)
            value = objective(_losses(coef, s), closed) / max(ref[closed], _EPS)
            total = total + value + DELTA_PENALTY * ((coef - s.base) ** 2).mean()
        (total / max(len(samples), 1)).backward()
        opt.step()
    log.info("LESA: %d + %d epochs on %d samples in %.1f s", teacher_epochs, closed_epochs, len(samples),
             time.perf_counter() - started)
    return model


def choose_and_fit_lesa(trajectories: Sequence, table_train: L2PTable, table_all: L2PTable, **kw) -> tuple[LESA, dict]:
    """Train on the first 3/4 of the runs against the L2P table fitted on them (`table_train`), score on the
    held-back quarter against that L2P, then retrain on all runs against `table_all` (the profile's base)."""
    held = max(1, len(trajectories) // 4)
    train_s, test_s = prepare(trajectories[:-held], table_train), prepare(trajectories[-held:], table_train)
    gap = float(max(int(x) for x in table_all.since_full.tolist()))
    model = train(train_s, table_train.history, gap, **kw)
    lesa, l2p = evaluate_lesa(model, test_s), evaluate_lesa(None, test_s)
    final = train(prepare(trajectories, table_all), table_all.history, gap, **kw)
    validation = {"held_back_trajectories": held, "fit_trajectories": len(trajectories) - held,
                  "lesa_rel_error": round(lesa["rel_error"], 6), "l2p_rel_error": round(l2p["rel_error"], 6),
                  "reuse_rel_error": round(l2p["reuse_rel_error"], 6),
                  "lesa_state_error": round(lesa["state_error"], 6), "l2p_state_error": round(l2p["state_error"], 6),
                  "reuse_state_error": round(l2p["reuse_state_error"], 6), **final.config(),
                  "metric": "held-back mean relative L2 error: teacher-forced forecast slope (rel_error) and "
                            "closed-loop euler state at each full step after a gap (state_error)"}
    return final, validation


# ------------------------------------------------------------------------------------ profile
def save_lesa(path: str | os.PathLike, model: LESA, table: L2PTable, header: dict) -> Path:
    tensors = {"coef": table.coef.float(), "time": table.time.float(), "sigma": table.sigma.float(),
               "since_full": table.since_full.to(torch.int32)}
    for name, p in model.state_dict().items():
        tensors[name] = p.detach().float()
    full = {**header, "method": "lesa", "cache_level": "output", "steps": table.steps, "layout": "guided",
            "basis": "newton_sigma", "time_axis": "step_fraction", "lesa": model.config(), "history": table.history,
            "budget": {**header.get("budget", {}), "full_steps": [i for i, f in enumerate(table.plan) if f]}}
    return write_profile(path, tensors, full)


@dataclass(frozen=True)
class LESAProfile(L2PProfile):
    """An L2P profile (the base table, guided layout) plus the stage experts."""

    model: LESA | None = None


def load_lesa(path: str | os.PathLike, root: str | os.PathLike | None = None, family: str | None = None,
              fingerprint: str | None = None):
    from ..errors import ProfileFormatError

    header, tensors, full = read_profile(path, root)
    check_header(header, full.name, "lesa", family, fingerprint)
    cfg = check_lesa_config(header.get("lesa"), full.name, HINT)
    experts = {k: v for k, v in tensors.items() if k.startswith("experts.")}
    for name in experts:
        check_table(experts, name, full.name, HINT, -WEIGHT_LIMIT, WEIGHT_LIMIT)
    try:
        model = LESA(cfg["history"], cfg["stages"], cfg["width"], cfg["grid"], cfg["gap_scale"])
        model.load_state_dict(experts)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ProfileFormatError(f"Forecast Cache: LESA profile {full.name} has no valid experts ({e}). {HINT}") from None
    need = ("coef", "time", "sigma", "since_full")
    if any(n not in tensors or tensors[n].dim() != (2 if n == "coef" else 1) for n in need) \
            or tensors["coef"].shape != (tensors["time"].shape[0], model.history) \
            or any(tensors[n].shape[0] != tensors["time"].shape[0] for n in need):
        raise ProfileFormatError(f"Forecast Cache: LESA profile {full.name} has inconsistent tables. {HINT}")
    steps = header["steps"]
    check_l2p_tables(tensors, ("coef",), steps, full.name, HINT)
    full_steps = set(header["budget"].get("full_steps", []))
    plan = [i in full_steps for i in range(steps)]
    table = L2PTable(coef=tensors["coef"].float(), time=tensors["time"].float(), sigma=tensors["sigma"].float(),
                     since_full=tensors["since_full"].to(torch.int64), steps=steps, plan=plan)
    model.eval()
    return LESAProfile(table=table, header=header, source=str(full), model=model)
