"""Wall time of a partial step against a full step, in one process, on one device.

A partial step (Edit Region / Cluster Tokens on Forecast Cache) computes a share s of the image tokens
through every block. Its token-block work is about s of a full step; this bench measures what it costs
in wall time, on a micro FLUX built with ComfyUI's own classes (random weights: cost does not depend on
them) at real token counts: 1024 image tokens with 256 text tokens, 4096 with 512.

Per token count, in the same process and on the same device:
- "full": the uncached model's step (KSampler with the plain model), the denominator;
- "partial s": Forecast Cache + Edit Region (rings 0) with a mask of exactly s of the image tokens:
  the median wall time of its partial steps, and of its full steps with their shadow call;
- "clusters": Cluster Tokens' defaults (K 16 x 2 tokens).
Every step is timed by an outermost PREDICT_NOISE wrapper (the pack's whole step: selection, model
call, merge) and classified by the calls the token run recorded during it. Medians over steps and
repeats: the machine this ran on is shared, so single timings are noisy.

Target (issue 19): a partial step computing share s costs <= s + 0.1 of a full step at 4096 tokens.

Usage:
  OMP_NUM_THREADS=1 .venv/bin/python bench/bench_partial_cost.py [--tokens 1024,4096] [--shares 0.05,0.1,0.25,0.5]
      [--steps 10] [--repeats 2] [--attention sdpa|default] [--out partial_cost_cpu]
Writes bench/results/<out>.json and .md.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))

log = logging.getLogger("bench")

TIMER_KEY = "bench_partial_cost"
TEXT_TOKENS = {1024: 256, 4096: 512}  # FLUX at 512 / 1024 px: 4-8x fewer text than image tokens


def setup(threads: int, attention: str):
    from scripts.harness.comfy_env import bootstrap, load_custom_nodes

    bootstrap(pytorch_attention=attention == "sdpa")
    load_custom_nodes()
    import comfy.utils
    import nodes
    import torch

    torch.set_num_threads(threads)
    logging.getLogger("DiTAccel").setLevel(logging.WARNING)
    comfy.utils.PROGRESS_BAR_ENABLED = False
    adapter = next(m for n, m in sys.modules.items() if n.endswith("nodes.adapter") and hasattr(m, "apply_forecast_cache"))
    return nodes, adapter


def device_name() -> str:
    import comfy.model_management as mm
    import torch

    device = mm.get_torch_device()
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}"
    return f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} thread(s)"


class StepTimer:
    """Outermost PREDICT_NOISE wrapper: wall seconds of each sampling step and the token calls it made."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, tuple[str, ...]]] = []

    @staticmethod
    def install(model):
        """A clone of `model` whose steps are timed; the timer is the first (outermost) wrapper."""
        import comfy.patcher_extension

        timer = StepTimer()
        clone = model.clone()
        wrappers = clone.model_options.setdefault("transformer_options", {}).setdefault("wrappers", {})
        group = wrappers.setdefault(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, {})
        rest = dict(group)
        group.clear()
        group[TIMER_KEY] = [timer.wrap]
        group.update(rest)
        return clone, timer

    def wrap(self, executor, x, timestep, model_options=None, seed=None, *args, **kwargs):
        import torch

        run = (model_options or {}).get("transformer_options", {}).get("dit_accel_run")
        tokens = getattr(run, "tokens", None)
        before = len(tokens.calls) if tokens is not None else 0
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        start = time.perf_counter()
        out = executor(x, timestep, model_options, seed, *args, **kwargs)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        seconds = time.perf_counter() - start
        kinds = tuple(kind for kind, _, _ in tokens.calls[before:]) if tokens is not None else ("plain",)
        self.steps.append((seconds, kinds or ("full",)))
        return out


def step_kind(kinds: tuple[str, ...]) -> str:
    if "shadow" in kinds:
        return "full+shadow"
    if "partial" in kinds:
        return "partial"
    if "forecast" in kinds:
        return "forecast"
    return "full"


def region_mask(grid: int, share: float):
    """A token-grid mask [1, grid, grid] covering round(share * grid^2) tokens (row-major from the top)."""
    import torch

    n = grid * grid
    mask = torch.zeros(n)
    mask[: max(1, round(share * n))] = 1.0
    return mask.reshape(1, grid, grid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="1024,4096")
    parser.add_argument("--shares", default="0.05,0.1,0.25,0.5")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--interval", type=int, default=3, help="Forecast Cache interval (full step every k)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attention", default="sdpa", choices=("sdpa", "default"),
                        help="sdpa: torch SDPA (as on GPU); default: ComfyUI's CPU default (sub-quadratic)")
    parser.add_argument("--no-clusters", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="partial_cost_cpu")
    parser.add_argument("--depth", type=int, default=None, help="double blocks (default: the micro config's)")
    parser.add_argument("--single", type=int, default=None, help="single blocks (default: the micro config's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    nodes, adapter = setup(args.threads, args.attention)
    import torch

    from accel_core import preset
    from accel_core.tokens.settings import TokenSettings
    from accel_core.tokens.state import TXT_KEEP
    from scripts.harness.micro_models import build_micro_model, micro_config

    cfg = micro_config("flux")
    # Deeper models: the host's fixed work per partial step (embeddings, final layer) is spread over more
    # blocks, as in FLUX.1 (19 + 38 blocks).
    if args.depth is not None:
        cfg["depth"] = args.depth
    if args.single is not None:
        cfg["depth_single_blocks"] = args.single
    model = build_micro_model("flux", seed=0, config=cfg)
    blocks = cfg["depth"] + cfg["depth_single_blocks"]
    g = torch.Generator().manual_seed(0)
    rows = []
    for n_img in [int(v) for v in args.tokens.split(",")]:
        grid = int(math.isqrt(n_img))
        n_txt = TEXT_TOKENS.get(n_img, n_img // 8)
        latent = {"samples": torch.zeros(1, 16, 2 * grid, 2 * grid)}

        def cond(seed):
            gen = torch.Generator().manual_seed(seed)
            return [[torch.randn(1, n_txt, 768, generator=gen), {"pooled_output": torch.randn(1, 768, generator=gen),
                                                                 "guidance": 3.5}]]

        pos, neg = cond(1), cond(2)

        def timed(m, seed):
            clone, timer = StepTimer.install(m)
            nodes.KSampler().sample(clone, seed, args.steps, 1.0, "euler", "simple", pos, neg, latent, denoise=1.0)
            return timer.steps, (adapter.RECENT_RUNS[-1] if m is not model and adapter.RECENT_RUNS else {})

        config = preset("balanced", "flux").replace(interval=args.interval, schedule="fixed", warmup_steps=2)
        variants = [(f"region s={s:g}", TokenSettings(method="region", rings=0), region_mask(grid, s), s)
                    for s in (float(v) for v in args.shares.split(",") if v)]
        if not args.no_clusters:
            k = TokenSettings()
            variants.append((f"clusters K{k.clusters} x{k.per_cluster}", k, None, k.clusters * k.per_cluster / n_img))
        patched = {name: adapter.apply_forecast_cache(model, config, {"settings": st, "mask": mask})
                   for name, st, mask, _ in variants}
        timed(model, 0)  # warm-up (allocator, first-call paths, the block self-check)
        timed(patched[variants[0][0]], 0)
        # Each repeat times the uncached run and every variant back to back, and each ratio is taken
        # within its repeat: the machine is shared, and its speed drifts between minutes.
        fulls, per_variant = [], {name: [] for name, *_ in variants}
        for r in range(args.repeats):
            plain, _ = timed(model, r)
            full_r = statistics.median(s for s, _ in plain)
            fulls.append(full_r)
            for name, *_ in variants:
                steps, summary = timed(patched[name], r)
                per_variant[name].append((full_r, steps, summary))
        full_s = statistics.median(fulls)
        log.info("%d image + %d text tokens: full step %.3f s (median over %d repeats)", n_img, n_txt, full_s,
                 args.repeats)
        for name, settings, mask, share in variants:
            ratios: dict[str, list[float]] = {}
            counts: dict[str, int] = {}
            for full_r, steps, _ in per_variant[name]:
                by_kind: dict[str, list[float]] = {}
                for seconds, kinds in steps:
                    by_kind.setdefault(step_kind(kinds), []).append(seconds)
                for kind, values in by_kind.items():
                    ratios.setdefault(kind, []).append(statistics.median(values) / full_r)
                    counts[kind] = counts.get(kind, 0) + len(values)
            med = {k: statistics.median(v) for k, v in ratios.items()}
            summary = per_variant[name][-1][2]
            work = summary.get("token_work", {})
            row = {"image_tokens": n_img, "text_tokens": n_txt, "row": name, "share": share,
                   "full_step_s": full_s, "steps": counts, "fraction_of_full": med,
                   "partial_fraction": med.get("partial"),
                   "partial_fraction_per_repeat": [round(v, 4) for v in ratios.get("partial", [])],
                   "shadow_overhead": med["full+shadow"] - 1.0 if "full+shadow" in med else None,
                   "partial_token_blocks": ((share * n_img + TXT_KEEP) / (n_img + n_txt)),
                   "run_token_ratio": work.get("token_ratio"),
                   "counts": work.get("counts", {}), "trust": summary.get("token_trust"),
                   "target": share + 0.1}
            rows.append(row)
            frac = row["partial_fraction"]
            log.info("  %-18s partial %s of a full step (target <= %.2f), token-blocks %.3f, full+shadow %s, steps %s",
                     name, f"{frac:.3f}" if frac is not None else "n/a", share + 0.1, row["partial_token_blocks"],
                     f"{med['full+shadow']:.3f}" if "full+shadow" in med else "n/a", counts)
    meta = {"device": device_name(), "attention": args.attention, "model": f"micro FLUX (ComfyUI Flux, hidden "
            f"{cfg['hidden_size']}, {blocks} blocks, random weights)", "steps": args.steps, "repeats": args.repeats,
            "interval": args.interval, "sampler": "euler, cfg 1",
            "command": "OMP_NUM_THREADS=1 .venv/bin/python bench/bench_partial_cost.py " + " ".join(sys.argv[1:]),
            "note": "per repeat, the median step of each kind over the median step of the uncached run timed just before; "
                    "medians of those ratios over repeats. The machine was shared (other jobs on the other core)"}
    out = REPO / "bench" / "results" / args.out
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(meta, rows))
    log.info("wrote %s.json / .md", out)
    return 0


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"# Partial-step cost ({meta['device']}, attention {meta['attention']})", "",
             f"{meta['model']}; {meta['sampler']}, {meta['steps']} steps x {meta['repeats']} repeats, "
             f"Forecast Cache interval {meta['interval']}. Wall time: {meta['note']}.", "",
             f"`{meta['command']}`", "",
             "| image + text tokens | row | share s | token-blocks | full step (s) | partial / full | target s + 0.1 "
             "| full + shadow / full |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def f(v):
            return "n/a" if v is None else f"{v:.3f}"
        lines.append(f"| {r['image_tokens']} + {r['text_tokens']} | {r['row']} | {r['share']:.3f} | "
                     f"{r['partial_token_blocks']:.3f} | {r['full_step_s']:.3f} | {f(r['partial_fraction'])} | "
                     f"{r['target']:.3f} | {f(r['fraction_of_full'].get('full+shadow'))} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
