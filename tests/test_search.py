"""Strategies, Pareto utilities, budgets and training pieces."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from nas.data.datasets import Split, TaskData
from nas.errors import RetryWarning, UserError, draw_bounded
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import Limits
from nas.hardware.measure import LatencySettings
from nas.search.loop import MAX_REPEATS, Budget, run_search
from nas.search.pareto import (
    crowding_distance,
    environmental_selection,
    front_hypervolume,
    hypervolume_2d,
    hypervolume_reference,
    non_dominated_sort,
    pareto_indices,
)
from nas.search.strategies import list_strategies, make_strategy
from nas.search.strategies.base import MAX_REDRAWS
from nas.search.strategies.evolution import EvolutionSearch
from nas.training.train import augment, lr_at
from search_spaces import HybridSupernet, SearchSpace, SpaceConfig, get_space
from tests.helpers import ROOT, fake_objectives, run_strategy


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
    # the first objective (-log params) lies in [-11.8, -9.9]: a reference of 0 would make the area mostly
    # the cheapest subnet's, which the first population always holds (the smallest subnet first)
    ref = np.array([-9.5, 6.0])
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


def test_draw_bounded_returns_the_first_hit_or_warns_with_the_closest():
    draws = iter([5.0, 3.0, 1.0, 3.0])
    assert draw_bounded(lambda: next(draws), lambda x: max(x - 2.0, 0.0), tries=4, what="x", constraint="c",
                        fallback="f") == (1.0, True)
    draws = iter([5.0, 3.0, 4.0, 3.0])
    with pytest.warns(RetryWarning, match="^none of 4 draws of a number was at most 2; the closest instead$"):
        assert draw_bounded(lambda: next(draws), lambda x: max(x - 2.0, 0.0), tries=4, what="a number",
                            constraint="was at most 2", fallback="the closest instead") == (3.0, False)


@pytest.mark.parametrize("name", list_strategies())
def test_ask_says_when_no_redraw_passes_the_prefilter(name):
    space = get_space("tiny")
    strategy = make_strategy(name, space, seed=0, prefilter=lambda a: False)
    with pytest.warns(RetryWarning, match=f"none of {1 + MAX_REDRAWS} draws of a proposal of strategy '{name}' "
                                          "passed the prefilter .*; proposing the last one anyway"):
        arch = strategy.ask()
    strategy.tell(arch, *fake_objectives(space, arch))
    assert strategy.exhausted_redraws == 1 and strategy.history[0].arch == arch


def _two_subnets() -> SearchSpace:
    """A 1-D space of exactly two subnets (widths 8 and 16), trained in no time."""
    return SearchSpace(SpaceConfig.from_dict({
        "name": "two", "dims": 1, "in_channels": 3, "num_classes": 4, "input_size": 12, "resolutions": [12],
        "stem_widths": [8], "stages": [{"depths": [1], "widths": [8, 16], "strides": [1], "block_types": ["conv"]}],
        "kernels": [3], "expand_ratios": [2], "mixers": ["softmax"], "heads": [1], "mlp_ratios": [2],
        "head_dim": 4, "layout": "free"}))


def _evaluator(space: SearchSpace) -> Evaluator:
    """An untrained supernet of `space` evaluated on a few random inputs of its shape."""
    torch.manual_seed(0)
    supernet = HybridSupernet(space)
    spec = supernet.spec
    shape = (8, spec.in_channels) + (spec.input_size,) * spec.dims
    data = TaskData("fake", *(Split(torch.randn(shape), torch.arange(8) % spec.num_classes) for _ in range(3)),
                    num_classes=spec.num_classes, in_channels=spec.in_channels, input_size=spec.input_size,
                    dims=spec.dims, mean=(0.0,) * spec.in_channels, std=(1.0,) * spec.in_channels)
    return Evaluator(supernet, data, LatencySettings())


def test_search_says_when_the_strategy_proposes_only_evaluated_subnets(tmp_path):
    space = _two_subnets()
    assert space.size() == 2
    with pytest.warns(RetryWarning, match=f"none of {MAX_REPEATS} draws of a proposal of strategy 'random' was a "
                                          "subnet not evaluated yet; the search stops after 2 evaluations, short of "
                                          "its budget of 10 evaluations"):
        summary = run_search(_evaluator(space), tmp_path, budget=Budget(evaluations=10), limits=Limits(),
                             strategy="random", seed=0, objective="flops", show_progress=False)
    assert summary["evaluations"] == 2 and summary["retries_exhausted"] == {"prefilter": 0, "repeats": 1}


def test_search_counts_proposals_that_no_redraw_made_pass_the_prefilter(tmp_path):
    space = get_space("tiny")
    impossible = Limits(max_params=1)  # the prefilter (parameter count) rejects every subnet
    with pytest.warns(RetryWarning, match="passed the prefilter"), pytest.raises(UserError, match="none of the 2"):
        run_search(_evaluator(space), tmp_path, budget=Budget(evaluations=2), limits=impossible, strategy="random",
                   seed=0, objective="flops", show_progress=False, check_limits=False)
    summary = json.loads((tmp_path / "search.json").read_text())
    assert summary["evaluations"] == 2 and summary["feasible"] == 0
    assert summary["retries_exhausted"] == {"prefilter": 2, "repeats": 0}


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
