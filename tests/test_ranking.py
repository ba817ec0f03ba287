"""Ranking by validation loss where the validation split is too small for accuracy to rank
(nas.search.ranking): what the strategy is told, the front, the choice, the hypervolume, resume."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

import nas.search.loop as loop
from nas.data.datasets import Split, load_data
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import Limits
from nas.hardware.measure import LatencySettings
from nas.search.loop import Budget, run_search
from nas.search.pareto import front_hypervolume, hypervolume_reference
from nas.search.ranking import LOSS_CAP, MIN_VAL_SAMPLES, search_ranking
from nas.search.records import LEGACY_COLUMNS
from tests.helpers import tiny_supernet


def test_the_rule_depends_on_the_validation_size_and_what_was_recorded():
    assert search_ranking(MIN_VAL_SAMPLES - 1).column == "val_loss"
    assert search_ranking(MIN_VAL_SAMPLES).column == "val_acc"
    assert search_ranking(10, loss_recorded=False).column == "val_acc"
    loss = search_ranking(60)
    assert "\n" not in loss.reason and "60 validation samples" in loss.reason
    assert loss.score({"val_acc": 0.5, "val_loss": 1.25}) == 1.25
    assert loss.score({"val_acc": 0.5, "val_loss": math.nan}) == LOSS_CAP  # a diverged subnet ranks last
    assert search_ranking(500).score({"val_acc": 0.5, "val_loss": 1.25}) == -0.5


@pytest.fixture(autouse=True)
def no_plot_or_model_folder(monkeypatch):
    """The plot and the model folder (ONNX export) take most of a small search's time and play no
    part in its ranking."""
    monkeypatch.setattr(loop, "plot_front", lambda path, **_: None)
    monkeypatch.setattr(loop, "save_model_folder", lambda folder, *_, **__: folder)


def _evaluator(val_samples: int) -> Evaluator:
    """An untrained tiny supernet on digits whose validation split keeps its first `val_samples`."""
    data = load_data("digits")
    data = dataclasses.replace(data, val=Split(data.val.x[:val_samples], data.val.y[:val_samples]))
    return Evaluator(tiny_supernet(), data, LatencySettings())


def _search(evaluator: Evaluator, out, budget: int, monkeypatch, *, resume: bool = False) -> tuple[dict, list]:
    """A random search on FLOPs under a FLOPs limit; also what its strategy was told first (objective 0)."""
    told: list[float] = []
    make = loop.make_strategy

    def spying(*args, **kwargs):
        strategy = make(*args, **kwargs)
        tell = strategy.tell

        def recorded(arch, objectives, violation):
            told.append(objectives[0])
            tell(arch, objectives, violation)
        strategy.tell = recorded
        return strategy

    monkeypatch.setattr(loop, "make_strategy", spying)
    summary = run_search(evaluator, out, budget=Budget(evaluations=budget), limits=Limits(max_flops=2_000_000),
                         strategy="random", seed=0, objective="flops", show_progress=False, resume=resume)
    return summary, told


@pytest.mark.parametrize("val_samples", [60, MIN_VAL_SAMPLES])
def test_the_search_ranks_by_loss_on_a_small_validation_split(tmp_path, monkeypatch, capsys, val_samples):
    by = "val_loss" if val_samples < MIN_VAL_SAMPLES else "val_acc"
    summary, told = _search(_evaluator(val_samples), tmp_path, 8, monkeypatch)
    note = capsys.readouterr().err
    assert note.count("ranked by validation loss") == (by == "val_loss") and note.count("\n") <= 1
    assert summary["ranking"]["by"] == by
    table = pd.read_csv(tmp_path / "evaluations.csv", dtype={"id": str})
    score = table["val_loss"] if by == "val_loss" else -table["val_acc"]
    assert told == score.tolist()  # the strategy is told the ranking's value, minimized
    ok = table[table["feasible"]]
    rank = ok.assign(score=score[ok.index])
    assert summary["chosen"]["id"] == rank.sort_values(["score", "flops"]).iloc[0]["id"]
    front = pd.read_csv(tmp_path / "pareto.csv", dtype={"id": str})
    points = rank[["score", "flops"]].to_numpy()
    for _, row in front.iterrows():  # nothing feasible beats a front member on both the ranking and FLOPs
        mine = rank.loc[rank["id"] == row["id"], ["score", "flops"]].to_numpy()[0]
        assert not ((points <= mine).all(axis=1) & (points < mine).any(axis=1)).any()
    # the hypervolume is accuracy's against the objective, whatever the ranking
    ref = hypervolume_reference(2_000_000)
    assert summary["hypervolume"] == front_hypervolume(ok["val_acc"].to_numpy(), ok["flops"].to_numpy(float), ref)
    assert summary["ranking"]["distinct_val_acc"] == ok["val_acc"].nunique()


def test_a_search_recorded_before_the_loss_resumes_ranked_by_accuracy(tmp_path, monkeypatch):
    evaluator = _evaluator(60)
    _search(evaluator, tmp_path, 4, monkeypatch)
    path = tmp_path / "evaluations.csv"
    pd.read_csv(path, dtype={"id": str})[LEGACY_COLUMNS].to_csv(path, index=False)  # as written before val_loss
    (tmp_path / "search.json").unlink()
    summary, told = _search(evaluator, tmp_path, 7, monkeypatch, resume=True)
    table = pd.read_csv(path, dtype={"id": str})
    assert list(table.columns) == LEGACY_COLUMNS and len(table) == 7
    assert summary["ranking"]["by"] == "val_acc" and "recorded before" in summary["ranking"]["reason"]
    assert told == (-table["val_acc"]).tolist()
    assert json.loads((tmp_path / "search.json").read_text())["evaluations"] == 7
    assert np.isfinite(summary["hypervolume"])
