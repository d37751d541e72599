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
        _check_choice("history_dtype", self.history_dtype, HISTORY_DTYPES)

    def replace(self, **changes: object) -> "ForecastCacheConfig":
        return dataclasses.replace(self, **changes)

    def tag(self) -> str:
        """Compact id for log lines and file names, e.g. 'foca-o1-i7-w3-f1-step-final_hidden'."""
        if not self.enabled:
            return "off"
        axis = "-step" if self.time_axis == "step" else ""
        history = "-bf16h" if self.history_dtype == "bf16" else ""
        return (f"{self.method}-o{self.order}-i{self.interval}-w{self.warmup_steps}-f{self.final_full_steps}"
                f"{axis}-{self.cache_mode}{history}")


# Presets, chosen from bench/results/micro_flux_forecast_cpu.md (trained micro FLUX, 50 euler steps,
# 3 seeds x 2 prompts, PSNR of the decoded image against the uncached run): at each budget the
# method with the best mean *and* worst-case PSNR.
#   quality:  16 of 50 full steps (3.1x), FoCa over sigma:  46.8 dB mean, 38.4 dB min
#   balanced: 10 of 50 full steps (5.0x), FoCa over steps: 34.1 dB mean, 29.3 dB min
#   fast:      8 of 50 full steps (6.3x), FoCa over steps: 29.5 dB mean, 25.1 dB min
PRESETS: dict[str, ForecastCacheConfig] = {
    "off": ForecastCacheConfig(enabled=False),
    "quality": ForecastCacheConfig(method="foca", order=1, interval=4, warmup_steps=3, final_full_steps=2),
    "balanced": ForecastCacheConfig(method="foca", order=1, interval=7, warmup_steps=3, final_full_steps=1,
                                    time_axis="step"),
    "fast": ForecastCacheConfig(method="foca", order=1, interval=10, warmup_steps=3, final_full_steps=1,
                                time_axis="step"),
}


def preset(name: str) -> ForecastCacheConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownNameError(
            f"Forecast Cache: unknown preset {name!r}. Available: {', '.join(PRESETS)}."
        ) from None
