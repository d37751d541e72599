"""Fidelity tables on the model zoo, tune and validate models apart, with the naive baselines at
the same budget, through real ComfyUI sampling (KSampler), PSNR of the decoded image (video: all
frames) against the uncached run of the same seed.

Rows per model and scenario:
- the presets (quality / balanced / fast) and any --rows configs;
- output reuse every k (the model's guided output reused; warm-up 1, no final step; written here,
  outside the pack, so the baseline does not share the pack's code), k = 3, 5, 7;
- plain hidden reuse (the pack's final-hidden reuse on the same grid);
- EasyCache (ComfyUI's built-in, behind an input-copy guard) at several thresholds; the tables pick
  the threshold whose budget is closest to each preset.

Scenarios: euler 50 steps at the model's own guidance (cfg 1 for guidance-distilled models), cfg 3
(true CFG on every model; guidance-distilled ones get cfg 3 on top, an empty negative prompt),
euler at 20 and 28 steps, heun and dpm_2 at 20 steps.

Usage:
  .venv/bin/python bench/bench_zoo.py --role tune --scenarios euler50,cfg3 [--prompts 4 --seeds 2]
Writes bench/results/zoo_<role>.{json,md} (rows merged by model, scenario and row name).
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
from bench.bench_forecast import IDENTICAL_DB, EvalCounter, copy_input_wrapper, psnr  # noqa: E402

log = logging.getLogger("bench")


@dataclass(frozen=True)
class Scenario:
    sampler: str
    steps: int
    cfg: float | None  # None: the model's default


SCENARIOS = {
    "euler50": Scenario("euler", 50, None),
    "cfg3": Scenario("euler", 50, 3.0),
    "euler20": Scenario("euler", 20, None),
    "euler28": Scenario("euler", 28, None),
    "heun20": Scenario("heun", 20, None),
    "dpm2_20": Scenario("dpm_2", 20, None),
}
PRESET_FRACTIONS = {"quality": 3, "balanced": 5, "fast": 7}  # 1 / share of evaluations
EASYCACHE_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5)


def output_reuse_every(model, every: int):
    """Baseline: the guided model output (as a sampler slope) reused between full steps that come
    every `every` steps from step 0. Independent of the pack's code on purpose."""
    import comfy.patcher_extension

    state: dict = {}

    def outer(executor, *args, **kwargs):
        state.clear()
        sigmas = args[3] if len(args) > 3 else kwargs["sigmas"]
        state["sigmas"] = [float(s) for s in sigmas.flatten()]
        return executor(*args, **kwargs)

    def predict(executor, x, timestep, model_options, seed):
        sigma = float(timestep.flatten().max())
        sig = state["sigmas"]
        step = max(0, sum(1 for s in sig[:-1] if s >= sigma * (1 - 1e-6)) - 1)
        if step % every == 0 or "slope" not in state:
            out = executor(x, timestep, model_options, seed)
            state["slope"] = (x.float() - out.float()) / sigma
            return out
        return (x.float() - sigma * state["slope"]).to(x.dtype)

    m = model.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "bench_output_reuse", outer)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "bench_output_reuse", predict)
    return m


def setup_comfy(threads: int = 1, sdpa: bool = False):
    """In-process ComfyUI with the pack loaded, its assets built, one summary line per run silenced and
    no progress bars; returns (ComfyUI's nodes module, the pack's adapter module). ``sdpa``: torch's
    scaled_dot_product_attention instead of ComfyUI's CPU default (sub-quadratic), as on a GPU; at 4096+
    tokens the CPU default is several times slower and would weigh attention far above its GPU share."""
    from scripts.harness.assets import ensure_assets
    from scripts.harness.comfy_env import bootstrap, load_custom_nodes

    base = bootstrap(pytorch_attention=sdpa)
    load_custom_nodes()
    ensure_assets(base)
    import comfy.utils
    import nodes
    import torch

    torch.set_num_threads(threads)
    logging.getLogger("DiTAccel").setLevel(logging.WARNING)
    comfy.utils.PROGRESS_BAR_ENABLED = False
    adapter = next(m for n, m in sys.modules.items() if n.endswith("nodes.adapter") and hasattr(m, "apply_forecast_cache"))
    return nodes, adapter


@dataclass
class CaseRuns:
    """What sampling every case with one model gave: decoded images, model calls per case (mean), seconds,
    and the pack's run summaries (empty for a model without the pack)."""

    images: list
    evaluations: float
    seconds: float
    stats: list
    # CPU seconds of this process over the same spans: with one torch thread, the time an idle core would
    # take, so the ratio holds on a machine shared with other jobs, where wall-clock ratios vary by +-30 %
    cpu_seconds: float = 0.0


def sample_cases(nodes, adapter, zm, models, cases, steps: int, sampler: str = "euler", scheduler: str = "simple",
                 cfg: float | None = None) -> CaseRuns:
    """Every case through KSampler with `models` (one model, or one per case), decoded by the zoo model.
    cfg None: each case's own cfg. The benches share this loop so that they count and time the same way."""
    per_case = models if isinstance(models, list) else [models] * len(cases)
    images, evals, seconds, stats, cpu = [], 0, 0.0, [], 0.0
    for case, m in zip(cases, per_case):
        counter = EvalCounter(m)
        start, cpu_start = time.perf_counter(), time.process_time()
        out = nodes.KSampler().sample(m, case.seed, steps, case.cfg if cfg is None else cfg, sampler, scheduler,
                                      case.positive, case.negative, case.latent, denoise=1.0)[0]["samples"]
        seconds += time.perf_counter() - start
        cpu += time.process_time() - cpu_start
        counter.handle.remove()
        evals += counter.count
        images.append(zm.decode(out))
        if m is not zm.model and adapter.RECENT_RUNS:  # the pack's own run summary
            stats.append(adapter.RECENT_RUNS[-1])
    return CaseRuns(images, evals / len(cases), seconds, stats, cpu)


def load_model(name: str):
    from scripts.harness.zoo import ZooModel

    return ZooModel(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="tune", choices=("tune", "validate"))
    parser.add_argument("--models", default="", help="comma-separated zoo names (default: every model of --role)")
    parser.add_argument("--scenarios", default="euler50,cfg3")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--rows", default="presets,baselines,easycache",
                        help="groups: presets, baselines (output and hidden reuse), reuse (output reuse only), "
                             "easycache, explore, hidden")
    parser.add_argument("--presets", default="quality,balanced,fast", help="which presets the presets group runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    nodes, adapter = setup_comfy(args.threads)
    import comfy.patcher_extension
    import torch
    from comfy_extras.nodes_easycache import EasyCacheNode

    from accel_core import ForecastCacheConfig, preset
    from scripts.harness.zoo import load_manifest

    manifest = load_manifest()
    names = [n for n in args.models.split(",") if n] or [e["name"] for e in manifest["models"] if e["role"] == args.role]
    out_path = args.out or REPO / "bench" / "results" / f"zoo_{args.role}"
    old = json.loads(out_path.with_suffix(".json").read_text()) if out_path.with_suffix(".json").is_file() else {}
    rows: list[dict] = old.get("rows", [])
    groups = set(args.rows.split(","))

    for name in names:
        zm = load_model(name)
        for scen_name in args.scenarios.split(","):
            scen = SCENARIOS[scen_name]
            cfg = scen.cfg if scen.cfg is not None else zm.default_cfg
            cases = zm.cases(args.prompts, args.seeds, cfg=cfg)

            def run(m):
                r = sample_cases(nodes, adapter, zm, m, cases, scen.steps, scen.sampler, cfg=cfg)
                return r.images, r.evaluations, r.seconds, r.stats

            base_images, base_evals, base_seconds, _ = run(zm.model)
            # A cfg-1 uncached image as a reference point: how far guidance moves the image.
            if cfg > 1:
                plain = zm.cases(args.prompts, args.seeds, cfg=1.0)
                cfg1 = []
                for case in plain:
                    out = nodes.KSampler().sample(zm.model, case.seed, scen.steps, 1.0, scen.sampler, "simple",
                                                  case.positive, case.negative, case.latent, denoise=1.0)[0]["samples"]
                    cfg1.append(zm.decode(out))
                scores = [psnr(a, b) for a, b in zip(cfg1, base_images)]
                rows_add(rows, name, zm.role, scen_name, "uncached cfg 1 (guidance reference)", "", base_evals,
                         base_evals, 1.0, scores)

            def record(row_name, setting, result):
                images, evals, seconds, stats = result
                scores = [psnr(a, b) for a, b in zip(images, base_images)]
                rows_add(rows, name, zm.role, scen_name, row_name, setting, evals, base_evals,
                         base_seconds / seconds, scores, stats)

            if "presets" in groups:
                for pname in [p for p in PRESET_FRACTIONS if p in args.presets.split(",")]:
                    config = preset(pname, zm.family)
                    record(f"preset {pname}", config.tag(), run(adapter.apply_forecast_cache(zm.model, config)))
            if "hidden" in groups:
                # The same budget on the hidden-state level: the family's FoCa / TaylorSeer / split recipe, on
                # the fixed grid whose evaluation count is closest to the preset's.
                import comfy.samplers

                from bench.bench_forecast import schedule_for_budget
                from accel_core.output.budget import evaluation_budget

                sigmas = comfy.samplers.calculate_sigmas(zm.model.get_model_object("model_sampling"), "simple",
                                                         scen.steps).tolist()
                for pname, k in PRESET_FRACTIONS.items():
                    warmup, interval, final = schedule_for_budget(sigmas, evaluation_budget(scen.steps, 1 / k, 0))
                    family = zm.family if zm.family in ("flux", "qwen_image") else "hunyuan_video"
                    config = preset(pname, family, "final_hidden").replace(interval=interval, warmup_steps=warmup,
                                                                           final_full_steps=final)
                    record(f"hidden-state {pname}", config.tag(), run(adapter.apply_forecast_cache(zm.model, config)))
            if "explore" in groups:
                for row_name, config in explore_configs(ForecastCacheConfig):
                    record(row_name, config.tag(), run(adapter.apply_forecast_cache(zm.model, config)))
            if "baselines" in groups or "reuse" in groups:
                for k in PRESET_FRACTIONS.values():
                    record(f"output reuse every {k}", f"steps 0, {k}, {2 * k}, ...", run(output_reuse_every(zm.model, k)))
                    if "baselines" not in groups:
                        continue  # "reuse": the output-reuse baseline only (what the preset choice compares with)
                    config = ForecastCacheConfig(method="reuse", order=0, interval=k, warmup_steps=1,
                                                 final_full_steps=0)
                    record(f"hidden reuse every {k}", config.tag(), run(adapter.apply_forecast_cache(zm.model, config)))
            if "easycache" in groups:
                for threshold in EASYCACHE_THRESHOLDS:
                    guarded = zm.model.clone()
                    guarded.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                 "bench_copy_input", copy_input_wrapper)
                    easy = EasyCacheNode.execute(guarded, threshold, 0.15, 0.95, False)[0]
                    record(f"EasyCache {threshold:g}", "input-copy guard", run(easy))
            meta = {
                "device": f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
                          f"{torch.get_num_threads()} thread(s)",
                "metric": "PSNR (dB) of the decoded image (video: every frame) vs the uncached run of the same "
                          f"seed; mean / worst over cases ({IDENTICAL_DB:.0f} = identical)",
                "cases": f"{args.prompts} prompts x {args.seeds} seeds per model",
                "scenarios": {k: vars(v) for k, v in SCENARIOS.items()},
            }
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
            out_path.with_suffix(".md").write_text(to_markdown(meta, rows, args.role))
    log.info("wrote %s.{json,md}", out_path)
    return 0


# Candidates compared while tuning (tune models only). Issue 18: the share of evaluations is fixed by the
# preset; what is chosen is where they go and how forecasts are weighted:
# - "budget w1 f0": even spacing from step 0 (the reference; what a run with no measurements does);
# - "adaptive w1 f0": the same budget placed by the measured backtest error (bounded gaps);
# - "h0": the blend fitted on every backtest whatever its horizon (rounds 1-3), to measure the horizon rule;
# - "w3 f1": the fixed warm-up / final steps of rounds 1-3, for reference.
# - "f1": the step into sigma 0 computed (it spans the largest sigma interval of a shifted schedule);
# - "s0.015": warm-up as a share of the noise range (steps with sigma >= 0.985 x the first), not a step count.
# ("b2", weights per coarse / detail band, lost on the first tune model and is not in the default set.)
EXPLORE = (("budget", 1, 0, 0.0, 1.5, 1), ("budget", 1, 0, 0.015, 1.5, 1), ("budget", 1, 1, 0.015, 1.5, 1),
           ("adaptive", 1, 0, 0.0, 1.5, 1), ("budget", 3, 1, 0.0, 1.5, 1), ("budget", 3, 1, 0.0, 0.0, 1))


def explore_name(k: int, schedule: str, warmup: int, final: int, warmup_sigma: float = 0.0,
                 horizon_match: float = 1.5, bands: int = 1) -> str:
    extra = ("" if horizon_match == 1.5 else f" h{horizon_match:g}") + (" b2" if bands == 2 else "")
    warm = f"w{warmup}" + (f"s{warmup_sigma:g}" if warmup_sigma else "")
    return f"output backtest {schedule} 1/{k} {warm} f{final}{extra}"


def explore_configs(Config):
    """(row name, config) of every candidate at every preset share."""
    out = []
    for k in PRESET_FRACTIONS.values():
        for schedule, warmup, final, warmup_sigma, horizon_match, bands in EXPLORE:
            out.append((explore_name(k, schedule, warmup, final, warmup_sigma, horizon_match, bands),
                        Config(cache_mode="output", schedule=schedule, interval=k, warmup_steps=warmup,
                               final_full_steps=final, warmup_sigma=warmup_sigma, horizon_match=horizon_match,
                               blend_bands=bands)))
    return out


def rows_add(rows, model, role, scenario, row_name, setting, evals, base_evals, wall_ratio, scores, stats=()):
    row = {"model": model, "role": role, "scenario": scenario, "row": row_name, "setting": setting,
           "evaluations": evals, "evaluation_ratio": base_evals / evals if evals else float("inf"),
           "wall_ratio": wall_ratio, "psnr_mean": statistics.fmean(scores), "psnr_min": min(scores),
           "psnr_all": [round(s, 3) for s in scores]}
    if stats:
        row["backtest_weights"] = [s.get("blend_weights") for s in stats][:2]
    rows[:] = [r for r in rows if (r["model"], r["scenario"], r["row"]) != (model, scenario, row_name)]
    rows.append(row)
    log.info("%-20s %-8s %-40s evals %5.1f x%.2f  PSNR %6.2f (min %6.2f)", model, scenario, row_name, evals,
             row["evaluation_ratio"], row["psnr_mean"], row["psnr_min"])


def to_markdown(meta: dict, rows: list[dict], role: str) -> str:
    lines = [f"# Zoo fidelity, {role} models (CPU)", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k != "scenarios"]
    lines += ["", "| model | scenario | row | setting | evaluations | eval ratio | PSNR mean | PSNR worst |",
              "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["model"], r["scenario"])):
        lines.append(f"| {r['model']} | {r['scenario']} | {r['row']} | {r['setting']} | {r['evaluations']:.1f} | "
                     f"{r['evaluation_ratio']:.2f}x | {r['psnr_mean']:.2f} | {r['psnr_min']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
