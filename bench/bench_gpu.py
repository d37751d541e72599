"""GPU measurements of DiT Accel at real model sizes, in one command (method: bench/gpu_method.md).

1. Kernel bandwidth: every op (Triton kernel and torch reference) at FLUX size (4096 tokens x
   3072 channels) against the device's measured copy bandwidth (target: kernels >= 80 %).
2. Model runs through ComfyUI's own sampler (KSampler, euler / simple) with ComfyUI's own model
   classes at real shapes and random bf16 weights (no weights can be downloaded), conditioning
   of the real encoders' sizes built in Python:
   - FLUX.1-dev shape (Flux class, hidden 3072, 19 double + 38 single blocks) at 1024x1024;
   - Qwen-Image shape (60 blocks) at 1328x1328 with true CFG (two branches per call);
   - HunyuanVideo shape (20 double + 40 single blocks) at 720p, the largest frame count that fits
     in memory and the time budget (probed).
   Per configuration (uncached, each preset, TaylorSeer on the fast schedule in fp32 and bf16
   history) and kernel backend (Triton, torch reference): wall-clock ratio against the uncached
   run, model-evaluation ratio, forecast-call cost as a fraction of a full call, peak GPU memory
   added over the uncached run, and the cache's own bytes.
Results: bench/results/gpu_<device>.json and .md, with the GPU named.

`--tiny` runs the same code path on the CPU with the micro models (a few seconds; the test suite
runs it), so the script is known to work before a GPU is available. Its numbers mean nothing.

Usage: .venv/bin/python bench/bench_gpu.py            (GPU; ~15-40 min on an H100/H200-class GPU)
       .venv/bin/python bench/bench_gpu.py --tiny --out /tmp/tiny
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import math
import platform
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

log = logging.getLogger("bench_gpu")

# Real shapes (ComfyUI constructor kwargs, as its model detection produces them for the released weights).
FULL_CONFIGS = {
    "flux": {
        "image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2, "vec_in_dim": 768,
        "context_in_dim": 4096, "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 19,
        "depth_single_blocks": 38, "axes_dim": [16, 56, 56], "theta": 10000, "qkv_bias": True,
        "guidance_embed": True,
    },
    "qwen_image": {
        "image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 60,
        "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 3584,
        "axes_dims_rope": [16, 56, 56],
    },
    "hunyuan_video": {
        "image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "patch_size": [1, 2, 2],
        "vec_in_dim": 768, "context_in_dim": 4096, "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24,
        "depth": 20, "depth_single_blocks": 40, "axes_dim": [16, 56, 56], "theta": 256, "qkv_bias": True,
        "guidance_embed": True, "byt5": False, "meanflow": False, "use_cond_type_embedding": False,
        "vision_in_dim": None,
    },
}
MODEL_CLASS = {"flux": "Flux", "qwen_image": "QwenImage", "hunyuan_video": "HunyuanVideo"}
# Per family: text tokens x width (T5-XXL / Qwen2.5-VL / LLaVA-Llama-3 sizes), CFG scale, guidance, image.
FAMILY_RUN = {
    "flux": {"text": (512, 4096), "cfg": 1.0, "guidance": 3.5, "label": "1024x1024"},
    "qwen_image": {"text": (256, 3584), "cfg": 4.0, "guidance": 0.0, "label": "1328x1328, CFG 4"},
    "hunyuan_video": {"text": (256, 4096), "cfg": 1.0, "guidance": 6.0, "label": "1280x720"},
}
VIDEO_FRAMES = (129, 97, 65, 49, 33, 17)
WARMUP_STEPS = 16  # per cached config: long enough for forecasts at every ladder length  # candidates, largest first (latent T = (frames - 1) / 4 + 1)


def latent_shape(family: str, tiny: bool, frames: int = 33) -> tuple[int, ...]:
    if tiny:
        return {"flux": (1, 16, 16, 16), "qwen_image": (1, 16, 1, 16, 16), "hunyuan_video": (1, 16, 2, 16, 16)}[family]
    return {"flux": (1, 16, 128, 128), "qwen_image": (1, 16, 1, 166, 166),
            "hunyuan_video": (1, 16, (frames - 1) // 4 + 1, 90, 160)}[family]


def run_configs(steps: int) -> list[tuple[str, object]]:
    """(name, ForecastCacheConfig or None for uncached): the presets plus TaylorSeer (Newton-ladder kernels)."""
    from accel_core import PRESETS

    from accel_core import preset

    # TaylorSeer on the hidden-state path (Newton-ladder kernels), at the fast preset's share.
    taylor = preset("fast", "flux", "final_hidden").replace(method="taylorseer", order=2, decomposition="none")
    configs = [("uncached", None)] + [(name, cfg) for name, cfg in PRESETS.items() if cfg.enabled]
    configs += [("taylorseer-o2 fast schedule", taylor),
                ("taylorseer-o2 fast schedule, bf16 history", taylor.replace(history_dtype="bf16"))]
    return configs


# ------------------------------------------------------------------------------------ model setup
def build_model(family: str, config: dict, dtype, device, seed: int = 0):
    """A ComfyUI ModelPatcher of `family` with random weights made on `device` (N(0, 1/fan_in) matrices)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm
    import torch

    model_config = getattr(sm, MODEL_CLASS[family])(copy.deepcopy(config))
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({}, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, t in sorted(model.diffusion_model.named_parameters()):
            if t.dim() >= 2:
                t.normal_(0.0, 1.0 / math.sqrt(math.prod(t.shape[1:])), generator=gen)
            elif name.endswith("bias"):
                t.normal_(0.0, 0.02, generator=gen)
            else:
                t.fill_(1.0)
    model.diffusion_model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=mm.unet_offload_device())


def conditioning(family: str, seed: int, tiny: bool) -> list:
    import torch

    tokens, width = (77, 768) if tiny else FAMILY_RUN[family]["text"]
    g = torch.Generator().manual_seed(seed)
    extras = {"pooled_output": torch.randn(1, 768, generator=g), "guidance": FAMILY_RUN[family]["guidance"]}
    return [[torch.randn(1, tokens, width, generator=g), extras]]


class CallTimer:
    """PREDICT_NOISE wrapper timing each call of the sampler's guided model (CUDA events: no sync inside
    the run). Installed before the cache, so it is the outermost wrapper and times forecast calls of the
    output cache (which never reach the diffusion model) as well as computed ones."""

    def __init__(self, device) -> None:
        self.device = device
        self.marks: list = []

    def __call__(self, executor, *args, **kwargs):
        import torch

        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = executor(*args, **kwargs)
            end.record()
            self.marks.append((start, end))
            return out
        start = time.perf_counter()
        out = executor(*args, **kwargs)
        self.marks.append((start, time.perf_counter()))
        return out

    def durations_ms(self) -> list[float]:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
            return [s.elapsed_time(e) for s, e in self.marks]
        return [(e - s) * 1e3 for s, e in self.marks]


# ------------------------------------------------------------------------------------ one run
def sample_once(model, latent, pos, neg, cfg: float, steps: int, device, timer: CallTimer | None = None) -> dict:
    import nodes
    import torch

    if timer is not None:
        timer.marks.clear()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_alloc = torch.cuda.memory_allocated()
    start = time.perf_counter()
    out = nodes.KSampler().sample(model, 7, steps, cfg, "euler", "simple", pos, neg, {"samples": latent},
                                  denoise=1.0)[0]["samples"]
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() - base_alloc if device.type == "cuda" else None
    return {"wall_s": wall, "peak_bytes": peak, "finite": bool(torch.isfinite(out).all())}


def measure_family(family: str, args, device, dtype, adapter, dispatch, ops) -> dict:
    import comfy.model_management as mm
    import comfy.patcher_extension
    import torch

    tiny = args.tiny
    config = copy.deepcopy(FULL_CONFIGS[family]) if not tiny else _micro_config(family)
    model = build_model(family, config, dtype, device)
    pos, neg = conditioning(family, 1, tiny), conditioning(family, 2, tiny)
    cfg_scale = FAMILY_RUN[family]["cfg"]
    frames = None
    if family == "hunyuan_video" and not tiny:
        frames = probe_video_frames(model, pos, neg, device, args)
    latent = torch.zeros(latent_shape(family, tiny, frames or 33), device="cpu")
    sample_once(model, latent, pos, neg, cfg_scale, 2, device)  # warm-up: allocator, attention backend
    backends = ["reference"] if device.type != "cuda" else args.backends
    runs = []
    baseline = None
    for name, cfg in run_configs(args.steps):
        for backend in (["-"] if cfg is None else backends):
            if backend == "triton":
                dispatch.install()
            else:
                ops.use_references()
            timer = CallTimer(device)
            timed = model.clone()
            timed.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "bench_timer", timer)
            patched = timed if cfg is None else adapter.apply_forecast_cache(timed, cfg)
            if cfg is not None:
                # Untimed first: Triton compiles and autotunes each kernel variant (order, ladder length,
                # token bucket) on first use, which would otherwise land in the timed run.
                sample_once(patched, latent, pos, neg, cfg_scale, min(args.steps, WARMUP_STEPS), device)
            result = sample_once(patched, latent, pos, neg, cfg_scale, args.steps, device, timer)
            calls = timer.durations_ms()
            stats = adapter.RECENT_RUNS[-1] if cfg is not None else None
            timeline = stats["timeline"] if stats else "C" * len(calls)
            full = [ms for ms, kind in zip(calls, timeline) if kind == "C"]
            fcst = [ms for ms, kind in zip(calls, timeline) if kind == "F"]
            row = {"config": name, "tag": cfg.tag() if cfg is not None else "uncached",
                   "backend": backend if cfg is not None else "-",
                   "kernel_backend_state": dict(dispatch.STATE) if backend == "triton" else None,
                   "wall_s": result["wall_s"], "finite": result["finite"], "calls": len(calls),
                   "full_call_ms": statistics.median(full) if full else None,
                   "forecast_call_ms": statistics.median(fcst) if fcst else None,
                   "peak_bytes": result["peak_bytes"],
                   "evaluation_ratio": stats["evaluation_speedup"] if stats else 1.0,
                   "cache_peak_bytes": stats["peak_cache_bytes"] if stats else 0, "timeline": timeline}
            if baseline is None:
                baseline = row
            row["wall_ratio"] = baseline["wall_s"] / row["wall_s"]
            row["wall_vs_evaluation_ratio"] = row["wall_ratio"] / row["evaluation_ratio"]
            if row["forecast_call_ms"] is not None and baseline["full_call_ms"]:
                row["forecast_fraction_of_full"] = row["forecast_call_ms"] / baseline["full_call_ms"]
            if row["peak_bytes"] is not None:
                row["added_peak_bytes"] = row["peak_bytes"] - baseline["peak_bytes"]
            runs.append(row)
            log.info("%-13s %-42s %-9s wall %7.2f s  x%.2f wall  x%.2f evals  forecast %s of full  +%s MiB",
                     family, name, row["backend"], row["wall_s"], row["wall_ratio"], row["evaluation_ratio"],
                     _pct(row.get("forecast_fraction_of_full")), _mib(row.get("added_peak_bytes")))
    ops.use_references()
    del model
    mm.unload_all_models()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"family": family, "config": config, "latent": list(latent.shape), "frames": frames,
            "setting": FAMILY_RUN[family]["label"] if not tiny else "micro", "cfg": cfg_scale,
            "steps": args.steps, "runs": runs}


def probe_video_frames(model, pos, neg, device, args) -> int:
    """The largest candidate frame count whose one-call memory fits and whose estimated runs fit the budget."""
    import torch

    cached_runs = (len(run_configs(args.steps)) - 1) * len(args.backends)
    calls_per_run = args.steps + cached_runs * (0.35 * args.steps + WARMUP_STEPS)
    for frames in VIDEO_FRAMES:
        latent = torch.zeros(latent_shape("hunyuan_video", False, frames))
        try:
            sample_once(model, latent, pos, neg, 1.0, 1, device)  # compile/warm
            t = sample_once(model, latent, pos, neg, 1.0, 1, device)["wall_s"]
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            log.info("video probe: %d frames do not fit in memory", frames)
            continue
        estimate = t * calls_per_run
        log.info("video probe: %d frames, %.2f s per call, about %.0f s for all runs", frames, t, estimate)
        if estimate <= args.video_budget_s:
            return frames
    return VIDEO_FRAMES[-1]


def _micro_config(family: str) -> dict:
    from scripts.harness.micro_models import micro_config

    return micro_config(family)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def _mib(x) -> str:
    return "-" if x is None else f"{x / 2**20:.1f}"


# ------------------------------------------------------------------------------------ report
def to_markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [f"# DiT Accel GPU measurements: {meta['device']}", "",
             f"torch {meta['torch']}, Triton {meta['triton']}, {meta['date']}. Command: `{meta['command']}`", ""]
    bw = result.get("bandwidth")
    if bw:
        lines += [f"## Op bandwidth at [1, {bw['tokens']}, {bw['channels']}] (copy: {bw['copy']['gbps']:.0f} GB/s)", "",
                  "| op | case | reference GB/s | kernel GB/s | of copy | x reference |", "|---|---|---|---|---|---|"]
        for r in bw["rows"]:
            k = f"{r['kernel_gbps']:.4g}" if "kernel_gbps" in r else "-"
            frac = _pct(r.get("fraction_of_copy"))
            sp = f"{r['speedup_vs_reference']:.2f}" if "speedup_vs_reference" in r else "-"
            lines.append(f"| {r['op']} | {r['case']} | {r['reference_gbps']:.4g} | {k} | {frac} | {sp} |")
        lines.append("")
    for fam in result["models"]:
        lines += [f"## {fam['family']} ({fam['setting']}, latent {fam['latent']}, {fam['steps']} euler steps)", "",
                  "| config | backend | wall s | wall ratio | eval ratio | wall/eval | forecast call / full call "
                  "| added peak MiB | cache MiB |", "|---|---|---|---|---|---|---|---|---|"]
        for r in fam["runs"]:
            lines.append(f"| {r['config']} | {r['backend']} | {r['wall_s']:.2f} | {r['wall_ratio']:.2f}x | "
                         f"{r['evaluation_ratio']:.2f}x | {r['wall_vs_evaluation_ratio']:.3f} | "
                         f"{_pct(r.get('forecast_fraction_of_full'))} | {_mib(r.get('added_peak_bytes'))} | "
                         f"{_mib(r['cache_peak_bytes'])} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run with the micro models (seconds)")
    parser.add_argument("--steps", type=int, default=None, help="euler steps (default 50; 10 with --tiny: runs of 8 steps or fewer are not cached)")
    parser.add_argument("--families", default="flux,qwen_image,hunyuan_video")
    parser.add_argument("--backends", default="triton,reference", help="kernel backends to compare on the GPU")
    parser.add_argument("--video-budget-s", type=float, default=1500.0,
                        help="time budget for all HunyuanVideo runs; picks the largest frame count within it")
    parser.add_argument("--skip-bandwidth", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="output path without suffix")
    args = parser.parse_args(argv)
    args.steps = args.steps or (10 if args.tiny else 50)
    args.backends = [b for b in args.backends.split(",") if b]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.setLevel(logging.INFO)

    from scripts.harness.comfy_env import bootstrap, load_custom_nodes

    bootstrap(cpu=args.tiny, pytorch_attention=not args.tiny)
    load_custom_nodes()
    import comfy.utils
    import torch

    import accel_core.ops as ops

    comfy.utils.PROGRESS_BAR_ENABLED = False
    device = torch.device("cuda") if torch.cuda.is_available() and not args.tiny else torch.device("cpu")
    if device.type != "cuda" and not args.tiny:
        parser.error("no CUDA device: the full benchmark needs a GPU (use --tiny for the CPU smoke run)")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    adapter = _pack_module("nodes.adapter")
    dispatch = _pack_module("nodes.dispatch")
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({platform.machine()}), --tiny"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    result = {"meta": {"device": device_name, "torch": torch.__version__, "triton": triton_version,
                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "command": "python bench/bench_gpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                       "tiny": args.tiny, "weights": "random (N(0, 1/fan_in)), " + str(dtype)},
              "models": []}
    if not args.skip_bandwidth:
        from bench.kernel_bandwidth import measure

        kernel_table = None
        # On the GPU: the installed kernels. --tiny under TRITON_INTERPRET=1 (the test suite): the
        # interpreted kernels, so the kernel columns' code runs before a GPU does.
        if dispatch.install(allow_interpret=args.tiny) in (dispatch.TRITON, dispatch.TRITON_INTERPRET):
            import kernels

            kernel_table = kernels.load()
        tokens, channels = (64, 32) if args.tiny else (4096, 3072)
        result["bandwidth"] = measure(ops, kernel_table, tokens, channels, device,
                                      copy_bytes=2**20 if args.tiny else 2**30)
        ops.use_references()
    for family in [f for f in args.families.split(",") if f]:
        result["models"].append(measure_family(family, args, device, dtype, adapter, dispatch, ops))
    slug = re.sub(r"[^a-z0-9]+", "_", device_name.lower()).strip("_")
    out = args.out or (REPO / "bench" / "results" / (f"gpu_{slug}" if not args.tiny else "tiny_cpu"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    out.with_suffix(".md").write_text(to_markdown(result))
    log.info("wrote %s.{json,md}", out)
    return 0


def _pack_module(suffix: str):
    """A module of the pack as ComfyUI loaded it (its name derives from the custom_nodes path)."""
    found = [m for name, m in list(sys.modules.items()) if name.endswith(suffix) and "dit_accel" in name]
    if len(found) != 1:
        raise RuntimeError(f"expected the pack's {suffix} loaded once by ComfyUI, found {len(found)}")
    return found[0]


if __name__ == "__main__":
    sys.exit(main())
