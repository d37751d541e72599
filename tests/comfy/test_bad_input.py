"""Issue 21: bad input never crashes a run, never yields a NaN latent, never reads outside its folder.

A probe suite through ComfyUI's own executor (execution.validate_prompt + execution.PromptExecutor, in
process, on the micro FLUX): every row of the issue's table is posted as an API prompt, as a careless or
hostile user would, and the test asserts the clear message (a DiT Accel error naming the input, the value
and the fix: never a raw ZeroDivisionError / ValueError / TypeError / AttributeError) or the fallback and a
finite latent. Cases that already passed before the issue are kept as rows too.

Test-only probe nodes (registered for this module) hand the executor the session's micro model, Python-built
conditioning and masks of any shape; everything else is the pack's and ComfyUI's own nodes.
"""
from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
import uuid
from pathlib import Path

import pytest
import torch
from helpers import conditioning, recent_runs
from safetensors.torch import save_file

from accel_core.learned import L2PTable, model_fingerprint, save_l2p
from accel_core.learned.lesa import LESA, save_lesa
from accel_core.learned.profile import METADATA_KEY

REPO = Path(__file__).resolve().parents[2]
STEPS = 12
MODELS: dict = {}  # family -> ModelPatcher, for the probe model node
DIT_ACCEL_ERRORS = {"ConfigError", "ProfileFormatError", "ProfilePathError", "ProfileMismatchError",
                    "UnknownNameError"}


# ------------------------------------------------------------------------------------ probe nodes (test only)
class ProbeModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"family": (["flux"],)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "DiT Accel/probe"

    def load(self, family):
        return (MODELS[family],)


class ProbeConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 1})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "DiT Accel/probe"

    def make(self, seed):
        return (conditioning(seed),)


class ProbeMask:
    """A MASK of any shape (comma-separated) and fill: one, zero, nan, left (left half one)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"shape": ("STRING", {"default": "1,64,64"}),
                             "fill": (["one", "zero", "nan", "left"],)}}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "make"
    CATEGORY = "DiT Accel/probe"

    def make(self, shape, fill):
        dims = [int(d) for d in shape.split(",")]
        mask = torch.zeros(dims)
        if fill == "one":
            mask.fill_(1.0)
        elif fill == "nan":
            mask.fill_(float("nan"))
        elif fill == "left" and mask.numel():
            mask[..., : dims[-1] // 2] = 1.0
        return (mask,)


PROBE_NODES = {"DiTAccelProbeModel": ProbeModel, "DiTAccelProbeConditioning": ProbeConditioning,
               "DiTAccelProbeMask": ProbeMask}


class _Server:
    """What PromptExecutor needs of the server: no client, messages dropped."""

    client_id = None
    last_node_id = None

    def send_sync(self, event, data, sid=None):
        pass


@pytest.fixture(scope="module")
def probes(comfy_nodes, micro):
    import nodes

    MODELS["flux"] = micro["flux"]
    for name, cls in PROBE_NODES.items():
        nodes.NODE_CLASS_MAPPINGS[name] = cls
    yield
    for name in PROBE_NODES:
        nodes.NODE_CLASS_MAPPINGS.pop(name, None)
    MODELS.clear()


@pytest.fixture
def folder(probes, tmp_path, monkeypatch):
    """models/dit_accel pointed at an empty temporary folder (inside tmp_path/'models'), nothing recorded."""
    import folder_paths

    profiles = tmp_path / "models" / "dit_accel"
    profiles.mkdir(parents=True)
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "dit_accel", ([str(profiles)], {".safetensors"}))
    folder_paths.filename_list_cache.pop("dit_accel", None)
    yield profiles
    folder_paths.filename_list_cache.pop("dit_accel", None)


class Result:
    def __init__(self, valid: bool, error, node_errors, messages, outputs):
        self.valid, self.error, self.node_errors = valid, error, node_errors
        self.messages, self.outputs = messages, outputs

    @property
    def execution_error(self) -> dict | None:
        return next((d for e, d in self.messages if e == "execution_error"), None)

    @property
    def succeeded(self) -> bool:
        return self.valid and any(e == "execution_success" for e, _ in self.messages)

    def stats(self) -> dict:
        return self.outputs["9"]["dit_accel_stats"][0]


def run_prompt(prompt: dict) -> Result:
    """validate_prompt + PromptExecutor, as the server's queue does."""
    import execution

    prompt_id = uuid.uuid4().hex
    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    if not valid:
        return Result(False, error, node_errors, [], {})
    executor = execution.PromptExecutor(_Server(), cache_type=False, cache_args={"lru": 0, "ram": 0})
    executor.execute(prompt, prompt_id, {}, outputs)
    return Result(True, None, {}, executor.status_messages, executor.history_result["outputs"])


def graph(forecast: dict | None = None, extra: dict | None = None, model_from: str = "1") -> dict:
    """Probe model -> [Forecast Cache (node 5) ->] KSampler (12 euler steps) -> latent stats (node 9)."""
    prompt = {
        "1": {"class_type": "DiTAccelProbeModel", "inputs": {"family": "flux"}},
        "2": {"class_type": "DiTAccelProbeConditioning", "inputs": {"seed": 1}},
        "3": {"class_type": "DiTAccelProbeConditioning", "inputs": {"seed": 2}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {"model": [model_from, 0], "seed": 3, "steps": STEPS, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "simple", "positive": ["2", 0],
                                                   "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
        "9": {"class_type": "DiTAccelDevStats", "inputs": {"samples": ["8", 0]}},
    }
    if forecast is not None:
        inputs = {"model": ["1", 0], "preset": "balanced", "method": "preset", "cache_mode": "preset", "interval": 0,
                  "order": -1, "warmup_steps": -1, "final_full_steps": -1, "start_percent": 0.0,
                  "end_percent": 1.0, "schedule": "preset", **forecast}
        prompt["5"] = {"class_type": "DiTAccelForecastCache", "inputs": inputs}
        prompt["8"]["inputs"]["model"] = ["5", 0]
    prompt.update(extra or {})
    return prompt


def assert_refused(result: Result, *says: str) -> str:
    """The run stopped with a DiT Accel error naming the problem (no raw Python exception, no latent)."""
    err = result.execution_error
    assert err is not None, result.messages
    assert err["exception_type"].rsplit(".", 1)[-1] in DIT_ACCEL_ERRORS, (err["exception_type"], err["exception_message"])
    for text in says:
        assert text in err["exception_message"], err["exception_message"]
    return err["exception_message"]


def assert_finite(result: Result) -> dict:
    assert result.succeeded, (result.error, result.node_errors, result.execution_error)
    stats = result.stats()
    assert stats["finite"], stats
    return stats


# ------------------------------------------------------------------------------------ profiles
def _fingerprint() -> str:
    return model_fingerprint(MODELS["flux"].model.diffusion_model.state_dict())


def _header() -> dict:
    import comfy.samplers

    sampling = MODELS["flux"].get_model_object("model_sampling")
    sigmas = [round(float(s), 6) for s in comfy.samplers.calculate_sigmas(sampling, "simple", STEPS)]
    return {"family": "flux", "fingerprint": _fingerprint(), "sampler": "euler", "scheduler": "simple",
            "sigmas": sigmas, "budget": {"preset": "balanced"}, "validation": {}}


def _table() -> L2PTable:
    plan = [i in (0, 1, 2, 6, 11) for i in range(STEPS)]
    rows = [i for i in range(STEPS) if not plan[i]]
    since = [i - max(j for j in range(i) if plan[j]) for i in rows]
    return L2PTable(coef=torch.full((len(rows), 2), 0.1), time=torch.tensor([i / STEPS for i in rows]),
                    sigma=torch.tensor([1.0 - i / STEPS for i in rows]),
                    since_full=torch.tensor(since, dtype=torch.int32), steps=STEPS, plan=plan)


def _rewrite(path: Path, header: dict | None = None, tensors: dict | None = None, key: str = METADATA_KEY) -> Path:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        old_header = json.loads(f.metadata()[METADATA_KEY])
        old = {k: f.get_tensor(k) for k in f.keys()}
    meta = header if header is not None and not isinstance(header, dict) else {**old_header, **(header or {})}
    save_file({**old, **(tensors or {})}, str(path), metadata={key: json.dumps(meta)})
    return path


def _l2p(folder: Path, name: str = "p", header: dict | None = None, tensors: dict | None = None) -> str:
    path = save_l2p(folder / f"{name}.safetensors", _table(), _header())
    if header or tensors:
        _rewrite(path, header, tensors)
    return path.name


def _with_learned(name: str) -> dict:
    prompt = graph({"learned": ["6", 0]})
    prompt["6"] = {"class_type": "DiTAccelLearnedProfile", "inputs": {"profile": name}}
    return prompt


def test_a_good_profile_runs_finite_with_learned_forecasts(folder):
    """The baseline the bad profiles below are measured against."""
    stats = assert_finite(run_prompt(_with_learned(_l2p(folder))))
    assert recent_runs()[-1]["learned_forecasts"] > 0, recent_runs()[-1]
    assert stats["shape"] == [1, 16, 16, 16]


@pytest.mark.parametrize("field,value,says", [
    ("steps", 0, "'steps' = 0"),  # was ZeroDivisionError inside KSampler, mid-run
    ("steps", "abc", "'steps' = 'abc'"),  # was a raw ValueError from Forecast Cache
    ("budget", [1, 2], "'budget' = [1, 2]"),  # was a raw AttributeError
    ("sigmas", "abc", "'sigmas' = 'abc'"),  # was a raw ValueError inside KSampler
    ("sigmas", 5, "'sigmas' = 5"),  # was a raw TypeError inside KSampler
])
def test_bad_profile_headers_are_refused_by_forecast_cache(folder, field, value, says):
    message = assert_refused(run_prompt(_with_learned(_l2p(folder, header={field: value}))), says, "p.safetensors")
    assert "Calibrate Forecasts" in message  # the fix


@pytest.mark.parametrize("method,name,value,says", [
    ("l2p", "coef", torch.full((7, 2), 1e30), "'coef' with values in [1e+30, 1e+30]"),  # was an all-NaN latent
    ("lesa", "coef", torch.full((7, 2), float("nan")), "'coef' with 14 non-finite"),  # LESA loaded it: NaN latent
    ("l2p", "time", torch.full((7,), float("nan")), "'time' with 7 non-finite"),  # was used silently
])
def test_non_finite_or_huge_tables_are_refused(folder, method, name, value, says):
    if method == "l2p":
        profile = _l2p(folder, tensors={name: value})
    else:
        path = save_lesa(folder / "p.safetensors", LESA(2), _table(), _header())
        _rewrite(path, tensors={name: value})
        profile = path.name
    assert_refused(run_prompt(_with_learned(profile)), says, "allowed:")


def test_a_legacy_hyca_header_that_is_a_list_is_refused(folder):
    save_file({"solver_index": torch.zeros(128, dtype=torch.int8)}, str(folder / "h.safetensors"),
              metadata={"dit_accel_hyca": json.dumps(["flux", 128])})
    prompt = graph({"hyca": ["6", 0]})
    prompt["6"] = {"class_type": "DiTAccelHyCaProfile", "inputs": {"profile": "h.safetensors"}}
    assert_refused(run_prompt(prompt), "header is a JSON list")  # was AttributeError from Forecast Cache


def test_a_profile_changed_on_disk_after_the_node_ran_falls_back_with_one_warning(folder, caplog):
    """Defence in depth: the run itself never crashes on a profile that fails when sampling starts."""
    import execution  # noqa: F401 - the executor is what runs the node; the sampler is called directly here
    import nodes

    name = _l2p(folder)
    learned = nodes.NODE_CLASS_MAPPINGS["DiTAccelLearnedProfile"].execute(name)[0]
    model = nodes.NODE_CLASS_MAPPINGS["DiTAccelForecastCache"].execute(
        MODELS["flux"], "balanced", "preset", "preset", 0, -1, -1, -1, 0.0, 1.0, learned=learned)[0]
    _rewrite(folder / name, header={"steps": 0})
    with caplog.at_level(logging.WARNING):
        out = nodes.KSampler().sample(model, 3, STEPS, 1.0, "euler", "simple", conditioning(1), conditioning(2),
                                      {"samples": torch.zeros(1, 16, 16, 16)})[0]["samples"]
    assert torch.isfinite(out).all()
    assert len([r for r in caplog.records if "forecasts without the learned profile" in r.getMessage()]) == 1
    assert recent_runs()[-1]["learned_forecasts"] == 0 and recent_runs()[-1]["forecast_calls"] > 0


# ------------------------------------------------------------------------------------ finite-output guard
def test_a_nan_forecast_never_reaches_the_sampler(folder, monkeypatch):
    """Output cache: whatever makes a forecast non-finite, that call is computed instead and counted once."""
    from accel_core.output import OutputCacheRun

    real = OutputCacheRun.forecast
    monkeypatch.setattr(OutputCacheRun, "forecast", lambda self, call, x: real(self, call, x) * float("nan"))
    assert_finite(run_prompt(graph({})))
    run = recent_runs()[-1]
    assert run["guarded"] > 0 and run["forecast_calls"] == 0 and set(run["timeline"]) == {"C"}, run


def test_a_runaway_learned_forecast_is_computed_instead(folder, monkeypatch):
    """A finite forecast far beyond the computed outputs (what a coefficient of 1e30 gave) is computed too."""
    from accel_core.learned import L2PForecaster

    real = L2PForecaster.forecast
    calls: list[int] = []

    def runaway(self, step, sigma, x):  # the first learned forecast of the run runs away
        out, reason = real(self, step, sigma, x)
        calls.append(step)
        return out * 1e6 if len(calls) == 1 else out, reason

    monkeypatch.setattr(L2PForecaster, "forecast", runaway)
    assert_finite(run_prompt(_with_learned(_l2p(folder))))
    run = recent_runs()[-1]
    assert run["guarded"] == 1 and run["learned_forecasts"] > 0, run


@pytest.mark.parametrize("cache_mode", ["final_hidden", "per_block"])
def test_a_nan_hidden_state_forecast_never_reaches_the_sampler(folder, monkeypatch, cache_mode):
    from accel_core.hidden.forecasters.base import Forecaster

    real = Forecaster.forecast_add
    monkeypatch.setattr(Forecaster, "forecast_add", lambda self, t, base: real(self, t, base) * float("nan"))
    assert_finite(run_prompt(graph({"cache_mode": cache_mode})))
    run = recent_runs()[-1]
    assert run["guarded"] > 0 and run["forecast_calls"] == 0, run


# ------------------------------------------------------------------------------------ folder confinement
def test_a_symlink_out_of_the_profile_folder_is_neither_listed_nor_opened(folder, tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = save_l2p(outside / "secret.safetensors", _table(), _header())
    (folder / "link.safetensors").symlink_to(target)
    _l2p(folder, "inside")
    profiles = _pack_module("nodes.profiles")
    opened: list[str] = []  # every path the listings hand to a function that opens the file
    import accel_core.learned.profile as learned_profile  # nodes/profiles.py imports both when listing

    real_method = learned_profile.profile_method
    monkeypatch.setattr(learned_profile, "profile_method", lambda p: opened.append(str(p)) or real_method(p))
    import accel_core.learned.hyca_profile as hyca_profile

    real_hyca = hyca_profile.is_hyca_profile
    monkeypatch.setattr(hyca_profile, "is_hyca_profile", lambda p: opened.append(str(p)) or real_hyca(p))
    assert profiles.learned_profiles() == ["inside.safetensors"]
    assert profiles.hyca_profiles() == []
    assert opened and not [p for p in opened if not Path(p).resolve().is_relative_to(folder.resolve())], opened
    # An API prompt naming it anyway: Learned Forecast Profile refuses it, unopened (was: opened, then refused
    # by Forecast Cache).
    assert_refused(run_prompt(_with_learned("link.safetensors")), "'link.safetensors' is not in models/dit_accel",
                   "outside the folder")
    assert not [p for p in opened if Path(p).resolve() == target.resolve()], opened


def _pack_module(suffix: str):
    found = [m for name, m in list(sys.modules.items()) if name.endswith(suffix) and "dit_accel" in name]
    assert len(found) == 1, [name for name in sys.modules if name.endswith(suffix)]
    return found[0]


# ------------------------------------------------------------------------------------ Edit Region masks
def _region(shape: str, fill: str = "left") -> dict:
    prompt = graph({"tokens": ["7", 0]})
    prompt["6"] = {"class_type": "DiTAccelProbeMask", "inputs": {"shape": shape, "fill": fill}}
    prompt["7"] = {"class_type": "DiTAccelEditRegion", "inputs": {"mask": ["6", 0], "rings": 1, "ring_decay": 0.8,
                                                                   "attention_context": "cached"}}
    return prompt


@pytest.mark.parametrize("shape", ["64,64", "1,64,64", "1,1,64,64", "1,1,16,16", "1,1,200,40"])
def test_masks_of_any_layout_and_size_run_partial_steps(folder, shape):
    """4-D [1, 1, H, W] failed in adaptive_avg_pool2d at the first partial step."""
    assert_finite(run_prompt(_region(shape)))
    assert recent_runs()[-1]["partial_calls"] > 0, recent_runs()[-1]


@pytest.mark.parametrize("shape,fill,says", [
    ("1,0,0", "one", "empty"),  # was: KSampler failed with 'Expected input to have non-zero size'
    ("1,64,64", "nan", "non-finite"),  # was: silently nothing
    ("1,3,64,64", "one", "one channel"),
])
def test_empty_non_finite_or_multi_channel_masks_are_refused(folder, shape, fill, says):
    message = assert_refused(run_prompt(_region(shape, fill)), "Edit Region: mask", says)
    assert "MASK" in message  # the fix


def test_a_mask_that_selects_nothing_is_said_once(folder, caplog):
    with caplog.at_level(logging.WARNING):
        assert_finite(run_prompt(_region("1,64,64", "zero")))
    said = [r for r in caplog.records if "selects no token" in r.getMessage()]
    assert len(said) == 1 and recent_runs()[-1]["partial_calls"] == 0


def test_more_masks_than_latents_are_joined_and_said_once(folder, caplog):
    with caplog.at_level(logging.WARNING):
        assert_finite(run_prompt(_region("3,64,64")))
    said = [r for r in caplog.records if "3 masks for a batch of 1 latent" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    assert recent_runs()[-1]["partial_calls"] > 0


# ------------------------------------------------------------------------------------ Calibrate names and overwrites
def _calibrate(name: str, method: str = "l2p") -> dict:
    prompt = graph(model_from="5")
    prompt["5"] = {"class_type": "DiTAccelCalibrate", "inputs": {"model": ["1", 0], "profile_name": name,
                                                                "budget": "balanced", "runs_needed": 2,
                                                                "max_runs": 4, "method": method}}
    return prompt


@pytest.mark.parametrize("name", ["CON", "nul", "LPT1", "aux", "com3.v2", "Prn "])
def test_windows_reserved_profile_names_are_refused(folder, name):
    assert_refused(run_prompt(_calibrate(name)), "profile_name", "Windows reserves")
    assert not list(folder.iterdir())


def test_another_methods_profile_is_never_overwritten(folder):
    shutil.copy(REPO / "bench/results/hyca_profiles/hyca_gui_micro_flux_balanced.safetensors",
                folder / "mine.safetensors")
    before = (folder / "mine.safetensors").read_bytes()
    assert_refused(run_prompt(_calibrate("mine", "l2p")), "mine.safetensors is a HyCa profile", "method l2p would "
                   "overwrite it", "mine_l2p")
    assert (folder / "mine.safetensors").read_bytes() == before


def test_the_same_method_replaces_its_profile_and_says_so(folder, caplog):
    calibrate = _pack_module("nodes.calibrate_recorder")
    calibrate.clear_recorders()
    calibrate.REPORTS.clear()
    _l2p(folder, "mine")
    with caplog.at_level(logging.INFO):
        for seed in (1, 2):
            prompt = _calibrate("mine")
            prompt["8"]["inputs"]["seed"] = seed
            assert_finite(run_prompt(prompt))
    assert any("is a L2P profile; the fit replaces it" in r.getMessage() for r in caplog.records)
    saved = calibrate.REPORTS[-1]
    assert saved["status"] == "saved", saved
    assert "replaces the earlier L2P profile of that name" in saved["message"]
    assert "from 2 runs (1 fitted, 1 held back)" in saved["message"]
    calibrate.clear_recorders()


# ------------------------------------------------------------------------------------ raw socket values
@pytest.mark.parametrize("socket,value", [("learned", "p.safetensors"), ("hyca", "h.safetensors"),
                                          ("verify", 5)])
def test_a_raw_value_on_an_option_socket_is_refused(folder, socket, value):
    """An API prompt can put a string where a node's output belongs (was: TypeError: string indices...)."""
    assert_refused(run_prompt(graph({socket: value})), f"input '{socket}'", "not the output of")


# ------------------------------------------------------------------------------------ cases that already passed
@pytest.mark.parametrize("name,says", [("../evil", "not a plain file name"), ("/abs/p", "not a plain file name")])
def test_paths_in_calibrate_names_stay_refused(folder, name, says):
    assert_refused(run_prompt(_calibrate(name)), says)


def test_a_pickle_renamed_safetensors_stays_refused_without_unpickling(folder):
    import pickle

    (folder / "evil.safetensors").write_bytes(pickle.dumps({"x": 1}))
    assert _pack_module("nodes.profiles").learned_profiles() == []  # not listed: not a profile
    assert_refused(run_prompt(_with_learned("evil.safetensors")), "'evil.safetensors' is not an L2P profile")


def test_start_after_end_percent_stays_refused(folder):
    assert_refused(run_prompt(graph({"start_percent": 0.8, "end_percent": 0.2})), "start_percent")


# ------------------------------------------------------------------------- schedule cut to fit the budget
def test_an_explicit_schedule_cut_to_fit_the_budget_is_shown_as_used_and_said_once(folder, caplog):
    """fast at 12 steps computes ceil(12 / 7) = 2 steps: an explicit warm-up 3 / final 1 cannot fit. The run
    uses warm-up 1 / final 0, its tag says so (not w3-f1), and one info line says why."""
    with caplog.at_level(logging.INFO):
        assert_finite(run_prompt(graph({"preset": "fast", "warmup_steps": 3, "final_full_steps": 1})))
    run = recent_runs()[-1]
    assert "-w1-f0-" in run["tag"] and "-w3-" not in run["tag"], run["tag"]
    assert "warmup_steps 3 -> 1" in run["schedule_note"] and "final_full_steps 1 -> 0" in run["schedule_note"]
    said = [r for r in caplog.records if "warmup_steps 3 -> 1" in r.getMessage() and r.name == "accel_core.output.run"]
    assert len(said) == 1 and said[0].levelno == logging.INFO  # and the run's summary line shows it too
    assert run["computed_calls"] == 2  # the preset's share, not warm-up + final + 1
