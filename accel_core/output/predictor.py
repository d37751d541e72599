"""Output-level forecasting with an online backtest: which predictor to trust is measured on the
user's model at every full step, not chosen in advance.

The cached quantity is the sampler's ODE slope d = (x - denoised) / sigma (k-diffusion's `to_d`):
the DiT's velocity for flow models (FLUX, Qwen-Image, HunyuanVideo), eps for eps models. Reusing
d is exactly "reuse the model's output" (the naive baseline every method must beat). Candidates,
each a slope prediction at a new (sigma, x) from the newest full points:
- slope_reuse: d of the newest point (the baseline; also the blend's anchor);
- denoised_reuse: the newest denoised estimate kept, slope recomputed from the current x (stable
  when the sampler injects noise: ancestral / SDE samplers);
- slope_linear / denoised_linear: first-order extrapolation over sigma of d / of denoised.

The forecast is slope_reuse + sum_i w_i (candidate_i - slope_reuse), with w fitted per sample by
ridge least squares on backtests: at every full step, each candidate predicts the value just
computed from the history before it. The fit accumulates backtests with exponential decay and is
shrunk toward w = 0 (pure reuse), so on the backtests it has seen the blend's error is never above
output reuse's, by construction. All math in fp32.

Horizon consistency: a backtest measures the candidates over one horizon h_b (the time from the
newest history point to the point it predicts). An extrapolation that is right over one step can be
far off over eight, so weights fitted on short backtests say nothing about long forecasts. A forecast
at horizon h uses only the backtests with h_b >= h / horizon_match ("about h or longer": the forecasts
inside a gap are at most as far out as the gap's own backtest); with none, it is plain output reuse.
Longer backtests may vouch for shorter forecasts: an extrapolation's error grows with the horizon, and
so does the candidates' spread, so a weight fitted at h_b stays near right at h < h_b.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import distributed

CANDIDATES = ("denoised_reuse", "slope_linear", "denoised_linear")  # besides the anchor, slope_reuse
QUADRATIC = ("slope_quadratic", "denoised_quadratic")  # need three full points
_HISTORY = 3
# Two points closer than this in sigma are the same time (Heun's corrector and the next step's
# predictor both run at sigma_{i+1}): the newer replaces the older.
SAME_SIGMA_RTOL = 1e-6
_EPS = 1e-12


@dataclass
class OutputPoint:
    """One computed model call: noise level, input latent, guided denoised output, its slope (computed
    once here: every forecast and backtest reads it) and its time (the run's step clock; horizons are
    differences of it)."""

    sigma: float
    x: torch.Tensor
    denoised: torch.Tensor
    time: float = 0.0
    slope: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.slope = (self.x - self.denoised) / self.sigma


def _lagrange_weights(times: list[float], t: float) -> list[float]:
    """Weights of the interpolating polynomial through `times` evaluated at t (extrapolation)."""
    weights = []
    for i, ti in enumerate(times):
        w = 1.0
        for j, tj in enumerate(times):
            if j != i:
                w *= (t - tj) / (ti - tj)
        weights.append(w)
    return weights


def _combine(anchor: torch.Tensor, diffs: list[torch.Tensor], weights: torch.Tensor | None) -> torch.Tensor:
    """anchor + sum_i w_i diff_i with per-sample weights [batch, k]."""
    out = anchor.clone()
    if weights is None or not diffs:
        return out
    shape = (-1,) + (1,) * (anchor.dim() - 1)
    for i, diff in enumerate(diffs):
        out += weights[:, i].view(shape) * diff
    return out


_BAND_POOL = 4  # latent pixels per side of the coarse band's cells


def _split_bands(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(coarse, detail) of a latent [B, C, (T,) H, W]: cell means over _BAND_POOL x _BAND_POOL pixels,
    and the rest. Exact: coarse + detail == t. Grids too small to pool are all coarse."""
    h, w = t.shape[-2:]
    if h < _BAND_POOL or w < _BAND_POOL:
        return t, torch.zeros_like(t)
    flat = t.reshape(-1, 1, h, w)
    coarse = torch.nn.functional.adaptive_avg_pool2d(flat, (max(1, h // _BAND_POOL), max(1, w // _BAND_POOL)))
    coarse = torch.nn.functional.interpolate(coarse, size=(h, w), mode="nearest").reshape(t.shape)
    return coarse, t - coarse


def _per_sample_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.flatten(1) * b.flatten(1)).sum(dim=1)


@dataclass
class BacktestResult:
    """Relative L2 errors (per sample) of one backtest: the blend used and plain output reuse."""

    blend_error: torch.Tensor
    reuse_error: torch.Tensor
    weights: torch.Tensor  # [batch, len(CANDIDATES)] weights the blend would have used at this horizon
    horizon: float = 0.0


@dataclass
class _Fit:
    """One backtest's normal equations (relative units), kept so that forecasts at a horizon can be
    fitted on the backtests at about that horizon only."""

    horizon: float
    gram: torch.Tensor  # [batch, k, k]
    rhs: torch.Tensor  # [batch, k]
    mask: torch.Tensor  # [k] candidates available at this backtest


# Backtests kept for horizon-matched fits (older ones weigh decay ** age, 0.8 ** 8 < 0.17).
_FITS_KEPT = 8


@dataclass
class OutputPredictor:
    """History of full points and the backtest-fitted blend of candidate predictors.

    Attributes:
        candidates: candidate names used besides slope_reuse (empty = output reuse only).
        decay: weight kept by older backtests at each new one (0 = only the newest counts).
        ridge: shrinkage toward pure reuse, relative to the mean diagonal of the normal equations.
        max_weight: bound on |w|, applied by uniform shrinking (a blend far outside the candidates
            is an extrapolation we do not trust).
        bands: 1 weighs each candidate as a whole; 2 gives its coarse part (4x4-pixel means of the latent)
            and its detail (the rest) weights of their own: layout and colour settle early and extrapolate
            well, detail forms late and may not.
        horizon_match: a forecast at horizon h is fitted on the backtests with horizon >= h /
            horizon_match only, and is output reuse when there is none; 0 fits every forecast on every
            backtest whatever its horizon (the blend before issue 18).
    """

    candidates: tuple[str, ...] = CANDIDATES + QUADRATIC
    decay: float = 0.8
    ridge: float = 0.05
    max_weight: float = 1.5
    horizon_match: float = 1.5
    bands: int = 1
    history: list[OutputPoint] = field(default_factory=list)
    gram: torch.Tensor | None = None  # [batch, k, k] accumulated B^T B over every backtest (relative units)
    rhs: torch.Tensor | None = None  # [batch, k] accumulated B^T (truth - anchor)
    weights: torch.Tensor | None = None  # [batch, k] fitted on every backtest (reported in the summary)
    backtests: list[BacktestResult] = field(default_factory=list)
    fits: list[_Fit] = field(default_factory=list)
    _weights_cache: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ candidates
    def _available(self, history: list[OutputPoint]) -> list[str]:
        need = {"linear": 2, "quadratic": 3}
        return [c for c in self.candidates if len(history) >= need.get(c.rsplit("_", 1)[-1], 1)]

    def _basis(self, history: list[OutputPoint], sigma: float, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(anchor slope, [candidate - anchor for every configured candidate]); unavailable ones are 0."""
        newest = history[-1]
        anchor = newest.slope
        available = set(self._available(history))
        diffs = []
        for name in self.candidates:
            if name not in available:
                diffs.append(torch.zeros_like(anchor))
                continue
            kind, order = name.rsplit("_", 1)
            if order == "reuse":
                pred = (x - newest.denoised) / sigma  # denoised_reuse (slope_reuse is the anchor)
            else:
                points = history[-(2 if order == "linear" else 3):]
                weights = _lagrange_weights([p.sigma for p in points], sigma)
                if kind == "slope":
                    pred = sum(w * p.slope for w, p in zip(weights, points))
                else:
                    pred = (x - sum(w * p.denoised for w, p in zip(weights, points))) / sigma
            diffs.append(pred - anchor)
        if self.bands == 2:
            diffs = [part for d in diffs for part in _split_bands(d)]
        return anchor, diffs

    @property
    def ready(self) -> bool:
        return bool(self.history)

    # ------------------------------------------------------------------ prediction
    def predict_slope(self, sigma: float, x: torch.Tensor, time: float | None = None) -> torch.Tensor:
        """The slope at (sigma, x); `time` (the run's clock) sets the horizon whose backtests weigh the
        candidates. None: time from sigma (sigma falls as time runs), the clock `add` uses by default."""
        anchor, diffs = self._basis(self.history, sigma, x.float())
        return _combine(anchor, diffs, self.weights_for(self._horizon(sigma, time)))

    def predict_denoised(self, sigma: float, x: torch.Tensor, time: float | None = None) -> torch.Tensor:
        """The denoised estimate at (sigma, x): x - sigma * predicted slope."""
        return x.float() - sigma * self.predict_slope(sigma, x, time)

    def _horizon(self, sigma: float, time: float | None) -> float:
        now = -float(sigma) if time is None else float(time)
        return max(0.0, now - self.history[-1].time) if self.history else 0.0

    def weights_for(self, horizon: float) -> torch.Tensor | None:
        """Blend weights for a forecast `horizon` ahead of the newest point: fitted on the backtests at
        about that horizon or longer (decayed by age), or None (output reuse) when there is none."""
        if self.horizon_match <= 0:
            return self.weights
        need = horizon / self.horizon_match - 1e-9
        picked = tuple(i for i, f in enumerate(self.fits) if f.horizon >= need)
        if not picked:
            return None
        if picked not in self._weights_cache:
            gram = rhs = None
            for i in picked:  # oldest first: every newer qualifying backtest decays the ones before it
                f = self.fits[i]
                gram = f.gram if gram is None else self.decay * gram + f.gram
                rhs = f.rhs if rhs is None else self.decay * rhs + f.rhs
            mask = self.fits[picked[-1]].mask
            self._weights_cache[picked] = self._solve(mask, gram, rhs)
        return self._weights_cache[picked]

    # ------------------------------------------------------------------ learning from full steps
    def add(self, sigma: float, x: torch.Tensor, denoised: torch.Tensor, time: float | None = None
            ) -> BacktestResult | None:
        """Record a computed call; backtest every candidate on it first (when history allows). `time`: the
        run's clock at this call (e.g. its step index), None: -sigma."""
        point = OutputPoint(float(sigma), x.detach().float().clone(), denoised.detach().float().clone(),
                            -float(sigma) if time is None else float(time))
        if self.history and abs(self.history[-1].sigma - point.sigma) <= SAME_SIGMA_RTOL * max(point.sigma, 1e-8):
            self.history[-1] = point  # same time: the newer (Heun's next predictor) wins
            return None
        result = self._backtest(point) if self.history else None
        self.history = (self.history + [point])[-_HISTORY:]
        return result

    def _backtest(self, point: OutputPoint) -> BacktestResult:
        history = self.history
        truth = point.slope
        anchor, diffs = self._basis(history, point.sigma, point.x)
        residual = truth - anchor
        k = len(self.candidates) * self.bands
        batch = truth.shape[0]
        horizon = point.time - history[-1].time
        used_weights = self.weights_for(horizon)
        used_weights = used_weights if used_weights is not None else torch.zeros(batch, k)
        blend = _combine(anchor, diffs, used_weights)
        basis = torch.stack([d.flatten(1) for d in diffs], dim=1) if k else None  # [batch, k, n]
        gram = torch.bmm(basis, basis.transpose(1, 2)) if k else torch.zeros(batch, 0, 0)
        rhs = torch.bmm(basis, residual.flatten(1).unsqueeze(-1)).squeeze(-1) if k else torch.zeros(batch, 0)
        # Sums over tokens: over every rank's shard under sequence parallelism (one collective).
        norm, blend_sq, reuse_sq, gram, rhs = distributed.agree_sum(
            _per_sample_dot(truth, truth), _per_sample_dot(truth - blend, truth - blend),
            _per_sample_dot(residual, residual), gram, rhs)
        norm = norm.clamp_min(_EPS)
        result = BacktestResult(
            blend_error=(blend_sq / norm).sqrt(),
            reuse_error=(reuse_sq / norm).sqrt(),
            weights=used_weights.clone(),
            horizon=horizon,
        )
        self.backtests.append(result)
        if k == 0:
            return result
        available = set(self._available(history))
        mask = torch.tensor([name in available for name in self.candidates for _ in range(self.bands)],
                            dtype=torch.float32)
        gram = gram / norm.view(-1, 1, 1)
        rhs = rhs / norm.view(-1, 1)
        if self.gram is None or self.gram.shape != gram.shape:
            self.gram, self.rhs = gram, rhs
            self.fits.clear()
        else:
            self.gram = self.decay * self.gram + gram
            self.rhs = self.decay * self.rhs + rhs
        self.weights = self._solve(mask, self.gram, self.rhs)
        self.fits = (self.fits + [_Fit(horizon, gram, rhs, mask)])[-_FITS_KEPT:]
        self._weights_cache.clear()
        return result

    def _solve(self, mask: torch.Tensor, gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        """Ridge solution per sample over the available candidates (others fixed at 0)."""
        gram, rhs = gram.double(), rhs.double()
        k = gram.shape[-1]
        m = mask.double()
        outer = m.view(k, 1) * m.view(1, k)
        scale = (gram.diagonal(dim1=1, dim2=2) * m).sum(dim=1) / m.sum().clamp_min(1)
        eye = torch.eye(k, dtype=torch.float64)
        # Unavailable candidates: identity rows, zero right-hand side -> weight 0.
        system = gram * outer + eye * (self.ridge * scale.clamp_min(_EPS)).view(-1, 1, 1) * m + eye * (1 - m)
        weights = torch.linalg.solve(system, (rhs * m).unsqueeze(-1)).squeeze(-1)
        # Shrink uniformly (not per component): on a convex quadratic, t * w for t in [0, 1] keeps the
        # accumulated backtest error at or below reuse's (w = 0), so the guarantee survives the bound.
        largest = weights.abs().amax(dim=1, keepdim=True).clamp_min(_EPS)
        return (weights * (self.max_weight / largest).clamp(max=1.0)).float()

    def reset(self) -> None:
        self.history.clear()
        self.gram = self.rhs = self.weights = None
        self.backtests.clear()
        self.fits.clear()
        self._weights_cache.clear()

    def memory_bytes(self) -> int:
        return sum(p.x.numel() * 4 + p.denoised.numel() * 4 for p in self.history)
