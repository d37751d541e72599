"""Work of a progressive-resolution run against the uncached full-resolution run.

Token-blocks: image + text tokens through every block, per model evaluation. FLOPs per block:
tokens * (24 C^2 + 4 C L) with L = keys = tokens (tokens/work.block_flops), so attention is
quadratic in tokens: a 2x-down stage has 1/4 of the image tokens and about 1/16 of their attention.
Text tokens do not shrink, which is why the ratios are computed with them (they cap the gain).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..tokens.work import FLUX_SIZE, block_flops


@dataclass(frozen=True)
class StageWork:
    token_ratio: float  # x fewer token-blocks than the full-resolution run
    flops_ratio: float  # x fewer FLOPs
    attention_ratio: float  # x fewer attention FLOPs (the quadratic part only)


def stage_work(stage_steps: list[tuple[int, int]], image_tokens: int, txt_tokens: int, hidden: int,
               evals_per_step: float = 1.0) -> StageWork:
    """`stage_steps`: (factor, steps) per stage; image_tokens at full resolution (factor 1).
    Blocks and batch cancel in the ratios."""
    full_steps = sum(n for _, n in stage_steps)
    n_full = image_tokens + txt_tokens
    full_tb = full_steps * n_full
    full_fl = full_steps * block_flops(n_full, n_full, hidden)
    full_att = full_steps * 4.0 * hidden * n_full * n_full
    done_tb = done_fl = done_att = 0.0
    for factor, steps in stage_steps:
        n = image_tokens / (factor * factor) + txt_tokens
        done_tb += steps * n
        done_fl += steps * block_flops(n, n, hidden)
        done_att += steps * 4.0 * hidden * n * n
    return StageWork(full_tb / done_tb, full_fl / done_fl, full_att / done_att)


def flux_size_work(stage_steps: list[tuple[int, int]]) -> StageWork:
    """The same plan at FLUX.1-dev size (1024 x 1024: 4096 image + 512 text tokens, hidden 3072)."""
    return stage_work(stage_steps, FLUX_SIZE["image"], FLUX_SIZE["txt"], FLUX_SIZE["hidden"])
