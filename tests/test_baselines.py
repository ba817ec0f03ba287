"""scikit-learn baselines on the run's split: the floor a handed-over model must clear, and the line
and warning a search prints against them."""

from __future__ import annotations

import json

import pytest

from nas.cli.report import check_baselines
from nas.data.datasets import load_data
from nas.evaluation import baselines
from nas.evaluation.baselines import compare, fit_baselines
from tests.helpers import few_digits


def test_baselines_fit_the_training_split_and_score_validation_and_test():
    data = few_digits(400)
    rows = fit_baselines(data)
    assert [r["method"] for r in rows] == ["logistic regression", "RBF SVC"]
    for r in rows:  # 8x8 digits: both well above chance (0.1), from 400 training images
        assert r["train_samples"] == 400 and r["val_acc"] > 0.85 and r["test_acc"] > 0.85 and r["seconds"] >= 0
    with pytest.raises(ValueError, match="unknown baselines"):
        fit_baselines(data, ["random forest"])


def test_large_training_sets_are_drawn_down_and_the_kernel_baseline_left_out(monkeypatch):
    monkeypatch.setattr(baselines, "MAX_TRAIN", 300)
    monkeypatch.setattr(baselines, "MAX_VALUES", 300 * 64 - 1)  # 300 images of 64 pixels: just above it
    rows = fit_baselines(load_data("digits"))
    assert [(r["method"], r["train_samples"]) for r in rows] == [("logistic regression", 300)]


def test_a_model_below_the_best_baseline_by_more_than_one_test_sample_is_below():
    rows = [{"method": "a", "test_acc": 0.90}, {"method": "b", "test_acc": 0.95}]
    assert compare(rows, 0.945, 100)["below"] is False  # within one sample of 100
    verdict = compare(rows, 0.93, 100)
    assert verdict["below"] is True and verdict["best"] == "b" and verdict["best_test_acc"] == 0.95


def test_a_search_says_when_its_model_is_below_a_baseline(tmp_path, capsys):
    data = few_digits(300)
    (tmp_path / "search.json").write_text(json.dumps({"evaluations": 3}))
    check_baselines(tmp_path, data, {"test_acc": 0.5})
    out, err = capsys.readouterr()
    assert out.startswith("baselines on the same split (scikit-learn, test acc): logistic regression 0.")
    assert out.rstrip().endswith("this model 0.5000")
    assert err.startswith("nas: warning: the handed-over model is below a scikit-learn baseline on the same split")
    recorded = json.loads((tmp_path / "search.json").read_text())
    assert recorded["evaluations"] == 3 and recorded["baselines"]["below"] is True  # added, nothing lost
    check_baselines(tmp_path, data, {"test_acc": 1.0})
    assert capsys.readouterr().err == "" and not json.loads((tmp_path / "search.json").read_text())["baselines"]["below"]
