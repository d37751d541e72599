"""Command one: Forecast Cache vs the uncached model, side by side, in a real ComfyUI server.

Runs scripts/harness/demo_workflow_api.json (the trained micro FLUX, the same seed through a plain
KSampler and through DiTAccelForecastCache) for a few prompts and seeds, then writes both images
per case, report.md and report.json to --out (default <repo>/out/demo) and prints the report path.

    .venv/bin/python -m scripts.demo [--out DIR] [--preset balanced] [--steps 50] [--repeats 3]

Fidelity is the PSNR of the forecast image against the uncached one; speed is the ratio of full
model evaluations (from the pack's "DiT Accel:" log line) and the measured wall time per run.
On CPU with a 2.5 M-parameter model the wall-time ratio is dominated by fixed per-step costs;
the evaluation ratio is the figure that carries over to real model sizes.
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import logging
import math
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from scripts.harness import workflow_convert as wc  # noqa: E402
from scripts.harness.run_summary import parse_summaries  # noqa: E402
from scripts.harness.server import ComfyServer, ServerError, history_duration_s  # noqa: E402

log = logging.getLogger("demo")

DEMO_API = REPO / "scripts" / "harness" / "demo_workflow_api.json"
TRAINED = REPO / "tests" / "assets" / "micro_flux_trained.safetensors"
DEFAULT_PROMPTS = ("a red circle on a blue background", "a yellow square on a black background")
DEFAULT_SEEDS = (0, 1)
TIMING_SEED_OFFSET = 100_000  # timing runs use other seeds, so no result is served from ComfyUI's cache


class DemoError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------ graph
def demo_graph(preset: str, steps: int, unet: str | None = None) -> dict:
    prompt = json.loads(DEMO_API.read_text())
    if unet:
        wc.set_inputs(prompt, wc.only(prompt, "DiTAccelDevMicroLoader"), unet_name=unet)
    wc.set_inputs(prompt, wc.only(prompt, "DiTAccelForecastCache"), preset=preset)
    for ks in wc.find(prompt, "KSampler"):
        wc.set_inputs(prompt, ks, steps=steps)
    return prompt


def branches(prompt: dict) -> dict[str, dict]:
    """Node ids per branch: its sampler, SaveImage and stats node, keyed "uncached" / "forecast"."""
    out = {}
    for save in wc.find(prompt, "SaveImage"):
        name = prompt[save]["inputs"]["filename_prefix"]
        decode = prompt[save]["inputs"]["images"][0]
        sampler = prompt[decode]["inputs"]["samples"][0]
        stats = [nid for nid, _ in wc.consumers(prompt, sampler) if prompt[nid]["class_type"] == "DiTAccelDevStats"]
        out[name] = {"sampler": sampler, "save": save, "stats": stats[0] if stats else None,
                     "outputs": [save] + stats}
    if set(out) != {"uncached", "forecast"}:
        raise DemoError(f"demo graph must have SaveImage prefixes 'uncached' and 'forecast', found {sorted(out)}")
    return out


def with_case(prompt: dict, text: str, seed: int) -> dict:
    p = copy.deepcopy(prompt)
    wc.set_inputs(p, wc.only(p, "CLIPTextEncode"), text=text)
    for ks in wc.find(p, "KSampler"):
        wc.set_inputs(p, ks, seed=seed)
    return p


# ------------------------------------------------------------------------------------ metrics
def psnr_db(a, b) -> float:
    import numpy as np

    x = np.asarray(a, dtype=np.float64) / 255.0
    y = np.asarray(b, dtype=np.float64) / 255.0
    if x.shape != y.shape:
        raise DemoError(f"image shapes differ: {x.shape} vs {y.shape}")
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))


def load_png(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


# ------------------------------------------------------------------------------------ steps
def ensure_assets(need_trained: bool) -> None:
    """Build the harness assets in a child process (keeps torch out of this one)."""
    if need_trained and not TRAINED.is_file():
        raise DemoError(f"{TRAINED} is missing: train it once with "
                        f"`.venv/bin/python scripts/train_micro_flux.py --minutes 15`")
    code = ("from scripts.harness import comfy_env, assets; "
            "assets.ensure_assets(comfy_env.bootstrap())")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        raise DemoError(f"building test assets failed:\n{res.stderr[-3000:]}")


def run_case(srv: ComfyServer, graph: dict, ids: dict, text: str, seed: int, repeats: int, out: Path,
             slug: str) -> dict:
    prompt = with_case(graph, text, seed)
    log_start = len(srv.log_text())
    entry = srv.run(prompt, timeout=600)
    summaries = parse_summaries(srv.log_text()[log_start:])
    if len(summaries) != 1:
        raise DemoError(f"expected one 'DiT Accel:' summary for the forecast run, found {len(summaries)}:\n"
                        f"{srv.log_tail()}")
    images = {}
    for branch, b in ids.items():
        pngs = srv.output_images(entry, b["save"])
        if len(pngs) != 1:
            raise DemoError(f"{branch}: expected one image, got {len(pngs)}")
        path = out / f"{slug}_{branch}.png"
        path.write_bytes(pngs[0])
        images[branch] = path
    stats = {branch: (entry["outputs"].get(b["stats"]) or {}).get("dit_accel_stats") if b["stats"] else None
             for branch, b in ids.items()}
    psnr = psnr_db(load_png(images["forecast"].read_bytes()), load_png(images["uncached"].read_bytes()))

    # Timing: each branch alone, interleaved, with fresh seeds; loaders and the prompt encoding
    # stay cached, so both runs time the same work: sampler, decode, save, stats.
    wall = {"uncached": [], "forecast": []}
    sampler_wall = []
    for r in range(repeats):
        timed = with_case(graph, text, seed + TIMING_SEED_OFFSET + r)
        for branch in ("uncached", "forecast"):
            start = len(srv.log_text())
            e = srv.run(wc.prune(timed, ids[branch]["outputs"]), timeout=600)
            seconds = history_duration_s(e)
            wall[branch].append(seconds)
            if branch == "forecast":
                runs = parse_summaries(srv.log_text()[start:])
                if runs and runs[-1].wall_seconds is not None:
                    sampler_wall.append(runs[-1].wall_seconds)
    med = {k: statistics.median(v) for k, v in wall.items() if v and None not in v}
    run = summaries[0]
    return {
        "prompt": text, "seed": seed,
        "images": {k: v.name for k, v in images.items()},
        "psnr_db": psnr,
        "model_calls": run.calls, "computed_calls": run.computed, "forecast_calls": run.forecast,
        "evaluation_speedup": run.evaluation_speedup,
        "wall_s": wall, "wall_median_s": med,
        "wall_speedup": (med["uncached"] / med["forecast"]) if len(med) == 2 and med["forecast"] else None,
        "forecast_sampler_s": sampler_wall,
        "summary_line": run.line,
        "stats": stats,
    }


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_reports(out: Path, meta: dict, cases: list[dict]) -> Path:
    finite = [c["psnr_db"] for c in cases if c["psnr_db"] != float("inf")]
    walls = [c["wall_speedup"] for c in cases if c["wall_speedup"]]
    summary = {
        "mean_psnr_db": statistics.mean(finite) if finite else float("inf"),
        "min_psnr_db": min(c["psnr_db"] for c in cases),
        "mean_evaluation_speedup": statistics.mean(c["evaluation_speedup"] for c in cases),
        "mean_wall_speedup": statistics.mean(walls) if walls else None,
    }
    report = {**meta, "summary": summary, "cases": cases}
    # Identical images give PSNR = inf, which JSON cannot hold: write null there.
    (out / "report.json").write_text(json.dumps(_finite(report), indent=2, allow_nan=False) + "\n")

    def f(x, spec):
        return "n/a" if x is None else format(x, spec)

    lines = [
        "# DiT Accel demo: Forecast Cache vs uncached",
        "",
        f"Model: {meta['model']}. Device: {meta['device']}, server threads: {meta['server_threads']}. "
        f"Sampler: {meta['sampler']}. Forecast Cache preset: `{meta['preset']}`.",
        f"Command: `{meta['command']}`",
        "",
        "| prompt | seed | full evaluations (forecast / uncached) | evaluation speed-up | wall time per run, "
        "median (uncached / forecast) | wall speed-up | PSNR forecast vs uncached |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        med = c["wall_median_s"]
        lines.append(
            f"| {c['prompt']} | {c['seed']} | {c['computed_calls']} / {c['model_calls']} | "
            f"{c['evaluation_speedup']:.2f}x | {f(med.get('uncached'), '.3f')} s / {f(med.get('forecast'), '.3f')} s | "
            f"{f(c['wall_speedup'], '.2f')}x | {c['psnr_db']:.2f} dB |")
    lines += [
        "",
        f"Mean PSNR {summary['mean_psnr_db']:.2f} dB (min {summary['min_psnr_db']:.2f} dB); "
        f"mean evaluation speed-up {summary['mean_evaluation_speedup']:.2f}x; "
        f"mean wall speed-up {f(summary['mean_wall_speedup'], '.2f')}x.",
        "",
        "Wall time is ComfyUI's execution time of the sampler branch (sampler, decode, save), from the "
        "server's history timestamps, median of the timing repeats. On a CPU micro model fixed per-step "
        "costs dominate it; the evaluation speed-up is the figure that scales to real model sizes.",
        "",
    ]
    for c in cases:
        lines += [f"**{c['prompt']}**, seed {c['seed']}: uncached / forecast", "",
                  f"![uncached]({c['images']['uncached']}) ![forecast]({c['images']['forecast']})", "",
                  f"`{c['summary_line']}`", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _python_for_display() -> str:
    exe = Path(sys.executable)
    return str(exe.relative_to(REPO)) if exe.is_relative_to(REPO) else exe.name


def run(args) -> Path:
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log.info("building / checking test assets")
    ensure_assets(need_trained=args.unet is None)
    graph = demo_graph(args.preset, args.steps, args.unet)
    ids = branches(graph)
    cases = []
    # Few threads: a 2.5 M-parameter model gains nothing from more, and OpenMP threads competing
    # with other processes for the cores make timings erratic.
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else None
    with ComfyServer(log_path=out / "server.log", env=env) as srv:
        log.info("server up on %s; warming up", srv.url)
        srv.run(with_case(graph, args.prompts[0], TIMING_SEED_OFFSET * 10), timeout=600)
        system = srv.get_json("/system_stats").get("system", {})
        for text in args.prompts:
            for seed in args.seeds:
                slug = f"{re.sub(r'[^a-z0-9]+', '_', text.lower()).strip('_')[:60]}_seed{seed}"
                log.info("case %r seed %d", text, seed)
                cases.append(run_case(srv, graph, ids, text, seed, args.repeats, out, slug))
    loader = graph[wc.only(graph, "DiTAccelDevMicroLoader")]["inputs"]["unet_name"]
    meta = {
        "model": f"{'trained ' if args.unet is None else ''}micro FLUX ({loader}, 32x32 latent, 64x64 px; zoo role: "
                 f"{_zoo_role(loader)})",
        "device": f"CPU ({platform.processor() or platform.machine()}), torch {system.get('pytorch_version', '?')}, "
                  f"ComfyUI {system.get('comfyui_version', '?')}",
        "sampler": f"euler / simple, {args.steps} steps, cfg 1.0, guidance 3.5",
        "server_threads": args.threads or "torch default",
        "preset": args.preset,
        "command": " ".join([_python_for_display(), "-m", "scripts.demo", *sys.argv[1:]]),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return write_reports(out, meta, cases)


def _zoo_role(loader: str) -> str:
    """'tune' or 'validate' from the zoo manifest (the presets were chosen on tune models only)."""
    manifest = json.loads((REPO / "tests" / "assets" / "zoo" / "manifest.json").read_text())
    for entry in manifest["models"]:
        if loader in (f"dit_accel_zoo_{entry['name']}.safetensors", "dit_accel_" + Path(entry["file"]).name):
            return entry["role"]
    return "not in the zoo"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    ap = argparse.ArgumentParser(description="Forecast Cache vs uncached on the trained micro FLUX, in a real "
                                             "ComfyUI server; writes report.md / report.json.")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "demo", help="output folder (default out/demo)")
    ap.add_argument("--prompts", nargs="+", default=list(DEFAULT_PROMPTS), help="training-set prompts")
    ap.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    ap.add_argument("--preset", default="balanced", choices=["quality", "balanced", "fast"])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--unet", default=None, help="another micro FLUX file in diffusion_models (default: the "
                                                "trained one; an untrained model makes PSNR meaningless)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for the server (0 = torch's default)")
    ap.add_argument("--repeats", type=int, default=3, help="timing runs per branch and case (median)")
    args = ap.parse_args(argv)
    # SIGTERM -> SystemExit, so the server's context manager still stops it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        path = run(args)
    except (DemoError, ServerError, wc.WorkflowError, OSError) as e:
        log.error("demo failed: %s", e)
        return 1
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
