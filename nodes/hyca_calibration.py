"""HyCa from the GUI (Calibrate Forecasts, method hyca): what a recorded run keeps, and the closed loop.

Recording: a patches_replace entry on the first and the last transformer block reads, per model call,
the quantity Forecast Cache caches for HyCa (the final-hidden residual: the last block's image tokens
minus the first block's image-token input) on a seeded subset of RECORD_TOKENS image tokens (per-channel
errors are token averages) and calls the block unchanged, so the image stays bit-identical. The
Calibrate node's OUTER_SAMPLE wrapper also keeps what it takes to sample the run again (noise, latent,
sampler, sigmas, conds, cfg, seed) and the uncached result.

Closed loop: the recorded trajectories give the channel clusters and the open-loop map
(accel_core/learned/hyca_calibrate.py); accel_core/learned/hyca_closed_loop.py then picks each cluster's solver by
sampling the fitting runs again through Forecast Cache, with the config the Forecast Cache node builds for
that preset and a HyCa profile, each candidate map lent in memory: forecast errors feed back into later
steps exactly as in use. The last quarter of the runs (at least one) is held back and scores the chosen
map against FoCa and hidden-state reuse at the same schedule; a map that loses to FoCa there (mean or
worst case) is replaced by FoCa on every channel, and the report says so.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Callable

import torch

from accel_core.learned.hyca_calibrate import calibrate, trajectory_from_calls
from accel_core.learned.hyca_closed_loop import closed_loop_search
from accel_core.learned.hyca_profile import HyCaProfile, in_memory
from accel_core.models import IMG_TXT
from accel_core.schedule import plan_full_steps

from .coexistence import strip_previous
from .keys import HIDDEN_KEY

log = logging.getLogger("DiTAccel")

RECORD_TOKENS = 256  # image tokens kept per call (FLUX hidden 3072: 3 MB per call and CFG branch)
BASELINES = ("foca", "reuse")  # uniform maps the held-back runs also score
# Channel clusters (decisions) of the GUI fit: each costs (solvers - 1) candidate maps, i.e. replays of every
# fitting run. 4 instead of the script's 8: the closed loop then fits 22 maps instead of 38, and on the tune
# model micro_flux (4 runs of 50 steps, bench/bench_hyca_gui.py) 8 clusters took 86 s to fit.
GUI_CLUSTERS = 4
PLAN_PROFILE = "memory:plan"  # hyca_profile of the config used only for its schedule (never loaded)


# ------------------------------------------------------------------------------------ recording
class HiddenRecording:
    """The final-hidden residual of every model call of one run, on a fixed token subset."""

    def __init__(self, seed: int | None, max_tokens: int = RECORD_TOKENS):
        self.seed, self.max_tokens = seed, max_tokens  # max_tokens 0: every image token
        self.calls: list[dict] = []
        self.tokens: torch.Tensor | None = None
        self.sample_sigmas: list[float] | None = None

    def _select(self, img: torch.Tensor) -> torch.Tensor:
        kept = img if self.tokens is None else img.index_select(1, self.tokens.to(img.device))
        return kept.to("cpu", torch.float32, copy=True)  # a copy: host blocks write their inputs in place

    def begin(self, img: torch.Tensor, options: dict) -> None:
        if self.sample_sigmas is None:
            self.sample_sigmas = [float(s) for s in options["sample_sigmas"].flatten().tolist()]
        if self.tokens is None and 0 < self.max_tokens < img.shape[1]:
            g = torch.Generator().manual_seed(int(self.seed or 0))
            self.tokens = torch.randperm(img.shape[1], generator=g)[:self.max_tokens].sort().values
        self.calls.append({"sigma": float(options["sigmas"].detach().flatten().max()), "n_img": img.shape[1],
                           "keys": list(options.get("cond_or_uncond") or [0]), "h_in": self._select(img)})

    def end(self, stream: torch.Tensor, image_first: bool) -> None:
        call = self.calls[-1]
        n = call["n_img"]
        img = stream[:, :n] if image_first else stream[:, stream.shape[1] - n:]
        call["residual"] = self._select(img) - call.pop("h_in")

    def values(self) -> tuple[torch.Tensor, list[float], int]:
        """([T, B, N, C] with the CFG branches stacked on B, sigma per call, branches). One series per
        branch, as the engine keys its histories (ComfyUI may batch cond+uncond in one call or split them)."""
        series: dict = {}
        for c in (c for c in self.calls if "residual" in c):
            for key, chunk in zip(c["keys"], c["residual"].chunk(len(c["keys"]), dim=0)):
                series.setdefault(key, []).append((c["sigma"], chunk))
        keys = sorted(series)
        sigmas = [s for s, _ in series[keys[0]]]
        if any([s for s, _ in series[k]] != sigmas for k in keys):
            raise RuntimeError(f"HyCa recording: CFG branches were evaluated at different sigmas ({keys})")
        values = torch.stack([torch.cat([series[k][i][1] for k in keys], dim=0) for i in range(len(sigmas))])
        return values, sigmas, len(keys)


class ResidualHook:
    """patches_replace entry of the first and/or last block: records into the run's HiddenRecording (when the
    run has one) and calls the block (or the replacement it chains) unchanged."""

    def __init__(self, first: bool, last: bool, image_first: bool, inner=None):
        self.first, self.last, self.image_first, self.inner = first, last, image_first, inner

    def __call__(self, args: dict, extra: dict) -> dict:
        options = args.get("transformer_options") or {}
        recording = options.get(HIDDEN_KEY)
        if isinstance(recording, HiddenRecording) and self.first:
            recording.begin(args["img"], options)
        out = self.inner(args, extra) if self.inner is not None else extra["original_block"](args)
        if isinstance(recording, HiddenRecording) and self.last:
            recording.end(out["img"], self.image_first)
        return out


def install_hooks(patched, spec, diffusion_model) -> None:
    """Recording hooks on the first and last block of `patched` (a clone)."""
    groups = [(g, len(getattr(diffusion_model, g.module_attr, []) or [])) for g in spec.block_groups]
    groups = [(g, n) for g, n in groups if n > 0]
    first, (last_group, n_last) = (groups[0][0].patch_name, 0), groups[-1]
    last = (last_group.patch_name, n_last - 1)
    image_first = last_group.kind == "double" or last_group.token_order == IMG_TXT
    existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    for site in dict.fromkeys((first, last)):  # one hook when the model has a single block
        hook = ResidualHook(site == first, site == last, image_first, inner=existing.get(site))
        patched.set_model_patch_replace(hook, "dit", site[0], site[1])


# ------------------------------------------------------------------------------------ runs and replays
@dataclass
class ReplayCase:
    """What samples a recorded run again: the guider it ran in, its inputs, and its uncached result."""

    guider: object
    noise: torch.Tensor
    latent: torch.Tensor
    sampler: object
    sigmas: torch.Tensor
    denoise_mask: torch.Tensor | None
    seed: int | None
    conds: dict
    cfg: float
    truth: torch.Tensor | None = None

    @classmethod
    def capture(cls, guider, args: tuple, kwargs: dict) -> "ReplayCase":
        """From the OUTER_SAMPLE call (noise, latent_image, sampler, sigmas, denoise_mask, callback,
        disable_pbar, seed)."""
        def arg(i, name):
            return args[i] if len(args) > i else kwargs.get(name)

        return cls(guider=guider, noise=arg(0, "noise"), latent=arg(1, "latent_image"), sampler=arg(2, "sampler"),
                   sigmas=arg(3, "sigmas"), denoise_mask=arg(4, "denoise_mask"), seed=arg(7, "seed"),
                   conds=dict(guider.original_conds), cfg=float(getattr(guider, "cfg", 1.0)))

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.noise, self.latent, self.truth) if isinstance(t, torch.Tensor))


@dataclass
class HyCaRun:
    """One recorded run: hidden residuals per call and its replay case."""

    values: torch.Tensor  # [T, B, N, C]
    call_sigmas: list[float]
    sigmas: list[float]  # the run's schedule, final 0 included
    branches: int
    case: ReplayCase = field(repr=False)

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.case.nbytes

    @property
    def latent_shape(self) -> list[int]:
        return list(self.case.latent.shape)


def uncalibrated(patcher, calibrate_key: str, post_cfg_fn) -> object:
    """A clone of the calibrating model without the Calibrate node's wrappers, hooks and post-CFG hook."""
    clean = patcher.clone()
    strip_previous(clean, calibrate_key, calibrate_key, "", (None, ResidualHook, post_cfg_fn))
    return clean


def replay(case: ReplayCase, patcher) -> torch.Tensor:
    """Sample the recorded run again with `patcher` (same noise, seed, conds, sampler and sigmas)."""
    guider = copy.copy(case.guider)
    guider.model_patcher, guider.model_options = patcher, patcher.model_options
    guider.original_conds, guider.cfg = case.conds, case.cfg
    return guider.sample(case.noise, case.latent, case.sampler, case.sigmas, case.denoise_mask, None, True, case.seed)


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.float() - b.float()) ** 2).mean())


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    norm = torch.linalg.vector_norm
    return float(norm(a.float() - b.float()) / norm(b.float()).clamp_min(1e-12))


# ------------------------------------------------------------------------------------ closed loop
@dataclass
class ClosedLoopFit:
    profile: HyCaProfile  # info: closed-loop record only; the caller adds the shared header fields
    plan: list[bool]
    validation: dict


def fit_closed_loop(runs: list[HyCaRun], patcher, family: str, config, apply_cache: Callable,
                    clusters: int = GUI_CLUSTERS,
                    progress: Callable[[int, int], None] | None = None) -> ClosedLoopFit:
    """Clusters and open-loop map on the fitting runs, closed-loop search by replaying them through
    `apply_cache(patcher, config)` (Forecast Cache), then the held-back score. `config`: the Forecast Cache
    config of the preset with method hyca (any hyca_profile; each candidate's is lent in memory)."""
    held = max(1, len(runs) // 4)
    fit, back = runs[:-held], runs[-held:]
    plan = plan_full_steps(fit[0].sigmas, config)
    result = calibrate([trajectory_from_calls(r.values, r.call_sigmas, r.sigmas, config.time_axis) for r in fit],
                       plan, config, clusters=clusters)
    k, n = len(result.cluster_solver), len(result.solvers)
    total = 1 + (n + 1 + k * (n - 1)) + len(BASELINES) + 1
    done = [1]

    def tick(units: int = 1) -> None:
        done[0] += units
        if progress is not None:
            progress(done[0], total)

    tick(0)

    def profile_of(choice) -> HyCaProfile:
        lookup = torch.tensor(list(choice), dtype=torch.int64)
        return HyCaProfile(solver_index=lookup[result.cluster_index], solvers=result.solvers, family=family,
                           cluster_index=result.cluster_index.clone())

    def errors(choice, cases: list[HyCaRun], metric) -> list[float]:
        with in_memory(profile_of(choice)) as name:
            cached = apply_cache(patcher, config.replace(hyca_profile=name))
            return [metric(replay(r.case, cached), r.case.truth) for r in cases]

    quiet = logging.getLogger("DiTAccel")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # one summary line per replayed run would flood the console
    try:
        found = closed_loop_search(lambda choice: errors(choice, fit, _mse), result.solvers, result.cluster_sizes,
                                   open_loop=result.cluster_solver, progress=lambda d, t: tick())
        scores = {"hyca": errors(found.cluster_solver, back, _rel)}
        tick()
        for name in BASELINES:
            scores[name] = errors([result.solvers.index(name)] * k, back, _rel)
            tick()
    finally:
        quiet.setLevel(level)
    # The held-back gate: a map that loses to FoCa on the runs it never saw (mean or worst) is not kept; the
    # profile is then FoCa on every channel (bit-identical to method foca), so it is never below FoCa there.
    foca = result.solvers.index("foca")
    kept = max(scores["hyca"]) <= max(scores["foca"]) and sum(scores["hyca"]) <= sum(scores["foca"])
    chosen = list(found.cluster_solver) if kept else [foca] * k
    cluster_solvers = [result.solvers[s] for s in chosen]
    validation = {
        "metric": "relative L2 error of the final latent vs the uncached run, closed loop",
        "fit_runs": len(fit), "held_back_runs": len(back),
        **{f"{name}_rel_error": sum(v) / len(v) for name, v in scores.items()},
        **{f"{name}_worst": max(v) for name, v in scores.items()},
        "kept": "closed_loop" if kept else "foca",
        "closed_loop": {"start": found.start, "candidates": found.evaluations, "fit_mean_mse": found.mean,
                        "fit_worst_mse": found.worst, "foca_fit_mean_mse": found.log[0]["mean"],
                        "foca_fit_worst_mse": found.log[0]["worst"],
                        "cluster_solvers": [result.solvers[s] for s in found.cluster_solver],
                        "cluster_solvers_open_loop": [result.solvers[s] for s in result.cluster_solver],
                        "cluster_sizes": result.cluster_sizes},
    }
    profile = profile_of(chosen)
    info = {"cluster_solvers": cluster_solvers, "cluster_sizes": result.cluster_sizes,
            "channel_counts": profile.channel_counts(),
            "open_loop": {"solver_errors": {s: round(e, 6) for s, e in result.solver_error.items()},
                          "hyca_error": round(result.hyca_error, 6)}}
    return ClosedLoopFit(HyCaProfile(profile.solver_index, profile.solvers, family, profile.cluster_index, info),
                         plan, validation)
