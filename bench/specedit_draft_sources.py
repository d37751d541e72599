"""Which draft finds the edit best: SpecEdit's draft sources compared on the zoo's edit models.

For every case, the draft's discrepancy to the reference latent marks tokens (Otsu, then one ring,
as the node's defaults), scored against the edit_pairs ground truth (tokens touching the pixels
where the exact edit differs from the reference by > 0.1):
- "x0 at full step i": the guided denoised estimate of the uncached run's step i (steps 0-2 are the
  output cache's warm-up: computed anyway, no extra work);
- "x0 union steps 0-2": the union of those three marks;
- "half-res draft, n steps": n euler steps at half the latent size (reference area-downsampled, the
  noise the pooled full field as Fresco does), its last denoised estimate up-sampled (bilinear).
  Extra work: n calls at a quarter of the tokens (text included in the count).
Reports recall (ground-truth tokens computed), precision (computed tokens in the ground truth) and the
computed share of the image, mean over cases.

Usage:
  .venv/bin/python bench/specedit_draft_sources.py --models kontext_edit_tune --prompts 4 --seeds 2
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
from bench.bench_tokens import edit_mask  # noqa: E402
from bench.bench_zoo import load_model, setup_comfy  # noqa: E402

log = logging.getLogger("bench")


def record_denoised(model, store: list):
    """A clone of `model` whose PREDICT_NOISE outputs (guided denoised estimates) are appended to store."""
    import comfy.patcher_extension

    def predict(executor, *args, **kwargs):
        out = executor(*args, **kwargs)
        store.append(out.detach().float().clone())
        return out

    m = model.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "bench_draft", predict)
    return m


def scores(marked_rows: set, truth: set, n: int) -> tuple[float, float, float]:
    recall = len(marked_rows & truth) / len(truth) if truth else float("nan")
    precision = len(marked_rows & truth) / len(marked_rows) if marked_rows else float("nan")
    return recall, precision, len(marked_rows) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--half-steps", default="2,4")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    nodes, _ = setup_comfy(1)
    import torch
    import torch.nn.functional as F

    from accel_core.tokens.edit_discovery import discrepancy, mark_batch
    from accel_core.tokens.patches import mask_to_tokens, patch_dims, patchify
    from accel_core.tokens.selection import region_rings

    for name in args.models.split(","):
        zm = load_model(name)
        cases = zm.cases(args.prompts, args.seeds)
        patch = (2, 2)
        results: dict[str, list] = {}
        for case in cases:
            ref_raw = case.positive[0][1]["reference_latents"][0]
            ref = zm.model.model.process_latent_in(ref_raw).float()
            latent = case.latent["samples"]
            grid = patch_dims(latent.shape, patch)
            n = int(torch.tensor(grid).prod())
            truth = set((mask_to_tokens(edit_mask(case), grid) > 0).nonzero().flatten().tolist())

            def computed(draft):
                marked = mark_batch(discrepancy(patchify(draft, patch), patchify(ref, patch)))
                return marked, set((region_rings(marked.float(), grid, 1) >= 0).nonzero().flatten().tolist())

            store: list = []
            nodes.KSampler().sample(record_denoised(zm.model, store), case.seed, args.steps, case.cfg, "euler",
                                    "simple", case.positive, case.negative, case.latent, denoise=1.0)
            union = torch.zeros(n, dtype=torch.bool)
            for i in range(3):
                marked, rows = computed(store[i])
                union |= marked
                results.setdefault(f"x0 at full step {i}", []).append(scores(rows, truth, n))
            rows = set((region_rings(union.float(), grid, 1) >= 0).nonzero().flatten().tolist())
            results.setdefault("x0 union steps 0-2", []).append(scores(rows, truth, n))
            for steps in [int(v) for v in args.half_steps.split(",") if v]:
                half_store: list = []
                small = latent[..., ::2, ::2].clone()
                noise_full = torch.randn(latent.shape, generator=torch.Generator().manual_seed(case.seed))
                small_ref = pool2(ref_raw)
                pos = [[case.positive[0][0], {**case.positive[0][1], "reference_latents": [small_ref]}]]
                neg = [[case.negative[0][0], {**case.negative[0][1], "reference_latents": [small_ref]}]]
                # Fresco's field: the coarse noise is 2 x the pooled fine noise (unit variance).
                pooled = 2.0 * pool2(noise_full)
                sampler = comfy_sampler("euler")
                model = record_denoised(zm.model, half_store)
                sigmas = model.get_model_object("model_sampling")
                import comfy.samplers

                sig = comfy.samplers.calculate_sigmas(sigmas, "simple", args.steps)[:steps + 1]
                guider = comfy.samplers.CFGGuider(model)
                guider.set_conds(pos, neg)
                guider.set_cfg(case.cfg)
                guider.sample(pooled, small, sampler, sig, seed=case.seed)
                draft_small = half_store[-1]
                size = tuple(latent.shape[-2:])
                if draft_small.dim() == 5:
                    up = F.interpolate(draft_small[:, :, 0], size=size, mode="bilinear", align_corners=False)[:, :, None]
                else:
                    up = F.interpolate(draft_small, size=size, mode="bilinear", align_corners=False)
                _, rows = computed(up)
                results.setdefault(f"half-res draft, {steps} steps", []).append(scores(rows, truth, n))
        for source, vals in results.items():
            r, p, c = (statistics.fmean(v[i] for v in vals if v[i] == v[i]) for i in range(3))
            log.info("%-18s %-28s recall %.2f precision %.2f computed share %.2f (%d cases)", name, source, r, p, c,
                     len(vals))
    return 0


def pool2(t):
    """2 x 2 average pooling over the last two dims of a 4-D or 5-D latent."""
    import torch.nn.functional as F

    pooled = F.avg_pool2d(t.flatten(0, -3)[:, None], 2)[:, 0]
    return pooled.reshape(t.shape[:-2] + pooled.shape[-2:])


def comfy_sampler(name: str):
    import comfy.samplers

    return comfy.samplers.sampler_object(name)


if __name__ == "__main__":
    sys.exit(main())
