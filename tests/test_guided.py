"""Predictor-guided search, objectives other than latency, and the memory limit."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nas.cli.main import main
from nas.errors import RetryWarning, UserError
from nas.search.pareto import hypervolume_2d
from nas.search.strategies import Surrogate, make_strategy
from nas.search.strategies.guided import SELECTED_FAMILIES
from search_spaces import get_space
from tests.helpers import FAST, QUICK_FINISH, run_strategy

SMALL = {"initial": 12, "batch": 6, "population": 24, "generations": 4}


def _hv(strategy, ref=(0.0, 6.0)) -> float:
    objs = np.array([o.objectives for o in strategy.history if o.violation == 0])
    return hypervolume_2d(objs, np.array(ref))


def _surrogate(space) -> Surrogate:
    """The fake problem's cost is params / 1e4, computable exactly; the limit is 60,000 params."""
    return Surrogate(cost=lambda a: space.count_params(a) / 1e4,
                     violation=lambda a, cost: max(0.0, cost * 1e4 / 60000 - 1))


def test_predictor_guided_beats_random_at_equal_budget():
    space = get_space("tiny")
    guided, rand = [], []
    for seed in range(3):
        g = make_strategy("predictor", space, seed=seed, surrogate=_surrogate(space))
        run_strategy(g, space, n=50)
        r = make_strategy("random", space, seed=seed)
        run_strategy(r, space, n=50)
        guided.append(_hv(g))
        rand.append(_hv(r))
    assert np.mean(guided) > np.mean(rand)


def test_predictor_guided_proposes_within_the_exact_limits_and_records_predictions():
    space = get_space("tiny")
    strat = make_strategy("predictor", space, seed=1, surrogate=_surrogate(space))
    archs = run_strategy(strat, space, n=65)
    later = archs[20:]  # after the initial sample every proposal comes from the predicted front
    assert all(space.count_params(a) <= 60000 for a in later)
    assert set(later) <= set(strat.predictions)
    for a in later:
        p = strat.predictions[a]
        assert p["cost"] == pytest.approx(space.count_params(a) / 1e4) and p["violation"] == 0
    assert set(strat.selection_scores["accuracy"]) == set(SELECTED_FAMILIES)  # chosen by cross-validation
    assert "cost" not in strat.selection_scores  # the exact cost is never learned


def test_predictor_guided_learns_cost_and_violation_without_a_surrogate():
    space = get_space("tiny")
    strat = make_strategy("predictor", space, seed=2)
    archs = run_strategy(strat, space, n=65)
    assert len(set(archs)) == 65
    assert set(strat.selection_scores) == {"accuracy", "cost", "violation"}


def test_predictor_guided_learns_the_violation_of_a_limit_the_surrogate_cannot_compute():
    """Objective FLOPs (exact) with a limit on a measured metric: the violation is learned too."""
    space = get_space("tiny")
    partial = Surrogate(cost=lambda a: space.count_flops(a) / 1e6, violation=lambda a, cost: 0.0, complete=False)
    strat = make_strategy("predictor", space, seed=3, surrogate=partial)
    for _ in range(65):
        arch = strat.ask()
        params = space.count_params(arch)  # stands for the measured metric under a limit
        strat.tell(arch, (-np.log(params), space.count_flops(arch) / 1e6), max(0.0, params / 40000 - 1))
    assert set(strat.selection_scores) == {"accuracy", "violation"}  # the cost is exact, the violation learned
    later = [o for o in strat.history[40:]]
    assert np.mean([o.violation == 0 for o in later]) > np.mean([o.violation == 0 for o in strat.history[:20]])


def test_predictor_guided_says_when_no_population_draw_passes_the_prefilter():
    space = get_space("tiny")
    strat = make_strategy("predictor", space, seed=0, prefilter=lambda a: False)
    strat.initial, strat.population, strat.generations = 2, 8, 1  # a round planned in little time
    with pytest.warns(RetryWarning, match="of a proposal of strategy 'predictor' passed the prefilter"), \
            pytest.warns(RetryWarning, match="none of 50 draws of a random subnet for the predictor search's "
                                             "population passed the prefilter .*; the population takes the last one anyway"):
        run_strategy(strat, space, n=3)  # the third proposal is planned: its population is drawn
    assert len(strat.history) == 3 and strat.exhausted_redraws == 3


@pytest.mark.parametrize("bad", [{"initial": 1}, {"batch": 0}, {"population": True}, {"mutation_prob": 0.0},
                                 {"predictor": "oracle"}, {"local": 1.5}, {"acquisition": "ei"}])
def test_predictor_guided_rejects_bad_options(bad):
    from nas.search.strategies.guided import PredictorGuidedSearch

    with pytest.raises(UserError):
        PredictorGuidedSearch(get_space("tiny"), **bad)






def test_search_flops_objective_with_memory_limit(trained_run, tmp_path):
    out = tmp_path / "flops"
    assert main(["search", "--supernet", str(trained_run), "--budget", "12", "--objective", "flops", "--max-memory-mb",
                 "0.3", "--strategy", "predictor", "--out", str(out), "--quiet", *QUICK_FINISH]) == 0
    table = pd.read_csv(out / "evaluations.csv")
    assert table["latency_ms"].isna().all()  # neither objective nor limit: not measured
    assert (table["feasible"] == (table["memory_bytes"] <= 0.3 * 2**20)).all()
    pareto = pd.read_csv(out / "pareto.csv")
    assert pareto["feasible"].all() and pareto["flops"].is_monotonic_increasing
    assert pareto["val_acc"].is_monotonic_increasing
    summary = json.loads((out / "search.json").read_text())
    assert summary["objective"] == "flops" and summary["hypervolume_reference"]["flops"] > 0
    assert summary["chosen"]["memory_bytes"] <= 0.3 * 2**20
    assert 0 <= summary["overhead_fraction"] < 1


def test_search_by_size_with_a_size_limit(trained_run, tmp_path):
    out = tmp_path / "size"
    assert main(["search", "--supernet", str(trained_run), "--budget", "10", "--objective", "size", "--max-size-mb",
                 "0.1", "--out", str(out), "--quiet", *QUICK_FINISH]) == 0
    table = pd.read_csv(out / "evaluations.csv")
    assert (table["model_bytes"] == 4 * table["params"]).all() and table["latency_ms"].isna().all()
    assert (table["feasible"] == (table["model_bytes"] <= 0.1 * 2**20)).all() and table["feasible"].any()
    pareto = pd.read_csv(out / "pareto.csv")
    assert pareto["model_bytes"].is_monotonic_increasing and pareto["val_acc"].is_monotonic_increasing
    summary = json.loads((out / "search.json").read_text())
    assert summary["chosen"]["model_bytes"] <= 0.1 * 2**20


def test_impossible_size_limit_is_refused(tmp_path, capsys):
    assert main(["search", "--budget", "3", "--max-size-mb", "0.0001", "--out", str(tmp_path / "m"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "--max-size-mb 0.0001" in err and "smallest achievable" in err and "MiB of weights" in err


def test_impossible_memory_limit_is_refused(tmp_path, capsys):
    assert main(["search", "--budget", "3", "--max-memory-mb", "0.001", "--out", str(tmp_path / "m"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "--max-memory-mb 0.001" in err and "smallest achievable" in err
