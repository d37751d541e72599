"""Train a micro Qwen-Image or micro HunyuanVideo (ComfyUI's own classes) on procedural shapes.

Objective: rectified flow exactly as ComfyUI samples the family. x_t = s*eps + (1-s)*x0 in the
family's processed latent space (its own latent_format.process_in), target eps - x0, timestep =
the family's own model_sampling.timestep(sigma), noise levels drawn through its own shifted
schedule (plus a logit-normal share). Conditioning is CLIP-L through ComfyUI's CLIPLoader /
CLIPTextEncode (the random CLIP-L asset), so typing a training prompt in a workflow gives exactly
the training conditioning.

- qwen_image: 64x64 px shapes -> latent [B, 16, 1, 32, 32] (Wan21 latent format, Flux-type
  sampling, shift 1.15). Context = the 77x768 CLIP-L tokens (joint_attention_dim 768); the pooled
  vector is unused, as for the real model. True CFG: 15 % of samples see the empty-prompt
  embedding, so KSampler cfg 2.5-4 with an empty negative prompt works as classifier-free guidance.
- hunyuan_video: 4-frame 32x32 px clips of a shape moving at constant velocity -> latent
  [B, 16, 4, 16, 16] (HunyuanVideo latent format, discrete-flow sampling, shift 7). Context =
  CLIP-L tokens, y = CLIP-L pooled; guidance embedding fed a random value in [1, 8] so any
  FluxGuidance value (ComfyUI's default 6.0 included) is in distribution; 10 % empty-prompt dropout.

    .venv/bin/python scripts/train_micro.py --family qwen_image --minutes 25
    .venv/bin/python scripts/train_micro.py --family hunyuan_video --minutes 25 --resume tests/assets/micro_hunyuan_video_trained.safetensors
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))  # appended: the pack's nodes/ must not shadow ComfyUI's nodes

from scripts.harness import comfy_env, shapes_data, shapes_video  # noqa: E402
from scripts.harness.assets import ensure_assets  # noqa: E402
from scripts.harness.micro_models import build_micro_model, micro_config, save_micro_model  # noqa: E402
from scripts.harness.training import (CONDITIONING_CACHE, Ema, LossLog, encode_prompts, lr_at, rel,  # noqa: E402
                                      sample_sigmas, smooth_sinusoid_inputs_)

log = logging.getLogger("train_micro")

ASSETS = REPO_ROOT / "tests" / "assets"
HELDOUT_SEED = 12345  # fixed held-out set (never a training seed: training uses --seed + step offsets)
HELDOUT_N = 32


@dataclass(frozen=True)
class FamilySpec:
    """What differs between families: data, conditioning inputs, and the sinusoidal time layers."""

    family: str
    batch: int
    dropout: float
    make_x0: Callable[[torch.Generator, int], tuple[torch.Tensor, torch.Tensor]]  # raw latent, prompt idx
    uses_pooled: bool
    guidance_range: tuple[float, float] | None
    time_layers: Callable[[torch.nn.Module], list[torch.nn.Linear]]
    data: str

    @property
    def default_out(self) -> Path:
        return ASSETS / f"micro_{self.family}_trained.safetensors"


def _qwen_x0(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, idx = shapes_data.sample_batch(gen, n)
    return shapes_data.encode(images).unsqueeze(2), idx  # [n, 16, 1, 32, 32]: Qwen-Image's 5-D latent


def _hv_x0(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    clips, idx, _ = shapes_video.sample_clips(gen, n)
    return shapes_video.encode_clips(clips), idx  # [n, 16, 4, 16, 16]


FAMILIES: dict[str, FamilySpec] = {
    "qwen_image": FamilySpec(
        family="qwen_image", batch=12, dropout=0.15, make_x0=_qwen_x0, uses_pooled=False, guidance_range=None,
        time_layers=lambda dm: [dm.time_text_embed.timestep_embedder.linear_1],
        data=f"shapes_data 64x64 px, latent [B,16,1,32,32], {len(shapes_data.PROMPTS)} prompts"),
    "hunyuan_video": FamilySpec(
        family="hunyuan_video", batch=10, dropout=0.10, make_x0=_hv_x0, uses_pooled=True, guidance_range=(1.0, 8.0),
        time_layers=lambda dm: [dm.time_in.in_layer, dm.guidance_in.in_layer, dm.txt_in.t_embedder.in_layer],
        data=(f"shapes_video {shapes_video.FRAMES} frames of {shapes_video.FRAME_SIZE}x{shapes_video.FRAME_SIZE} px, "
              f"constant velocity {shapes_video.SPEED_RANGE} px/frame, latent [B,16,{shapes_video.FRAMES},16,16]")),
}


def flow_batch(spec: FamilySpec, model, gen: torch.Generator, n: int, cond_all: torch.Tensor,
               pooled_all: torch.Tensor, dropout: float) -> dict[str, torch.Tensor]:
    """One rectified-flow batch in the family's processed latent space."""
    raw, idx = spec.make_x0(gen, n)
    x0 = model.latent_format.process_in(raw)
    empty = cond_all.shape[0] - 1  # the empty prompt is the last row
    drop = torch.rand(n, generator=gen) < dropout
    idx = torch.where(drop, torch.full_like(idx, empty), idx)
    sigma = sample_sigmas(gen, n, model.model_sampling)
    eps = torch.randn(x0.shape, generator=gen)
    s = sigma.view(-1, *([1] * (x0.dim() - 1)))
    batch = {"xt": s * eps + (1.0 - s) * x0, "target": eps - x0, "sigma": sigma, "context": cond_all[idx],
             "pooled": pooled_all[idx]}
    if spec.guidance_range is not None:
        lo, hi = spec.guidance_range
        batch["guidance"] = lo + (hi - lo) * torch.rand(n, generator=gen)
    return batch


def predict(spec: FamilySpec, model, dm: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The diffusion model's velocity output, called with the inputs ComfyUI's BaseModel would pass."""
    kwargs = {}
    if spec.uses_pooled:
        kwargs["y"] = batch["pooled"]
    if "guidance" in batch:
        kwargs["guidance"] = batch["guidance"]
    t = model.model_sampling.timestep(batch["sigma"]).float()
    return dm(batch["xt"], t, batch["context"], transformer_options={}, **kwargs)


def heldout_set(spec: FamilySpec, model, cond_all: torch.Tensor, pooled_all: torch.Tensor) -> dict:
    """A fixed held-out batch (own seed, no prompt dropout) for an honest loss to compare against."""
    return flow_batch(spec, model, torch.Generator().manual_seed(HELDOUT_SEED), HELDOUT_N, cond_all, pooled_all,
                      dropout=0.0)


@torch.no_grad()
def heldout_loss(spec: FamilySpec, model, dm: torch.nn.Module, batch: dict) -> float:
    return float(F.mse_loss(predict(spec, model, dm, batch).float(), batch["target"]))


def load_conditioning() -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Training prompts + the empty prompt (last row), encoded through ComfyUI and cached."""
    prompts = list(shapes_data.PROMPTS)
    cond, pooled = encode_prompts(prompts + [""], cache=CONDITIONING_CACHE)
    return prompts, cond, pooled


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", required=True, choices=sorted(FAMILIES))
    ap.add_argument("--minutes", type=float, default=25.0, help="wall-clock training budget")
    ap.add_argument("--batch", type=int, default=0, help="batch size (0: the family default)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ema", type=float, default=0.995, help="max EMA decay (0 disables EMA)")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: budget only)")
    ap.add_argument("--out", type=Path, default=None, help="default tests/assets/micro_<family>_trained.safetensors")
    ap.add_argument("--resume", type=Path, default=None,
                    help="continue from a saved model (its EMA weights; fresh optimiser, warm-up again)")
    ap.add_argument("--checkpoint-minutes", type=float, default=3.0)
    ap.add_argument("--smooth-time", type=int, default=48,
                    help="zero the k highest-frequency timestep/guidance embedding inputs (see training.py)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = FAMILIES[args.family]
    out_path = args.out or spec.default_out
    batch_size = args.batch or spec.batch
    command = "scripts/train_micro.py " + " ".join(sys.argv[1:] if argv is None else argv)

    base = comfy_env.bootstrap(pytorch_attention=True)  # SDPA: ~25 % faster training on CPU
    ensure_assets(base)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    prompts, cond_all, pooled_all = load_conditioning()
    log.info("encoded %d prompts in %.1f s", len(prompts) + 1, time.time() - t0)

    config = micro_config(spec.family)
    prev: dict = {"steps": 0, "minutes": 0.0, "loss_curve": [], "commands": []}
    untrained = build_micro_model(spec.family, seed=args.seed, config=config).model
    held = heldout_set(spec, untrained, cond_all, pooled_all)
    untrained_loss = heldout_loss(spec, untrained, untrained.diffusion_model, held)
    if args.resume is not None:
        from safetensors.torch import load_file

        from scripts.harness.micro_models import read_micro_metadata

        info = read_micro_metadata(args.resume)
        config = info["config"]
        model = build_micro_model(spec.family, config=config, state_dict=load_file(str(args.resume))).model
        summary = args.resume.with_suffix(".json")
        old = json.loads(summary.read_text()) if summary.is_file() else {}
        prev = {"steps": info["training"]["steps"], "minutes": info["training"]["minutes"],
                "loss_curve": old.get("loss_curve", []), "commands": old.get("commands", [])}
        gen.manual_seed(args.seed + prev["steps"])  # fresh data, not a replay of the first run
        log.info("resuming from %s at step %d", args.resume, prev["steps"])
    else:
        model = untrained
    dm = model.diffusion_model
    dm.train()
    time_hooks = smooth_sinusoid_inputs_(spec.time_layers(dm), args.smooth_time)  # noqa: F841 (kept alive)
    params = list(dm.parameters())
    for p in params:
        p.requires_grad_(True)
    n_params = sum(p.numel() for p in params)
    log.info("micro %s: %.2f M params, held-out loss untrained %.4f", spec.family, n_params / 1e6, untrained_loss)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema = Ema(dm, args.ema) if args.ema > 0 else None
    losses = LossLog()

    def save(step: int, elapsed: float) -> None:
        sd = ema.state if ema is not None else dm.state_dict()
        # Held-out loss of exactly the weights being saved.
        eval_dm = build_micro_model(spec.family, config=config, state_dict=sd).model.diffusion_model
        held_loss = heldout_loss(spec, model, eval_dm, held)
        total = step + prev["steps"]
        curve = prev["loss_curve"] + [{**c, "step": c["step"] + prev["steps"]} for c in losses.curve]
        training = {"steps": total, "final_loss": losses.smoothed, "minutes": prev["minutes"] + elapsed / 60,
                    "heldout_loss": held_loss, "heldout_loss_untrained": untrained_loss,
                    "heldout": {"seed": HELDOUT_SEED, "n": HELDOUT_N, "dropout": 0.0},
                    "batch": batch_size, "lr": args.lr, "seed": args.seed, "ema": args.ema,
                    "dropout": spec.dropout, "guidance_range": spec.guidance_range,
                    "smooth_time_frequencies_dropped": args.smooth_time, "data": spec.data,
                    "vae": {"gain": shapes_data.VAE_GAIN, "kind": "pixel_unshuffle2+hadamard12to16, per frame"}}
        info = {"training": training, "prompts": prompts}
        save_micro_model(spec.family, out_path, state_dict=sd, extra_metadata=info, config=config)
        summary = {"family": spec.family, **training, "n_params": n_params, "config": config,
                   "commands": prev["commands"] + [command], "prompts": prompts, "loss_curve": curve,
                   "sigma_sampling": "60% the family's shifted schedule (model_sampling.sigma of uniform), "
                                     "40% logit-normal(0,1)",
                   "file": rel(out_path)}
        out_path.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
        log.info("saved %s (step %d, loss %.4f, held-out %.4f vs untrained %.4f)", out_path, total,
                 losses.smoothed or float("nan"), held_loss, untrained_loss)

    budget = args.minutes * 60.0
    start = last_ckpt = time.time()
    step = 0
    # The blocks update hidden states in place; cloning saved tensors keeps autograd's versions valid.
    hooks = torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t)
    while True:
        elapsed = time.time() - start
        if elapsed >= budget or (args.max_steps and step >= args.max_steps):
            break
        batch = flow_batch(spec, model, gen, batch_size, cond_all, pooled_all, spec.dropout)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, elapsed / budget, args.lr, args.warmup)
        with hooks:
            out = predict(spec, model, dm, batch)
        loss = F.mse_loss(out.float(), batch["target"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if ema is not None:
            ema.update(dm, step)
        losses.add(step, loss.item(), time.time() - start, opt.param_groups[0]["lr"])
        if time.time() - last_ckpt > args.checkpoint_minutes * 60:
            save(step, time.time() - start)
            last_ckpt = time.time()
    save(step, time.time() - start)
    log.info("done: %d steps in %.1f min, smoothed loss %.4f", step, (time.time() - start) / 60,
             losses.smoothed or float("nan"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
