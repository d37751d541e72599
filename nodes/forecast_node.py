"""The "Forecast Cache" node: MODEL in, MODEL out, with a forecast cache installed."""
from __future__ import annotations

from comfy_api.latest import io

from accel_core import CACHE_MODES, FORECASTERS, PRESETS, ConfigError, ForecastCacheConfig
from accel_core.config import FROM_PRESET, SCHEDULES, resolve_config, with_connected_options
from accel_core.errors import ProfileMismatchError

from .adapter import apply_forecast_cache
from .calibrate_node import LearnedOptions
from .host import detect_spec
from .keys import OPTIONS_KEY
from .option_nodes import DecompositionOptions, HyCaOptions, VerifyOptions
from .profiles import check_hyca_profile
from .token_nodes import TokenOptions

PRESET_HELP = (
    "A share of model evaluations, the same at any step count and CFG. off: model unchanged. quality: 1/3 of the "
    "steps computed (3x fewer evaluations). balanced: 1/5 (5x). fast: 1/7 (7x). The model's guided output is "
    "forecast between full steps by a blend of output reuse and extrapolations, refitted at every full step on "
    "how well each would have predicted it (never worse than output reuse on those checks). Measured on 5 "
    "validation models we did not tune on (50 euler steps, PSNR vs uncached): quality +6.5 to +12.7 dB over "
    "reusing the model's output at the same budget, balanced +3.4 to +6.4 dB, fast about even (-0.7 to +1.0 dB); "
    "at 20-28 steps the margin is 0-2 dB. Runs of 8 steps or fewer (schnell, Lightning-style) compute every step: "
    "no caching was safe there on our models. Knobs left at 0 / -1 / 'preset' keep the preset's value."
)
# Optional sockets: the node that makes each, and the key its output must carry (None: config fields only).
SOCKETS = {"verify": ("Verify Forecasts", None), "split": ("Frequency Split / Subspace Split", None),
           "hyca": ("HyCa Profile", "hyca_profile"), "tokens": ("Cluster Tokens / Edit Region / Spec Edit", "settings"),
           "learned": ("Learned Forecast Profile", "learned_profile")}


def check_sockets(**values) -> None:
    """Each connected option socket holds what its node makes: an API prompt can put a raw value (a string, a
    number) on a socket, which would otherwise fail deep inside as a TypeError."""
    import dataclasses

    from accel_core.tokens.settings import TokenSettings

    fields = {f.name for f in dataclasses.fields(ForecastCacheConfig)}
    for name, value in values.items():
        if value is None:
            continue
        node, key = SOCKETS[name]
        ok = isinstance(value, dict) and (key is None or key in value)
        if ok and key is None:
            ok = set(value) <= fields
        if ok and name == "tokens":
            ok = isinstance(value["settings"], TokenSettings)
        if ok and key in ("hyca_profile", "learned_profile"):
            ok = isinstance(value[key], str) and bool(value[key])
        if not ok:
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ConfigError(
                f"Forecast Cache: input '{name}' is {shown} ({type(value).__name__}), not the output of a {node} "
                f"node. Connect a {node} node to '{name}' (in an API prompt: a link [node_id, 0], not a value), "
                "or leave it unconnected.")


class DiTAccelForecastCache(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelForecastCache",
            display_name="Forecast Cache",
            category="DiT Accel/caching",
            description=(
                "Skips most transformer evaluations by forecasting the DiT's features from a few fully "
                "computed steps (TaylorSeer, HiCache, FoCa or plain reuse). Supports FLUX.1 / Kontext, "
                "Qwen-Image / Edit and HunyuanVideo 1.0 / 1.5; other models run unchanged with a warning. "
                "Typical: 2-5x fewer model evaluations. Place between the model loader and the sampler."
            ),
            inputs=[
                io.Model.Input("model", tooltip="Diffusion model from a loader (FLUX, Kontext, Qwen-Image, "
                               "Qwen-Image-Edit, HunyuanVideo). LoRAs may be applied before or after."),
                io.Combo.Input("preset", options=list(PRESETS), default="balanced", tooltip=PRESET_HELP),
                io.Combo.Input("method", options=[FROM_PRESET] + FORECASTERS.names(), default=FROM_PRESET,
                               tooltip="Forecaster. preset: the preset's for this model family (FoCa or "
                               "TaylorSeer). reuse: repeat the last computed features (FORA). taylorseer: "
                               "polynomial extrapolation. hicache: scaled-Hermite extrapolation. foca: "
                               "predictor-corrector marching. hyca: a forecaster per feature channel, from a HyCa "
                               "Profile node (connect 'hyca'). Picking a method also drops the preset's frequency "
                               "/ subspace split; connect a split node to add one."),
                io.Combo.Input("cache_mode", options=[FROM_PRESET] + list(CACHE_MODES), default=FROM_PRESET,
                               tooltip="preset: output (final_hidden when a Verify / Split / HyCa node is "
                               "connected). output: cache the model's guided output (every CFG branch at once; "
                               "forecast steps run nothing of the model; memory: 3 latents). "
                               "final_hidden: cache the image features after the last block; every "
                               "block is skipped on forecast steps; memory per CFG branch = (order+1) x image "
                               "tokens x hidden x 4 bytes (history 2-4: about 100-200 MB for FLUX 1024px). per_block: "
                               "cache every block's residual (more memory: x number of blocks)."),
                io.Int.Input("interval", default=0, min=0, max=20, step=1,
                             tooltip="Steps per full model evaluation (unit: sampler steps). 0 = preset's "
                             "(quality 3, balanced 5, fast 7). With the output cache, 1/interval of the steps "
                             "are computed at any step count (schedule budget / adaptive); with the hidden-state "
                             "modes, a full step every interval steps. Recommended 3-7; 1 = compute every step "
                             "(caching off). With a Verify node connected: the longest run of forecasts + 1."),
                io.Int.Input("order", default=-1, min=-1, max=3, step=1,
                             tooltip="Polynomial order for taylorseer / hicache. -1 = preset's (1). 0 = reuse, "
                             "1 = linear, 2 = quadratic (recommended 1; 2 only with interval <= 3). Each order "
                             "keeps one more feature tensor. foca ignores it (its own drift model)."),
                io.Int.Input("warmup_steps", default=-1, min=-1, max=100, step=1,
                             tooltip="First steps always computed (unit: steps; they count toward the budget). "
                             "-1 = preset's (1: only the first step; the rest of the budget is spaced evenly). "
                             "Minimum 1. More warm-up lengthens the later gaps: on models trained by one recipe it "
                             "helped, on another it cost up to 21 dB (docs/RESULTS.md)."),
                io.Int.Input("final_full_steps", default=-1, min=-1, max=100, step=1,
                             tooltip="Last steps always computed (unit: steps; they count toward the budget). "
                             "-1 = preset's (0). 0-1; with an explicit value the budget is kept and the run's "
                             "tag shows what was used if it had to be cut."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Caching starts at this fraction of the run (0-1, ComfyUI sampling "
                               "percent). 0 = right after warm-up. Recommended 0-0.2."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Caching stops at this fraction of the run (0-1). 1 = until the final "
                               "full steps. Recommended 0.8-1.0."),
                io.Combo.Input("schedule", options=[FROM_PRESET] + list(SCHEDULES), default=FROM_PRESET,
                               tooltip="Where the full steps go (output cache). preset: budget. budget: "
                               "ceil(steps / interval) full steps (what output reuse every interval steps "
                               "computes) spread evenly from the first step. "
                               "adaptive: the same budget, gaps shortened where the online backtest error "
                               "grows (did not beat even spacing on the worst tune model; docs/RESULTS.md). "
                               "fixed: a full step every interval steps after warm-up (the only choice for "
                               "final_hidden / per_block)."),
                VerifyOptions.Input("verify", optional=True,
                                    tooltip="Optional: Verify Forecasts (SpeCa) node. Checks each forecast with one "
                                    "real block and computes the step when it is off; interval becomes the "
                                    "longest run of forecasts."),
                DecompositionOptions.Input("split", optional=True,
                                           tooltip="Optional: Frequency Split (FreqCa) or Subspace Split (SVD-Cache) "
                                           "node. Forecasts only part of the features and reuses the rest."),
                HyCaOptions.Input("hyca", optional=True,
                                  tooltip="Optional: HyCa Profile node (per-channel forecasters calibrated for "
                                  "your model). Sets method to hyca."),
                TokenOptions.Input("tokens", optional=True,
                                   tooltip="Optional: a token node (Cluster Tokens, Edit Region, Spec Edit). "
                                   "Forecast steps then compute a subset of the image tokens and correct the "
                                   "forecast with them. Needs the output cache (cache_mode preset or output)."),
                LearnedOptions.Input("learned", optional=True,
                                     tooltip="Optional: Learned Forecast Profile node. Forecasts use weights "
                                     "learned on your model (Calibrate Forecasts) instead of the run-time "
                                     "blend. Output cache only (cache_mode preset or output); the profile must "
                                     "come from the same model weights."),
            ],
            outputs=[io.Model.Output(tooltip="The same model with the forecast cache; the input model is "
                                     "left unchanged.")],
            hidden=[io.Hidden.unique_id],  # names this node in the run diagnostics sent to the web UI
        )

    @classmethod
    def execute(cls, model: io.Model.Type, preset: str, method: str, cache_mode: str, interval: int, order: int,
                warmup_steps: int, final_full_steps: int, start_percent: float,
                end_percent: float, schedule: str = FROM_PRESET, verify: dict | None = None,
                split: dict | None = None, hyca: dict | None = None, tokens: dict | None = None,
                learned: dict | None = None) -> io.NodeOutput:
        check_sockets(verify=verify, split=split, hyca=hyca, tokens=tokens, learned=learned)
        spec, diffusion_model, _ = detect_spec(model)
        config = resolve_config(preset, method, cache_mode, interval, order, warmup_steps, final_full_steps,
                                start_percent, end_percent, spec.family if spec else None, verify, split, hyca,
                                schedule)
        if config.enabled and config.method == "hyca" and spec is not None:
            check_hyca_profile(config.hyca_profile, spec.family, diffusion_model)
        config = with_connected_options(config, tokens is not None,
                                        learned["learned_profile"] if learned is not None else None)
        try:
            patched = apply_forecast_cache(model, config, tokens)
        except ProfileMismatchError as e:
            if learned is None:
                raise
            raise ProfileMismatchError(
                f"{e} In the GUI: record a profile for this model with Calibrate Forecasts, or pick one made "
                "for it in Learned Forecast Profile.") from None
        settings = patched.model_options.get("transformer_options", {}).get(OPTIONS_KEY)
        if settings is not None:
            settings["node_id"] = getattr(getattr(cls, "hidden", None), "unique_id", None)
        return io.NodeOutput(patched)
