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
                "done_token_blocks": self.done_token_blocks}
