"""Train one model of the zoo (scripts/harness/zoo_entries.py) in ComfyUI's own classes, on procedural data.

Generalises scripts/train_micro.py and scripts/train_micro_flux.py to any family, config, data mix,
resolution list and conditioning kind:

- objective: rectified flow in the family's processed latent space (its latent_format.process_in),
  x_t = s*eps + (1-s)*x0, target eps - x0, timestep = the family's model_sampling.timestep(sigma),
  noise levels through the family's own shifted schedule (60 %) plus logit-normal (40 %);
- multi-resolution: each batch has one [H, W] drawn from the entry's list;
- conditioning: CLIP-L through ComfyUI's CLIPLoader / CLIPTextEncode (cached per prompt), prompt
  dropout to the empty prompt (true-CFG models rely on it); guidance-distilled models get a random
  guidance value in the entry's range; edit models get the reference image's latent as
  ``ref_latents`` exactly as ComfyUI's ReferenceLatent + model_base pass it (processed latent,
  appended image tokens); the reference is kept when the prompt is dropped, so the negative of true
  CFG is "empty prompt + reference";
- HunyuanVideo 1.5: 32-channel latents (vae32), input = [noisy latent, 32 zero image-cond channels,
  zero mask], as model_base.HunyuanVideo15.concat_cond builds it for text-to-video.

Writes tests/assets/zoo/<name>.safetensors (bf16, config + training info in the metadata) and a JSON
sidecar, then refreshes tests/assets/zoo/manifest.json. One torch thread (set OMP_NUM_THREADS=1 too).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/train_zoo.py --name flux_glyphs
    .venv/bin/python scripts/train_zoo.py --manifest      # only rewrite the manifest
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))  # appended: the pack's nodes/ must not shadow ComfyUI's nodes

from scripts.harness import comfy_env  # noqa: E402
from scripts.harness import recipes  # noqa: E402
from scripts.harness.zoo import MANIFEST, file_sha256  # noqa: E402
from scripts.harness.zoo_entries import ZOO, zoo_entry  # noqa: E402

log = logging.getLogger("train_zoo")

HELDOUT_SEED = 12345  # never a training seed (training draws from --seed)
HELDOUT_PER_RES = 8


# ----------------------------------------------------------------------------------------------- data
class EntryData:
    """Training samples of one zoo entry: raw latents (family layout), optional reference latents, prompts."""

    def __init__(self, entry: dict):
        from scripts.harness import data_mix, edit_pairs, moving_data, shapes_data, vae32

        self.entry = entry
        self.family = entry["family"]
        data = entry["data"]
        self.frames = int(entry.get("frames", 1))
        self.kind = "image"
        if "edit_pairs" in data:
            self.kind, self.prompts = "edit", list(edit_pairs.PROMPTS)
        elif "moving_shapes_glyphs" in data:
            self.kind, self.prompts = "video", list(moving_data.PROMPTS)
        elif "shapes_video" in data:  # micro_hunyuan_video's data (held-out evaluation only)
            self.kind, self.prompts = "shapes_video", list(shapes_data.PROMPTS)
        else:
            self.mix = data_mix.ImageMix(data)
            self.prompts = list(self.mix.prompts)
        self._edit, self._moving, self._vae32, self._shapes = edit_pairs, moving_data, vae32, shapes_data
        self.recipe = recipes.recipe(entry.get("recipe"))

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        lat = self._shapes.encode(images)
        return lat.unsqueeze(2) if self.family == "qwen_image" else lat  # Qwen-Image latents are 5-D

    def sample(self, gen: torch.Generator, n: int, res: list[int]) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                           torch.Tensor]:
        """Raw latents in this entry's recipe (its latent gain and shift), reference latents, prompt indices."""
        raw, ref, idx = self._sample(gen, n, res)
        to = lambda t: None if t is None else recipes.to_recipe_latent(self.recipe, t)  # noqa: E731
        return to(raw), to(ref), idx

    def _sample(self, gen: torch.Generator, n: int, res: list[int]) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                            torch.Tensor]:
        h, w = res
        if self.kind == "edit":
            ref, out, idx = self._edit.sample_batch(gen, n, h, w)
            return self.encode_images(out), self.encode_images(ref), idx
        if self.kind == "video":
            from scripts.harness import shapes_video

            clips, idx = self._moving.sample_clips(gen, n, self.frames, h, w)
            vae = self._vae32 if self.entry["vae"] == "vae32" else shapes_video  # 32- or 16-channel latents
            return vae.encode_clips(clips), None, idx
        if self.kind == "shapes_video":
            from scripts.harness import shapes_video

            clips, idx, _ = shapes_video.sample_clips(gen, n, frames=self.frames, size=h)
            return shapes_video.encode_clips(clips), None, idx
        images, idx = self.mix.sample(gen, n, h, w)
        return self.encode_images(images), None, idx


# ------------------------------------------------------------------------------------------- family
def time_layers(family: str, dm: torch.nn.Module) -> list[torch.nn.Linear]:
    """The layers that read sinusoidal timestep / guidance embeddings (see smooth_sinusoid_inputs_)."""
    if family == "flux":
        return [dm.time_in.in_layer] + ([dm.guidance_in.in_layer] if dm.params.guidance_embed else [])
    if family == "qwen_image":
        return [dm.time_text_embed.timestep_embedder.linear_1]
    layers = [dm.time_in.in_layer, dm.txt_in.t_embedder.in_layer]
    if dm.params.guidance_embed:
        layers.append(dm.guidance_in.in_layer)
    return layers


def predict(family: str, model, dm: torch.nn.Module, batch: dict) -> torch.Tensor:
    """The velocity, called with the inputs ComfyUI's BaseModel._apply_model passes for this family."""
    t = model.model_sampling.timestep(batch["sigma"]).float()
    xt, ctx = batch["xt"], batch["context"]
    ref = [batch["ref"]] if batch.get("ref") is not None else None
    if family == "flux":
        return dm(xt, t, ctx, y=batch["pooled"], guidance=batch.get("guidance"), ref_latents=ref,
                  transformer_options={})
    if family == "qwen_image":
        return dm(xt, t, ctx, ref_latents=ref, transformer_options={})
    if family == "hunyuan_video15":  # [noise 32, zero image cond 32, zero mask 1] = concat_cond for T2V
        extra = dm.img_in.proj.weight.shape[1] - xt.shape[1]
        xt = torch.cat([xt, xt.new_zeros(xt.shape[0], extra, *xt.shape[2:])], dim=1)
        return dm(xt, t, ctx, transformer_options={})
    return dm(xt, t, ctx, y=batch["pooled"], guidance=batch.get("guidance"), transformer_options={})


def flow_batch(entry: dict, data: EntryData, model, gen: torch.Generator, n: int, res: list[int],
               cond_all: torch.Tensor, pooled_all: torch.Tensor, dropout: float) -> dict:
    raw, ref_raw, idx = data.sample(gen, n, res)
    x0 = model.latent_format.process_in(raw)
    empty = cond_all.shape[0] - 1  # the empty prompt is the last row
    drop = torch.rand(n, generator=gen) < dropout
    idx = torch.where(drop, torch.full_like(idx, empty), idx)
    sigma = recipes.sample_sigmas(data.recipe, gen, n, model.model_sampling)
    eps = torch.randn(x0.shape, generator=gen)
    s = sigma.view(-1, *([1] * (x0.dim() - 1)))
    batch = {"xt": s * eps + (1.0 - s) * x0, "target": eps - x0, "sigma": sigma, "context": cond_all[idx],
             "pooled": pooled_all[idx], "weight": recipes.loss_weights(data.recipe, sigma)}
    if ref_raw is not None:
        batch["ref"] = model.latent_format.process_in(ref_raw)
    if entry["cfg"]["kind"] == "guidance":
        lo, hi = entry["cfg"]["range"]
        batch["guidance"] = lo + (hi - lo) * torch.rand(n, generator=gen)
    return batch


@torch.no_grad()
def heldout_loss(entry: dict, model, dm: torch.nn.Module, batches: list[dict]) -> float:
    losses = [float(F.mse_loss(predict(entry["family"], model, dm, b).float(), b["target"])) for b in batches]
    return sum(losses) / len(losses)


# -------------------------------------------------------------------------------------------- train
def train(name: str, minutes: float | None, max_steps: int, command: str, checkpoint_minutes: float,
          overrides: dict | None = None, out_file: Path | None = None) -> int:
    from scripts.harness.assets import ensure_assets
    from scripts.harness.micro_models import build_micro_model, save_micro_model
    from scripts.harness.training import Ema, LossLog, lr_at, rel, smooth_sinusoid_inputs_

    entry = zoo_entry(name)
    for key, value in (overrides or {}).items():  # experiments: --set '{"lr": 2e-3, "config": {...}}'
        entry[key] = {**entry[key], **value} if isinstance(value, dict) and isinstance(entry.get(key), dict) else value
    if entry["trainer"] != "train_zoo":
        raise SystemExit(f"{name} is trained by {entry['trainer']}, not this script")
    family, config = entry["family"], entry["config"]
    minutes = float(entry["minutes"] if minutes is None else minutes)
    out_path = Path(out_file) if out_file is not None else REPO_ROOT / entry["file"]
    seed, batch_size, lr, dropout = entry["seed"], entry["batch"], entry["lr"], entry["dropout"]

    base = comfy_env.bootstrap(pytorch_attention=True)  # SDPA: ~25 % faster training on CPU
    ensure_assets(base)
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data = EntryData(entry)
    t0 = time.time()
    cond_all, pooled_all = recipes.encode_text(data.recipe, data.prompts + [""], entry.get("text_tokens"))
    log.info("%s: %d prompts encoded in %.1f s", name, len(data.prompts) + 1, time.time() - t0)

    init_sd = None
    if entry.get("init"):  # fine-tune: start from another zoo model of the same config (issue 19: token scale)
        from safetensors.torch import load_file

        init_path = REPO_ROOT / entry["init"]
        init_sd = {k: v.float() for k, v in load_file(str(init_path)).items()}
        log.info("%s: starting from %s", name, entry["init"])
    model = build_micro_model(family, seed=seed, config=config, state_dict=init_sd).model
    dm = model.diffusion_model
    held_gen = torch.Generator().manual_seed(HELDOUT_SEED)
    held = [flow_batch(entry, data, model, held_gen, HELDOUT_PER_RES, res, cond_all, pooled_all, 0.0)
            for res in entry["resolutions"]]
    untrained_loss = heldout_loss(entry, model, dm, held)
    dm.train()
    smooth = data.recipe.smooth_time
    hooks_keep = smooth_sinusoid_inputs_(time_layers(family, dm), smooth) if smooth else []  # noqa: F841 (kept)
    params = list(dm.parameters())
    for p in params:
        p.requires_grad_(True)
    n_params = sum(p.numel() for p in params)
    log.info("%s (%s): %.2f M params, held-out loss untrained %.4f, %.1f min", name, family, n_params / 1e6,
             untrained_loss, minutes)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema = Ema(dm, data.recipe.ema)  # decay 0: the saved weights are the raw ones
    losses = LossLog(every=10)
    res_counts = {f"{h}x{w}": 0 for h, w in entry["resolutions"]}

    def save(step: int, elapsed: float) -> dict:
        eval_dm = build_micro_model(family, config=config, state_dict=ema.state).model.diffusion_model
        held_loss = heldout_loss(entry, model, eval_dm, held)
        training = {"steps": step, "minutes": elapsed / 60, "seconds_per_step": elapsed / max(1, step),
                    "final_loss": losses.smoothed, "heldout_loss": held_loss,
                    "heldout_loss_untrained": untrained_loss,
                    "heldout": {"seed": HELDOUT_SEED, "per_resolution": HELDOUT_PER_RES, "dropout": 0.0},
                    "batch": batch_size, "lr": lr, "seed": seed, "ema": data.recipe.ema, "dropout": dropout,
                    "recipe": {"name": data.recipe.name, **data.recipe.summary()},
                    "cfg": entry["cfg"], "data": entry["data"], "resolutions": entry["resolutions"],
                    "frames": entry.get("frames"), "edit": entry["edit"], "vae": entry["vae"],
                    "resolution_batches": res_counts, "smooth_time_frequencies_dropped": smooth,
                    "threads": torch.get_num_threads(), "init": entry.get("init")}
        save_micro_model(family, out_path, state_dict=ema.state, config=config, dtype=torch.bfloat16,
                         extra_metadata={"training": training, "prompts": data.prompts, "zoo_name": name})
        summary = {"name": name, "family": family, "role": entry["role"], **training, "n_params": n_params,
                   "config": config, "command": command, "n_prompts": len(data.prompts), "prompts": data.prompts,
                   "loss_curve": losses.curve, "file": rel(out_path),
                   "sigma_sampling": data.recipe.sigma_sampler}
        out_path.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
        log.info("saved %s (step %d, loss %.4f, held-out %.4f vs untrained %.4f)", rel(out_path), step,
                 losses.smoothed or float("nan"), held_loss, untrained_loss)
        return summary

    budget = minutes * 60.0
    start = last_ckpt = time.time()
    step = 0
    # The blocks update hidden states in place; cloning saved tensors keeps autograd's versions valid.
    saved_hooks = torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t)
    resolutions = entry["resolutions"]
    while True:
        elapsed = time.time() - start
        if elapsed >= budget or (max_steps and step >= max_steps):
            break
        res = resolutions[int(torch.randint(len(resolutions), (), generator=gen))]
        res_counts[f"{res[0]}x{res[1]}"] += 1
        batch = flow_batch(entry, data, model, gen, batch_size, res, cond_all, pooled_all, dropout)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, elapsed / budget, lr, 30)
        with saved_hooks:
            out = predict(family, model, dm, batch)
        per_sample = (out.float() - batch["target"]).square().flatten(1).mean(1)
        loss = (per_sample * batch["weight"]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        ema.update(dm, step)
        losses.add(step, loss.item(), time.time() - start, opt.param_groups[0]["lr"])
        if time.time() - last_ckpt > checkpoint_minutes * 60:
            save(step, time.time() - start)
            last_ckpt = time.time()
    summary = save(step, time.time() - start)
    log.info("done: %s, %d steps in %.1f min, held-out %.4f vs untrained %.4f", name, step,
             summary["minutes"], summary["heldout_loss"], untrained_loss)
    if out_file is None:
        write_manifest()
    return 0


# ------------------------------------------------------------------------------------- evaluation
HELDOUT_EVAL = REPO_ROOT / "tests" / "assets" / "zoo" / "heldout_eval.json"


def evaluate(names: list[str]) -> dict:
    """Held-out flow loss of the saved models under one protocol (this script's: seed HELDOUT_SEED,
    HELDOUT_PER_RES samples per training resolution, no prompt dropout), against a random init of
    the same config; recorded in tests/assets/zoo/heldout_eval.json and the manifest."""
    from scripts.harness.assets import ensure_assets
    from scripts.harness.micro_models import build_micro_model, load_micro_model, read_micro_metadata

    ensure_assets(comfy_env.bootstrap(pytorch_attention=True))
    torch.set_num_threads(1)
    results = json.loads(HELDOUT_EVAL.read_text()) if HELDOUT_EVAL.is_file() else {}
    for name in names:
        entry = zoo_entry(name)
        path = REPO_ROOT / entry["file"]
        meta = read_micro_metadata(path)
        entry["config"] = meta["config"]
        data = EntryData(entry)
        if meta.get("prompts") and list(meta["prompts"]) != data.prompts:
            raise SystemExit(f"{name}: the file's training prompts differ from the data's prompts")
        cond_all, pooled_all = recipes.encode_text(data.recipe, data.prompts + [""], entry.get("text_tokens"))
        model = load_micro_model(path).model
        gen = torch.Generator().manual_seed(HELDOUT_SEED)
        held = [flow_batch(entry, data, model, gen, HELDOUT_PER_RES, res, cond_all, pooled_all, 0.0)
                for res in entry["resolutions"]]
        trained = heldout_loss(entry, model, model.diffusion_model, held)
        seed = entry.get("seed", 0)
        untrained_model = build_micro_model(entry["family"], seed=seed, config=meta["config"]).model
        untrained = heldout_loss(entry, untrained_model, untrained_model.diffusion_model, held)
        results[name] = {"heldout_loss": trained, "heldout_loss_untrained": untrained, "seed": HELDOUT_SEED,
                         "per_resolution": HELDOUT_PER_RES, "resolutions": entry["resolutions"],
                         "sha256": file_sha256(path)}
        log.info("%s: held-out %.4f vs untrained %.4f (zoo protocol)", name, trained, untrained)
    HELDOUT_EVAL.write_text(json.dumps(results, indent=1) + "\n")
    return results


# ----------------------------------------------------------------------------------------- manifest
def _config_summary(family: str, cfg: dict) -> dict:
    if family == "qwen_image":
        heads, head_dim = cfg["num_attention_heads"], cfg["attention_head_dim"]
        return {"hidden": heads * head_dim, "depth": cfg["num_layers"], "double": cfg["num_layers"], "single": 0,
                "heads": heads, "head_dim": head_dim, "patch": cfg["patch_size"], "in_channels": cfg["in_channels"],
                "out_channels": cfg["out_channels"], "context_dim": cfg["joint_attention_dim"],
                "rope_axes": cfg["axes_dims_rope"]}
    return {"hidden": cfg["hidden_size"], "depth": cfg["depth"] + cfg["depth_single_blocks"],
            "double": cfg["depth"], "single": cfg["depth_single_blocks"], "heads": cfg["num_heads"],
            "head_dim": cfg["hidden_size"] // cfg["num_heads"], "patch": cfg["patch_size"],
            "in_channels": cfg["in_channels"], "out_channels": cfg["out_channels"],
            "context_dim": cfg["context_in_dim"], "rope_axes": cfg["axes_dim"],
            "guidance_embed": cfg["guidance_embed"]}


def manifest_entry(name: str) -> dict | None:
    """The manifest record of one zoo model, or None when its file does not exist yet."""
    from scripts.harness.micro_models import read_micro_metadata

    entry = zoo_entry(name)
    path = REPO_ROOT / entry["file"]
    if not path.is_file():
        return None
    meta = read_micro_metadata(path)
    sidecar = path.with_suffix(".json")
    side = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    training = meta.get("training", {})
    cfg = meta["config"]
    if entry["trainer"] == "train_zoo":
        command = f"OMP_NUM_THREADS=1 .venv/bin/python scripts/train_zoo.py --name {name}"
    else:
        command = entry["retrain"]
    return {
        "name": name, "family": meta["family"], "role": entry["role"], "file": entry["file"],
        "sha256": file_sha256(path), "bytes": path.stat().st_size,
        "dtype": str(next(iter(_tensor_dtypes(path)))),
        "config_summary": _config_summary(meta["family"], cfg), "config": cfg,
        "data": entry["data"], "n_prompts": len(meta.get("prompts", [])), "resolutions": entry["resolutions"],
        "default_resolution": entry["default_resolution"], "frames": entry.get("frames"),
        "cfg": entry["cfg"], "edit": entry["edit"], "vae": entry["vae"], "text_tokens": entry.get("text_tokens"),
        "recipe": {"name": recipes.recipe(entry.get("recipe")).name, **recipes.recipe(entry.get("recipe")).summary()},
        "training": {"minutes": round(float(training.get("minutes", side.get("minutes", 0.0))), 2),
                     "steps": int(training.get("steps", side.get("steps", 0))),
                     "batch": training.get("batch"),
                     "heldout_loss": training.get("heldout_loss", side.get("heldout_loss")),
                     "heldout_loss_untrained": training.get("heldout_loss_untrained",
                                                            side.get("heldout_loss_untrained")),
                     "trainer": entry["trainer"] if entry["trainer"] != "train_zoo" else "scripts/train_zoo.py",
                     "command": command, **({"init": entry["init"]} if entry.get("init") else {})},
        "heldout_eval": _heldout_eval(name, path),
    }


def _heldout_eval(name: str, path: Path) -> dict | None:
    """This script's held-out figures for the file (same protocol for every model), if measured."""
    if not HELDOUT_EVAL.is_file():
        return None
    rec = json.loads(HELDOUT_EVAL.read_text()).get(name)
    if rec is None or rec.get("sha256") != file_sha256(path):
        return None
    return {"loss": rec["heldout_loss"], "untrained": rec["heldout_loss_untrained"],
            "command": f"OMP_NUM_THREADS=1 .venv/bin/python scripts/train_zoo.py --evaluate {name}"}


def _tensor_dtypes(path: Path) -> set:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {f.get_slice(k).get_dtype() for k in list(f.keys())[:4]}


def write_manifest() -> Path:
    records = [r for r in (manifest_entry(n) for n in ZOO) if r is not None]
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    doc = {"about": "DiT Accel model zoo: tune models choose defaults, validate models report them. "
                    "Written by scripts/train_zoo.py from scripts/harness/zoo_entries.py; see docs/ZOO.md.",
           "models": records}
    tmp = MANIFEST.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(MANIFEST)
    log.info("wrote %s (%d models)", MANIFEST, len(records))
    return MANIFEST


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", choices=sorted(n for n, e in ZOO.items() if e["trainer"] == "train_zoo"))
    ap.add_argument("--minutes", type=float, default=None, help="override the entry's wall-clock budget")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: budget only)")
    ap.add_argument("--checkpoint-minutes", type=float, default=4.0)
    ap.add_argument("--set", type=json.loads, default=None, metavar="JSON",
                    help="experiment: override entry fields (dicts are merged), e.g. '{\"lr\": 0.002}'")
    ap.add_argument("--out", type=Path, default=None, help="experiment: write here, leave the manifest alone")
    ap.add_argument("--manifest", action="store_true", help="only rewrite tests/assets/zoo/manifest.json")
    ap.add_argument("--evaluate", nargs="+", metavar="NAME", choices=sorted(ZOO),
                    help="held-out loss of saved models under one protocol (then rewrites the manifest)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    if args.evaluate:
        evaluate(args.evaluate)
        write_manifest()
        return 0
    if args.manifest:
        comfy_env.bootstrap()
        write_manifest()
        return 0
    if not args.name:
        ap.error("--name or --manifest is required")
    command = "scripts/train_zoo.py " + " ".join(sys.argv[1:] if argv is None else argv)
    return train(args.name, args.minutes, args.max_steps, command, args.checkpoint_minutes, args.set, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
