"""The run summary line of Spec Edit on the tune edit model: one case, Forecast Cache `balanced` with
the node's default SpecEdit settings (what docs/SPECEDIT.md quotes).

Usage:
  .venv/bin/python bench/specedit_summary_line.py [--model kontext_edit_tune]
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))
from bench.bench_zoo import load_model, setup_comfy  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="kontext_edit_tune")
    args = parser.parse_args()
    nodes, adapter = setup_comfy(1)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("DiTAccel").setLevel(logging.INFO)  # the one summary line per run
    from accel_core import preset

    zm = load_model(args.model)
    case = zm.cases(1, 1)[0]
    tokens = nodes.NODE_CLASS_MAPPINGS["DiTAccelSpecEdit"]().execute(
        rings=0, lock="forecast", threshold="otsu", share=0.25, draft_steps=1, attention_context="cached")[0]
    model = adapter.apply_forecast_cache(zm.model, preset("balanced", zm.family), tokens)
    nodes.KSampler().sample(model, case.seed, 50, case.cfg, "euler", "simple", case.positive, case.negative,
                            case.latent, denoise=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
