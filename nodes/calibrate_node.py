"""L2P calibration in the GUI: "Calibrate Forecasts" records the artist's own uncached runs and
fits a profile; "Learned Forecast Profile" picks one for Forecast Cache's 'learned' input.

The node checks its inputs and installs the recorder on a clone (nodes/calibrate_recorder.py: the keyed
wrappers, the runs kept per profile name); the fit that turns a group of runs into a saved profile is in
nodes/calibrate_fit.py (host side) and accel_core/learned/calibration_fit.py (host-free).
"""
from __future__ import annotations

import logging

import comfy.patcher_extension
from comfy_api.latest import io

from accel_core import ConfigError
from accel_core.learned import model_fingerprint
from accel_core.learned.calibrate import BUDGETS, MIN_RUNS, L2PFit
from accel_core.learned.calibration_fit import DEFAULT_NAME, METHOD_LABELS, METHODS, NAME_RULE, check_profile_name
from accel_core.learned.hyca_profile import is_hyca_profile
from accel_core.learned.profile import profile_method

from . import hyca_calibration as hyca_gui
from .calibrate_fit import check_overwrite
from .calibrate_recorder import outer_sample_wrapper, predict_noise_wrapper, record_cfg_branches
from .host import detect_spec
from .keys import CALIBRATE_KEY
from .profiles import learned_profiles, outside_folder_error, profile_file

log = logging.getLogger("DiTAccel")

LearnedOptions = io.Custom("DITACCEL_LEARNED")

BUDGET_HELP = ("Which Forecast Cache preset the profile is fitted for (its even full-step plan): quality = 1/3 "
               "of the steps computed, balanced = 1/5, fast = 1/7. Use the same preset in Forecast Cache; "
               "another preset still works (rows are looked up by steps since the last full step).")


# ------------------------------------------------------------------------------------ nodes
class DiTAccelCalibrate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelCalibrate",
            display_name="Calibrate Forecasts (L2P / LESA / HyCa)",
            category="DiT Accel/calibration",
            description=(
                "Learns how this model's output evolves from your own runs, for Forecast Cache's L2P forecasts. "
                "Put it between the model loader and a KSampler (no Forecast Cache on this path) and render "
                "your usual prompts: every run is recorded, the image is unchanged. After runs_needed runs "
                "with the same steps / sampler / scheduler, it fits and saves models/dit_accel/"
                "<profile_name>.safetensors (a few KB; refitted on every later run; method lesa adds stage experts "
                "trained closed loop). Load it with Learned "
                "Forecast Profile -> Forecast Cache. Method hyca makes a HyCa profile instead (per-channel "
                "forecasters chosen closed loop), loaded with HyCa Profile -> Forecast Cache 'hyca'. See "
                "docs/CALIBRATION.md."
            ),
            inputs=[
                io.Model.Input("model", tooltip="Diffusion model from a loader (FLUX, Kontext, Qwen-Image, "
                               "HunyuanVideo), with the LoRAs you will use."),
                io.String.Input("profile_name", default=DEFAULT_NAME,
                                tooltip="File name of the profile, saved as models/dit_accel/<profile_name>"
                                ".safetensors; {method} is replaced by the method (my_model_l2p, my_model_lesa, "
                                "my_model_hyca). A profile of the same method and name is replaced; one of another "
                                "method is never overwritten (the node refuses). " + NAME_RULE + "."),
                io.Combo.Input("budget", options=list(BUDGETS), default="balanced", tooltip=BUDGET_HELP),
                io.Int.Input("runs_needed", default=4, min=MIN_RUNS, max=64, step=1,
                             tooltip="Runs (queued prompts) with the same steps, sampler and scheduler before the "
                             "profile is fitted; a quarter of them (at least one) is held back to score the fit, so "
                             "at least 2: one run to fit and one held back (2 fits on a single run). "
                             "Recommended 4-8 different prompts / seeds. Samplers must make one model call per "
                             "step (euler, euler_ancestral, ...)."),
                io.Int.Input("max_runs", default=8, min=MIN_RUNS, max=64, step=1,
                             tooltip="Most runs kept in memory for this profile name (the newest; older ones are "
                             "dropped). Each run keeps one latent-sized float32 tensor per step, on the CPU: "
                             "FLUX 1024x1024 at 20 steps is about 20 MB per run; method hyca adds the hidden "
                             "states of 256 tokens per step and CFG branch (FLUX: about 60 MB per run at 20 steps). "
                             "Must be at least runs_needed."),
                # Optional: API prompts saved before this input existed stay valid (they mean l2p).
                io.Combo.Input("method", options=list(METHODS), default="l2p", optional=True,
                               tooltip="l2p: per-step linear weights, fitted in about a second. lesa: the same "
                               "weights adjusted by small stage experts trained on the closed-loop error (about "
                               "25 s on 2 CPU cores for a micro model; longer on real latents). On our held-out "
                               "prompts LESA beat L2P on every model (+1.1 to +5.2 dB) and the training-free preset "
                               "on every validation model; fitted on the guided output (plain CFG included). "
                               "hyca: a forecaster per hidden channel for the hidden-state cache, chosen closed loop "
                               "by sampling your runs again 22 times each with Forecast Cache (38-50 CPU seconds "
                               "for a micro model at 50 steps; about 20 uncached runs' worth on real models); on our "
                               "models the result was FoCa on every channel. Use the profile with HyCa Profile."),
            ],
            outputs=[io.Model.Output(tooltip="The same model, recording its runs; images are bit-identical to "
                                     "the input model's.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model: io.Model.Type, profile_name: str, budget: str = "balanced", runs_needed: int = 4,
                max_runs: int = 8, method: str = "l2p") -> io.NodeOutput:
        if method not in METHODS:
            raise ConfigError(f"Calibrate Forecasts: method {method!r} is unknown; choose one of {', '.join(METHODS)}.")
        stem = check_profile_name(profile_name, method)
        if budget not in BUDGETS:
            raise ConfigError(f"Calibrate Forecasts: budget {budget!r} is unknown; choose one of "
                              f"{', '.join(BUDGETS)}.")
        if not isinstance(runs_needed, int) or runs_needed < MIN_RUNS:
            raise ConfigError(f"Calibrate Forecasts: runs_needed is {runs_needed!r}; it must be at least {MIN_RUNS}: "
                              "one run to fit the profile and one held back to score it. Set runs_needed to 4-8.")
        if max_runs < runs_needed:
            raise ConfigError(f"Calibrate Forecasts: max_runs ({max_runs}) is below runs_needed ({runs_needed}); "
                              f"keep at least {runs_needed} runs: raise max_runs to {runs_needed} or more, or lower "
                              "runs_needed.")
        if check_overwrite(stem, method) is not None:
            log.info("DiT Accel: Calibrate Forecasts: models/dit_accel/%s.safetensors is a %s profile; the fit replaces "
                     "it.", stem, METHOD_LABELS[method])
        if runs_needed == MIN_RUNS:
            log.info("DiT Accel: Calibrate Forecasts %r: runs_needed %d fits the profile on 1 run and holds 1 back to "
                     "score it; 4-8 runs of different prompts fit better.", stem, runs_needed)
        spec, diffusion_model, class_name = detect_spec(model)
        patched = model.clone()
        if spec is None:
            log.warning("DiT Accel: Calibrate Forecasts does not support %s (supported: Flux/Kontext, "
                        "Qwen-Image/Edit, HunyuanVideo 1.0/1.5); the model runs unchanged and nothing is recorded.",
                        class_name)
            return io.NodeOutput(patched)
        settings = {"profile_name": stem, "budget": budget, "runs_needed": int(runs_needed), "method": method,
                    "max_runs": int(max_runs), "family": spec.family, "model": class_name, "l2p_fit": L2PFit(),
                    "fingerprint": model_fingerprint(diffusion_model.state_dict()),
                    "node_id": getattr(getattr(cls, "hidden", None), "unique_id", None)}
        patched.model_options.setdefault("transformer_options", {})[CALIBRATE_KEY] = settings
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, CALIBRATE_KEY,
                                     outer_sample_wrapper)
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, CALIBRATE_KEY,
                                     predict_noise_wrapper)
        patched.set_model_sampler_post_cfg_function(record_cfg_branches)  # cond / uncond of plain-CFG runs
        if method == "hyca":
            hyca_gui.install_hooks(patched, spec, diffusion_model)  # the final-hidden residual per call
        return io.NodeOutput(patched)


class DiTAccelLearnedProfile(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiTAccelLearnedProfile",
            display_name="Learned Forecast Profile (L2P / LESA)",
            category="DiT Accel/calibration",
            description=(
                "Picks an L2P profile from models/dit_accel/ (made by Calibrate Forecasts or "
                "scripts/calibrate_l2p.py) for Forecast Cache's 'learned' input: forecasts then use weights "
                "learned on your model instead of the run-time blend. The profile must come from the same "
                "model weights (checked when Forecast Cache runs)."
            ),
            inputs=[
                io.Combo.Input("profile", options=learned_profiles(),
                               tooltip="An L2P profile (*.safetensors) in models/dit_accel/. Refresh the page "
                               "(R) after calibrating to see a new one."),
            ],
            outputs=[LearnedOptions.Output(tooltip="L2P profile for Forecast Cache's 'learned' input.")],
        )

    @classmethod
    def execute(cls, profile: str) -> io.NodeOutput:
        full = profile_file(profile)
        if full is None:
            raise outside_folder_error("Learned Forecast Profile", profile)
        method = profile_method(full)
        if method not in ("l2p", "lesa"):
            hyca = "hyca" if is_hyca_profile(full) else None
            raise ConfigError(f"Learned Forecast Profile: {profile!r} is not an L2P profile nor a LESA profile (method "
                              f"{method or hyca!r}). "
                              + ("It is a HyCa profile (per-channel forecasters for the hidden-state cache): load it "
                                 "with the HyCa Profile node and connect that to Forecast Cache's 'hyca' input."
                                 if hyca else "Pick a profile made by Calibrate Forecasts."))
        return io.NodeOutput({"learned_profile": full})


CALIBRATION_NODES = [DiTAccelCalibrate, DiTAccelLearnedProfile]
