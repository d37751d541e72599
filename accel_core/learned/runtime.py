"""L2P at run time: the forecast denoised output at a forecast step from the run's full steps.

Coefficients are looked up by (steps since the newest full step, normalized time step / steps):
among the profile's rows with the same steps-since-full (else the nearest), linear interpolation over
normalized time, clamped at the ends. On the schedule fitted on this returns the fitted rows exactly;
at another step count it interpolates. `outside` names why a run lies outside what the profile was
fitted on (another sampler, a step count beyond the interpolation range, another sigma schedule, a
longer gap than any fitted); the output cache then uses its backtest blend instead.

A "split" profile (plain CFG) keeps two histories, the unconditional slope and the guidance slope
(uncond - cond) / sigma, forecasts each with its own table and combines them with the run's CFG scale:
slope^ = u^ + scale * g^. It needs the CFG branches of every computed step; a run without them (cfg 1,
a guidance-distilled model, a custom CFG function) is outside the profile. A "guided" profile forecasts
the guided slope whatever the CFG.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .. import distributed
from .l2p import predict
from .profile import L2PProfile

STEP_RANGE = (0.5, 2.0)  # step counts within this ratio of the fitted one interpolate
SIGMA_RTOL = 0.05  # the run's sigma curve (over step fraction) may differ this much from the fitted one
# Several calls at one sigma (Heun's corrector, the next step's predictor) are one history point.
SAME_SIGMA_RTOL = 1e-6


def _sigma_at(fraction: float, sigmas: Sequence[float]) -> float:
    """The schedule's sigma at a step fraction in [0, 1] (linear between steps)."""
    pos = fraction * (len(sigmas) - 1)
    i = min(int(pos), len(sigmas) - 2)
    return sigmas[i] + (pos - i) * (sigmas[i + 1] - sigmas[i])


@dataclass
class L2PForecaster:
    profile: L2PProfile
    sample_sigmas: Sequence[float]
    sampler: str | None = None
    # (step, sigma, slope) newest first; split profiles: slope is {"uncond": d_u, "guidance": d_g}
    history: list[tuple[int, float, torch.Tensor | dict]] = field(default_factory=list)
    outside: str = ""
    scale: float = 1.0  # CFG scale of the newest computed step (split profiles)

    def __post_init__(self) -> None:
        self.sample_sigmas = [float(s) for s in self.sample_sigmas]
        self.outside = self._check_range()

    @property
    def steps(self) -> int:
        return max(1, len(self.sample_sigmas) - 1)

    def _check_range(self) -> str:
        h = self.profile.header
        fitted = self.profile.table.steps
        if self.sampler is not None and h.get("sampler") not in (None, self.sampler):
            return f"sampler {self.sampler!r}, fitted on {h.get('sampler')!r}"
        ratio = self.steps / fitted
        if not STEP_RANGE[0] <= ratio <= STEP_RANGE[1]:
            return f"{self.steps} steps, fitted on {fitted} (interpolates {STEP_RANGE[0] * fitted:g}-" \
                   f"{STEP_RANGE[1] * fitted:g})"
        ref = [float(s) for s in h.get("sigmas") or []]
        if len(ref) > 1:
            top = max(ref[0], 1e-8)
            worst = max(abs(_sigma_at(f / 20, self.sample_sigmas) - _sigma_at(f / 20, ref)) for f in range(21)) / top
            if worst > SIGMA_RTOL:
                return f"another sigma schedule (differs by {worst:.0%} of sigma_max; fitted on {h.get('scheduler')!r})"
        return ""

    # ------------------------------------------------------------------ history
    @property
    def layout(self) -> str:
        return self.profile.layout

    def add(self, step: int, sigma: float, x: torch.Tensor, denoised: torch.Tensor, branches=None) -> str:
        """A computed step. `branches`: (cond, uncond, scale) when the run has plain CFG, else None.
        Returns why a split profile cannot use this run ("" when it can, and always for guided profiles)."""
        if self.layout == "split":
            if branches is None:
                cfg = self.profile.header.get("cfg")
                return ("a split (uncond + guidance) L2P profile" + (f", fitted at cfg {cfg:g}," if isinstance(
                    cfg, (int, float)) else "") + " but this run has no plain CFG (cfg 1, a guidance-distilled model "
                        "or a custom CFG function): recalibrate at this cfg for a guided profile")
            cond, uncond, self.scale = branches[0].detach().float(), branches[1].detach().float(), float(branches[2])
            slope = {"uncond": (x.detach().float() - uncond) / sigma, "guidance": (uncond - cond) / sigma}
        else:
            slope = (x.detach().float() - denoised.detach().float()) / sigma
        if self.history and abs(self.history[0][1] - sigma) <= SAME_SIGMA_RTOL * max(sigma, 1e-8):
            self.history[0] = (step, float(sigma), slope)
        else:
            self.history.insert(0, (step, float(sigma), slope))
            del self.history[max(t.history for t in self.profile.tables().values()):]
        return ""

    def reset(self) -> None:
        self.history.clear()

    # ------------------------------------------------------------------ coefficients
    def coefficients(self, step: int, series: str | None = None) -> tuple[list[float], str]:
        """(Newton coefficients for a forecast at `step`, reason it is outside the profile or ""); `series`
        picks a split profile's table ("uncond" or "guidance"; default: the profile's first table)."""
        table = self.profile.table if series is None else self.profile.tables()[series]
        since = step - self.history[0][0] if self.history else 0
        available = sorted(set(int(s) for s in table.since_full.tolist()))
        if not available:
            return [], "the profile has no forecast rows"
        reason = ""
        if since not in available:
            nearest = min(available, key=lambda a: abs(a - since))
            if since > max(available):
                reason = f"{since} steps since the last full step, fitted up to {max(available)}"
            since = nearest
        rows = [r for r in range(table.coef.shape[0]) if int(table.since_full[r]) == since]
        rows.sort(key=lambda r: float(table.time[r]))
        times = [float(table.time[r]) for r in rows]
        t = step / self.steps
        if self.steps == table.steps and step < len(table.plan):
            t = round(t * table.steps) / table.steps  # the fitted grid: exact rows
        i = bisect.bisect_left(times, t)
        if i < len(times) and abs(times[i] - t) < 1e-9:
            coef = table.coef[rows[i]]
        elif i == 0:
            coef = table.coef[rows[0]]
        elif i == len(times):
            coef = table.coef[rows[-1]]
        else:
            a = (t - times[i - 1]) / (times[i] - times[i - 1])
            coef = (1 - a) * table.coef[rows[i - 1]] + a * table.coef[rows[i]]
        return [float(c) for c in coef], reason

    # ------------------------------------------------------------------ forecast
    def forecast_slope(self, step: int, sigma: float) -> tuple[torch.Tensor, str]:
        sig = [h[1] for h in self.history]
        if self.layout == "guided":
            coef, reason = self.coefficients(step)
            return predict(coef, sig, [h[2] for h in self.history], sigma), reason or self.outside
        parts, reason = {}, ""
        for name in ("uncond", "guidance"):
            coef, why = self.coefficients(step, name)
            parts[name] = predict(coef, sig, [h[2][name] for h in self.history], sigma)
            reason = reason or why
        return parts["uncond"] + self.scale * parts["guidance"], reason or self.outside

    def forecast(self, step: int, sigma: float, x: torch.Tensor) -> tuple[torch.Tensor, str]:
        """(denoised estimate at (step, sigma, x), reason the forecast is outside the profile or "")."""
        slope, reason = self.forecast_slope(step, sigma)
        return x.float() - sigma * slope, reason


@dataclass
class LESAForecaster(L2PForecaster):
    """LESA at run time (accel_core/learned/lesa.py): the L2P base coefficients of the profile (looked up
    and interpolated as L2PForecaster does, with the same 'outside the profile' reasons) plus the change the
    stage expert of this step's normalized time predicts from the run's features. Guided layout only."""

    def forecast_slope(self, step: int, sigma: float) -> tuple[torch.Tensor, str]:
        from .l2p import newton_basis
        from .lesa import features

        model = self.profile.model
        coef, reason = self.coefficients(step)
        k = min(len(coef), len(self.history))
        sig = [h[1] for h in self.history[:k]]
        d0 = self.history[0][2].float()
        basis = newton_basis(sig, [h[2] for h in self.history[:k]], sigma)  # [k, B, ...]
        batch = d0.shape[0] if d0.dim() > 1 else 1
        flat = basis.reshape(k, batch, -1)
        norms = torch.zeros(batch, model.history)
        norms[:, :k] = distributed.agree_sum(flat.double().square().sum(dim=2)).sqrt().float().T  # all ranks' tokens
        t = step / self.steps
        with torch.no_grad():
            delta = model.delta(t, features(t, step - self.history[0][0], model.gap_scale, norms))  # [B, K]
        c = torch.as_tensor(coef[:k], dtype=torch.float32).unsqueeze(0) + delta[:, :k]  # [B, k]
        slope = d0.reshape(batch, -1) + torch.einsum("bk,kbn->bn", c, flat)
        return slope.reshape(d0.shape), reason or self.outside
