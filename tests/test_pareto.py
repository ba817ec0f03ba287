"""Pareto utilities (`nas.search.pareto`): sorting, crowding, selection, hypervolume, against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from nas.search.pareto import (
    crowding_distance,
    environmental_selection,
    front_hypervolume,
    hypervolume_2d,
    hypervolume_reference,
    non_dominated_sort,
    pareto_indices,
    resolved_front_indices,
)


def test_non_dominated_sort_and_crowding():
    pts = np.array([[1, 5], [2, 3], [3, 1], [3, 4], [4, 4], [5, 5]], dtype=float)
    fronts = non_dominated_sort(pts)
    assert sorted(fronts[0]) == [0, 1, 2] and sorted(fronts[1]) == [3] and sorted(fronts[2]) == [4]
    # constraint domination: an infeasible point ranks behind every feasible one
    fronts = non_dominated_sort(pts, np.array([0.5, 0, 0, 0, 0, 0]))
    assert 0 in fronts[-1] and 0 not in fronts[0]
    d = crowding_distance(pts[[0, 1, 2]])
    assert np.isinf(d[0]) and np.isinf(d[2]) and d[1] == pytest.approx(2.0)
    assert pareto_indices(np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 0.5]])) == [0, 2]


def test_hypervolume_2d_hand_computed():
    pts = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.5, 3.5]])
    # staircase area under reference (4, 4): 3*1 + 2*1 + 1*1
    assert hypervolume_2d(pts, np.array([4.0, 4.0])) == pytest.approx(6.0)
    assert hypervolume_2d(pts, np.array([0.5, 0.5])) == 0.0


def test_environmental_selection_hand_computed_with_ties():
    # fronts: {1, 2, 3, 4} (4 duplicates 2), {5}, then the infeasible 0; crowding in the first front:
    # 1 and 3 are its ends (inf); 2 and 4 sit between 1 and each other on both objectives: 1/2 + 1/2 = 1 each
    pts = np.array([[0, 0], [0, 2], [1, 1], [2, 0], [1, 1], [2, 2]], dtype=float)
    violations = np.array([0.5, 0, 0, 0, 0, 0])
    chosen = environmental_selection(pts, violations, 3)
    assert chosen.indices == [1, 3, 2]  # the ends first, then the lower index of the tie
    assert chosen.rank == [0, 0, 0] and chosen.crowding == [np.inf, np.inf, 1.0]
    whole = environmental_selection(pts, violations, 5)  # whole fronts, best first, each in index order
    assert whole.indices == [1, 2, 3, 4, 5] and whole.rank == [0, 0, 0, 0, 1]
    everything = environmental_selection(pts, violations, 6)  # all fit: the pool's order
    assert everything.indices == [0, 1, 2, 3, 4, 5] and everything.rank == [2, 0, 0, 0, 0, 1]
    assert environmental_selection(pts[:0], violations[:0], 3).indices == []


def test_front_hypervolume_and_reference_point_hand_computed():
    accuracy, cost = np.array([0.9, 0.6, 0.3, 0.95]), np.array([3.0, 2.0, 1.0, 5.0])
    # reference (0.2, 4): the last point costs too much; staircase 0.7*1 + 0.4*1 + 0.1*1 = 1.2 in a 0.8 x 4 box
    assert front_hypervolume(accuracy, cost, (0.2, 4.0)) == pytest.approx(1.2)
    assert front_hypervolume(accuracy, cost, (0.2, 4.0), normalize=True) == pytest.approx(1.2 / 3.2)
    assert front_hypervolume(accuracy[:0], cost[:0], (0.2, 4.0)) == 0.0
    assert hypervolume_reference(4.0, without_limit=lambda: 9.0) == (0.0, 4.0)  # the limit, when there is one
    assert hypervolume_reference(None, accuracy=0.2, without_limit=lambda: 9.0) == (0.2, 9.0)
    with pytest.raises(ValueError, match="no limit"):
        hypervolume_reference(None)


def test_two_objective_sort_without_the_matrix_gives_the_same_fronts():
    from nas.search.pareto import _sort_2d

    rng = np.random.default_rng(3)
    for trial in range(200):
        n = int(rng.integers(1, 50))
        objectives = rng.integers(0, 5, size=(n, 2)).astype(float)  # many ties and duplicates
        violations = None if trial % 3 == 0 else np.where(rng.random(n) < 0.3, rng.integers(1, 4, n), 0.0)
        assert _sort_2d(objectives, violations) == non_dominated_sort(objectives, violations)


def test_hypervolume_improvement_matches_the_hypervolume_difference():
    from nas.search.pareto import hypervolume_improvement

    rng = np.random.default_rng(0)
    ref = np.array([1.1, 1.2])
    for _ in range(50):
        front, points = rng.random((int(rng.integers(1, 8)), 2)), rng.random((20, 2))
        base = hypervolume_2d(front, ref)
        expected = [hypervolume_2d(np.vstack([front, p]), ref) - base for p in points]
        assert np.allclose(hypervolume_improvement(front, points, ref), expected)


def _beaten_by_brute_force(merit, cost, resolution) -> list[int]:
    scale = 1 + resolution
    return sorted(i for i in range(len(cost)) if not any(
        j != i and merit[j] >= merit[i] and cost[j] <= cost[i] * scale and (merit[j] > merit[i] or cost[j] * scale < cost[i])
        for j in range(len(cost))))


def test_resolved_front_treats_costs_within_the_resolution_as_ties():
    merit = np.array([0.80, 0.81, 0.82, 0.83, 0.90, 0.70])
    cost = np.array([0.50, 0.51, 0.52, 0.53, 0.80, 0.30])
    # plain: every point of the cluster is on the front; at 5%, the most accurate of the cluster beats the rest
    assert resolved_front_indices(merit, cost, 0.0) == [5, 0, 1, 2, 3, 4]
    assert resolved_front_indices(merit, cost, 0.05) == [5, 3, 4]
    # at 70% no saving is resolvable (0.30 x 1.7 > 0.50, 0.53 x 1.7 > 0.80): the most accurate beats all
    assert resolved_front_indices(merit, cost, 0.7) == [4]
    # equal merit: the cheaper wins only when resolvably cheaper; else both stay
    assert resolved_front_indices(np.array([0.9, 0.9]), np.array([1.0, 1.03]), 0.05) == [0, 1]
    assert resolved_front_indices(np.array([0.9, 0.9]), np.array([1.0, 1.10]), 0.05) == [0]
    with pytest.raises(ValueError, match="resolution"):
        resolved_front_indices(merit, cost, -0.1)
    assert resolved_front_indices(np.zeros(0), np.zeros(0), 0.1) == []


def test_resolved_front_matches_its_definition_and_contains_the_plain_front():
    rng = np.random.default_rng(0)
    for k in range(200):
        n = int(rng.integers(1, 30))
        merit, cost = np.round(rng.random(n), 1), np.round(rng.random(n) + 0.1, 2)
        resolution = (0.0, 0.03, 0.2)[k % 3]
        front = resolved_front_indices(merit, cost, resolution)
        assert sorted(front) == _beaten_by_brute_force(merit, cost, resolution) and front
        if resolution == 0:
            assert set(pareto_indices(np.column_stack([-merit, cost]))) <= set(front)
