"""Cost of a SpeCa verification probe, against the target "one block + 2% of a full step".

Same process, trained micro model of the family, euler 50 steps: a run whose every forecast is
probed and accepted (threshold 10) against the same fixed schedule without probes; the extra
wall time per probe is compared with the measured time of the probed block (forward hooks) and
with a full model call (uncached run / calls). Each timing is the minimum over --repeats runs.

Usage: .venv/bin/python bench/bench_verify_overhead.py [--family flux] [--repeats 5]
Writes bench/results/verify_overhead_<family>_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
from bench.bench_methods import STEPS, Family  # noqa: E402

log = logging.getLogger("bench")


class BlockTimer:
    def __init__(self, block):
        self.total, self.calls, self._start = 0.0, 0, 0.0
        self.handles = [block.register_forward_pre_hook(self._pre), block.register_forward_hook(self._post)]

    def _pre(self, module, args):
        self._start = time.perf_counter()

    def _post(self, module, args, out):
        self.total += time.perf_counter() - self._start
        self.calls += 1

    def remove(self):
        for h in self.handles:
            h.remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="flux")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from scripts.harness.comfy_env import bootstrap, load_custom_nodes

    base = bootstrap()
    load_custom_nodes()
    import comfy.utils
    import nodes
    import torch

    from accel_core import ForecastCacheConfig
    from scripts.harness.assets import ensure_assets

    torch.set_num_threads(1)
    logging.getLogger("DiTAccel").setLevel(logging.WARNING)
    ensure_assets(base)
    comfy.utils.PROGRESS_BAR_ENABLED = False
    adapter = next(m for n, m in sys.modules.items() if n.endswith("nodes.adapter") and hasattr(m, "apply_forecast_cache"))
    fam = Family(args.family, 1)
    dm = fam.model.model.diffusion_model

    def timed(m) -> float:
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            nodes.KSampler().sample(m, 7, STEPS, fam.cfg, "euler", "simple", fam.positives[0], fam.negative,
                                    {"samples": fam.latent}, denoise=1.0)
            best = min(best, time.perf_counter() - start)
        return best

    plain = dict(method="foca", order=1, time_axis="step", interval=7, warmup_steps=3, final_full_steps=1)
    results = {}
    timed(fam.model)  # warm-up
    full_run = timed(fam.model)
    for probe in ("first_block", "last_block"):
        blocks = [b for name in ("double_blocks", "single_blocks", "transformer_blocks") for b in getattr(dm, name, [])]
        block = blocks[0] if probe == "first_block" else blocks[-1]
        timer = BlockTimer(block)
        timed(fam.model)
        block_time = timer.total / max(1, timer.calls)
        timer.remove()
        no_probe = adapter.apply_forecast_cache(fam.model, ForecastCacheConfig(**plain))
        with_probe = adapter.apply_forecast_cache(fam.model, ForecastCacheConfig(
            **plain, verify=probe, verify_threshold=10.0, verify_floor=10.0, min_forecasts=0))
        t_plain, t_probe = timed(no_probe), timed(with_probe)
        stats = adapter.RECENT_RUNS[-1]
        per_call = full_run / stats["calls"]
        overhead = (t_probe - t_plain) / max(1, stats["probes"])
        target = block_time + 0.02 * per_call
        results[probe] = {
            "probes_per_run": stats["probes"], "accepted": stats["accepted"],
            "timeline_with_probe": stats["timeline"],
            "full_call_ms": per_call * 1e3, "probed_block_ms": block_time * 1e3,
            "overhead_per_probe_ms": overhead * 1e3, "target_ms": target * 1e3,
            "overhead_in_full_calls": overhead / per_call, "meets_target": overhead <= target,
            "run_seconds": {"uncached": full_run, "forecast": t_plain, "forecast+probe": t_probe},
        }
        log.info("%s %s: probe overhead %.3f ms (%.1f%% of a full call); block %.3f ms; target <= %.3f ms: %s",
                 args.family, probe, overhead * 1e3, 100 * overhead / per_call, block_time * 1e3, target * 1e3,
                 "met" if overhead <= target else "MISSED")
    meta = {"family": args.family, "device": f"CPU ({platform.machine()}), torch {torch.__version__}, 1 thread",
            "sampler": f"euler / simple, {STEPS} steps, {fam.sampling}", "repeats": args.repeats,
            "command": f".venv/bin/python bench/bench_verify_overhead.py --family {args.family} --repeats {args.repeats}"}
    out = REPO / "bench" / "results" / f"verify_overhead_{args.family}_cpu.json"
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
