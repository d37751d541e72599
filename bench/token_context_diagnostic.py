"""How accurate a partial step's fresh tokens are, against the output forecast, at the same tokens.

For every partial step of one run (Cluster Tokens on Forecast Cache balanced), the model is also run in
full at that step, and the relative L2 error of the denoised output at the computed tokens is printed for
the forecast and for the fresh values; with --no-extrapolation the other tokens' keys / values are reused
from the newest full step instead of extrapolated. The docs/TOKENS.md figures (micro_flux, a tune model)
come from this script.

Usage: .venv/bin/python bench/token_context_diagnostic.py [--model micro_flux] [--no-extrapolation]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
from bench.bench_zoo import load_model, setup_comfy  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="micro_flux")
    ap.add_argument("--no-extrapolation", action="store_true")
    args = ap.parse_args()
    nodes, adapter = setup_comfy(1)
    from accel_core import preset
    from accel_core.tokens import patchify
    from accel_core.tokens.settings import TokenSettings
    from accel_core.tokens.state import TokenRun

    hooks = next(m for n, m in sys.modules.items() if n.endswith("nodes.output_hooks") and hasattr(m, "_partial_step"))
    partial_step, merge = hooks._partial_step, TokenRun.merge
    seen: dict = {}
    rows_out = []

    def spy_merge(self, forecast_rows, fresh_rows, call):
        seen.update(rows=call.rows, fresh=fresh_rows)
        return merge(self, forecast_rows, fresh_rows, call)

    def spy_step(run, tokens, call, forecast, x, timestep, model_options, seed, executor, a, kw):
        merged = partial_step(run, tokens, call, forecast, x, timestep, model_options, seed, executor, a, kw)
        if merged is not None:
            truth = patchify(executor(x, timestep, model_options, seed, *a, **kw).float(), tokens.patch)
            f = patchify(forecast.float(), tokens.patch)
            r = seen["rows"]

            def rel(p):
                return float((p - truth[:, r]).norm() / truth[:, r].norm())
            rows_out.append((call.info.step, rel(f[:, r]), rel(seen["fresh"][:, r].float())))
        return merged

    hooks._partial_step, TokenRun.merge = spy_step, spy_merge
    zm = load_model(args.model)
    case = zm.cases(1, 1)[0]
    settings = TokenSettings(method="clusters", kv_extrapolate=not args.no_extrapolation)
    model = adapter.apply_forecast_cache(zm.model, preset("balanced", zm.family), {"settings": settings, "mask": None})
    nodes.KSampler().sample(model, case.seed, 50, case.cfg, "euler", "simple", case.positive, case.negative,
                            case.latent, denoise=1.0)
    print(f"{args.model}, keys/values {'reused' if args.no_extrapolation else 'extrapolated'}: relative error at "
          "the computed tokens")
    print("step  forecast  fresh")
    for step, fe, fr in rows_out:
        print(f"{step:4d}  {fe:8.4f}  {fr:6.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
