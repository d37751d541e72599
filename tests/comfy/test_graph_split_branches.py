"""CFG branches run apart under memory pressure: when ComfyUI's memory estimate lets only one branch
through per call, it runs cond and uncond as separate model calls. The output cache decides once per
step above that split (both branches computed or both forecast). Trained micro Qwen-Image (true CFG 3),
balanced, 28 euler steps, against the uncached run of the same graph (-s prints the figure)."""
from __future__ import annotations

import pytest

from scripts.harness import graph_cases as gc

TARGET_DB = 3.0


@pytest.fixture(scope="module")
def qwen(comfy_nodes):
    return gc.zoo_case("micro_qwen_image")


def _branch_spy(zoo):
    """A clone of the zoo model recording the CFG branches of every model call (cond_or_uncond)."""
    seen: list[tuple[int, ...]] = []
    return gc.spied(zoo.model, lambda model, options: seen.append(tuple(options["cond_or_uncond"]))), seen


def test_branches_run_apart_and_the_cache_still_decides_per_step(qwen):
    zoo, case, extras = qwen
    assert case.cfg > 1.0
    model, seen = _branch_spy(zoo)
    score = gc.compare(zoo, case, gc.split_branches, extras, model=model)
    print(f"\nCFG branches run apart (memory pressure), cfg {case.cfg}: {score.psnr:.2f} dB vs uncached "
          f"(plain batched KSampler {score.plain:.2f} dB, {gc.PRESET}, {gc.STEPS} steps)")
    (run,) = score.runs
    assert all(len(branches) == 1 for branches in seen), seen[:4]  # every call ran one branch
    assert len(seen) == 2 * (gc.STEPS + run["computed_calls"])  # uncached: 2 per step; cached: 2 per full step
    assert run["calls"] == gc.STEPS and 0 < run["computed_calls"] < gc.STEPS
    assert list(run["branch_cache_bytes"]) == ["guidance+uncond"]  # the branches were seen and split
    seen.clear()
    gc.plain(zoo, case, model, extras)
    assert all(len(branches) == 2 for branches in seen)  # without the pressure ComfyUI batches them
    assert score.psnr >= score.plain - TARGET_DB, (score.psnr, score.plain)
