"""Strategies, Pareto utilities, budgets and training pieces."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from nas.errors import UserError
from nas.evaluation.limits import Limits
from nas.search.loop import Budget
from nas.search.pareto import crowding_distance, hypervolume_2d, non_dominated_sort, pareto_indices
from nas.search.strategies import list_strategies, make_strategy
from nas.search.strategies.evolution import EvolutionSearch
from nas.training.train import augment, lr_at
from search_spaces import get_space
from tests.helpers import ROOT, run_strategy


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "predictor" else n
                                  for n in list_strategies()])
def test_strategies_are_reproducible(name):
    space = get_space("tiny")
    a = run_strategy(make_strategy(name, space, seed=5), space)
    b = run_strategy(make_strategy(name, space, seed=5), space)
    c = run_strategy(make_strategy(name, space, seed=6), space)
    assert a == b and a != c


def test_strategy_reproducible_in_another_process():
    space = get_space("tiny")
    here = [a.id for a in run_strategy(make_strategy("evolution", space, seed=11), space, n=30)]
    code = (
        "import numpy as np; from search_spaces import get_space; from nas.search.strategies import make_strategy; "
        "from tests.helpers import run_strategy; s = get_space('tiny'); "
        "print(','.join(a.id for a in run_strategy(make_strategy('evolution', s, seed=11), s, n=30)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "123", "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split(",") == here


def test_evolution_improves_over_its_first_population():
    space = get_space("tiny")
    strategy = EvolutionSearch(space, seed=0, population_size=12)
    run_strategy(strategy, space, n=120)
    objs = np.array([o.objectives for o in strategy.history])
    viol = np.array([o.violation for o in strategy.history])
    first = objs[:12][viol[:12] == 0]
    later = objs[60:][viol[60:] == 0]
    ref = np.array([0.0, 6.0])
    assert hypervolume_2d(later, ref) > hypervolume_2d(first, ref)
    assert (viol[60:] == 0).mean() > (viol[:12] == 0).mean()  # constraint domination pushes to feasibility


def test_prefilter_is_applied_when_it_can_be_met():
    space = get_space("tiny")
    limit = Limits(max_params=40000)
    strategy = make_strategy("random", space, seed=0, prefilter=lambda a: limit.params_ok(space.count_params(a)))
    assert all(space.count_params(strategy.ask()) <= 40000 for _ in range(20))
    with pytest.raises(UserError, match="unknown strategy"):
        make_strategy("annealing", space, seed=0)


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


@pytest.mark.parametrize("text, evaluations, seconds", [
    ("200", 200, None), ("90s", None, 90.0), ("10m", None, 600.0), ("1h", None, 3600.0), ("1.5h", None, 5400.0),
])
def test_budget_parse(text, evaluations, seconds):
    b = Budget.parse(text)
    assert (b.evaluations, b.seconds) == (evaluations, seconds)


@pytest.mark.parametrize("text", ["", "ten", "10x", "-5", "0", "0s", "5 minutes"])
def test_budget_rejects_malformed(text):
    with pytest.raises(UserError):
        Budget.parse(text)


def test_augment_shifts_within_bounds_and_is_seeded():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8) + 1
    a = augment(x, 1, False, torch.Generator().manual_seed(0))
    b = augment(x, 1, False, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    # every output pixel is either padding (0) or an input pixel at most one step away
    for n in range(2):
        vals = set(a[n].flatten().tolist()) - {0.0}
        assert vals <= set(x[n].flatten().tolist())
    assert torch.equal(augment(x, 0, False, torch.Generator()), x)


def test_cosine_schedule_with_warmup():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(99, 100, 10, 1.0) < 0.01


def test_two_objective_sort_without_the_matrix_gives_the_same_fronts():
    from nas.search.pareto import _sort_2d

    rng = np.random.default_rng(3)
    for trial in range(200):
        n = int(rng.integers(1, 50))
        objectives = rng.integers(0, 5, size=(n, 2)).astype(float)  # many ties and duplicates
        violations = None if trial % 3 == 0 else np.where(rng.random(n) < 0.3, rng.integers(1, 4, n), 0.0)
        assert _sort_2d(objectives, violations) == non_dominated_sort(objectives, violations)
