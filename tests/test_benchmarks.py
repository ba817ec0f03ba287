"""The pure rules of the benchmark scripts: equal-compute accounting, the PASS/FAIL/TIE rule, the
ratio to the noise ceiling, and the feasibility test the random baselines share with the search."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.common import median_flops
from benchmarks.quantization import covers, front
from benchmarks.ranking_fidelity import over_ceiling, ranked_task, with_size_prior
from benchmarks.ranking_supernets import supernet_results
from benchmarks.search_strategies import strategy_spec
from benchmarks.search_value import another_fits, feasibility, last_true, search_args, targets, verdict
from benchmarks.search_value_rows import finalists, merge, zero_shot_args, zero_shot_row
from benchmarks.tasks import digits28, write_digits28
from nas.data.datasets import load_data
from nas.data.kind import space_for_data
from nas.errors import FieldError, UserError
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import Limits
from nas.hardware.measure import LatencySettings
from nas.training.config import MIN_STEPS, TrainConfig, training_budget
from search_spaces import get_space
from tests.helpers import few_digits, tiny_supernet


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


def test_the_size_prior_averages_the_loss_rank_with_the_parameter_rank():
    losses, params = [0.3, 0.1, 0.2, 0.4], [10, 40, 20, 30]  # loss ranks 3 1 2 4; more parameters first: 4 1 3 2
    assert with_size_prior(losses, params).tolist() == [3.5, 1.0, 2.5, 3.0]
    assert with_size_prior(losses, [5] * 4).argsort().tolist() == [1, 2, 0, 3]  # no size information: the loss order


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


def test_digits28_is_deterministic_28x28_in_range_with_test_digits_unseen_in_training(tmp_path):
    from sklearn.datasets import load_digits

    a, again, other = digits28(seed=3, copies=2, limit=150), digits28(seed=3, copies=2, limit=150), digits28(4, 2, 150)
    labels = load_digits().target[:150]
    for suffix in ("", "_val", "_test"):
        x, y, digit = a[f"x{suffix}"], a[f"y{suffix}"], a[f"digit{suffix}"]
        assert x.shape == (len(y), 1, 28, 28) and x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
        assert y.dtype == np.int64 and np.array_equal(y, labels[digit])  # each copy keeps its digit's label
        assert np.array_equal(np.unique(digit, return_counts=True)[1], np.full(len(y) // 2, 2))  # 2 copies each
        assert not np.array_equal(x[0::2], x[1::2])  # the copies are different draws
        assert np.array_equal(x, again[f"x{suffix}"]) and not np.array_equal(x, other[f"x{suffix}"])
    train, val, test = (set(a[f"digit{s}"]) for s in ("", "_val", "_test"))
    assert not train & test and not train & val and not val & test
    assert len(test) == pytest.approx(0.15 * 150, abs=5) and set(a["y_test"]) == set(range(10))  # stratified
    path = write_digits28(tmp_path / "d28.npz", seed=3, copies=1)
    assert space_for_data(str(path))[0] == "cifar"  # nas reads it as 28x28 images
    data = load_data(str(path))
    assert len(data.test) == len(np.load(path)["y_test"]) and data.train.x.shape[1:] == (1, 28, 28)


def test_zero_shot_gets_as_many_from_scratch_trainings_as_random_search():
    data = load_data("digits")  # 1,000 steps from scratch
    assert finalists(4327, "steps", data) == 4 and finalists(4000, "steps", data) == 4
    assert finalists(120, "steps", data) == 1  # the first always runs
    assert finalists(35.0, "seconds", data, seconds_per_step=0.01) == 3  # 10 s each
    with pytest.raises(UserError, match="random-search row"):
        finalists(35.0, "seconds", data)


def test_the_zero_shot_command_keeps_the_pipelines_data_limit_seed_and_budget():
    args = argparse.Namespace(space_name="tiny", data_name="digits", budget="200", device="cpu", epochs=1,
                              finish_budget=0.05, max_latency_ms=None)
    argv = zero_shot_args(search_args(args, 3, Path("out/s3"), 2500), "synflow", 4, Path("out/z"))
    assert argv == ["search", "--zero-shot", "synflow", "--finalists", "4", "--space", "tiny", "--data", "digits",
                    "--seed", "3", "--budget", "200", "--device", "cpu", "--out", "out/z", "--objective", "flops",
                    "--max-flops", "2500"]  # no supernet epochs, no fine-tune: it trains from scratch
    args.max_latency_ms = 1.5
    assert zero_shot_args(search_args(args, 3, Path("s3"), None), "params", 1, Path("z"))[-2:] == ["--max-latency-ms", "1.5"]


def test_a_rerun_replaces_only_the_rows_it_computes_and_keeps_the_order():
    old = pd.DataFrame({"seed": [0, 0, 0, 1], "method": ["nas search", "zero-shot params", "MLP", "nas search"],
                        "test_acc": [0.9, 0.8, 0.7, 0.6]})
    new = pd.DataFrame({"seed": [0, 0, 0], "method": ["nas search", "zero-shot naswot", "zero-shot params"],
                        "test_acc": [0.95, 0.85, 0.75]})
    got = merge(old, new)
    assert list(zip(got["seed"], got["method"], got["test_acc"])) == [
        (0, "nas search", 0.95), (0, "zero-shot params", 0.75), (0, "zero-shot naswot", 0.85), (0, "MLP", 0.7),
        (1, "nas search", 0.6)]  # a row recomputed keeps its place
    assert merge(pd.DataFrame(), new).equals(new)


def test_targets_compare_the_pipeline_with_each_zero_shot_row_and_each_proxy_with_params():
    summary = pd.DataFrame({"method": ["nas search", "zero-shot params", "zero-shot synflow"],
                            "test_acc_mean": [0.95, 0.90, 0.99], "test_acc_std": [0.0, 0.0, 0.0],
                            "seconds_mean": [100.0, 50.0, 60.0]})
    got = [(word, text.split(":")[0]) for word, text in targets(summary, test_size=1000)]
    assert got == [("PASS", "nas search 0.9500 (100 s) >= zero-shot params 0.9000 (50 s)"),
                   ("FAIL", "nas search 0.9500 (100 s) >= zero-shot synflow 0.9900 (60 s)"),
                   ("PASS", "zero-shot synflow 0.9900 (60 s) >= zero-shot params 0.9000 (50 s)")]


def test_the_zero_shot_row_runs_the_cli_counts_its_compute_and_is_reused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("nas.cli.main.load_data", lambda name, dims, **reading: few_digits(64))
    monkeypatch.setattr("nas.finish.finetune.scratch_steps", lambda data: 2)
    pipeline = ["search", "--space", "tiny", "--data", "digits", "--seed", "0", "--budget", "3", "--device", "cpu",
                "--out", str(tmp_path / "s0"), "--epochs", "1", "--objective", "flops", "--max-flops", "2500632"]
    row = zero_shot_row(pipeline, "params", 2, tmp_path / "s0-zero-shot-params")
    assert (row["method"], row["subnets"], row["steps"], row["subnet_steps"]) == ("zero-shot params", 2, 4, 4)
    assert row["flops"] <= 2500632 and 0 <= row["test_acc"] <= 1 and row["seconds"] >= row["scoring_seconds"] > 0
    assert not (tmp_path / "s0").exists()  # the pipeline's folder is not the zero-shot run's
    assert zero_shot_row(pipeline, "params", 2, tmp_path / "s0-zero-shot-params") == row  # reused, not rerun
    assert "reusing the search" in capsys.readouterr().out


def test_a_supernet_in_supernets_csv_is_read_not_trained(tmp_path):
    space = get_space("tiny")
    subnets = [space.smallest(), space.largest()]
    pd.DataFrame([{"rule": "uniform", "seed": 0, "epochs": 3, "id": a.id, "acc": acc, "loss": loss,
                   "train_seconds": 7.0, "subnet_steps": 99} for a, acc, loss in zip(subnets, [0.5, 0.6], [1.0, 0.9])]
                 ).to_csv(tmp_path / "supernets.csv", index=False)
    args = argparse.Namespace(out=tmp_path, epochs=3, space="tiny")
    result, supernet = supernet_results(args, "uniform", TrainConfig(), None, 0, None, None, subnets, 1)
    assert supernet is None and result == ([0.5, 0.6], [1.0, 0.9], 7.0, 99)


def test_a_strategy_spec_reads_its_options_as_the_cli_does_and_checks_their_names():
    assert strategy_spec("random") == ("random", {})
    assert strategy_spec("predictor:warm_start=naswot") == ("predictor", {"warm_start": "naswot"})
    assert strategy_spec("predictor:initial=30:local=0.25:warm_start=params") == (
        "predictor", {"initial": 30, "local": 0.25, "warm_start": "params"})  # JSON scalars, as --strategy-option
    with pytest.raises(FieldError, match="warm_start"):
        strategy_spec("random:warm_start=naswot")  # not an option of random search
    with pytest.raises(FieldError, match="KEY=VALUE"):
        strategy_spec("predictor:naswot")
    with pytest.raises(UserError, match="twice"):
        strategy_spec("predictor:initial=10:initial=20")


def test_ranking_runs_on_a_subset_at_the_default_budget_unless_epochs_are_given():
    data, epochs = ranked_task("digits", "tiny", 300, None, seed=0)  # 255 training, 45 validation: 4 steps an epoch
    assert (len(data.train), len(data.val), len(data.test)) == (255, 45, len(load_data("digits").test))
    assert epochs == training_budget(TrainConfig(), 255).epochs and epochs * 4 >= MIN_STEPS  # the step floor
    assert ranked_task("digits", "tiny", 300, 3, seed=0)[1] == 3
    whole, epochs = ranked_task("digits", "tiny", None, None, seed=0)
    assert len(whole.train) == len(load_data("digits").train) and epochs == training_budget(TrainConfig(), len(whole.train)).epochs
