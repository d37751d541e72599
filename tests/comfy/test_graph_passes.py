"""Split and chained sampling in the real ComfyUI (trained micro FLUX, balanced, 28 euler steps):
KSamplerAdvanced pairs with leftover noise and SamplerCustomAdvanced on SplitSigmas halves continue the
first pass's output-cache history (same trajectory) and spend the whole trajectory's budget; a latent
upscale + second pass at another size restarts cleanly; nothing carries over where it must not.
Fidelity against the uncached run of the same graph within 3 dB of the plain-KSampler figure (-s prints)."""
from __future__ import annotations

import pytest
import torch
from helpers import conditioning

from scripts.harness import graph_cases as gc

TARGET_DB = 3.0


@pytest.fixture(scope="module")
def flux(comfy_nodes):
    return gc.zoo_case("micro_flux")


def _report(name: str, score: gc.GraphScore) -> None:
    print(f"\n{name}: {score.psnr:.2f} dB vs uncached (plain KSampler {score.plain:.2f} dB, {gc.PRESET}, "
          f"{gc.STEPS} steps)")


@pytest.mark.parametrize("graph", ["ksampler_advanced_pair", "split_sigmas"])
def test_second_pass_continues_the_first(flux, graph):
    zoo, case, extras = flux
    score = gc.compare(zoo, case, gc.GRAPHS[graph], extras)
    _report(graph, score)
    first, second = score.runs
    assert (first["total_steps"], second["total_steps"]) == (gc.SPLIT_AT, gc.STEPS - gc.SPLIT_AT)
    assert not first["continued"] and second["continued"]
    single = gc.cached_vs_uncached(zoo, case, gc.plain, extras)[1][0]
    # the pair spends what one run of the whole schedule would (6 of 28 at 1/5), not 2 + 3
    assert first["computed_calls"] + second["computed_calls"] == single["computed_calls"]
    assert score.psnr >= score.plain - TARGET_DB, (score.psnr, score.plain)


def test_upscale_pass_restarts_at_the_new_size(flux):
    zoo, case, extras = flux
    score = gc.compare(zoo, case, gc.upscale_pass, extras)
    _report("latent upscale x1.5 + second pass (denoise 0.55)", score)
    first, second = score.runs
    assert not second["continued"] and second["resets"] == 0  # a new run, not a reset inside one
    assert second["total_steps"] == gc.UPSCALE_STEPS and second["forecast_calls"] > 0
    assert score.psnr >= score.plain - TARGET_DB, (score.psnr, score.plain)


def _advanced(model, case, latent, add_noise: str, start: int, end: int, leftover: str, positive=None):
    import nodes

    return nodes.KSamplerAdvanced().sample(
        model, add_noise, case.seed, gc.STEPS, case.cfg, "euler", "simple", positive or case.positive,
        case.negative, latent, start, end, leftover)[0]


def test_nothing_carries_over_where_it_must_not(flux):
    """A second pass after an unrelated run, with fresh noise or with other conditioning starts clean:
    its result is bit-identical to the same pass run on its own. Right after its first half it continues."""
    zoo, case, extras = flux
    model = gc.forecast_cache(zoo.model)
    runs = gc.recent_runs()
    first = _advanced(model, case, dict(case.latent), "enable", 0, gc.SPLIT_AT, "enable")

    def second(**kw):
        runs.clear()
        out = _advanced(model, case, first, end=10000, leftover="disable", **kw)["samples"]
        return out, runs[-1]["continued"]

    gc.plain(zoo, case, model, extras)  # an unrelated run in between takes the handoff away
    alone, continued = second(add_noise="disable", start=gc.SPLIT_AT)
    assert not continued
    for change in ({"add_noise": "enable"}, {"add_noise": "disable", "positive": conditioning(7)}):
        reference, _ = second(start=gc.SPLIT_AT, **change)  # the changed pass on its own
        _advanced(model, case, dict(case.latent), "enable", 0, gc.SPLIT_AT, "enable")  # hand off again
        out, continued = second(start=gc.SPLIT_AT, **change)
        assert not continued and torch.equal(out, reference), change
    _advanced(model, case, dict(case.latent), "enable", 0, gc.SPLIT_AT, "enable")
    out, continued = second(add_noise="disable", start=gc.SPLIT_AT)
    assert continued and not torch.equal(out, alone)  # the same pass right after its first half continues
