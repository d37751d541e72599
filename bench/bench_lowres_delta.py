"""Low-resolution delta forecast (issue 19, resolution side): the sampled latent never changes size; between
full-resolution steps a cheap call of the same guided model on a downsampled latent supplies the CHANGE of the
output, and the forecast is

    D_hat(t) = D_full(f) + up( D_low(t) - D_low(f) )        (f: the newest full step)

D_low(f) is computed at every full step too (one extra low-res call). Rows are configs; each is run through
real ComfyUI (KSampler, euler 50 steps) and scored by PSNR of the decoded image against the uncached run of the
same seed, with the work counted by a forward hook on the first double block (image + text tokens of every
call: token-blocks) and the wall time measured in the same process against the uncached run.

This is a prototype written as a PREDICT_NOISE wrapper (like bench_zoo.output_reuse_every) so that the variants
can be compared before any product change; it uses the pack's OutputPredictor for the blend variants.

Config string (one row): "K<full every> f<factor> m<low every> <mode> <space> <noise> <upsample>", e.g.
"K10 f4 m1 delta den match bilinear":
  K: full-resolution step every K steps (from step 0);
  f: downsampling factor per spatial side (2: 1/4 of the image tokens, 4: 1/16);
  m: low-res call at the forecast steps f+m, f+2m, ... inside each gap (1: every step); a forecast step without
     a low-res call reuses the newest corrected slope (delta) or takes the blend's own forecast (blend, cand);
  mode: delta (D_full(f) + up(dD_low)), blend (the backtest blend's forecast + up(D_low(t) - the same blend run on
     the low-res series)), cand (the low-res delta as one more candidate of the backtest blend, backtested at
     every full step against the truth), reuse (no low-res call: output reuse, for checking);
  space: den (delta of the denoised estimate) or slope (delta of the velocity (x - D) / sigma);
  noise: match (pooled latent + sigma * sqrt(1 - 1/f^2) * xi, xi fixed per run), pool (plain average pooling), or
     own (match at full steps; at forecast steps the low-res model's own euler trajectory from its previous call),
     or oracle (the bound: "low-res" output = the pooled output of a FULL call; its measured work is not the
     row's nominal work, see nominal_token_ratio);
  upsample: bilinear or nearest.

Usage (one thread; tune on flux_1k_tune only, then the chosen row on validate):
  OMP_NUM_THREADS=1 .venv/bin/python bench/bench_lowres_delta.py --models flux_1k_tune --rows "K10 f4 m1 delta den match bilinear"
Writes bench/results/lowres_delta_<role>.json (rows merged by model and row name).
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
from bench.bench_forecast import psnr  # noqa: E402
from bench.bench_zoo import load_model, output_reuse_every, setup_comfy  # noqa: E402

log = logging.getLogger("bench")
STEPS = 50


@dataclass(frozen=True)
class LowResDelta:
    every: int = 10
    factor: int = 4
    low_every: int = 1
    mode: str = "delta"
    space: str = "den"
    noise: str = "match"
    upsample: str = "bilinear"

    @classmethod
    def parse(cls, text: str) -> "LowResDelta":
        p = text.split()
        return cls(int(p[0][1:]), int(p[1][1:]), int(p[2][1:]), p[3], p[4], p[5], p[6])


def _down(x, factor: int):
    import torch.nn.functional as F

    return F.avg_pool2d(x, factor) if x.dim() == 4 else F.avg_pool3d(x, (1, factor, factor))


def _up(x, size, mode: str):
    import torch.nn.functional as F

    if mode == "bilinear":
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return F.interpolate(x, size=size, mode="nearest")


def lowres_change(ref_low, now_low, sigma_ref: float, sigma_now: float, size, space: str, upsample: str):
    """up(now - ref) of two low-res calls (x_low, D_low): of the denoised estimate (space "den") or of the
    velocity (x_low - D_low) / sigma ("slope"), up-sampled to the full latent's `size`."""
    (xf, df), (xt, dt) = ref_low, now_low
    if space == "den":
        return _up(dt - df, size, upsample)
    return _up((xt - dt) / sigma_now - (xf - df) / sigma_ref, size, upsample)


def nominal_tokens(cfg: LowResDelta, steps: int, image_tokens: int, text_tokens: int) -> float:
    """Tokens (image + text) one sample of `steps` euler steps sends through a block under `cfg`: a full call
    at every K-th step (from 0), a low-res call beside it, and one at every m-th forecast step of each gap."""
    full = sum(1 for s in range(steps) if s % cfg.every == 0)
    low = 0 if cfg.mode == "reuse" else full + sum(
        1 for s in range(steps) if s % cfg.every and (s % cfg.every) % cfg.low_every == 0)
    return full * (image_tokens + text_tokens) + low * (image_tokens / cfg.factor ** 2 + text_tokens)


def lowres_delta(model, cfg: LowResDelta):
    """Clone of `model` whose PREDICT_NOISE wrapper implements the low-res delta forecast of `cfg`."""
    import comfy.patcher_extension
    import torch

    from accel_core.output.predictor import CANDIDATES, QUADRATIC, OutputPredictor, _combine

    class CandPredictor(OutputPredictor):
        """The backtest blend with the low-res delta as one more candidate (diff against the anchor slope)."""

        low_now = None  # (x_low, D_low) of the call being predicted (None: the candidate is 0 there)

        def _basis(self, history, sigma, x):
            names = self.candidates
            self.candidates = tuple(c for c in names if c != "lowres_delta")
            try:
                anchor, diffs = super()._basis(history, sigma, x)
            finally:
                self.candidates = names
            prev = getattr(history[-1], "low", None)
            if self.low_now is None or prev is None:
                diffs.append(torch.zeros_like(anchor))
            else:
                diffs.append(candidate(history[-1], prev, self.low_now, sigma, x) - anchor)
            return anchor, diffs

    state: dict = {}

    def outer(executor, *args, **kwargs):
        state.clear()
        sigmas = args[3] if len(args) > 3 else kwargs["sigmas"]
        state["sigmas"] = [float(s) for s in sigmas.flatten()]
        state["n_full"] = state["n_low"] = 0
        return executor(*args, **kwargs)

    def low_call(executor, x, timestep, model_options, seed, sigma, at_full=False):
        """(x_low, denoised_low) of the same guided call on the downsampled latent. noise "own": at a full step
        the pooled, noise-matched latent; at a forecast step the low-res model's own euler trajectory from its
        previous call (so that it moves as its own flow, not as the full model's)."""
        if cfg.noise == "own" and not at_full and "low_prev" in state:
            (x_prev, d_prev), s_prev = state["low_prev"]
            x_low = x_prev + (sigma - s_prev) * (x_prev - d_prev) / s_prev
            state["n_low"] += 1
            d_low = executor(x_low.to(x.dtype), timestep, model_options, seed).float()
            state["low_prev"] = ((x_low, d_low), sigma)
            return x_low, d_low
        if cfg.noise == "oracle":  # the bound of the idea: a low-res model that IS the pooled full one (full call)
            state["n_low"] += 1
            return _down(x.float(), cfg.factor), _down(executor(x, timestep, model_options, seed).float(), cfg.factor)
        x_low = _down(x.float(), cfg.factor)
        if cfg.noise in ("match", "own"):
            if "xi" not in state or state["xi"].shape != x_low.shape:
                g = torch.Generator().manual_seed(1234)
                state["xi"] = torch.randn(x_low.shape, generator=g).to(x_low.device)
            x_low = x_low + sigma * (1 - 1 / cfg.factor ** 2) ** 0.5 * state["xi"]
        state["n_low"] += 1
        d_low = executor(x_low.to(x.dtype), timestep, model_options, seed).float()
        state["low_prev"] = ((x_low, d_low), sigma)
        return x_low, d_low

    def change(ref_low, now_low, sigma_ref, sigma_now, size):
        return lowres_change(ref_low, now_low, sigma_ref, sigma_now, size, cfg.space, cfg.upsample)

    def candidate(point, prev_low, now_low, sigma, x):
        """Slope of D_full(f) + up(dD_low) at (sigma, x) from history point `point` (full, with .low)."""
        size = x.shape[-2:]
        if cfg.space == "den":
            return (x - (point.denoised + change(prev_low, now_low, point.sigma, sigma, size))) / sigma
        return point.slope + change(prev_low, now_low, point.sigma, sigma, size)

    def predict(executor, x, timestep, model_options, seed):
        sigma = float(timestep.flatten().max())
        sig = state["sigmas"]
        step = max(0, sum(1 for s in sig[:-1] if s >= sigma * (1 - 1e-6)) - 1)
        size = x.shape[-2:]
        full = step % cfg.every == 0 or "full" not in state or sigma <= 0
        if full:
            out = executor(x, timestep, model_options, seed)
            state["n_full"] += 1
            if sigma <= 0:
                return out
            low = low_call(executor, x, timestep, model_options, seed, sigma, True) if cfg.mode != "reuse" else None
            state["full"] = (sigma, x.float().clone(), out.float().clone(), low)
            state["full_step"] = step
            state["last_slope"] = (x.float() - out.float()) / sigma
            if cfg.mode in ("blend", "cand"):
                if "pred" not in state:
                    cands = CANDIDATES + QUADRATIC + (("lowres_delta",) if cfg.mode == "cand" else ())
                    state["pred"] = (CandPredictor if cfg.mode == "cand" else OutputPredictor)(candidates=cands)
                    state["pred_low"] = OutputPredictor(candidates=CANDIDATES + QUADRATIC)
                pred = state["pred"]
                if cfg.mode == "cand":
                    pred.low_now = low
                pred.add(sigma, x, out, step)
                pred.history[-1].low = low
                if cfg.mode == "blend":
                    state["pred_low"].add(sigma, low[0], low[1], step)
            return out
        f_sigma, xf, df, low_f = state["full"]
        since = step - state["full_step"]
        if cfg.mode == "reuse" or since % cfg.low_every != 0:
            if cfg.mode in ("blend", "cand"):  # no low-res call here: the blend's own forecast
                return state["pred"].predict_denoised(sigma, x, step).to(x.dtype)
            return (x.float() - sigma * state["last_slope"]).to(x.dtype)
        low = low_call(executor, x, timestep, model_options, seed, sigma)
        if cfg.mode == "delta":
            if cfg.space == "den":
                d_hat = df + change(low_f, low, f_sigma, sigma, size)
            else:
                slope = (xf - df) / f_sigma + change(low_f, low, f_sigma, sigma, size)
                d_hat = x.float() - sigma * slope
        elif cfg.mode == "blend":
            pred, pred_low = state["pred"], state["pred_low"]
            blend = pred.predict_denoised(sigma, x, step)
            # The same weights on the low-res series: the low-res model's view of the blend's error.
            anchor, diffs = pred_low._basis(pred_low.history, sigma, low[0])
            weights = pred.weights_for(pred._horizon(sigma, step))
            low_blend = low[0] - sigma * _combine(anchor, diffs, weights)
            if cfg.space == "den":
                d_hat = blend + _up(low[1] - low_blend, size, cfg.upsample)
            else:
                corr = _up((low[0] - low[1]) / sigma - (low[0] - low_blend) / sigma, size, cfg.upsample)
                d_hat = blend - sigma * corr
        else:  # cand
            pred = state["pred"]
            pred.low_now = low
            d_hat = pred.predict_denoised(sigma, x, step)
            pred.low_now = None
        state["last_slope"] = (x.float() - d_hat) / sigma
        return d_hat.to(x.dtype)

    m = model.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, "bench_lowres_delta", outer)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "bench_lowres_delta", predict)
    return m


class TokenCounter:
    """Token-blocks measured: image + text tokens entering the first double block, per call (every block sees
    the same tokens, so the ratio against the uncached run is the token-block ratio)."""

    def __init__(self, model):
        self.tokens = 0
        dm = model.model.diffusion_model
        self.handle = dm.double_blocks[0].register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        img = kwargs.get("img", args[0] if args else None)
        txt = kwargs.get("txt", args[1] if len(args) > 1 else None)
        self.tokens += img.shape[0] * img.shape[1] + txt.shape[0] * txt.shape[1]


def _reuse_at(reuse: list[tuple[float, float, float]], ratio: float) -> tuple[float, float] | None:
    """(mean, worst) PSNR of output reuse at `ratio`, linear between the measured every-k rows; None outside."""
    for (r0, m0, w0), (r1, m1, w1) in zip(reuse, reuse[1:]):
        if r0 <= ratio <= r1:
            a = (ratio - r0) / (r1 - r0) if r1 > r0 else 0.0
            return m0 + a * (m1 - m0), w0 + a * (w1 - w0)
    return None


def table(path: Path) -> str:
    """Markdown table of one result file, best worst-case margin over output reuse at the same work first."""
    rows = json.loads(path.read_text())["rows"]
    reuse = sorted((r["token_ratio"], r["psnr_mean"], r["psnr_min"]) for r in rows if r["row"].startswith("output reuse"))
    lines = ["| model | row | token-blocks | wall | PSNR mean / worst | output reuse at the same work | worst margin |",
             "|---|---|---|---|---|---|---|"]
    scored = []
    for r in rows:
        if "nominal_token_ratio" in r:  # oracle bound: compared at the work a real low-res model would have
            r = dict(r, token_ratio=r["nominal_token_ratio"], wall_ratio=float("nan"), row=r["row"] + " (bound)")
        same = _reuse_at(reuse, r["token_ratio"])
        margin = None if same is None else r["psnr_min"] - same[1]
        scored.append((r["row"].startswith("output reuse"), -(margin if margin is not None else -99), r, same, margin))
    for _, _, r, same, margin in sorted(scored, key=lambda t: (t[0], t[1])):
        wall = "n/a" if r["wall_ratio"] != r["wall_ratio"] else f"{r['wall_ratio']:.2f}x"
        lines.append(f"| {r['model']} | {r['row']} | {r['token_ratio']:.2f}x | {wall} | "
                     f"{r['psnr_mean']:.2f} / {r['psnr_min']:.2f} | "
                     f"{'-' if same is None else f'{same[0]:.2f} / {same[1]:.2f}'} | "
                     f"{'-' if margin is None else f'{margin:+.2f}'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="flux_1k_tune")
    parser.add_argument("--rows", default="", help="';'-separated config strings (see the module doc)")
    parser.add_argument("--reuse", default="", help="comma-separated k of output reuse every k rows")
    parser.add_argument("--forecast", default="", help="comma-separated intervals of Forecast Cache balanced rows")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="")
    parser.add_argument("--table", default="", help="print the markdown table of bench/results/lowres_delta_<this>.json "
                        "and exit")
    args = parser.parse_args()
    if args.table:
        print(table(REPO / "bench" / "results" / f"lowres_delta_{args.table}.json"))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    nodes, adapter = setup_comfy(args.threads)
    import torch

    from accel_core import preset

    for name in args.models.split(","):
        zm = load_model(name)
        out_path = REPO / "bench" / "results" / f"lowres_delta_{args.out or zm.role}.json"
        rows = json.loads(out_path.read_text())["rows"] if out_path.is_file() else []
        cases = zm.cases(args.prompts, args.seeds)

        def run(m):
            images, tokens, seconds = [], 0, 0.0
            for case in cases:
                counter = TokenCounter(m)
                start = time.perf_counter()
                out = nodes.KSampler().sample(m, case.seed, STEPS, case.cfg, "euler", "simple", case.positive,
                                              case.negative, case.latent, denoise=1.0)[0]["samples"]
                seconds += time.perf_counter() - start
                counter.handle.remove()
                tokens += counter.tokens
                images.append(zm.decode(out))
            return images, tokens, seconds

        base_images, base_tokens, base_seconds = run(zm.model)
        log.info("%s uncached: %.1f s for %d cases", name, base_seconds, len(cases))

        def record(row_name, result, setting):
            images, tokens, seconds = result
            scores = [psnr(a, b) for a, b in zip(images, base_images)]
            row = {"model": name, "role": zm.role, "row": row_name, "setting": setting,
                   "token_ratio": base_tokens / tokens, "wall_ratio": base_seconds / seconds,
                   "psnr_mean": statistics.fmean(scores), "psnr_min": min(scores),
                   "psnr_all": [round(s, 3) for s in scores], "seconds": seconds, "base_seconds": base_seconds}
            if " oracle " in setting:  # the work the row would have with a real low-res model
                lat = cases[0].latent["samples"].shape[-2:]
                img, txt = lat[0] * lat[1] // 4, cases[0].positive[0][0].shape[1]
                row["nominal_token_ratio"] = STEPS * (img + txt) / nominal_tokens(LowResDelta.parse(setting), STEPS,
                                                                                   img, txt)
                row["note"] = "oracle bound: the measured token_ratio / wall_ratio include full calls in place of low-res ones"
            rows[:] = [r for r in rows if (r["model"], r["row"]) != (name, row_name)]
            rows.append(row)
            log.info("%-16s %-44s tokens x%.2f wall x%.2f PSNR %6.2f (min %6.2f)", name, row_name, row["token_ratio"],
                     row["wall_ratio"], row["psnr_mean"], row["psnr_min"])
            out_path.parent.mkdir(parents=True, exist_ok=True)
            meta = {"device": f"CPU ({platform.machine()}), torch {torch.__version__}, {torch.get_num_threads()} "
                              "thread(s)",
                    "sampling": f"KSampler euler {STEPS} steps, simple scheduler, the model's own cfg",
                    "cases": f"{args.prompts} prompts x {args.seeds} seeds",
                    "work": "token_ratio: image + text tokens into the first double block, uncached / this row"}
            out_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))

        for k in [int(v) for v in args.reuse.split(",") if v]:
            record(f"output reuse every {k}", run(output_reuse_every(zm.model, k)), f"steps 0, {k}, ...")
        for k in [int(v) for v in args.forecast.split(",") if v]:
            config = preset("balanced", zm.family).replace(interval=k)
            record(f"Forecast Cache balanced 1/{k}", run(adapter.apply_forecast_cache(zm.model, config)),
                   config.tag())
        for text in [r.strip() for r in args.rows.split(";") if r.strip()]:
            record(text, run(lowres_delta(zm.model, LowResDelta.parse(text))), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
