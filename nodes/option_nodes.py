"""Advanced option nodes: typed sockets (DITACCEL_*) that plug into Forecast Cache.

Each node outputs a small dict of config fields (validated when Forecast Cache builds its config),
so the main node stays simple and every advanced knob still has a tooltip with units and ranges.
"""
from __future__ import annotations

import logging

from comfy_api.latest import io

from accel_core import ConfigError
from accel_core.config import SPLIT_SELECTS, VERIFY_MODES, VIDEO_TRANSFORMS

from .profiles import hyca_profiles, outside_folder_error, profile_file

log = logging.getLogger("DiTAccel")

WEIGHTING_HELP = ("adaptive: at every full step, measure how well the forecast predicted each part and scale "
                  "each part's forecast by that (0 = reuse it, 1 = forecast it); never worse than the paper's split "
                  "in our measurements. fixed: the paper's split (%s).")

VerifyOptions = io.Custom("DITACCEL_VERIFY")
DecompositionOptions = io.Custom("DITACCEL_DECOMPOSITION")
HyCaOptions = io.Custom("DITACCEL_HYCA")


class DiTAccelVerifyOptions(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelVerifyOptions",
            display_name="Verify Forecasts (SpeCa)",
            category="DiT Accel/caching",
            description=(
                "Checks forecasts with one real transformer block and computes the step when the forecast is off "
                "(SpeCa). Connect to Forecast Cache's 'verify' input. Full steps then come where the model needs "
                "them instead of on a fixed grid; Forecast Cache's interval becomes the longest run of forecasts."
            ),
            inputs=[
                io.Combo.Input("probe", options=["first_block", "last_block"], default="last_block",
                               tooltip="Which block checks the forecast. last_block: runs the last block on the "
                               "forecast state (the SpeCa paper's check; catches drift of the whole model). "
                               "first_block: runs the first block (earliest signal, same cost). Cost either way: "
                               "one block per probed step (1/57 of a FLUX step)."),
                io.Combo.Input("on_reject", options=list(VERIFY_MODES), default="rollback",
                               tooltip="rollback: a rejected forecast is recomputed at once (safest). next_step: the "
                               "rejected forecast is kept and the next step is computed (the SpeCa code; faster)."),
                io.Float.Input("threshold", default=0.1, min=0.001, max=10.0, step=0.005,
                               tooltip="threshold_mode absolute only. Largest accepted relative error ||forecast - real|| / ||real|| of the probed "
                               "block at the start of sampling (unitless). Recommended 0.02-0.2: lower = more full "
                               "steps and higher fidelity."),
                io.Float.Input("decay", default=0.5, min=0.01, max=1.0, step=0.05,
                               tooltip="Threshold multiplier reached at the end of sampling (both modes): tau(s) = "
                               "limit x decay^(s/steps). 1 = constant; 0.3-0.7 gets stricter as detail forms."),
                io.Float.Input("floor", default=0.02, min=0.0, max=10.0, step=0.005,
                               tooltip="threshold_mode absolute only: lowest threshold (relative error). "
                               "Recommended 0.01-0.05."),
                io.Int.Input("min_forecasts", default=1, min=0, max=19, step=1,
                             tooltip="Forecasts right after a full step that are accepted without a probe (unit: "
                             "steps). 0 probes every forecast; 1-2 saves probe cost where forecasts are safest. "
                             "Must be below Forecast Cache's interval."),
                io.Combo.Input("threshold_mode", options=["relative", "absolute"], default="relative",
                               tooltip="relative (recommended): the limit is a multiple of the error measured on "
                               "your model at every full step (how far forecasting the probed block over the last "
                               "gap was off), so it means the same on any model. absolute: 'threshold' and "
                               "'floor' as fixed relative-L2 numbers (the SpeCa paper's form)."),
                io.Float.Input("relative_threshold", default=1.0, min=0.05, max=100.0, step=0.05,
                               tooltip="With threshold_mode relative: accept a forecast whose probe error is at "
                               "most this multiple of the measured backtest error (times decay). Recommended "
                               "0.5-2: lower = more full steps and higher fidelity."),
            ],
            outputs=[VerifyOptions.Output(tooltip="Verification settings for Forecast Cache's 'verify' input.")],
        )

    @classmethod
    def execute(cls, probe: str, on_reject: str, threshold: float, decay: float, floor: float,
                min_forecasts: int, threshold_mode: str = "relative", relative_threshold: float = 1.0) -> io.NodeOutput:
        relative = relative_threshold if threshold_mode == "relative" else 0.0
        return io.NodeOutput({"verify": probe, "verify_mode": on_reject, "verify_threshold": threshold,
                              "verify_decay": decay, "verify_floor": floor, "min_forecasts": min_forecasts,
                              "verify_relative": relative})


class DiTAccelFrequencyOptions(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelFrequencyOptions",
            display_name="Frequency Split (FreqCa)",
            category="DiT Accel/caching",
            description=(
                "Forecasts only the high spatial frequencies of the cached features and reuses the low ones "
                "(FreqCa), on the true token grid of the image (any aspect ratio; Kontext / Qwen-Image-Edit "
                "reference images are never touched). Connect to Forecast Cache's 'split' input; the cache's "
                "method forecasts the high band. Same memory as the method alone."
            ),
            inputs=[
                io.Float.Input("cutoff", default=0.1, min=0.01, max=0.9, step=0.01,
                               tooltip="Low band = frequencies within this fraction of the highest frequency "
                               "(unitless). 0.1 = the paper's default. Recommended 0.05-0.3; higher reuses more."),
                io.Combo.Input("video_transform", options=list(VIDEO_TRANSFORMS), default="3d",
                               tooltip="Video only. 3d: one transform over (frames, height, width). 2d: per frame. "
                               "See the README's measurement for the choice."),
                io.Combo.Input("weighting", options=list(SPLIT_SELECTS), default="adaptive",
                               tooltip=WEIGHTING_HELP % "forecast the high band, reuse the low band"),
            ],
            outputs=[DecompositionOptions.Output(tooltip="Frequency split for Forecast Cache's 'split' input.")],
        )

    @classmethod
    def execute(cls, cutoff: float, video_transform: str, weighting: str = "adaptive") -> io.NodeOutput:
        return io.NodeOutput({"decomposition": "freq", "freq_cutoff": cutoff, "video_transform": video_transform,
                              "split_select": weighting})


class DiTAccelSubspaceOptions(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelSubspaceOptions",
            display_name="Subspace Split (SVD-Cache)",
            category="DiT Accel/caching",
            description=(
                "Forecasts only the principal feature directions (found by a fast SVD at each full step) and reuses "
                "the rest (SVD-Cache). Connect to Forecast Cache's 'split' input."
            ),
            inputs=[
                io.Float.Input("energy", default=0.9, min=0.5, max=0.9999, step=0.01,
                               tooltip="Fraction of the feature energy (sum of squares) the forecast directions "
                               "must hold (unitless). Recommended 0.8-0.99; higher forecasts more."),
                io.Int.Input("max_rank", default=32, min=1, max=512, step=1,
                             tooltip="Most directions forecast (unit: channels). Recommended 8-64; the SVD costs "
                             "grow with it."),
                io.Combo.Input("weighting", options=list(SPLIT_SELECTS), default="adaptive",
                               tooltip=WEIGHTING_HELP % "forecast the principal directions, reuse the rest"),
            ],
            outputs=[DecompositionOptions.Output(tooltip="Subspace split for Forecast Cache's 'split' input.")],
        )

    @classmethod
    def execute(cls, energy: float, max_rank: int, weighting: str = "adaptive") -> io.NodeOutput:
        return io.NodeOutput({"decomposition": "svd", "svd_energy": energy, "svd_max_rank": max_rank,
                              "split_select": weighting})


class DiTAccelHyCaProfile(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelHyCaProfile",
            display_name="HyCa Profile",
            category="DiT Accel/caching",
            description=(
                "Loads a HyCa calibration profile (which forecaster each feature channel uses) from "
                "models/dit_accel/. Make one for your model with Calibrate Forecasts (method hyca) or "
                "scripts/calibrate_hyca.py. Connect to Forecast Cache's 'hyca' input (its method then defaults "
                "to hyca, cache_mode to final_hidden)."
            ),
            inputs=[
                io.Combo.Input("profile", options=hyca_profiles(),
                               tooltip="A HyCa profile (*.safetensors) in models/dit_accel/, calibrated on the same "
                               "model weights (checked when Forecast Cache runs). Refresh the page (R) after "
                               "calibrating to see a new one."),
            ],
            outputs=[HyCaOptions.Output(tooltip="HyCa profile for Forecast Cache's 'hyca' input.")],
        )

    @classmethod
    def execute(cls, profile: str) -> io.NodeOutput:
        from accel_core.learned.hyca_profile import is_hyca_profile
        from accel_core.learned.profile import profile_method

        full = profile_file(profile)
        if full is None:
            raise outside_folder_error("HyCa Profile", profile)
        if not is_hyca_profile(full):
            method = profile_method(full)
            raise ConfigError(f"HyCa Profile: {profile!r} is not a HyCa profile (method {method!r}). "
                              + ("Load L2P / LESA profiles with Learned Forecast Profile into Forecast Cache's "
                                 "'learned' input." if method in ("l2p", "lesa") else
                                 "Pick a profile made by Calibrate Forecasts (method hyca)."))
        return io.NodeOutput({"hyca_profile": full})


OPTION_NODES = [DiTAccelVerifyOptions, DiTAccelFrequencyOptions, DiTAccelSubspaceOptions, DiTAccelHyCaProfile]
