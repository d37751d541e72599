"""Settings of the forecast cache as a frozen, validated dataclass, and the named presets.

Configs live in ComfyUI's model_options, which are deep-copied on every clone: keep them small
and tensor-free.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import ConfigError, UnknownNameError

CACHE_MODES = ("final_hidden", "per_block")
TIME_AXES = ("sigma", "step")
VERIFY_PROBES = ("off", "first_block", "last_block")
VERIFY_MODES = ("next_step", "rollback")
VIDEO_TRANSFORMS = ("3d", "2d")
SPLIT_SELECTS = ("adaptive", "fixed")
HISTORY_DTYPES = ("fp32", "bf16")
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


@dataclass(frozen=True)
class ForecastCacheConfig:
    """Forecast cache settings.

    Attributes:
        method (`str`, defaults to "taylorseer"): forecaster name from the registry
            (reuse, taylorseer, hicache, foca).
        cache_mode (`str`, defaults to "final_hidden"): "final_hidden" caches the image tokens' hidden
            state after the last block (all blocks skipped on forecast steps, memory O(1) in depth);
            "per_block" caches every block's residual (block structure kept, memory O(depth)).
        interval (`int`, defaults to 5): a full step every `interval` steps once caching is active;
            1 computes every step (caching off).
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
        min_forecasts (`int`, defaults to 1): forecasts after a full step accepted without a probe.
            With verification on, `interval` - 1 is the maximum run of consecutive forecasts.
        hyca_profile (`str`, defaults to ""): HyCa channel-to-solver profile (safetensors path).
        history_dtype (`str`, defaults to "fp32"): storage of the divided-difference ladder (TaylorSeer,
            HiCache); "bf16" halves its memory, math stays fp32 (each entry is rounded once).
    """

    method: str = "taylorseer"
    cache_mode: str = "final_hidden"
    interval: int = 5
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
    verify_decay: float = 0.5
    verify_floor: float = 0.02
    min_forecasts: int = 1
    hyca_profile: str = ""
    history_dtype: str = "fp32"

    def __post_init__(self) -> None:
        from .forecasters import FORECASTERS  # late import: forecasters import this module

        if self.method not in FORECASTERS:
            raise UnknownNameError(
                f"Forecast Cache: unknown method {self.method!r}. Available: {', '.join(FORECASTERS.names())}."
            )
        _check_choice("cache_mode", self.cache_mode, CACHE_MODES)
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
        from .decompositions import DECOMPOSITIONS  # late import, like FORECASTERS

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
            parts += f"-{probe}{self.verify_threshold:g}{mode}"
        history = "-bf16h" if self.history_dtype == "bf16" else ""
        return (f"{self.method}-o{self.order}-i{self.interval}-w{self.warmup_steps}-f{self.final_full_steps}"
                f"{axis}{parts}-{self.cache_mode}{history}")


# Fallback presets (for a family without measured ones; the names feed the node's combo). Chosen from
# bench/results/micro_flux_forecast_cpu.md (trained micro FLUX, 50 euler steps, 3 seeds x 2 prompts).
PRESETS: dict[str, ForecastCacheConfig] = {
    "off": ForecastCacheConfig(enabled=False),
    "quality": ForecastCacheConfig(method="foca", order=1, interval=4, warmup_steps=3, final_full_steps=2),
    "balanced": ForecastCacheConfig(method="foca", order=1, interval=7, warmup_steps=3, final_full_steps=1,
                                    time_axis="step"),
    "fast": ForecastCacheConfig(method="foca", order=1, interval=10, warmup_steps=3, final_full_steps=1,
                                time_axis="step"),
}


def _measured(method: str, interval: int, final: int, **more) -> ForecastCacheConfig:
    return ForecastCacheConfig(method=method, order=1, interval=interval, warmup_steps=3, final_full_steps=final,
                               **more)


# Per-family presets, chosen by bench/choose_presets.py from bench/results/methods_<family>_cpu.json
# (each family's trained micro model, 50 euler steps, 2 seeds x 2 prompts, PSNR of the decoded image vs
# uncached): at 16 / 9 / 7 of 50 full steps (3.1x / 5.6x / 7.1x fewer evaluations), the fixed-schedule
# method with the best (mean + worst case) / 2. HyCa is left out (its profile is per model). Mean / min dB:
#   flux:          quality FoCa over sigma 44.0 / 38.4; balanced SVD split + FoCa 31.9 / 28.9;
#                  fast SVD split + FoCa 27.1 / 25.1
#   qwen_image:    FoCa over steps at all three: 44.4 / 41.5, 31.4 / 29.1, 26.1 / 25.0
#   hunyuan_video: quality FreqCa split + TaylorSeer 49.5 / 44.5; balanced FreqCa split + TaylorSeer
#                  34.1 / 33.2; fast FreqCa split + FoCa over steps 29.4 / 28.8
_OFF = ForecastCacheConfig(enabled=False)
FAMILY_PRESETS: dict[str, dict[str, ForecastCacheConfig]] = {
    "flux": {
        "off": _OFF,
        "quality": _measured("foca", 4, 2),
        "balanced": _measured("foca", 8, 1, time_axis="step", decomposition="svd"),
        "fast": _measured("foca", 12, 1, time_axis="step", decomposition="svd"),
    },
    "qwen_image": {
        "off": _OFF,
        "quality": _measured("foca", 4, 2, time_axis="step"),
        "balanced": _measured("foca", 8, 1, time_axis="step"),
        "fast": _measured("foca", 12, 1, time_axis="step"),
    },
    "hunyuan_video": {
        "off": _OFF,
        "quality": _measured("taylorseer", 4, 2, decomposition="freq"),
        "balanced": _measured("taylorseer", 8, 1, decomposition="freq"),
        "fast": _measured("foca", 12, 1, time_axis="step", decomposition="freq"),
    },
}


def preset(name: str, family: str | None = None) -> ForecastCacheConfig:
    """The preset `name`, tuned for `family` when that family has its own measured presets."""
    try:
        if family in FAMILY_PRESETS and name in FAMILY_PRESETS[family]:
            return FAMILY_PRESETS[family][name]
        return PRESETS[name]
    except KeyError:
        raise UnknownNameError(
            f"Forecast Cache: unknown preset {name!r}. Available: {', '.join(PRESETS)}."
        ) from None
