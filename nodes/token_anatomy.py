"""What the token methods must know about a family's blocks, in one place, and the check that it
still holds for the ComfyUI at hand.

A partial call hands each host block a stream holding only the selected image tokens (no text) and
the matching rows of the position embedding, and completes attention with the other tokens' cached
keys / values. That relies on four facts about the host, all checked together on the real block:
1. the joint attention sequence is [txt, img] (Flux, Qwen-Image) or [img, txt] (HunyuanVideo's
   flipped double blocks and img+txt single stream), as the family's `ModelSpec` block groups say
   (`BlockGroup.token_order`; which families take token methods at all: `ModelSpec.token_methods`);
2. the position embedding `pe` has one row per joint token along dim 2 (flux.math.EmbedND layout);
3. attention goes through ComfyUI's `optimized_attention` with [B, H, L, D] tensors
   (`skip_reshape=True`), so `transformer_options["optimized_attention_override"]` sees it;
4. everything else in a block is per token (norms, modulation, MLP), so a subset of rows gives the
   same rows out.
Self-check: at the first full call of a run, the first block of each kind runs again on a few of its
own input tokens against the keys / values just captured; the rows must equal the full block's rows.
A ComfyUI update that breaks any fact fails the check: token work is switched off for the model with
one warning and sampling goes on with the temporal cache alone. Never a silently diverging forward.
"""
from __future__ import annotations

import logging
import weakref

import torch

log = logging.getLogger("DiTAccel")

PE_TOKEN_DIM = 2
CHECK_ROWS = 8
# Relative L2 error allowed between the subset and the full block rows (fp32 / half precision).
CHECK_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6}
HALF_TOLERANCE = 3e-2

# Block module -> (passed, error): one check per block object and process.
_CHECKED: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[bool, float]]" = weakref.WeakKeyDictionary()


def tolerance(dtype: torch.dtype) -> float:
    return CHECK_TOLERANCE.get(dtype, HALF_TOLERANCE)


def check_rows(n_target: int) -> torch.Tensor:
    """A few target rows spread over the image (first, last and between), for the self-check."""
    count = min(CHECK_ROWS, n_target)
    return torch.linspace(0, n_target - 1, count).round().long().unique()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def cached_result(block: torch.nn.Module | None):
    if block is None:
        return None
    return _CHECKED.get(block)


def remember(block: torch.nn.Module | None, passed: bool, error: float) -> None:
    if block is not None:
        _CHECKED[block] = (passed, error)
