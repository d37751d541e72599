"""Token methods on the model zoo: work in token-block units and FLOPs, and PSNR against the uncached
run, beside the temporal cache alone and output reuse at the same work.

Rows per model (50 euler steps by default, the model's own guidance):
- "forecast 1/k": the output cache alone at budget 1/k (work = evaluations);
- "<method> + forecast 1/k": the same full steps, forecast steps made partial by the token method;
- "output reuse every k": the naive baseline (bench_zoo.output_reuse_every).
Region rows (edit models): the mask is the region where the reference and the exact edit differ
(dilated by one token), as a user would paint it; PSNR is also reported inside / outside it.

Usage:
  .venv/bin/python bench/bench_tokens.py --models flux_glyphs --rows clusters --intervals 5,7
Writes bench/results/tokens_<out>.json (rows merged by model, scenario and row name).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
from bench.bench_forecast import psnr  # noqa: E402
from bench.bench_zoo import SCENARIOS, load_model, output_reuse_every, sample_cases, setup_comfy  # noqa: E402

log = logging.getLogger("bench")


def masked_psnr(a, b, mask, inside: bool) -> float:
    """PSNR over the pixels inside (or outside) a [H, W] mask, images [B, H, W, 3] in [0, 1]."""
    import torch

    sel = (mask > 0.5) if inside else (mask <= 0.5)
    if not bool(sel.any()):
        return float("nan")
    diff = (a.float() - b.float())[:, sel]
    mse = float(diff.pow(2).mean())
    return 100.0 if mse <= 1e-10 else float(10 * torch.log10(torch.tensor(1.0 / mse)))


def edit_mask(case, dilate_px: int = 0):
    import torch
    import torch.nn.functional as F

    diff = (case.target.float() - case.reference.float()).abs().amax(dim=-1)[0]  # [H, W]
    mask = (diff > 0.1).float()[None, None]
    if dilate_px:
        mask = F.max_pool2d(mask, 2 * dilate_px + 1, stride=1, padding=dilate_px)
    return mask[0, 0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True)
    parser.add_argument("--scenario", default="euler50")
    parser.add_argument("--intervals", default="5,7")
    parser.add_argument("--curve", default="3,4", help="extra budgets 1/k for the forecast alone (same-work curve)")
    parser.add_argument("--rows", default="clusters", help="clusters, dynamics, region, baselines, variants, horizon, shadow")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", default="tokens")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sdpa", action="store_true", help="torch SDPA attention (as on a GPU), not ComfyUI's CPU default")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    nodes, adapter = setup_comfy(args.threads, sdpa=args.sdpa)
    from accel_core import preset
    from accel_core.tokens.settings import TokenSettings

    out_path = REPO / "bench" / "results" / f"tokens_{args.out}.json"
    rows = json.loads(out_path.read_text())["rows"] if out_path.is_file() else []
    groups = set(args.rows.split(","))
    scen = SCENARIOS[args.scenario]
    for name in args.models.split(","):
        zm = load_model(name)
        cfg = scen.cfg if scen.cfg is not None else zm.default_cfg
        cases = zm.cases(args.prompts, args.seeds, cfg=cfg)
        masks = [edit_mask(c) for c in cases] if zm.edit else [None] * len(cases)

        def run(make_model):
            r = sample_cases(nodes, adapter, zm, [make_model(mask) for mask in masks], cases, scen.steps,
                             scen.sampler, cfg=cfg)
            return r.images, r.evaluations, (r.seconds, r.cpu_seconds), r.stats

        base_images, base_evals, base_seconds, _ = run(lambda mask: zm.model)

        def record(row_name, result, uses_mask=False):
            images, evals, seconds, stats = result
            scores = [psnr(a, b) for a, b in zip(images, base_images)]
            row = {"model": name, "role": zm.role, "scenario": args.scenario, "row": row_name,
                   "evaluations": evals, "evaluation_ratio": base_evals / evals,
                   "wall_ratio": base_seconds[0] / seconds[0], "cpu_ratio": base_seconds[1] / seconds[1],
                   "psnr_mean": statistics.fmean(scores),
                   "psnr_min": min(scores), "psnr_all": [round(s, 3) for s in scores]}
            works = [s.get("token_work") for s in stats if s.get("token_work")]
            row["token_ratio"] = statistics.fmean(w["token_ratio"] for w in works) if works else row["evaluation_ratio"]
            row["flops_ratio"] = statistics.fmean(w["flops_ratio"] for w in works) if works else row["evaluation_ratio"]
            if works and works[0].get("counts"):
                from accel_core.tokens.work import FLUX_SIZE, projected_ratio

                def projected(st):
                    # clusters compute K x k tokens at any size; the other policies a share of the image
                    w = st["token_work"]
                    queries = (w["selected_tokens"] if st.get("token_method") == "clusters"
                               else w["selected_share"] * FLUX_SIZE["image"])
                    return projected_ratio(w["counts"], queries, drop="drop" in row_name)
                row["flux_projected_ratio"] = statistics.fmean(projected(st) for st in stats if st.get("token_work"))
            gains = [s.get("token_gain") for s in stats if s.get("token_gain") is not None]
            if gains:
                row["gain_mean"] = statistics.fmean(gains)
            notes = {s.get("token_note") for s in stats if s.get("token_note")}
            if notes:
                row["token_note"] = sorted(notes)
            if zm.edit and masks[0] is not None:
                row["psnr_inside"] = statistics.fmean(masked_psnr(a, b, m, True) for a, b, m in
                                                      zip(images, base_images, masks))
                row["psnr_outside"] = statistics.fmean(masked_psnr(a, b, m, False) for a, b, m in
                                                       zip(images, base_images, masks))
                row["mask_share"] = statistics.fmean(float((m > 0.5).float().mean()) for m in masks)
            rows[:] = [r for r in rows if (r["model"], r["scenario"], r["row"]) != (name, args.scenario, row_name)]
            rows.append(row)
            extra = (f" in {row['psnr_inside']:.2f} out {row['psnr_outside']:.2f}" if "psnr_inside" in row else "")
            extra += f" FLUX-size x{row['flux_projected_ratio']:.2f}" if "flux_projected_ratio" in row else ""
            log.info("%-20s %-44s evals x%.2f tokens x%.2f flops x%.2f wall x%.2f cpu x%.2f PSNR %6.2f (min %6.2f)%s%s", name,
                     row_name, row["evaluation_ratio"], row["token_ratio"], row["flops_ratio"], row["wall_ratio"],
                     row["cpu_ratio"], row["psnr_mean"],
                     row["psnr_min"], extra, f" gain {row['gain_mean']:.2f}" if "gain_mean" in row else "")

        for k in [int(v) for v in args.curve.split(",") if v]:
            config = preset("balanced", zm.family).replace(interval=k)
            record(f"forecast 1/{k}", run(lambda mask, c=config: adapter.apply_forecast_cache(zm.model, c)))
        for k in [int(v) for v in args.intervals.split(",") if v]:
            config = preset("balanced", zm.family).replace(interval=k)
            plain = lambda mask, c=config: adapter.apply_forecast_cache(zm.model, c)  # noqa: E731
            record(f"forecast 1/{k}", run(plain))
            if "baselines" in groups:
                record(f"output reuse every {k}", run(lambda mask, k=k: output_reuse_every(zm.model, k)))
            variants = token_variants(groups, TokenSettings, zm.edit)
            for row_name, settings, uses_mask in variants:
                def make(mask, s=settings, c=config, um=uses_mask):
                    return adapter.apply_forecast_cache(zm.model, c, {"settings": s, "mask": mask if um else None})
                record(f"{row_name} + forecast 1/{k}", run(make), uses_mask)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps({"meta": {"scenario": vars(scen), "cases": f"{args.prompts}x{args.seeds}",
                                                 "attention": "sdpa" if args.sdpa else "comfy default"},
                                        "rows": rows}, indent=1))
    return 0


def token_variants(groups, TokenSettings, edit: bool):
    out = []
    if "clusters" in groups:
        out.append(("clusters K16 x2", TokenSettings(method="clusters"), False))
        out.append(("clusters K16 x2 propagation", TokenSettings(method="clusters", propagate=True), False))
    if "variants" in groups:
        out += [("clusters K16 x4", TokenSettings(method="clusters", per_cluster=4), False),
                ("clusters K32 x2", TokenSettings(method="clusters", clusters=32), False),
                ("clusters K16 x2 drop", TokenSettings(method="clusters", kv="drop"), False),
                ("clusters K16 x2 no extrapolation", TokenSettings(method="clusters", kv_extrapolate=False), False),
                ("dynamics 0.25", TokenSettings(method="dynamics", keep=0.25), False),
                ("dynamics 0.25 drop", TokenSettings(method="dynamics", keep=0.25, kv="drop"), False)]
    if "horizon" in groups:  # issue 19 round 5: partial steps late in the gap; trust and gain scaled mid-gap
        prop = dict(method="clusters", propagate=True)
        out += [("clusters K16 x2 propagation late", TokenSettings(**prop, partial_from=0.5), False),
                ("clusters K16 x2 propagation scaled", TokenSettings(**prop, trust_horizon="scaled"), False),
                ("clusters K16 x2 propagation late scaled",
                 TokenSettings(**prop, partial_from=0.5, trust_horizon="scaled"), False)]
    if "shadow" in groups:  # the shadow-call rule: measure trust at every full step (the rule before issue 19)
        out.append(("clusters K16 x2 shadow always", TokenSettings(method="clusters", shadow="always"), False))
    if "dynamics" in groups:
        out += [("dynamics 0.1", TokenSettings(method="dynamics", keep=0.1), False),
                ("dynamics 0.1 drop", TokenSettings(method="dynamics", keep=0.1, kv="drop"), False)]
    if "region" in groups and edit:
        out += [("region r2", TokenSettings(method="region", rings=2), True)]
    if "region_late" in groups and edit:  # round 5: the edit region computed in the later half of each gap
        out += [("region r2 late", TokenSettings(method="region", rings=2, partial_from=0.5), True),
                ("region r1 late", TokenSettings(method="region", rings=1, partial_from=0.5), True)]
    if "region_last" in groups and edit:  # ... and in the last quarter only (the gap's last step at 1/4 and 1/5)
        out += [("region r2 last", TokenSettings(method="region", rings=2, partial_from=0.75), True),
                ("region r1 last", TokenSettings(method="region", rings=1, partial_from=0.75), True)]
    return out


if __name__ == "__main__":
    sys.exit(main())
