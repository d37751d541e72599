"""Stage plan: which sampling steps run at which scale.

Steps are intervals of the sigma schedule handed to the sampler (n steps = len(sigmas) - 1). A plan
is a list of stages with descending factors, the last one always at factor 1 (full resolution) and
at least one step long: the final steps add the detail the coarse grid cannot hold, and the output
must have the full-resolution shape. The switch sigma of a stage is sigmas[start]: the state there
is re-noised from the shared field (noise.renoise).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError

UPSAMPLE_MODES = ("nearest", "bilinear")
POSITION_MODES = ("full_res", "coarse")
COARSE_SIGMA_MODES = ("schedule", "pooled")
# Stage change: renoise (Fresco: the sketch's x0 estimate up-sampled and re-noised with the field) or
# carry (the sketch's own state carried up plus the field's detail at this noise level; pooled only).
TRANSITIONS = ("renoise", "carry")
# Video (DVG-style): which axes the low-res stages reduce. temporal / joint halve the latent frames
# (TEMPORAL_FACTOR); auto measures motion and detail on a one-step draft and picks (strategy.py).
VIDEO_REDUCTIONS = ("spatial", "temporal", "joint", "auto")
TEMPORAL_FACTOR = 2


@dataclass(frozen=True)
class ResolutionConfig:
    """Settings of one progressive-resolution run.

    factor: spatial down-scale of the low-res stage (2: 1/4 of the image tokens).
    low_res_share: share of the steps run at low resolution (the switch comes after
        round(share * steps) steps); with promotion on, the least share.
    max_low_res_share: promotion on (> low_res_share): the low-res stage may go on up to this share
        while fewer than `converged_share` of its tokens have settled; 0 = fixed switch.
    converge_threshold: a token has settled when its x0_hat changes by less than this per unit of
        sigma, relative to the estimate's RMS (promotion.token_change).
    converged_share: share of settled tokens that promotes the whole image.
    upsample: how x0_hat is carried to the finer grid (UPSAMPLE_MODES).
    positions: full_res: RoPE positions of coarse tokens on the full-resolution coordinates (where
        the host lets us: FLUX rope_options); coarse: the host's own positions of the small grid.
    coarse_stages: low-resolution stages before full resolution. 1: factor -> 1. 2: factor^2 ->
        factor -> 1 (e.g. 4 -> 2 -> 1), the low-res share split in two equal halves, the coarsest
        first (high noise needs only the layout). Promotion works on the last low-res stage only.
    anchor: weight of the anchor correction (0 = off). One full-resolution model call at the first
        step measures how far the low-resolution model's denoised estimate is from the pooled
        full-resolution one; anchor x that difference is added to every estimate of the first
        low-resolution stage (the low-res model's bias is mostly its own mean image at high noise).
    coarse_sigma: the noise level a low-res stage is run at. schedule: the step's own sigma (the
        coarse grid, with unit noise, is then noisier than the image it stands for). pooled: the
        level of the pooled full-resolution state, s / (s + f (1 - s)) (noise.pooled_sigma), so
        the sketch denoises as far as the full-resolution run would have by then.
    """

    factor: int = 2
    low_res_share: float = 0.4
    max_low_res_share: float = 0.0
    converge_threshold: float = 0.5
    converged_share: float = 0.9
    upsample: str = "bilinear"
    positions: str = "coarse"
    coarse_stages: int = 1
    coarse_sigma: str = "pooled"  # with transition carry: chosen on the tune models (docs/RESOLUTION.md)

    video_reduction: str = "spatial"
    transition: str = "carry"
    anchor: float = 0.7

    def __post_init__(self) -> None:
        if not 2 <= int(self.factor) <= 8:
            raise ConfigError(f"factor must be 2 to 8, got {self.factor}: 2 is the usual choice")
        if not 0.0 <= self.low_res_share < 1.0:
            raise ConfigError(f"low_res_share must be in [0, 1), got {self.low_res_share}: the last steps run at full "
                              "resolution; try 0.4-0.8")
        if self.max_low_res_share and not self.low_res_share < self.max_low_res_share < 1.0:
            raise ConfigError(f"max_low_res_share must be 0 (fixed switch) or in (low_res_share={self.low_res_share}, "
                              f"1), got {self.max_low_res_share}")
        if self.converge_threshold <= 0:
            raise ConfigError(f"converge_threshold must be > 0, got {self.converge_threshold}")
        if not 0.0 < self.converged_share <= 1.0:
            raise ConfigError(f"converged_share must be in (0, 1], got {self.converged_share}")
        if self.upsample not in UPSAMPLE_MODES:
            raise ConfigError(f"upsample must be one of {UPSAMPLE_MODES}, got {self.upsample!r}")
        if self.coarse_stages not in (1, 2):
            raise ConfigError(f"coarse_stages must be 1 (factor -> full) or 2 (factor^2 -> factor -> full), got "
                              f"{self.coarse_stages}")
        if self.coarse_stages == 2 and self.adaptive:
            raise ConfigError("adaptive promotion (max_low_res_share > 0) needs coarse_stages = 1; set "
                              "max_low_res_share to 0 or use one low-resolution stage")
        if self.video_reduction not in VIDEO_REDUCTIONS:
            raise ConfigError(f"video_reduction must be one of {VIDEO_REDUCTIONS}, got {self.video_reduction!r}")
        if self.video_reduction == "temporal" and self.coarse_stages == 2:
            raise ConfigError("coarse_stages = 2 needs a spatial reduction; with video_reduction 'temporal' use "
                              "coarse_stages = 1 (or video_reduction 'joint')")
        if self.coarse_sigma not in COARSE_SIGMA_MODES:
            raise ConfigError(f"coarse_sigma must be one of {COARSE_SIGMA_MODES}, got {self.coarse_sigma!r}")
        if not 0.0 <= self.anchor <= 1.0:
            raise ConfigError(f"anchor must be in [0, 1], got {self.anchor}: the weight of the measured correction "
                              "(0 = off); 0.7 was best on the tune models")
        if self.transition not in TRANSITIONS:
            raise ConfigError(f"transition must be one of {TRANSITIONS}, got {self.transition!r}")
        if self.transition == "carry" and self.coarse_sigma != "pooled":  # (the default pair is pooled + carry)
            raise ConfigError("transition 'carry' carries the pooled full-resolution state: set coarse_sigma to "
                              "'pooled' (or use transition 'renoise')")
        if self.positions not in POSITION_MODES:
            raise ConfigError(f"positions must be one of {POSITION_MODES}, got {self.positions!r}")

    @property
    def factors(self) -> tuple[int, ...]:
        """Factors of the low-resolution stages, coarsest first."""
        return (self.factor * self.factor, self.factor) if self.coarse_stages == 2 else (self.factor,)

    @property
    def coarsest(self) -> int:
        return self.factors[0]

    @property
    def adaptive(self) -> bool:
        return self.max_low_res_share > 0

    def tag(self) -> str:
        t = f"fresco f{self.factor} low{self.low_res_share:g}"
        if self.coarse_stages == 2:
            t = f"fresco f{self.factor * self.factor}-{self.factor} low{self.low_res_share:g}"
        if self.adaptive:
            t += f"-{self.max_low_res_share:g} thr{self.converge_threshold:g} q{self.converged_share:g}"
        t += f" {self.upsample} {self.positions}" + (" pooled-sigma" if self.coarse_sigma == "pooled" else "")
        t += " carry" if self.transition == "carry" else ""
        t += f" anchor{self.anchor:g}" if self.anchor else ""
        return t + (f" video-{self.video_reduction}" if self.video_reduction != "spatial" else "")

    def video_scale(self, reduction: str, factor: int) -> tuple[int, int]:
        """(spatial factor, frames) of a coarse stage for a video reduction (images: frames 1)."""
        if reduction == "temporal":
            return 1, TEMPORAL_FACTOR
        if reduction in ("joint", "auto"):  # auto drafts at the joint scale, then chooses
            return factor, TEMPORAL_FACTOR
        return factor, 1


@dataclass(frozen=True)
class Stage:
    factor: int  # spatial down-scale per side
    start: int  # first step index (into sigmas)
    end: int  # one past the last step: the stage samples sigmas[start] -> sigmas[end]
    sigma_start: float
    sigma_end: float
    frames: int = 1  # temporal down-scale (video latents)

    @property
    def coarse(self) -> bool:
        return self.factor > 1 or self.frames > 1

    @property
    def token_scale(self) -> int:
        """Full-resolution tokens per token of this stage."""
        return self.factor * self.factor * self.frames

    def label(self) -> str:
        if not self.coarse:
            return "full"
        space = f"1/{self.factor}" if self.factor > 1 else ""
        time = f"{'' if not space else ' '}1/{self.frames} frames" if self.frames > 1 else ""
        return space + time

    @property
    def steps(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class StagePlan:
    stages: tuple[Stage, ...]
    steps: int = field(default=0)

    @property
    def switches(self) -> tuple[int, ...]:
        return tuple(s.start for s in self.stages[1:])

    def factor_at(self, step: int) -> int:
        for s in self.stages:
            if s.start <= step < s.end:
                return s.factor
        raise ConfigError(f"step {step} is outside the plan's {self.steps} steps")


def steps_for_share(n_steps: int, share: float) -> int:
    """Low-res steps for a share of n steps: at least 1 when share > 0, at most n - 1."""
    if share <= 0 or n_steps < 2:
        return 0
    return min(n_steps - 1, max(1, int(round(share * n_steps))))


def plan_stages(sigmas, factors: tuple[int, ...], shares: tuple[float, ...]) -> StagePlan:
    """Stages for a schedule: stage i runs round(shares[i] * n) steps at factors[i] (descending, > 1),
    the rest at factor 1. Zero-step stages are dropped; the full-resolution stage keeps >= 1 step."""
    sig = [float(s) for s in sigmas]
    n = len(sig) - 1
    if n < 1:
        raise ConfigError(f"sigma schedule needs at least 2 values, got {len(sig)}")
    if len(factors) != len(shares):
        raise ConfigError(f"factors {factors} and shares {shares} differ in length")
    if any(f <= 1 for f in factors) or list(factors) != sorted(factors, reverse=True) or len(set(factors)) != len(factors):
        raise ConfigError(f"factors must be > 1 and strictly descending (coarse to fine), got {factors}")
    if sum(shares) >= 1.0 or any(s < 0 for s in shares):
        raise ConfigError(f"shares must be >= 0 and sum below 1 (the last steps are full resolution), got {shares}")
    stages, start = [], 0
    total = steps_for_share(n, sum(shares))
    cumulative = 0.0
    for factor, share in zip(factors, shares):
        cumulative += share
        end = min(total, steps_for_share(n, cumulative)) if share > 0 else start
        if end > start:
            stages.append(Stage(factor, start, end, sig[start], sig[end]))
            start = end
    stages.append(Stage(1, start, n, sig[start], sig[n]))
    return StagePlan(tuple(stages), n)


def plan_for(config: ResolutionConfig, sigmas, low_res_steps: int | None = None, video: bool = False) -> StagePlan:
    """The config's plan; `low_res_steps` overrides where full resolution starts (adaptive promotion,
    one low-res stage only). `video`: the latent has a frame axis the video reduction may halve."""
    sig = [float(s) for s in sigmas]
    n = len(sig) - 1
    reduction = config.video_reduction if video else "spatial"
    if config.coarse_stages == 2 and low_res_steps is None:
        half = config.low_res_share / 2.0
        plan = plan_stages(sig, config.factors, (half, half))
        frames = config.video_scale(reduction, config.factor)[1]
        return StagePlan(tuple(Stage(st.factor, st.start, st.end, st.sigma_start, st.sigma_end,
                                     frames if st.factor > 1 else 1) for st in plan.stages), n)
    k = steps_for_share(n, config.low_res_share) if low_res_steps is None else max(0, min(n - 1, low_res_steps))
    if k == 0:
        return StagePlan((Stage(1, 0, n, sig[0], sig[n]),), n)
    factor, frames = config.video_scale(reduction, config.factor)
    return StagePlan((Stage(factor, 0, k, sig[0], sig[k], frames), Stage(1, k, n, sig[k], sig[n])), n)
