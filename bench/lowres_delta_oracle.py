"""Diagnostic for the low-resolution delta forecast: along the uncached trajectory of a zoo model, how well does
each predictor forecast the full-resolution slope (x - D) / sigma at step t from the full step f = t - h?

Predictors: slope reuse (output reuse); the low-res delta on the denoised estimate / on the slope (noise matched
or plain pooling, bilinear up); and the pooled oracle D_full(f) + up(pool D_full(t) - pool D_full(f)) (what a
low-res model that tracked the full one exactly would give: the bound of the idea). Relative L2 error of the
slope, mean over steps and cases, per horizon h.

  OMP_NUM_THREADS=1 .venv/bin/python bench/lowres_delta_oracle.py --models flux_1k_tune --prompts 2
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
from bench.bench_lowres_delta import _down, _up  # noqa: E402
from bench.bench_zoo import load_model, setup_comfy  # noqa: E402

STEPS = 50


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="flux_1k_tune")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--factors", default="2,4")
    parser.add_argument("--horizons", default="1,2,4,6,9")
    parser.add_argument("--out", default="")
    parser.add_argument("--shadow", action="store_true", help="also the low-res model on its own trajectory from "
                        "every 5th step (the 'own-trajectory' rows)")
    args = parser.parse_args()
    nodes, _ = setup_comfy(1)
    import comfy.patcher_extension
    import torch

    factors = [int(f) for f in args.factors.split(",")]
    horizons = [int(h) for h in args.horizons.split(",")]
    result = {}
    for name in args.models.split(","):
        zm = load_model(name)
        errs: dict = {}
        for case in zm.cases(args.prompts, 1):
            rec = []

            def predict(executor, x, timestep, model_options, seed):
                sigma = float(timestep.flatten().max())
                out = executor(x, timestep, model_options, seed)
                if sigma > 0:
                    entry = {"sigma": sigma, "x": x.float(), "d": out.float(), "low": {}}
                    for f in factors:
                        xp = _down(x.float(), f)
                        xi = torch.randn(xp.shape, generator=torch.Generator().manual_seed(1234))
                        xm = xp + sigma * (1 - 1 / f ** 2) ** 0.5 * xi
                        for kind, xl in (("match", xm), ("pool", xp)):
                            entry["low"][(f, kind)] = (xl, executor(xl, timestep, model_options, seed).float())
                    if args.shadow and len(rec) % 5 == 0:
                        entry["shadow"] = shadow(executor, x, timestep, model_options, seed, sigma)
                    rec.append(entry)
                return out

            def outer(executor, *a, **kw):
                sig = a[3] if len(a) > 3 else kw["sigmas"]
                sigmas[:] = [float(v) for v in sig.flatten()]
                return executor(*a, **kw)

            sigmas: list = []

            def shadow(executor, x, timestep, model_options, seed, sigma):
                """From this full step: the low-res model on its OWN euler trajectory (started at the pooled,
                noise-matched latent) for up to max(horizons) steps; its denoised estimates per step."""
                i = min(range(len(sigmas)), key=lambda j: abs(sigmas[j] - sigma))
                out = {}
                for f in factors:
                    xp = _down(x.float(), f)
                    xi = torch.randn(xp.shape, generator=torch.Generator().manual_seed(1234))
                    xl = xp + sigma * (1 - 1 / f ** 2) ** 0.5 * xi
                    ds = []
                    for j in range(i, min(i + max(horizons), len(sigmas) - 2) + 1):
                        s_j = sigmas[j]
                        d = executor(xl, timestep * 0 + s_j, model_options, seed).float()
                        ds.append(d)
                        xl = xl + (sigmas[j + 1] - s_j) * (xl - d) / s_j
                    out[f] = ds
                return out

            m = zm.model.clone()
            m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "oracle", outer)
            m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "oracle", predict)
            nodes.KSampler().sample(m, case.seed, STEPS, case.cfg, "euler", "simple", case.positive, case.negative,
                                    case.latent, denoise=1.0)
            size = rec[0]["x"].shape[-2:]
            for h in horizons:
                for t in range(h, len(rec)):
                    f_, t_ = rec[t - h], rec[t]
                    st, sf = t_["sigma"], f_["sigma"]
                    truth = (t_["x"] - t_["d"]) / st
                    norm = float(truth.norm())
                    slope_f = (f_["x"] - f_["d"]) / sf
                    preds = {"slope reuse": slope_f}
                    for fac in factors:
                        pd = _up(_down(t_["d"], fac) - _down(f_["d"], fac), size, "bilinear")
                        preds[f"f{fac} pooled oracle (den)"] = (t_["x"] - (f_["d"] + pd)) / st
                        for kind in ("match", "pool"):
                            (xl_f, dl_f), (xl_t, dl_t) = f_["low"][(fac, kind)], t_["low"][(fac, kind)]
                            dd = _up(dl_t - dl_f, size, "bilinear")
                            preds[f"f{fac} {kind} den"] = (t_["x"] - (f_["d"] + dd)) / st
                            ds = _up((xl_t - dl_t) / st - (xl_f - dl_f) / sf, size, "bilinear")
                            preds[f"f{fac} {kind} slope"] = slope_f + ds
                            # how well the low-res change tracks the pooled full change (coarse part only)
                            true_pd = _down(t_["d"], fac) - _down(f_["d"], fac)
                            errs.setdefault((f"f{fac} {kind}: |dD_low - pool dD_full| / |pool dD_full|", h), []).append(
                                float((dl_t - dl_f - true_pd).norm() / true_pd.norm().clamp_min(1e-12)))
                            errs.setdefault((f"f{fac} {kind}: cosine(dD_low, pool dD_full)", h), []).append(
                                float(torch.nn.functional.cosine_similarity((dl_t - dl_f).flatten(), true_pd.flatten(),
                                                                            dim=0)))
                            errs.setdefault((f"f{fac} {kind}: |D_low - pool D_full| / |pool D_full| at t", h), []).append(
                                float((dl_t - _down(t_["d"], fac)).norm() / _down(t_["d"], fac).norm()))
                    if "shadow" in f_:
                        for fac in factors:
                            ds = f_["shadow"][fac]
                            if h < len(ds):
                                dd = _up(ds[h] - ds[0], size, "bilinear")
                                preds[f"f{fac} own-trajectory den"] = (t_["x"] - (f_["d"] + dd)) / st
                                true_pd = _down(t_["d"], fac) - _down(f_["d"], fac)
                                errs.setdefault((f"f{fac} own-trajectory: |dD_low - pool dD_full| / |pool dD_full|", h),
                                                []).append(float((ds[h] - ds[0] - true_pd).norm() / true_pd.norm()))
                                errs.setdefault((f"f{fac} own-trajectory: cosine(dD_low, pool dD_full)", h), []).append(
                                    float(torch.nn.functional.cosine_similarity((ds[h] - ds[0]).flatten(),
                                                                                true_pd.flatten(), dim=0)))
                                errs.setdefault(("slope reuse (same anchors as own-trajectory)", h), []).append(
                                    float((slope_f - truth).norm()) / norm)
                    third = t // 3  # "[third i]" keys: steps 3i .. 3i + 2 (where in the run the error is)
                    for key, p in preds.items():
                        errs.setdefault((key, h), []).append(float((p - truth).norm()) / norm)
                        errs.setdefault((key + f" [third {third}]", h), []).append(float((p - truth).norm()) / norm)
        table = {}
        for (key, h), v in sorted(errs.items()):
            table.setdefault(key, {})[h] = round(sum(v) / len(v), 4)
        result[name] = table
        print(name)
        for key, row in table.items():
            if "third" in key:
                continue
            print(f"  {key:60s} " + " ".join(f"h{h}:{row.get(h, float('nan')):.4f}" for h in horizons))
        for key, row in table.items():
            if "third" in key and ("reuse" in key or "match den" in key or "oracle" in key):
                print(f"  {key:60s} " + " ".join(f"h{h}:{row.get(h, float('nan')):.4f}" for h in horizons))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
