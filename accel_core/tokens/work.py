"""Work of a run in token-block units and FLOPs, against the uncached run.

Token-blocks: tokens through each transformer block (queries). FLOPs per block and query token:
24 C^2 for the linear layers (QKV 3C^2 + out 1C^2 + MLP 8C^2 at ratio 4, x2 for multiply-add; FLUX's
single blocks fuse the same shapes) plus 4 C L for attention against L keys (QK^T and AV). A full
call runs every token against every key; a partial call runs M image tokens against all keys (cached
ones included), so its attention share shrinks linearly, not quadratically, with M. Forecast steps
cost 0 here; their elementwise work is far below one block.
"""
from __future__ import annotations

from dataclasses import dataclass


def block_flops(queries: int, keys: int, hidden: int) -> float:
    return queries * (24.0 * hidden * hidden + 4.0 * hidden * keys)


@dataclass
class TokenWork:
    """Accumulates done vs uncached work over a run's model calls (all CFG branches counted)."""

    full_token_blocks: float = 0.0
    done_token_blocks: float = 0.0
    full_flops: float = 0.0
    done_flops: float = 0.0
    partial_calls: int = 0
    counts: dict = None  # calls per kind: full, partial, shadow, forecast
    selected_share: float = 0.0  # mean share of the target image tokens a partial call computed
    selected_tokens: float = 0.0  # mean number of target image tokens a partial call computed

    def add_call(self, blocks: int, tokens: int, hidden: int, batch: int = 1, queries: int | None = None,
                 keys: int | None = None, extra: bool = False) -> None:
        """One model call of `tokens` (image + text) tokens over `blocks` blocks. queries / keys given:
        a partial call (queries computed, against keys); None: computed in full. queries = 0: forecast.
        extra: a call the uncached run does not make (a measuring call): its work only counts as done."""
        full = block_flops(tokens, tokens, hidden) * blocks * batch
        if not extra:
            self.full_token_blocks += tokens * blocks * batch
            self.full_flops += full
        if queries is None:
            self.done_token_blocks += tokens * blocks * batch
            self.done_flops += full
        elif queries > 0:
            self.done_token_blocks += queries * blocks * batch
            self.done_flops += block_flops(queries, keys if keys is not None else tokens, hidden) * blocks * batch
            self.partial_calls += 1

    @property
    def token_ratio(self) -> float:
        """x fewer token-blocks than the uncached run."""
        return self.full_token_blocks / self.done_token_blocks if self.done_token_blocks else 1.0

    @property
    def flops_ratio(self) -> float:
        return self.full_flops / self.done_flops if self.done_flops else 1.0

    def as_dict(self) -> dict:
        return {"token_ratio": self.token_ratio, "flops_ratio": self.flops_ratio,
                "partial_calls": self.partial_calls, "full_token_blocks": self.full_token_blocks,
                "done_token_blocks": self.done_token_blocks, "counts": dict(self.counts or {}),
                "selected_share": self.selected_share, "selected_tokens": self.selected_tokens}


# FLUX.1-dev at 1024 x 1024: 4096 image + 512 text tokens, hidden 3072, 19 + 38 blocks.
FLUX_SIZE = {"image": 4096, "txt": 512, "hidden": 3072, "blocks": 57}


def projected_ratio(counts: dict, queries: float, size: dict = FLUX_SIZE, drop: bool = False) -> float:
    """FLOPs ratio of the same schedule at another model size: `counts` of calls per kind (as in
    TokenWork.counts) and `queries` image tokens per partial call at that size."""
    tokens = size["image"] + size["txt"]
    full = block_flops(tokens, tokens, size["hidden"])
    keys = queries + 1 + size["txt"] if drop else tokens
    partial = block_flops(queries + 1, keys, size["hidden"])
    n_full = counts.get("full", 0)
    uncached = n_full + counts.get("partial", 0) + counts.get("forecast", 0)
    done = n_full * full + (counts.get("partial", 0) + counts.get("shadow", 0)) * partial
    return uncached * full / done if done else 1.0
