"""Settings of the forecast cache as a frozen, validated dataclass, and the named presets.

Configs live in ComfyUI's model_options, which are deep-copied on every clone: keep them small
and tensor-free.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import ConfigError, UnknownNameError

CACHE_MODES = ("output", "final_hidden", "per_block")
SCHEDULES = ("adaptive", "budget", "fixed")
TIME_AXES = ("sigma", "step")
VERIFY_PROBES = ("off", "first_block", "last_block")
VERIFY_MODES = ("next_step", "rollback")
VIDEO_TRANSFORMS = ("3d", "2d")
SPLIT_SELECTS = ("adaptive", "fixed")
HISTORY_DTYPES = ("fp32", "bf16")
CFG_LAYOUTS = ("split", "guided", "auto")
MAX_ORDER = 3
MAX_INTERVAL = 20


def _check_range(name: str, value: float, lo: float, hi: float, hint: str) -> None:
    if not (lo <= value <= hi):
        raise ConfigError(f"Forecast Cache: {name} must be between {lo} and {hi} (got {value!r}). {hint}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"Forecast Cache: {name} must be one of {', '.join(choices)} (got {value!r}). Pick one from the list."
        )


def check_learned_needs_output(cache_mode: str, connected: bool = False) -> None:
    """Learned profiles (L2P, LESA) forecast the model's output, so they need cache_mode 'output': the one
    check of it, for the config field `learned_profile` (configs built in code) and for Forecast Cache's
    'learned' socket (`connected`: the mode was resolved from the preset and the other sockets)."""
    if cache_mode == "output":
        return
    if connected:
        what, got = "'learned' (a Learned Forecast Profile is connected)", f"cache_mode resolves to {cache_mode!r}"
        fix = ("Set cache_mode to 'output' (or 'preset') and disconnect the Verify / Split / HyCa nodes, or "
               "disconnect 'learned'.")
    else:
        what, got = "learned_profile", f"got cache_mode {cache_mode!r}"
        fix = "Set cache_mode to 'output' or clear learned_profile."
    raise ConfigError(f"Forecast Cache: {what} needs cache_mode 'output' ({got}); L2P / LESA profiles forecast the "
                      f"model's output. {fix}")


@dataclass(frozen=True)
class ForecastCacheConfig:
    """Forecast cache settings.

    Attributes:
        method (`str`, defaults to "taylorseer"): forecaster name from the registry
            (reuse, taylorseer, hicache, foca).
        cache_mode (`str`, defaults to "final_hidden"): "output" caches the sampler's guided model output
            (all CFG branches in one series; forecast steps run nothing of the model) and forecasts it
            with a backtest-fitted blend of output reuse and extrapolations; "final_hidden" caches the image tokens' hidden
            state after the last block (all blocks skipped on forecast steps, memory O(1) in depth);
            "per_block" caches every block's residual (block structure kept, memory O(depth)).
        interval (`int`, defaults to 5): a full step every `interval` steps once caching is active;
            1 computes every step (caching off). With schedule "adaptive", 1 / interval is the share
            of steps computed and the full steps are placed by the measured error.
        cfg_split (`bool`, defaults to True): output cache with CFG: forecast the unconditional output
            and the guidance direction (cond - uncond) as two series instead of the guided output.
        cfg_layout (`str`, defaults to "split"): output cache with plain CFG and cfg_split: which layout
            forecasts use: "split" (the two series), "guided" (one guided series; a split learned profile
            still gets the branches), or "auto" (both kept, a per-step backtest on the guided output picks).
            Chosen on the tune models (bench/bench_cfg_split.py); a bench knob, not a node input.
        schedule (`str`, defaults to "fixed"): "fixed" is the interval grid after warm-up;
            "budget" (output cache) spends ceil(steps / interval) full steps evenly between the
            warm-up and the final steps; "adaptive" spends them where the online backtest says
            the output changes fastest.
        order (`int`, defaults to 2): polynomial order of the forecaster (0 = reuse the last value).
        warmup_steps (`int`, defaults to 3): first steps always computed (they also seed the history).
        final_full_steps (`int`, defaults to 1): last steps always computed (fine detail forms there).
        start_percent / end_percent (`float`, 0..1): caching is active only between these points of
            the run (ComfyUI's sampling-percent convention; 0 = start, 1 = end).
        time_axis (`str`, defaults to "sigma"): forecast over sigma (true noise levels; right for the
            shifted schedules of FLUX and Qwen) or over the continuous step index.
        hermite_scale (`float`, defaults to 0.71): HiCache's contraction sigma (about 1/sqrt(2)).
        enabled (`bool`): False runs the model unchanged (preset "off").
        decomposition (`str`, defaults to "none"): what part of the cached feature is forecast, from
            the DECOMPOSITIONS registry: "none" (all of it), "freq" (FreqCa: the high DCT band is
            forecast, the low band reused), "svd" (SVD-Cache: the principal channel subspace is
            forecast, the rest reused).
        freq_cutoff (`float`, defaults to 0.1): FreqCa's low band = DCT coefficients within this
            fraction of the largest normalised frequency radius.
        video_transform (`str`, defaults to "3d"): FreqCa on video: one (t, h, w) DCT or a per-frame
            (h, w) DCT.
        svd_energy (`float`, defaults to 0.9): SVD-Cache keeps the smallest rank whose singular values
            hold this fraction of the feature's energy (sum of squares).
        svd_max_rank (`int`, defaults to 32): upper bound on that rank (randomized SVD size).
        split_select (`str`, defaults to "adaptive"): "fixed" forecasts the paper's part (high band,
            principal subspace) and reuses the rest; "adaptive" re-decides per part at every full
            step, by which of forecast or reuse predicted the new value better.
        verify (`str`, defaults to "off"): SpeCa probe: "first_block" runs the first block for real on
            forecast steps and compares it with its forecast; "last_block" runs the last block on the
            forecast penultimate state and compares with the forecast output.
        verify_mode (`str`, defaults to "rollback"): on a rejected forecast, "rollback" computes that
            step at once; "next_step" keeps the forecast and computes the next step (the SpeCa code).
        verify_threshold (`float`, defaults to 0.1): tau0 of the relative-L2 acceptance threshold
            tau(s) = max(tau0 * verify_decay ** (s / T), verify_floor).
        verify_decay (`float`, defaults to 0.5): beta; < 1 tightens the threshold as denoising proceeds.
        verify_floor (`float`, defaults to 0.02): lower bound on tau.
        verify_relative (`float`, defaults to 0): > 0 makes the threshold relative to this model: tau =
            verify_relative x the probed feature's forecast error measured by a backtest at the newest
            full step (what forecasting it over the last gap would have cost), times the decay; the
            absolute tau0 and floor are then unused. Before the first backtest every probe rejects.
        min_forecasts (`int`, defaults to 1): forecasts after a full step accepted without a probe.
            With verification on, `interval` - 1 is the maximum run of consecutive forecasts.
        hyca_profile (`str`, defaults to ""): HyCa channel-to-solver profile (safetensors path).
        history_dtype (`str`, defaults to "fp32"): storage of the divided-difference ladder (TaylorSeer,
            HiCache); "bf16" halves its memory, math stays fp32 (each entry is rounded once).
        learned_profile (`str`, defaults to ""): output cache only: an L2P profile (`.safetensors` in the
            profile folder, made by scripts/calibrate_l2p.py) whose learned linear predictor replaces
            the backtest blend at forecast steps; runs outside what it was fitted on (other sampler,
            step count, schedule) fall back to the blend with one warning.
        horizon_match (`float`, defaults to 1.5): output cache: a forecast h steps after the newest full
            step is weighted by the backtests at h / horizon_match steps or longer only, and is output
            reuse when there is none (weights fitted on one-step backtests are not used eight steps
            out). 0 fits every forecast on every backtest (the blend of rounds 1-3, for benches).
    """

    method: str = "taylorseer"
    cache_mode: str = "final_hidden"
    interval: int = 5
    schedule: str = "fixed"
    cfg_split: bool = True
    order: int = 2
    warmup_steps: int = 3
    final_full_steps: int = 1
    start_percent: float = 0.0
    end_percent: float = 1.0
    time_axis: str = "sigma"
    hermite_scale: float = 0.71
    enabled: bool = True
    decomposition: str = "none"
    freq_cutoff: float = 0.1
    video_transform: str = "3d"
    svd_energy: float = 0.9
    svd_max_rank: int = 32
    split_select: str = "adaptive"
    verify: str = "off"
    verify_mode: str = "rollback"
    verify_threshold: float = 0.1
    verify_relative: float = 0.0
    verify_decay: float = 0.5
    verify_floor: float = 0.02
    min_forecasts: int = 1
    hyca_profile: str = ""
    history_dtype: str = "fp32"
    learned_profile: str = ""
    horizon_match: float = 1.5
    blend_bands: int = 1
    warmup_sigma: float = 0.0
    cfg_layout: str = "split"

    def __post_init__(self) -> None:
        from .hidden.forecasters import FORECASTERS  # late import: forecasters import this module

        if self.method not in FORECASTERS:
            raise UnknownNameError(
                f"Forecast Cache: unknown method {self.method!r}. Available: {', '.join(FORECASTERS.names())}."
            )
        _check_choice("cache_mode", self.cache_mode, CACHE_MODES)
        _check_choice("schedule", self.schedule, SCHEDULES)
        if self.cache_mode == "output" and (self.verify != "off" or self.decomposition != "none"):
            raise ConfigError(
                "Forecast Cache: cache_mode 'output' caches the model's output, which has no blocks to verify "
                "and no token grid to split (verify / split connected). Set cache_mode to final_hidden or "
                "per_block, or disconnect the Verify / Split node.")
        if self.schedule != "fixed" and self.cache_mode != "output":
            raise ConfigError(
                f"Forecast Cache: schedule {self.schedule!r} needs cache_mode 'output' (got {self.cache_mode!r}). "
                "Use schedule 'fixed' with the hidden-state modes.")
        _check_choice("time_axis", self.time_axis, TIME_AXES)
        _check_range("interval", self.interval, 1, MAX_INTERVAL,
                     "Use 2-4 for quality, 5-6 for balanced, 7-9 for fast; 1 computes every step.")
        _check_range("order", self.order, 0, MAX_ORDER,
                     "Use 1-2; higher orders need more warm-up steps and rarely help.")
        _check_range("warmup_steps", self.warmup_steps, 1, 1000,
                     "At least 1: the first step seeds the cache. 2-4 is typical.")
        _check_range("final_full_steps", self.final_full_steps, 0, 1000, "0-2 is typical.")
        _check_range("start_percent", self.start_percent, 0.0, 1.0, "0 starts caching right after warm-up.")
        _check_range("end_percent", self.end_percent, 0.0, 1.0, "1 keeps caching until the final steps.")
        if self.start_percent >= self.end_percent:
            raise ConfigError(
                f"Forecast Cache: start_percent ({self.start_percent}) must be below end_percent "
                f"({self.end_percent}). Lower start_percent or raise end_percent."
            )
        _check_range("hermite_scale", self.hermite_scale, 0.05, 1.0, "0.71 (about 1/sqrt(2)) is the paper default.")
        from .hidden.decompositions import DECOMPOSITIONS  # late import, like FORECASTERS

        if self.decomposition not in DECOMPOSITIONS:
            raise UnknownNameError(
                f"Forecast Cache: unknown decomposition {self.decomposition!r}. "
                f"Available: {', '.join(DECOMPOSITIONS.names())}."
            )
        _check_range("freq_cutoff", self.freq_cutoff, 0.01, 0.9,
                     "0.1 (the FreqCa default) reuses the coarsest ~1% of frequencies; 0.05-0.3 is sensible.")
        _check_choice("video_transform", self.video_transform, VIDEO_TRANSFORMS)
        _check_range("svd_energy", self.svd_energy, 0.5, 0.9999, "0.9 is a good start; 0.8-0.99 is sensible.")
        _check_range("svd_max_rank", self.svd_max_rank, 1, 512, "8-64 is typical.")
        _check_choice("split_select", self.split_select, SPLIT_SELECTS)
        _check_choice("verify", self.verify, VERIFY_PROBES)
        _check_choice("verify_mode", self.verify_mode, VERIFY_MODES)
        _check_range("verify_threshold", self.verify_threshold, 0.001, 10.0,
                     "Relative L2 error; 0.05-0.3 is typical. Lower = more full steps, higher = faster.")
        _check_range("verify_decay", self.verify_decay, 0.01, 1.0, "1 keeps tau constant; 0.3-0.7 tightens it late.")
        _check_range("verify_floor", self.verify_floor, 0.0, 10.0, "0.01-0.05 is typical.")
        _check_range("verify_relative", self.verify_relative, 0.0, 100.0,
                     "0 = absolute threshold; 0.5-2 accepts forecasts up to that multiple of the measured error.")
        _check_range("min_forecasts", self.min_forecasts, 0, MAX_INTERVAL,
                     "0 probes every forecast; 1-2 skips the probe right after a full step.")
        if self.verify != "off" and self.min_forecasts >= self.interval:
            raise ConfigError(
                f"Forecast Cache: min_forecasts ({self.min_forecasts}) must be below interval ({self.interval}) "
                "when verification is on, or no forecast is ever probed. Lower min_forecasts or raise interval."
            )
        if self.method == "hyca" and not self.hyca_profile:
            raise ConfigError(
                "Forecast Cache: method 'hyca' needs a calibration profile (hyca_profile is empty). Pick a profile "
                "or run scripts/calibrate_hyca.py to make one, or choose another method."
            )
        _check_choice("history_dtype", self.history_dtype, HISTORY_DTYPES)
        _check_range("warmup_sigma", self.warmup_sigma, 0.0, 0.5,
                     "0 computes only the warm-up steps; 0.02-0.05 protects the first few percent of the noise range.")
        _check_range("blend_bands", self.blend_bands, 1, 2, "1 weighs each forecast as a whole; 2 splits coarse / detail.")
        _check_choice("cfg_layout", self.cfg_layout, CFG_LAYOUTS)
        if self.horizon_match != 0:
            _check_range("horizon_match", self.horizon_match, 1.0, 4.0,
                         "1.5 lets backtests vouch for forecasts up to 1.5x their horizon; 0 turns matching off.")
        if self.learned_profile:
            check_learned_needs_output(self.cache_mode)
            if not self.learned_profile.lower().endswith(".safetensors"):
                raise ConfigError(
                    f"Forecast Cache: learned_profile must name a .safetensors profile (got "
                    f"{self.learned_profile!r}). Pick a profile made by scripts/calibrate_l2p.py.")

    def replace(self, **changes: object) -> "ForecastCacheConfig":
        return dataclasses.replace(self, **changes)

    def tag(self) -> str:
        """Compact id for log lines and file names, e.g. 'foca-o1-i7-w3-f1-step-final_hidden'."""
        if not self.enabled:
            return "off"
        axis = "-step" if self.time_axis == "step" else ""
        parts = ""
        select = "a" if self.split_select == "adaptive" else ""
        if self.decomposition == "freq":
            parts += f"-freq{self.freq_cutoff:g}{select}"
        elif self.decomposition == "svd":
            parts += f"-svd{self.svd_energy:g}{select}"
        if self.verify != "off":
            probe = "vf" if self.verify == "first_block" else "vl"
            mode = "rb" if self.verify_mode == "rollback" else "ns"
            tau = f"r{self.verify_relative:g}" if self.verify_relative > 0 else f"{self.verify_threshold:g}"
            parts += f"-{probe}{tau}{mode}"
        history = "-bf16h" if self.history_dtype == "bf16" else ""
        if self.cache_mode == "output":
            blend = "reuse" if self.method == "reuse" else "backtest"
            if self.learned_profile:
                blend = "l2p"
            sched = f"i{self.interval}" if self.schedule == "fixed" else f"1/{self.interval}"
            split = "" if self.cfg_split else "-guided"
            if self.cfg_split and self.cfg_layout != "split":
                split = f"-{self.cfg_layout}"
            horizon = "" if self.horizon_match == 1.5 or self.method == "reuse" else f"-h{self.horizon_match:g}"
            horizon += "-b2" if self.blend_bands == 2 and self.method != "reuse" else ""
            warm = f"w{self.warmup_steps}" + (f"s{self.warmup_sigma:g}" if self.warmup_sigma else "")
            return (f"output-{blend}-{sched}-{warm}-f{self.final_full_steps}-{self.schedule}{split}"
                    f"{horizon}")
        return (f"{self.method}-o{self.order}-i{self.interval}-w{self.warmup_steps}-f{self.final_full_steps}"
                f"{axis}{parts}-{self.cache_mode}{history}")


def _output_preset(interval: int) -> ForecastCacheConfig:
    return ForecastCacheConfig(method="taylorseer", cache_mode="output", schedule="budget", interval=interval,
                               warmup_steps=1, final_full_steps=0)


# A preset is a share of model evaluations, the same at any step count: quality 1/3, balanced 1/5, fast 1/7
# of the steps (ceil(steps x share), what output reuse every k computes), spaced evenly from the first
# step, forecast with the horizon-consistent backtest blend. No step count is fitted on our models: the
# first step is the only one protected, because every run must compute it. Chosen on the zoo's tune models of three training recipes
# by the worst model's margin over output reuse at the same share (bench/choose_presets.py over
# bench/results/zoo_tune.json): protecting the start (a share of sigma, or the old warm-up 3) won 3-11 dB
# on the original recipe and lost 3-21 dB on another; adaptive placement never beat even spacing on the
# worst model. Reported on the validate models, among them a recipe no tune model uses.
PRESETS: dict[str, ForecastCacheConfig] = {
    "off": ForecastCacheConfig(enabled=False),
    "quality": _output_preset(3),
    "balanced": _output_preset(5),
    "fast": _output_preset(7),
}
PRESET_SHARES = {"quality": 3, "balanced": 5, "fast": 7}


def _hidden(method: str, interval: int, final: int, **more) -> ForecastCacheConfig:
    return ForecastCacheConfig(method=method, order=1, interval=interval, warmup_steps=3, final_full_steps=final,
                               **more)


# Hidden-state recipes, used only when cache_mode is set to final_hidden / per_block (or a Verify /
# Split node needs blocks). Measured on each family's tune micro model (bench/results/methods_*);
# on models outside the repo they lost to output reuse (issue 9), which is why they are no longer
# the default. Intervals follow the preset's share of evaluations.
_OFF = ForecastCacheConfig(enabled=False)
HIDDEN_PRESETS: dict[str, dict[str, ForecastCacheConfig]] = {
    "flux": {
        "quality": _hidden("foca", 3, 2),
        "balanced": _hidden("foca", 5, 1, time_axis="step", decomposition="svd"),
        "fast": _hidden("foca", 7, 1, time_axis="step", decomposition="svd"),
    },
    "qwen_image": {
        "quality": _hidden("foca", 3, 2, time_axis="step"),
        "balanced": _hidden("foca", 5, 1, time_axis="step"),
        "fast": _hidden("foca", 7, 1, time_axis="step"),
    },
    "hunyuan_video": {
        "quality": _hidden("taylorseer", 3, 2, decomposition="freq"),
        "balanced": _hidden("taylorseer", 5, 1, decomposition="freq"),
        "fast": _hidden("foca", 7, 1, time_axis="step", decomposition="freq"),
    },
}
HIDDEN_FALLBACK = {name: _hidden("foca", k, 1, time_axis="step") for name, k in PRESET_SHARES.items()}


def preset(name: str, family: str | None = None, cache_mode: str = "output") -> ForecastCacheConfig:
    """The preset `name`: the output-level budget preset, or for the hidden-state cache modes the
    family's hidden-state recipe at the same share of evaluations."""
    if name not in PRESETS:
        raise UnknownNameError(f"Forecast Cache: unknown preset {name!r}. Available: {', '.join(PRESETS)}.")
    base = PRESETS[name]
    if not base.enabled or cache_mode == "output":
        return base
    hidden = HIDDEN_PRESETS.get(family or "", HIDDEN_FALLBACK).get(name, HIDDEN_FALLBACK[name])
    return hidden.replace(cache_mode=cache_mode)


# ------------------------------------------------------------------ the node's inputs -> one config
# How Forecast Cache's inputs (preset, knobs, option sockets) become a config, and every check across
# them, live here with the config rather than in the node: they are pure logic, host-free and testable
# without ComfyUI, and the Calibrate node resolves a HyCa run's config the same way.
FROM_PRESET = "preset"  # a knob / combo value that keeps the preset's value


def resolve_config(preset_name: str, method: str, cache_mode: str, interval: int, order: int,
                   warmup_steps: int, final_full_steps: int, start_percent: float,
                   end_percent: float, family: str | None = None, verify: dict | None = None,
                   split: dict | None = None, hyca: dict | None = None,
                   schedule: str = FROM_PRESET) -> ForecastCacheConfig:
    """Preset values, overridden by every knob that is not left at its 'use the preset' value, then
    by the connected option nodes. Verify / Split / HyCa nodes work on hidden states, so with
    cache_mode 'preset' they select the final_hidden mode (the family's hidden-state recipe)."""
    if cache_mode == FROM_PRESET:
        cache_mode = "final_hidden" if (verify or split or hyca) else PRESETS.get(preset_name, PRESETS["off"]).cache_mode
    base = preset(preset_name, family, cache_mode)
    if not base.enabled:
        return base
    if hyca is not None:
        if method not in (FROM_PRESET, "hyca"):
            raise ConfigError(
                f"Forecast Cache: a HyCa profile is connected but method is {method!r}. Set method to 'hyca' "
                "(or 'preset', which then uses hyca), or disconnect the HyCa Profile node.")
        method = "hyca"
    changes: dict = {"cache_mode": cache_mode, "start_percent": start_percent, "end_percent": end_percent}
    if schedule != FROM_PRESET:
        changes["schedule"] = schedule
    if method != FROM_PRESET:
        # An explicit forecaster replaces the preset's whole forecasting recipe, split included; a
        # connected Frequency / Subspace Split node adds one back (applied below).
        changes["method"] = method
        changes["decomposition"] = "none"
    if interval != 0:
        changes["interval"] = interval
    if order != -1:
        changes["order"] = order
    if warmup_steps != -1:
        changes["warmup_steps"] = warmup_steps
    if final_full_steps != -1:
        changes["final_full_steps"] = final_full_steps
    for options in (verify, split, hyca):  # connected option nodes win over knobs and presets
        changes.update(options or {})
    return base.replace(**changes)


def with_connected_options(config: ForecastCacheConfig, tokens: bool = False,
                           learned_profile: str | None = None) -> ForecastCacheConfig:
    """The resolved config checked against the sockets that need the output cache (a token node, a Learned
    Forecast Profile), with the learned profile set. Errors name the socket; ForecastCacheConfig's own
    check of learned_profile (the same `check_learned_needs_output`) names the field, for configs built in code."""
    if tokens and config.enabled and config.cache_mode != "output":
        raise ConfigError(
            f"Forecast Cache: a token node is connected but cache_mode resolves to {config.cache_mode!r}. Token "
            "methods work with the output cache: set cache_mode to 'output' (or 'preset') and disconnect the "
            "Verify / Split / HyCa nodes, or disconnect the token node.")
    if learned_profile is not None and config.enabled:
        check_learned_needs_output(config.cache_mode, connected=True)
        config = config.replace(learned_profile=learned_profile)
    return config
