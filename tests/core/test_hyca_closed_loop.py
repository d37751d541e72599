"""Closed-loop HyCa search on constructed scorers: it finds a known optimum, never ends worse than its
start (hence than FoCa's uniform map), and keeps the worst case from growing."""
from __future__ import annotations

import torch

from accel_core.learned.hyca_closed_loop import closed_loop_search

SOLVERS = ("reuse", "taylorseer_o1", "foca")


def _additive(costs):
    """Per-case error = sum over clusters of costs[case][cluster][solver] (separable: greedy is exact)."""
    def score(choice):
        return [sum(case[c][s] for c, s in enumerate(choice)) for case in costs]
    return score


def test_finds_the_separable_optimum():
    g = torch.Generator().manual_seed(0)
    costs = torch.rand(1, 4, 3, generator=g).tolist()  # 1 case (mean = worst), 4 clusters, 3 solvers
    result = closed_loop_search(_additive(costs), SOLVERS, [10, 8, 5, 3], margin=0.0)
    best = [min(range(3), key=lambda s: costs[0][c][s]) for c in range(4)]
    assert result.cluster_solver == best
    assert abs(result.mean - sum(costs[0][c][best[c]] for c in range(4))) < 1e-9


def test_never_worse_than_uniform_foca_and_worst_case_kept():
    # Case 1 prefers reuse on cluster 0, case 2 is hurt badly by it: the mean improves, the worst does not.
    costs = [
        [[0.0, 1.0, 0.5], [1.0, 1.0, 0.5]],
        [[3.0, 1.0, 0.5], [1.0, 1.0, 0.5]],
    ]
    result = closed_loop_search(_additive(costs), SOLVERS, [5, 5])
    foca = [1.0, 1.0]  # uniform FoCa: 0.5 + 0.5 per case
    assert result.mean <= sum(foca) / 2 and result.worst <= max(foca)
    assert result.cluster_solver[0] == 2  # reuse on cluster 0 would lower the mean but raise the worst case
    assert any(not t["kept"] for t in result.log if "cluster" in t)


def test_a_change_that_only_helps_one_half_of_the_cases_is_not_kept():
    # Cluster 0 with reuse: much better on cases 0 and 2 (one half), slightly worse on case 1 (other half).
    costs = [[[0.1, 1.0, 1.0]], [[1.2, 1.0, 1.0]], [[0.1, 1.0, 1.0]], [[1.0, 1.0, 1.0]]]
    result = closed_loop_search(_additive(costs), SOLVERS, [4])
    assert result.cluster_solver == [2]  # FoCa, the reference start, stays
    assert all(not t["kept"] for t in result.log if "cluster" in t)


def test_open_loop_start_is_used_when_better_and_solver_index_maps_channels():
    costs = [[[1.0, 0.0, 0.5], [1.0, 0.0, 0.5]]]
    result = closed_loop_search(_additive(costs), SOLVERS, [2, 1], open_loop=[1, 1])
    assert result.cluster_solver == [1, 1] and result.mean == 0.0
    channels = result.solver_index(torch.tensor([0, 1, 0]))
    assert channels.tolist() == [1, 1, 1]
    calls = []
    closed_loop_search(_additive(costs), SOLVERS, [2, 1], progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] <= calls[-1][1]
