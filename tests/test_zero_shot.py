"""Proxies in the search: the zero-shot search (no supernet trained), and the predictor-guided
strategy's warm start and proxy features."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import nas
from nas.cli.main import main
from nas.errors import FieldError, UserError
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import Limits
from nas.finish.finetune import FinishConfig
from nas.hardware.measure import LatencySettings
from nas.search.loop import Budget, make_surrogate
from nas.search.strategies import Surrogate, make_strategy
from nas.search.zero_shot import run_zero_shot
from search_spaces import get_space
from tests.helpers import few_digits, tiny_supernet


# ---- the zero-shot search ---------------------------------------------------------------------
@pytest.fixture()
def quick_scratch(monkeypatch):
    """Digits with 64 training rows and 2 steps of training from scratch; any supernet training fails the test."""
    def no_training(*args, **kwargs):
        raise AssertionError("a zero-shot search trained a supernet")

    monkeypatch.setattr("nas.cli.main.load_data", lambda name, dims, **reading: few_digits(64))
    monkeypatch.setattr("nas.finish.finetune.scratch_steps", lambda data: 2)
    monkeypatch.setattr("nas.cli.main.train_supernet", no_training)
    monkeypatch.setattr("nas.cli.main._train", no_training)


def test_zero_shot_search_trains_no_supernet_and_finishes_the_best_by_proxy(tmp_path, quick_scratch, capsys):
    out = tmp_path / "zs"
    assert main(["search", "--zero-shot", "naswot", "--budget", "4", "--max-params", "60000", "--max-latency-ms", "100",
                 "--finalists", "2", "--out", str(out), "--quiet"]) == 0
    assert not (out / "supernet.safetensors").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["args"]["zero_shot"] == "naswot" and config["args"]["finish"] == "scratch"  # implied
    table = pd.read_csv(out / "candidates.csv", dtype={"id": str})
    assert len(table) == 4 and table["id"].is_unique and (table["params"] <= 60000).all()
    finished = table[table["val_acc_finished"].notna()].sort_values("rank")
    assert finished["rank"].tolist() == [1, 2]  # every subnet meets the limits: the two best by the proxy
    assert finished["latency_measured_ms"].notna().all() and table["latency_ms"].isna().sum() == 2  # measured as needed
    summary = json.loads((out / "search.json").read_text())
    chosen = summary["chosen"]
    assert summary["proxy"] == "naswot" and chosen["id"] in finished["id"].tolist()
    assert chosen["val_acc"] == finished["val_acc_finished"].max() or len(set(finished["val_acc_finished"])) == 1
    assert chosen["finishing"]["how"] == "scratch" and chosen["finishing"]["steps"] >= 1
    model = nas.load_model(out / chosen["path"])
    assert model.arch.id == chosen["id"]
    assert "no supernet trained" in capsys.readouterr().out


@pytest.mark.parametrize(("flags", "message"), [
    (["--zero-shot", "nope"], "--zero-shot must be a training-free proxy"),
    (["--zero-shot", "params", "--finish", "finetune"], "--finish must be scratch in a zero-shot search"),
    (["--zero-shot", "params", "--supernet", "runs/x"], "--supernet does not apply to a zero-shot search"),
    (["--zero-shot", "params", "--strategy-option", "initial=3"], "--strategy-option does not apply"),
    (["--zero-shot", "params", "--workers", "2"], "--workers does not apply"),
])
def test_zero_shot_refuses_what_needs_a_supernet_or_a_strategy(tmp_path, capsys, flags, message):
    assert main(["search", *flags, "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_zero_shot_needs_a_from_scratch_finish(tmp_path):
    evaluator = Evaluator(tiny_supernet(), few_digits(64), LatencySettings())
    with pytest.raises(UserError, match="from scratch"):
        run_zero_shot(evaluator, tmp_path, budget=Budget(evaluations=2), limits=Limits(), proxy="params", seed=0,
                      finish=FinishConfig(how="finetune"), show_progress=False)


def test_the_search_passes_strategies_proxies_scored_on_its_training_data():
    evaluator = Evaluator(tiny_supernet(), few_digits(64), LatencySettings())
    space = evaluator.supernet.space
    archs = [space.smallest(), space.largest()]
    proxies = make_surrogate(evaluator, Limits(), "params").proxies
    assert proxies is not None
    table = proxies(archs, ["params", "naswot"])
    assert table.shape == (2, 2) and table[:, 0].tolist() == [space.count_params(a) for a in archs]
    assert np.array_equal(table, evaluator.proxies(archs, ["params", "naswot"]))


# ---- the predictor-guided strategy ------------------------------------------------------------
def _hidden(arch) -> float:
    """A part of the fake accuracy that the architecture features cannot see (a hash of the arch)."""
    return (int(arch.id, 16) % 97) / 97


def _fake_proxies(space):
    noise = np.random.default_rng(0)
    table = {"params": lambda a: float(space.count_params(a)), "naswot": _hidden,
             "grad_norm": lambda a: float(noise.normal())}
    return lambda archs, names: np.array([[table[n](a) for n in names] for a in archs]).reshape(len(archs), len(names))


def _guided(space, **options):
    surrogate = Surrogate(cost=lambda a: space.count_params(a) / 1e4, violation=lambda a, cost: 0.0,
                          proxies=_fake_proxies(space))
    return make_strategy("predictor", space, seed=0, surrogate=surrogate, predictor="ridge", options=options)


def _run(strategy, space, n: int) -> list:
    for _ in range(n):
        a = strategy.ask()
        strategy.tell(a, (-np.log(space.count_params(a)) - 3 * _hidden(a), space.count_params(a) / 1e4), 0.0)
    return [o.arch for o in strategy.history]


def test_warm_start_spans_the_costs_with_the_best_subnet_of_each_by_the_proxy():
    space = get_space("tiny")
    warm = _run(_guided(space, initial=6, warm_start="params"), space, 6)
    plain = _run(_guided(space, initial=6), space, 6)
    params = [space.count_params(a) for a in warm]
    assert warm[0] == space.smallest() and len(set(warm)) == 6
    assert params[1:] == sorted(params[1:])  # one per cost bin, cheapest bin first
    assert np.mean(params) > np.mean([space.count_params(a) for a in plain])  # the biggest of each bin


@pytest.mark.parametrize(("proxy", "used"), [("naswot", True), ("grad_norm", False)])
def test_proxy_features_are_used_only_where_cross_validation_says_they_help(proxy, used):
    space = get_space("tiny")
    strat = _guided(space, initial=40, batch=5, population=8, generations=1, proxy_features=proxy)
    _run(strat, space, 41)  # the proxies are checked when the first round is planned, at 40
    taus = strat.selection_scores["proxy_features"]
    assert strat._use_proxies is used and (taus["with proxies"] > taus["without proxies"] + 0.02) is used


def test_proxy_options_are_checked():
    space = get_space("tiny")
    with pytest.raises(FieldError, match="warm_start names unknown proxies"):
        make_strategy("predictor", space, seed=0, options={"warm_start": "snip"})
    with pytest.raises(FieldError, match="warm_start must name one proxy"):
        make_strategy("predictor", space, seed=0, options={"warm_start": "params,naswot"})
    with pytest.raises(FieldError, match="proxy_features names a proxy twice"):
        make_strategy("predictor", space, seed=0, options={"proxy_features": "naswot, naswot"})
    strat = make_strategy("predictor", space, seed=0, options={"warm_start": "naswot"})  # no surrogate: no data
    with pytest.raises(UserError, match="need training data"):
        strat.ask()


def test_zero_shot_implies_a_from_scratch_finish_in_a_config_file_too(tmp_path):
    from nas.cli.parser import build_parser
    from nas.cli.run_config import run_config as _run_config

    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"zero_shot": "synflow", "finalists": 3}))
    config = _run_config(build_parser().parse_args(["search", "--config", str(path)]))
    assert (config.zero_shot, config.finish, config.finalists) == ("synflow", "scratch", 3)
