"""scikit-learn baselines on the run's split: the floor a handed-over model must clear, and the line
and warning a search prints against them."""

from __future__ import annotations

import json

import pytest
import torch

from nas.cli import report
from nas.cli.report import check_baselines
from nas.data.datasets import load_data
from nas.evaluation import baselines
from nas.evaluation.baselines import _draw, _pooled, compare, fit_baselines
from tests.helpers import few_digits


def test_baselines_fit_the_training_split_and_score_the_splits_asked():
    data = few_digits(400)
    rows = fit_baselines(data, splits=("val", "test"))
    assert [r["method"] for r in rows] == ["logistic regression", "RBF SVC"]
    for r in rows:  # 8x8 digits: both well above chance (0.1), from 400 training images
        assert (r["train_samples"], r["val_samples"], r["test_samples"]) == (400, len(data.val), len(data.test))
        assert r["val_acc"] > 0.85 and r["test_acc"] > 0.85 and r["seconds"] >= 0
    assert "val_acc" not in fit_baselines(data, ["logistic regression"])[0]  # the check scores the test split only
    with pytest.raises(ValueError, match="unknown baselines"):
        fit_baselines(data, ["random forest"])


def test_large_training_sets_are_drawn_down_and_the_kernel_baseline_left_out(monkeypatch):
    monkeypatch.setattr(baselines, "MAX_TRAIN", 300)
    data = load_data("digits")
    monkeypatch.setattr(baselines, "MAX_KERNEL_WORK", 300 * (300 + len(data.test)) * 64 - 1)  # just below the SVC's
    rows = fit_baselines(data, max_train=baselines.MAX_TRAIN)
    assert [(r["method"], r["train_samples"]) for r in rows] == [("logistic regression", 300)]


def test_a_draw_keeps_every_class_and_large_inputs_are_pooled():
    y = torch.tensor([0] * 999 + [1])  # one sample of class 1
    drawn = _draw(y, 10, seed=0)
    assert set(y[drawn].tolist()) == {0, 1} and len(drawn) == 11 and drawn.unique().numel() == 11
    assert torch.equal(_draw(y, None, seed=0), torch.arange(1000))
    assert _pooled(torch.ones(2, 3, 64, 48)).shape == (2, 3, 32, 32)
    assert _pooled(torch.ones(2, 1, 5000)).shape == (2, 1, 1024)
    assert _pooled(torch.ones(2, 1, 8, 8)).shape == (2, 1, 8, 8)


def test_a_model_below_the_best_baseline_by_more_than_one_test_sample_is_below():
    rows = [{"method": "a", "test_acc": 0.90}, {"method": "b", "test_acc": 0.95}]
    assert compare(rows, 0.94, 100)["below"] is False  # one sample of 100 fewer: a tie
    verdict = compare(rows, 0.93, 100)
    assert verdict["below"] is True and verdict["best"] == "b" and verdict["best_test_acc"] == 0.95
    assert compare([{"method": "a", "test_acc": 0.07}], 0.06, 100)["below"] is False  # exact in counts, not floats


def test_a_search_says_when_its_model_is_below_a_baseline(tmp_path, capsys, monkeypatch):
    data = few_digits(300)
    added = []  # what the model folder is given (`add_baselines`: tests/test_package.py)
    monkeypatch.setattr(report, "add_baselines", lambda folder, verdict: added.append((folder, verdict["below"])))
    (tmp_path / "search.json").write_text(json.dumps({"evaluations": 3}))
    check_baselines(data, 0.5, model=tmp_path, search=tmp_path)
    out, err = capsys.readouterr()
    assert out.startswith("baselines on the same split (scikit-learn, test acc, ")
    assert "): logistic regression 0." in out and out.rstrip().endswith("this model 0.5000")
    assert err.startswith("nas: warning: the handed-over model is below a scikit-learn baseline on the same split")
    recorded = json.loads((tmp_path / "search.json").read_text())
    assert recorded["evaluations"] == 3 and recorded["baselines"]["below"] is True  # added, nothing lost
    check_baselines(data, 1.0, model=tmp_path, search=tmp_path)
    assert capsys.readouterr().err == "" and not json.loads((tmp_path / "search.json").read_text())["baselines"]["below"]
    assert added == [(tmp_path, True), (tmp_path, False)]


def test_a_check_that_cannot_run_leaves_the_search_finished_with_a_note(tmp_path, capsys, monkeypatch):
    def fail(data):
        raise ValueError("This solver needs samples of at least 2 classes")

    monkeypatch.setattr(report, "fit_baselines", fail)
    (tmp_path / "search.json").write_text(json.dumps({"evaluations": 3}))
    check_baselines(few_digits(100), 0.9, model=tmp_path, search=tmp_path)
    out, err = capsys.readouterr()
    assert out == "" and err == ("nas: note: the handed-over model was not compared with scikit-learn baselines "
                                 "(ValueError: This solver needs samples of at least 2 classes)\n")
    assert json.loads((tmp_path / "search.json").read_text())["baselines"] == {
        "skipped": "ValueError: This solver needs samples of at least 2 classes"}
