"""How much does a stage TRANSITION lose, with a perfect sketch? (docs/RESOLUTION.md)

Runs the uncached full-resolution sampling, then restarts it at step k from a rebuilt state and
samples to the end at full resolution, scoring the decoded result against the uncached image:

- "renoise (own estimate)": s*eps + (1-s)*D, with D the run's OWN denoised estimate of step k-1:
  Fresco's re-noise fed the best sketch there can be;
- "renoise (own estimate, 2x2 low-pass)": the same with D seen at half resolution (nearest);
- "carry (own pooled state)": up(pool(x_k)) + s*(eps - up(pool(eps))): the run's own state at half
  resolution carried up with the field's detail (transition=carry fed a perfect sketch);
- "exact state": x_k itself (must be identical: checks the restart).

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/resolution_transition_oracle.py --models flux_multires,micro_flux
Writes bench/results/resolution_oracle.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
from bench.bench_forecast import psnr  # noqa: E402
from bench.bench_zoo import setup_comfy  # noqa: E402

STEPS = 50


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="flux_multires,micro_flux")
    parser.add_argument("--switch-steps", default="10,20")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "resolution_oracle.json")
    args = parser.parse_args()
    nodes, _ = setup_comfy(1)
    import comfy.patcher_extension
    import comfy.sample
    import comfy.samplers
    import torch

    from accel_core.resolution import downsample_latent, upsample
    from scripts.harness.zoo import ZooModel

    rows = []
    for name in args.models.split(","):
        zm = ZooModel(name)
        sigmas = comfy.samplers.calculate_sigmas(zm.model.get_model_object("model_sampling"), "simple", STEPS)
        sampler = comfy.samplers.sampler_object("euler")
        for case in zm.cases(args.prompts, args.seeds):
            seen = []

            def capture(executor, x, timestep, model_options, seed):
                out = executor(x, timestep, model_options, seed)
                seen.append((x.clone(), out.clone()))
                return out

            model = zm.model.clone()
            model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "oracle", capture)
            base = nodes.KSampler().sample(model, case.seed, STEPS, case.cfg, "euler", "simple", case.positive,
                                           case.negative, case.latent, denoise=1.0)[0]["samples"]
            reference = zm.decode(base)
            eps = comfy.sample.prepare_noise(case.latent["samples"], case.seed)

            def low(z):
                return upsample(downsample_latent(z, 2), 2, "nearest")

            for k in (int(v) for v in args.switch_steps.split(",")):
                s = float(sigmas[k])
                x_k, estimate = seen[k][0], seen[k - 1][1]
                states = {"exact state": x_k,
                          "renoise (own estimate)": s * eps + (1 - s) * estimate,
                          "renoise (own estimate, 2x2 low-pass)": s * eps + (1 - s) * low(estimate),
                          "carry (own pooled state)": low(x_k) + s * (eps - low(eps))}
                for label, x in states.items():
                    out = comfy.sample.sample_custom(zm.model, x / s, case.cfg, sampler, sigmas[k:], case.positive,
                                                     case.negative, torch.zeros_like(x), disable_pbar=True,
                                                     seed=case.seed)
                    rows.append({"model": name, "role": zm.role, "prompt": case.prompt, "seed": case.seed,
                                 "switch_step": k, "sigma": round(s, 4), "state": label,
                                 "psnr": round(psnr(zm.decode(out), reference), 3)})
    summary = {}
    for r in rows:
        summary.setdefault((r["model"], r["switch_step"], r["state"]), []).append(r["psnr"])
    table = [{"model": m, "switch_step": k, "state": st, "psnr_mean": round(statistics.fmean(v), 2),
              "psnr_min": min(v), "cases": len(v)} for (m, k, st), v in summary.items()]
    for t in table:
        print(f"{t['model']:<16} step {t['switch_step']:>2}  {t['state']:<38} {t['psnr_mean']:7.2f} (min {t['psnr_min']:.2f})")
    args.out.write_text(json.dumps({"meta": {"steps": STEPS, "sampler": "euler simple", "metric": "PSNR of the decoded "
                                             "image vs the uncached run (100 = identical)"},
                                    "summary": table, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
