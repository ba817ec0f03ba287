"""Search strategies (`nas.search.strategies`): reproducible, ask/tell, prefilter, ask-ahead within a round."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from nas.errors import RetryWarning, UserError
from nas.evaluation.limits import Limits
from nas.search.pareto import (
    hypervolume_2d,
)
from nas.search.strategies import list_strategies, make_strategy
from nas.search.strategies.base import MAX_REDRAWS
from nas.search.strategies.evolution import EvolutionSearch
from search_spaces import get_space
from tests.helpers import ROOT, fake_objectives, run_strategy


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "predictor" else n
                                  for n in list_strategies()])
def test_strategies_are_reproducible(name):
    space = get_space("tiny")
    a = run_strategy(make_strategy(name, space, seed=5), space)
    b = run_strategy(make_strategy(name, space, seed=5), space)
    c = run_strategy(make_strategy(name, space, seed=6), space)
    assert a == b and a != c


@pytest.mark.parametrize(("name", "seed", "n"), [("evolution", 11, 30), ("optuna-tpe", 3, 20)])
def test_strategy_reproducible_in_another_process(name, seed, n):
    space = get_space("tiny")
    here = [a.id for a in run_strategy(make_strategy(name, space, seed=seed), space, n=n)]
    code = (
        "from search_spaces import get_space; from nas.search.strategies import make_strategy; "
        "from tests.helpers import run_strategy; s = get_space('tiny'); "
        f"print(','.join(a.id for a in run_strategy(make_strategy({name!r}, s, seed={seed}), s, n={n})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "123", "PATH": "", "OMP_NUM_THREADS": "1"})
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


@pytest.mark.parametrize("name", list_strategies())
def test_ask_says_when_no_redraw_passes_the_prefilter(name):
    space = get_space("tiny")
    strategy = make_strategy(name, space, seed=0, prefilter=lambda a: False)
    with pytest.warns(RetryWarning, match=f"none of {1 + MAX_REDRAWS} draws of a proposal of strategy '{name}' "
                                          "passed the prefilter .*; proposing the last one anyway"):
        arch = strategy.ask()
    strategy.tell(arch, *fake_objectives(space, arch))
    assert strategy.exhausted_redraws == 1 and strategy.history[0].arch == arch


def test_strategies_ask_ahead_only_within_a_round():
    space = get_space("tiny")
    evolution = EvolutionSearch(space, population_size=4)
    asked = [evolution.ask() for _ in range(evolution.ready())]
    assert len(asked) == 4 and evolution.ready() == 0  # the next generation needs this one's tells
    for arch in asked[:3]:
        evolution.tell(arch, (0.0, 1.0), 0.0)
    assert evolution.ready() == 0
    evolution.tell(asked[3], (0.0, 1.0), 0.0)
    assert evolution.ready() == 4 and not evolution.pending
