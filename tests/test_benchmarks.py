"""The pure rules of the benchmark scripts: equal-compute accounting, the PASS/FAIL/TIE rule, the
ratio to the noise ceiling, and the feasibility test the random baselines share with the search."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
import pytest

from benchmarks.common import median_flops
from benchmarks.quantization import covers, front
from benchmarks.ranking_fidelity import over_ceiling
from benchmarks.ranking_supernets import supernet_results
from benchmarks.search_value import another_fits, feasibility, last_true, verdict
from nas.data.datasets import load_data
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import Limits
from nas.hardware.measure import LatencySettings
from nas.training.config import TrainConfig
from search_spaces import get_space
from tests.helpers import tiny_supernet


def test_another_run_starts_only_while_the_mean_run_still_fits():
    assert another_fits([], 0.0)  # the first always runs, whatever the budget
    assert another_fits([10.0], 20.0)  # 10 spent + 10 expected = 20: fits exactly
    assert not another_fits([10.0], 19.9)
    assert another_fits([4.0, 6.0], 15.0) and not another_fits([4.0, 6.0], 14.9)  # the mean of one run: 5


@pytest.mark.parametrize(("a", "a_std", "b", "b_std", "word", "why"), [
    (0.950, 0.0, 0.949, 0.0, "TIE", "one test sample"),  # 0.001 < 1/360
    (0.950, 0.001, 0.952, 0.001, "TIE", "one test sample"),  # below, but by less than one sample
    (0.960, 0.02, 0.950, 0.005, "TIE", "std 0.0200"),  # beyond one sample, within the larger std
    (0.960, 0.002, 0.950, 0.001, "PASS", "+0.0100"),
    (0.940, 0.002, 0.950, 0.001, "FAIL", "-0.0100"),
    (0.960, math.nan, 0.950, math.nan, "PASS", "+0.0100"),  # one seed: no std, only the test sample counts
])
def test_verdict_calls_a_difference_within_the_noise_a_tie_and_says_why(a, a_std, b, b_std, word, why):
    got, text = verdict(a, a_std, b, b_std, test_size=360)
    assert got == word
    assert why in text


@pytest.mark.parametrize("n", [0, 1, 2, 7, 64])
def test_last_true_finds_the_edge_by_bisection(n):
    for edge in range(-1, n):  # ok holds for indices <= edge
        calls = []
        got = last_true(list(range(n)), lambda i, calls=calls, edge=edge: calls.append(i) or i <= edge)
        assert got == (None if edge < 0 else edge)
        assert len(calls) <= max(1, math.ceil(math.log2(n + 1)))


def test_ratio_to_the_noise_ceiling():
    assert over_ceiling(0.3, 0.6) == pytest.approx(0.5)
    assert over_ceiling(-0.2, 0.4) == pytest.approx(-0.5)
    assert math.isnan(over_ceiling(0.3, 0.0))  # a reference that ranks nothing: no ratio
    assert math.isnan(over_ceiling(0.3, math.nan))
    assert math.isnan(over_ceiling(math.nan, 0.5))


def test_feasibility_uses_the_searchs_cost_functions_and_limits():
    supernet = tiny_supernet()
    space = supernet.space
    evaluator = Evaluator(supernet, load_data("digits"), LatencySettings())
    limit = median_flops(space, n=200)
    ok = feasibility(evaluator, Limits(max_flops=limit))
    assert ok(space.smallest()) and not ok(space.largest())
    rng = np.random.default_rng(0)
    for arch in (space.sample(rng) for _ in range(50)):  # exactly the analytic FLOPs against the limit
        assert ok(arch) == (space.count_flops(arch) <= limit)


def test_the_searched_front_covers_the_fp32_one_within_half_a_point_and_no_costlier():
    table = pd.DataFrame({"val_acc": [0.90, 0.95, 0.80, 0.99], "latency_ms": [0.5, 0.8, 0.6, 2.0],
                          "feasible": [True, True, True, False]})
    fp32 = front(table, "latency_ms")
    assert sorted(fp32["val_acc"]) == [0.90, 0.95]  # 0.80 dominated, 0.99 over the limit
    searched = pd.DataFrame({"val_acc": [0.896, 0.946], "latency_ms": [0.3, 0.8]})
    assert covers(searched, fp32, "latency_ms")  # 0.4 points less accurate, no slower: covered
    assert not covers(searched.assign(val_acc=[0.89, 0.95]), fp32, "latency_ms")  # 1 point less: not
    assert not covers(searched.assign(latency_ms=[0.3, 0.9]), fp32, "latency_ms")  # slower: not


def test_a_supernet_in_supernets_csv_is_read_not_trained(tmp_path):
    space = get_space("tiny")
    subnets = [space.smallest(), space.largest()]
    pd.DataFrame([{"rule": "uniform", "seed": 0, "epochs": 3, "id": a.id, "acc": acc, "loss": loss,
                   "train_seconds": 7.0, "subnet_steps": 99} for a, acc, loss in zip(subnets, [0.5, 0.6], [1.0, 0.9])]
                 ).to_csv(tmp_path / "supernets.csv", index=False)
    args = argparse.Namespace(out=tmp_path, epochs=3, space="tiny")
    result, supernet = supernet_results(args, "uniform", TrainConfig(), None, 0, None, None, subnets, 1)
    assert supernet is None and result == ([0.5, 0.6], [1.0, 0.9], 7.0, 99)
