"""Wall time of token-method rows against the uncached run, interleaved so that the machine's drift cancels.

bench_tokens.py times the uncached run once, then every row after it: on this shared VM the same row
came out between 3.3x and 5.7x from one process to the next (and CPU time drifted as much). Here each
repeat times the uncached run and then every row on the same case, back to back; a row's ratio is the
median over repeats of (uncached seconds / row seconds) of that repeat. Fidelity is bench_tokens.py's
job: this prints time only (and the token-block ratio as a check that the row is the intended one).

Usage:
  OMP_NUM_THREADS=1 .venv/bin/python bench/bench_token_time.py --models flux_4k_validate --repeats 3 --sdpa
Writes bench/results/token_time_<out>.json (rows merged by model and row name).
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
from bench.bench_tokens import edit_mask  # noqa: E402
from bench.bench_zoo import SCENARIOS, load_model, output_reuse_every, sample_cases, setup_comfy  # noqa: E402

log = logging.getLogger("bench")


def row_settings(TokenSettings, edit: bool = False):
    """(row name, forecast interval, token settings or None, output reuse) for each timed row. Edit models:
    Edit Region (with the ground-truth mask, as bench_tokens.py) and Spec Edit rows instead of clusters."""
    if edit:
        rows = [(f"forecast 1/{k}", k, None, False) for k in (4, 5)]
        rows += [(f"output reuse every {k}", k, None, True) for k in (4, 5)]
        for k in (4, 5):
            rows += [(f"region r2 + forecast 1/{k}", k, TokenSettings(method="region", rings=2), False),
                     (f"region r2 late + forecast 1/{k}", k,
                      TokenSettings(method="region", rings=2, partial_from=0.5), False),
                     (f"region r1 late + forecast 1/{k}", k,
                      TokenSettings(method="region", rings=1, partial_from=0.5), False),
                     (f"specedit r0 + forecast 1/{k}", k,
                      TokenSettings(method="specedit", rings=0, ring_decay=1.0), False),
                     (f"specedit r0 late + forecast 1/{k}", k,
                      TokenSettings(method="specedit", rings=0, ring_decay=1.0, partial_from=0.5), False)]
        return rows
    prop = dict(method="clusters", propagate=True)
    rows = []
    for k in (4, 5, 7):
        rows.append((f"forecast 1/{k}", k, None, False))
    for k in (5, 7):
        rows.append((f"output reuse every {k}", k, None, True))
        rows.append((f"clusters K16 x2 propagation + forecast 1/{k}", k, TokenSettings(**prop), False))
        rows.append((f"clusters K16 x2 propagation late scaled + forecast 1/{k}", k,
                     TokenSettings(**prop, partial_from=0.5, trust_horizon="scaled"), False))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True)
    parser.add_argument("--scenario", default="euler50")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="scale4k")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sdpa", action="store_true", help="torch SDPA attention (as on a GPU)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    nodes, adapter = setup_comfy(args.threads, sdpa=args.sdpa)
    from accel_core import preset
    from accel_core.tokens.settings import TokenSettings

    out_path = REPO / "bench" / "results" / f"token_time_{args.out}.json"
    rows = json.loads(out_path.read_text())["rows"] if out_path.is_file() else []
    scen = SCENARIOS[args.scenario]
    for name in args.models.split(","):
        zm = load_model(name)
        cfg = scen.cfg if scen.cfg is not None else zm.default_cfg
        case = zm.cases(1, 1, cfg=cfg)[0]
        plan = row_settings(TokenSettings, zm.edit)
        mask = edit_mask(case) if zm.edit else None
        ratios = {row: [] for row, *_ in plan}
        token_ratio = {}

        def timed(model):
            r = sample_cases(nodes, adapter, zm, model, [case], scen.steps, scen.sampler, cfg=cfg)
            return r.seconds, r.stats

        for rep in range(args.repeats):
            base, _ = timed(zm.model)
            for row, k, settings, reuse in plan:
                config = preset("balanced", zm.family).replace(interval=k)
                if reuse:
                    model = output_reuse_every(zm.model, k)
                elif settings is None:
                    model = adapter.apply_forecast_cache(zm.model, config)
                else:
                    region = settings.method == "region"
                    model = adapter.apply_forecast_cache(zm.model, config,
                                                         {"settings": settings, "mask": mask if region else None})
                seconds, stats = timed(model)
                ratios[row].append(base / seconds)
                work = stats[-1].get("token_work") if stats else None
                token_ratio[row] = work["token_ratio"] if work else float(k if not reuse else k)
            log.info("%s repeat %d: uncached %.1f s", name, rep + 1, base)
        for row, *_ in plan:
            med = statistics.median(ratios[row])
            rows[:] = [r for r in rows if (r["model"], r["row"]) != (name, row)]
            rows.append({"model": name, "role": zm.role, "row": row, "wall_ratio_median": med,
                         "wall_ratios": [round(x, 3) for x in ratios[row]], "token_ratio_check": token_ratio[row]})
            log.info("%-18s %-54s wall x%.2f (repeats %s)", name, row, med,
                     " ".join(f"{x:.2f}" for x in ratios[row]))
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps({"meta": {"scenario": vars(scen), "repeats": args.repeats,
                                                 "attention": "sdpa" if args.sdpa else "comfy default",
                                                 "method": "interleaved: uncached then every row, per repeat"},
                                        "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
