"""Sample zoo models through ComfyUI's KSampler and save a PNG sheet to look at (sanity check).

One row per case: [reference, exact edit] for edit models, then the sample (video: every frame).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/zoo_sample.py --name flux_glyphs --prompts 4 --seeds 2
    OMP_NUM_THREADS=1 .venv/bin/python scripts/zoo_sample.py --all --out-dir /tmp/zoo_samples
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))  # appended: the pack's nodes/ must not shadow ComfyUI's nodes

from scripts.harness import comfy_env, zoo  # noqa: E402


def sample_sheet(name: str, n_prompts: int, n_seeds: int, steps: int, out: Path) -> Path:
    import comfy.utils
    import nodes
    from PIL import Image

    comfy.utils.PROGRESS_BAR_ENABLED = False
    m = zoo.ZooModel(name)
    rows, start = [], time.time()
    for case in m.cases(n_prompts, n_seeds):
        lat = nodes.KSampler().sample(m.model, case.seed, steps, case.cfg, "euler", "simple", case.positive,
                                      case.negative, case.latent, denoise=1.0)[0]["samples"]
        img = m.decode(lat)[0]
        tiles = list(img) if img.dim() == 4 else [img]
        if case.reference is not None:
            tiles = [case.reference[0], case.target[0]] + tiles
        rows.append(torch.cat([torch.nn.functional.pad(t.movedim(-1, 0), (1, 1, 1, 1), value=1.0).movedim(0, -1)
                               for t in tiles], 1))
        logging.info("%s seed %d: %r", name, case.seed, case.prompt)
    width = max(r.shape[1] for r in rows)
    sheet = torch.cat([torch.nn.functional.pad(r, (0, 0, 0, width - r.shape[1]), value=1.0) for r in rows], 0)
    out.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray((sheet.clamp(0, 1) * 255).round().byte().numpy())
    im.resize((im.width * 3, im.height * 3), Image.Resampling.NEAREST).save(out)
    logging.info("%s: %d cases, %d steps in %.1f s -> %s", name, len(rows), steps, time.time() - start, out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", action="append", default=[])
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/zoo_samples"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    comfy_env.bootstrap()
    torch.set_num_threads(1)
    for name in (zoo.names() if args.all else args.name):
        sample_sheet(name, args.prompts, args.seeds, args.steps, args.out_dir / f"{name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
