"""Train the micro FLUX (ComfyUI's own Flux class) on procedural shapes, so fidelity tests mean something.

Objective: rectified flow exactly as ComfyUI samples Flux: x_t = s*eps + (1-s)*x0, target eps - x0,
timestep = sigma, guidance 3.5. Conditioning comes from the random CLIP-L through ComfyUI's own
CLIPLoader/CLIPTextEncode, so typing a training prompt in a workflow gives the same conditioning.

    .venv/bin/python scripts/train_micro_flux.py --minutes 15
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))  # appended: the pack's nodes/ must not shadow ComfyUI's nodes

from scripts.harness import comfy_env, shapes_data  # noqa: E402
from scripts.harness.assets import ensure_assets  # noqa: E402
from scripts.harness.micro_models import build_micro_model, micro_config, save_micro_model  # noqa: E402
# encode_prompts and rel are re-exported: eval/bench scripts import them from here.
from scripts.harness.training import encode_prompts, lr_at, rel, smooth_sinusoid_inputs_  # noqa: E402,F401

log = logging.getLogger("train_micro_flux")

DEFAULT_OUT = REPO_ROOT / "tests" / "assets" / "micro_flux_trained.safetensors"
GUIDANCE = 3.5
DROPOUT = 0.1
FLUX_SHIFT = 1.15  # ModelSamplingFlux default: what the "simple"/"normal" schedules use


def sample_sigmas(gen: torch.Generator, n: int) -> torch.Tensor:
    """Noise levels weighted toward high sigma.

    60 %: the Flux-shifted uniform that ComfyUI's schedule visits (mean ~0.7); 40 %: logit-normal.
    """
    u = torch.rand(n, generator=gen).clamp(1e-4, 1 - 1e-4)
    shifted = math.exp(FLUX_SHIFT) / (math.exp(FLUX_SHIFT) + (1.0 / u - 1.0))
    logit_normal = torch.sigmoid(torch.randn(n, generator=gen))
    pick = torch.rand(n, generator=gen) < 0.6
    return torch.where(pick, shifted, logit_normal).clamp(1e-3, 1.0)


def smooth_time_embedding_(dm, k: int) -> list:
    """Drop the k highest timestep/guidance frequencies (see training.smooth_sinusoid_inputs_)."""
    return smooth_sinusoid_inputs_([dm.time_in.in_layer, dm.guidance_in.in_layer], k)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=15.0, help="wall-clock training budget")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ema", type=float, default=0.995, help="max EMA decay (0 disables EMA)")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: budget only)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--resume", type=Path, default=None,
                    help="continue from a saved model (its EMA weights; fresh optimiser, warm-up again)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (only faster with AVX-512 bf16 / AMX)")
    ap.add_argument("--checkpoint-minutes", type=float, default=3.0)
    ap.add_argument("--smooth-time", type=int, default=48,
                    help="zero the k highest-frequency timestep/guidance embedding inputs (see smooth_time_embedding_)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    base = comfy_env.bootstrap(pytorch_attention=True)  # SDPA: ~25 % faster training on CPU
    ensure_assets(base)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    prompts = list(shapes_data.PROMPTS)
    t0 = time.time()
    cond_all, pooled_all = encode_prompts(prompts + [""], cache=REPO_ROOT / ".cache" / "shapes_conditioning.pt")
    log.info("encoded %d prompts in %.1f s", len(prompts) + 1, time.time() - t0)
    empty = len(prompts)

    import comfy.latent_formats

    latent_format = comfy.latent_formats.Flux()
    config = micro_config("flux")
    prev: dict = {"steps": 0, "minutes": 0.0, "loss_curve": []}
    if args.resume is not None:
        from safetensors.torch import load_file

        from scripts.harness.micro_models import read_micro_metadata

        info = read_micro_metadata(args.resume)
        config = info["config"]
        dm = build_micro_model("flux", config=config, state_dict=load_file(str(args.resume))).model.diffusion_model
        summary = args.resume.with_suffix(".json")
        prev_curve = json.loads(summary.read_text()).get("loss_curve", []) if summary.is_file() else []
        prev = {"steps": info["training"]["steps"], "minutes": info["training"]["minutes"], "loss_curve": prev_curve}
        gen.manual_seed(args.seed + prev["steps"])  # fresh data, not a replay of the first run
        log.info("resuming from %s at step %d", args.resume, prev["steps"])
    else:
        dm = build_micro_model("flux", seed=args.seed, config=config).model.diffusion_model
    dm.train()
    time_hooks = smooth_time_embedding_(dm, args.smooth_time)  # noqa: F841  (hooks stay registered)
    params = [p for p in dm.parameters()]
    for p in params:
        p.requires_grad_(True)
    n_params = sum(p.numel() for p in params)
    log.info("micro flux: %.2f M params", n_params / 1e6)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema = copy.deepcopy(dm.state_dict()) if args.ema > 0 else None

    def save(step: int, final_loss: float, curve: list[dict], elapsed: float) -> None:
        sd = ema if ema is not None else dm.state_dict()
        step += prev["steps"]
        curve = prev["loss_curve"] + [{**c, "step": c["step"] + prev["steps"]} for c in curve]
        info = {"training": {"steps": step, "final_loss": final_loss, "minutes": prev["minutes"] + elapsed / 60,
                             "batch": args.batch, "lr": args.lr, "bf16_autocast": args.bf16, "seed": args.seed,
                             "ema": args.ema, "guidance": GUIDANCE, "dropout": DROPOUT,
                             "smooth_time_frequencies_dropped": args.smooth_time,
                             "vae": {"gain": shapes_data.VAE_GAIN, "kind": "pixel_unshuffle2+hadamard12to16"}},
                "prompts": prompts}
        save_micro_model("flux", args.out, state_dict=sd, extra_metadata=info, config=config)
        summary = {**info["training"], "n_params": n_params, "prompts": prompts, "loss_curve": curve,
                   "sigma_sampling": "60% flux-shifted uniform (shift 1.15), 40% logit-normal(0,1)",
                   "file": rel(args.out)}
        args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
        log.info("saved %s (step %d, loss %.4f)", args.out, step, final_loss)

    budget = args.minutes * 60.0
    start = time.time()
    last_ckpt = start
    step, run_loss, curve, window = 0, None, [], []
    # Flux blocks update img/txt in place; cloning saved tensors keeps autograd's versions valid.
    hooks = torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t)
    while True:
        elapsed = time.time() - start
        if elapsed >= budget or (args.max_steps and step >= args.max_steps):
            break
        images, idx = shapes_data.sample_batch(gen, args.batch)
        x0 = latent_format.process_in(shapes_data.encode(images))
        drop = torch.rand(args.batch, generator=gen) < DROPOUT
        idx = torch.where(drop, torch.full_like(idx, empty), idx)
        context, pooled = cond_all[idx], pooled_all[idx]
        sigma = sample_sigmas(gen, args.batch)
        eps = torch.randn(x0.shape, generator=gen)
        s = sigma.view(-1, 1, 1, 1)
        xt = s * eps + (1.0 - s) * x0
        guidance = torch.full((args.batch,), GUIDANCE)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, elapsed / budget, args.lr, args.warmup)
        # fp32: on CPUs without AVX-512 bf16, bf16 autocast is several times slower, not faster.
        with hooks, torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            out = dm(xt, sigma, context, y=pooled, guidance=guidance, transformer_options={})
        loss = F.mse_loss(out.float(), eps - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if ema is not None:
            d = min(args.ema, (1.0 + step) / (10.0 + step))
            with torch.no_grad():
                for k, v in dm.state_dict().items():
                    ema[k].mul_(d).add_(v.detach(), alpha=1.0 - d)
        lv = loss.item()
        window.append(lv)
        run_loss = lv if run_loss is None else 0.95 * run_loss + 0.05 * lv
        if step % 10 == 0:
            curve.append({"step": step, "loss": sum(window) / len(window), "t": round(time.time() - start, 1)})
            window = []
            log.info("step %d loss %.4f (smoothed %.4f) lr %.2e %.2f s/step", step, curve[-1]["loss"], run_loss,
                     opt.param_groups[0]["lr"], (time.time() - start) / step)
        if time.time() - last_ckpt > args.checkpoint_minutes * 60:
            save(step, run_loss, curve, time.time() - start)
            last_ckpt = time.time()
    save(step, run_loss if run_loss is not None else float("nan"), curve, time.time() - start)
    log.info("done: %d steps in %.1f min, smoothed loss %.4f", step, (time.time() - start) / 60,
             run_loss or float("nan"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
