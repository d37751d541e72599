"""Rank-consistent decisions under torch.distributed (sequence-parallel hosts: raylight, xDiT). Host-free.

Under sequence parallelism every rank holds a shard of the image tokens. Any decision the pack takes
from data (compute or forecast, accept a verified forecast, which CFG layout, which tokens to refresh)
would be taken per shard and could differ between ranks; one rank then runs the model while the other
does not, and the model's own collectives pair up wrongly (corruption) or wait forever (a hang). So
every data-dependent decision goes through one call here, which is:
- a no-op when torch.distributed is unavailable, not initialised, disabled, or the group has one rank
  (single GPU: no cost, nothing imported from torch.distributed is used);
- otherwise ONE small collective per decision (steps without a decision make none).

How quantities combine (documented once, used everywhere):
- A sum over tokens (a squared norm, a dot product, a Gram matrix, a count) is all-reduced with SUM:
  the result is the single-process value (up to summation order).
- A ratio of sums (a relative error ||f - t|| / ||t||, a least-squares gain <p, t> / <p, p>, a share of
  tokens) is formed AFTER summing numerator and denominator over ranks, never as a mean of per-rank
  ratios (which weights shards wrongly and is not what one GPU computes): `relative_error`, `agree_sum`.
- A max over tokens or samples: MAX. A flag: `agree_any` (MAX) or `agree_all` (MIN).
- A selection of tokens (top-k, ClusCa's fresh tokens) is made over the gathered per-token scores
  (`gather_rows`, `topk_rows`): one GPU's selection, each rank keeping its rows.
- A choice computed from tokens that cannot be summed (a re-seeded empty k-means cluster, a subspace
  basis) is taken by rank 0 and broadcast (`agree_tensor`): consistent on every rank, but it may differ
  from one GPU.

Sharded or replicated: every summed quantity enters a decision only as a ratio of two sums (errors,
gains, trust, centroids = sums / counts, shares), so a host whose tensors at that level are the same on
every rank (raylight's sampler-level latents: it shards only inside the model) gets the same decision
as one GPU too (the factor world_size cancels); `gather_rows` recognises a replicated tensor.

The process group is WORLD unless a host passes its own (raylight / xDiT: the sequence-parallel group;
ranks of one sequence-parallel group hold shards of the same images, other groups hold other images):
`set_group(group)` or `with using_group(group):`. `set_enabled(False)`, or the environment variable
DITACCEL_AGREE=off, turns agreement off: for data-parallel jobs, where each rank samples its own image
and nothing needs agreeing (tests also use it to show that decisions then diverge).
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

_state: dict = {"group": None, "enabled": os.environ.get("DITACCEL_AGREE", "on").lower() != "off", "collectives": 0}


def _dist():
    import torch.distributed as dist

    return dist


def set_group(group) -> None:
    """The process group decisions are agreed in (None = WORLD)."""
    _state["group"] = group


def set_enabled(enabled: bool) -> None:
    """Agreement on (default) or off (every call returns the local value, no collective)."""
    _state["enabled"] = bool(enabled)


@contextlib.contextmanager
def using_group(group) -> Iterator[None]:
    previous = _state["group"]
    _state["group"] = group
    try:
        yield
    finally:
        _state["group"] = previous


@contextlib.contextmanager
def agreement(enabled: bool) -> Iterator[None]:
    """Agreement on or off inside the block (e.g. a single-process reference run in a distributed job)."""
    previous = _state["enabled"]
    _state["enabled"] = bool(enabled)
    try:
        yield
    finally:
        _state["enabled"] = previous


def active() -> bool:
    """True when decisions must be agreed: distributed, initialised, enabled, more than one rank."""
    if not _state["enabled"] or not torch.distributed.is_available():
        return False
    dist = _dist()
    return dist.is_initialized() and dist.get_world_size(_state["group"]) > 1


def collectives() -> int:
    """Collectives issued by this module so far (tests check there is one per decision)."""
    return _state["collectives"]


def rank() -> int:
    return _dist().get_rank(_state["group"]) if active() else 0


def world_size() -> int:
    return _dist().get_world_size(_state["group"]) if active() else 1


def _device() -> torch.device:
    """Where the collective's tensor lives: NCCL needs the current CUDA device, gloo the CPU."""
    backend = str(_dist().get_backend(_state["group"])).lower()
    if backend == "nccl" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(flat: torch.Tensor, op) -> torch.Tensor:
    dist = _dist()
    buffer = flat.to(_device())
    dist.all_reduce(buffer, op=op, group=_state["group"])
    _state["collectives"] += 1
    return buffer


def agree_sum(*values):
    """Sum each value over ranks in ONE collective. Values: floats or tensors (any shapes and devices);
    returns the same kinds (one value, or a tuple). Math in float64 so sums of squares keep precision."""
    if not active():
        return values[0] if len(values) == 1 else values
    parts = [v.detach().reshape(-1).to("cpu", torch.float64) if isinstance(v, torch.Tensor)
             else torch.tensor([float(v)], dtype=torch.float64) for v in values]
    total = _all_reduce(torch.cat(parts), _dist().ReduceOp.SUM).cpu()
    out, offset = [], 0
    for value, part in zip(values, parts):
        chunk = total[offset:offset + part.numel()]
        offset += part.numel()
        if isinstance(value, torch.Tensor):
            out.append(chunk.reshape(value.shape).to(device=value.device, dtype=value.dtype))
        else:
            out.append(float(chunk[0]))
    return out[0] if len(out) == 1 else tuple(out)


def _reduce_scalar(value, op):
    if not active():
        return value
    local = torch.as_tensor(value, dtype=torch.float64).detach().reshape(-1).cpu()
    result = _all_reduce(local, op).cpu()
    if isinstance(value, torch.Tensor):
        return result.reshape(value.shape).to(device=value.device, dtype=value.dtype)
    return float(result[0])


def agree_max(value):
    """Largest value over ranks (float, or a tensor element-wise)."""
    return _reduce_scalar(value, _dist().ReduceOp.MAX) if active() else value


def agree_min(value):
    return _reduce_scalar(value, _dist().ReduceOp.MIN) if active() else value


def agree_mean(value):
    """Mean over ranks of a per-rank value that is itself an average of equally weighted shards. For a
    quantity summed over tokens use agree_sum (shards of unequal size must not be averaged)."""
    if not active():
        return value
    total = agree_sum(value)
    return total / world_size()


def agree_any(flag: bool) -> bool:
    """True on every rank when it is True on any rank."""
    return bool(agree_max(1.0 if flag else 0.0)) if active() else bool(flag)


def agree_all(flag: bool) -> bool:
    """True on every rank only when it is True on all ranks."""
    return bool(agree_min(1.0 if flag else 0.0)) if active() else bool(flag)


def agree_tensor(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank `src`'s tensor on every rank (same shape and dtype everywhere): for choices that cannot be
    summed, e.g. k-means seeds or a subspace basis."""
    if not active():
        return tensor
    dist = _dist()
    buffer = tensor.detach().contiguous().to(_device())
    dist.broadcast(buffer, src=dist.get_global_rank(_state["group"], src) if _state["group"] is not None else src,
                   group=_state["group"])
    _state["collectives"] += 1
    return buffer.to(tensor.device)


def relative_error(forecast: torch.Tensor, truth: torch.Tensor, local=None) -> torch.Tensor:
    """Per-sample ||forecast - truth|| / ||truth|| (fp32 [B]) over the tokens of every rank: numerator
    and denominator are summed over ranks before the ratio. `local(forecast, truth)` computes it when
    there is nothing to agree (e.g. the pack's fused kernel)."""
    if not active():
        if local is not None:
            return local(forecast, truth)
        diff = (forecast.float() - truth.float()).flatten(1)
        return diff.norm(dim=1) / truth.float().flatten(1).norm(dim=1).clamp_min(1e-12)
    diff = (forecast.float() - truth.float()).flatten(1)
    num, den = agree_sum(diff.double().square().sum(1), truth.double().flatten(1).square().sum(1))
    return (num / den.clamp_min(1e-24)).sqrt().float()


def shard_counts(count: int) -> list[int]:
    """Row count of every rank's shard (one collective), in rank order."""
    if not active():
        return [count]
    counts = torch.zeros(world_size(), dtype=torch.float64)
    counts[rank()] = count
    return [int(c) for c in agree_sum(counts)]


def shard_offset(count: int) -> tuple[int, int]:
    """(first global index of this rank's `count` rows, total rows over ranks), rows ordered by rank."""
    counts = shard_counts(count)
    return sum(counts[:rank()]), sum(counts)


def gather_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(every rank's rows concatenated in rank order, the first global row of this rank's shard) for a
    small per-token tensor [N_local, ...] (scores, cluster ids), so that a selection over tokens is the
    one a single GPU makes. Two tiny collectives: the shard sizes, then the rows (padded to the
    largest shard). A tensor that is the same on every rank (replicated, as the sampler's latents are
    under raylight's sequence parallelism) comes back as it is, with offset 0."""
    if not active():
        return tensor, 0
    dist = _dist()
    counts = shard_counts(tensor.shape[0])
    padded = torch.zeros((max(counts),) + tuple(tensor.shape[1:]), dtype=torch.float64)
    padded[:tensor.shape[0]] = tensor.detach().double().cpu()
    gathered = [torch.empty_like(padded, device=_device()) for _ in counts]
    dist.all_gather(gathered, padded.to(_device()), group=_state["group"])
    _state["collectives"] += 1
    parts = [g.cpu()[:n] for g, n in zip(gathered, counts)]
    if all(p.shape == parts[0].shape and torch.equal(p, parts[0]) for p in parts[1:]):
        # Replicated, not sharded: every rank already holds every token. (Shards that happen to be bitwise
        # equal, e.g. the cluster ids of a flat image, land here too: still the same choice on every rank.)
        return tensor, 0
    return torch.cat(parts).to(tensor.dtype).to(tensor.device), sum(counts[:rank()])


def local_rows(rows: torch.Tensor, offset: int, count: int) -> torch.Tensor:
    """Of sorted global row indices, those in this rank's shard [offset, offset + count), made local."""
    return rows[(rows >= offset) & (rows < offset + count)] - offset


def topk_rows(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Local row indices (sorted) of the global top-k of `scores` [N_local] over every rank's shard:
    what one GPU selects, restricted to this shard."""
    everyone, offset = gather_rows(scores)
    chosen = everyone.topk(max(1, min(int(k), everyone.numel()))).indices.sort().values
    return local_rows(chosen, offset, scores.numel())
