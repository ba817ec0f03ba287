"""Ranking after a short fine-tune (`benchmarks/ranking_tuned.py`, `ranking_fidelity.py --tune-steps`)."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.ranking_supernets import supernet_folder, supernet_results
from benchmarks.ranking_tuned import tuned_results, tuned_summaries
from nas.data.datasets import Split
from nas.runs.files import SUPERNET_FILE
from nas.training.config import TrainConfig
from search_spaces import get_space
from tests.helpers import few_digits


def test_tuned_scores_start_from_the_inherited_ones_are_cached_and_retune_the_saved_supernet(tmp_path, capsys):
    data = few_digits(128)
    held_out = Split(torch.cat([data.val.x, data.test.x]), torch.cat([data.val.y, data.test.y]))
    space = get_space("tiny")
    pool = sorted({space.sample(np.random.default_rng(s)) for s in range(6)}, key=space.count_flops)
    subnets = [space.smallest(), *pool[:2]]  # small ones: quick to tune
    args = argparse.Namespace(out=tmp_path, epochs=1, space="tiny", tune_steps=[0, 2])
    (acc, loss, _, _), supernet = supernet_results(args, "uniform", TrainConfig(epochs=1, batch_size=64), None, 0, data,
                                                   held_out, subnets, 1)
    assert (supernet_folder(tmp_path, "uniform", 0, 1) / SUPERNET_FILE).is_file()  # kept for a later tuning

    tuned = tuned_results(args, "uniform", 0, supernet, data, held_out, subnets)
    zero, two = (tuned[tuned["steps"] == k].set_index("id").loc[[a.id for a in subnets]] for k in (0, 2))
    assert list(zero["acc"]) == pytest.approx(acc) and list(zero["loss"]) == pytest.approx(loss)  # K = 0: as inherited
    assert (zero["train_seconds"] == 0).all() and (two["train_seconds"] > 0).all()
    assert not np.allclose(two["loss"], zero["loss"])  # two steps of training moved the weights

    cached = tuned_results(args, "uniform", 0, None, data, held_out, subnets)  # nothing to tune: no supernet needed
    pd.testing.assert_frame_equal(cached.reset_index(drop=True), tuned.reset_index(drop=True))
    pd.read_csv(tmp_path / "tuned.csv").query("steps == 0").to_csv(tmp_path / "tuned.csv", index=False)
    again = tuned_results(args, "uniform", 0, None, data, held_out, subnets)  # K = 2 again, on the saved supernet
    assert list(again[again["steps"] == 2].set_index("id").loc[two.index, "loss"]) == pytest.approx(list(two["loss"]))

    rows = [{"id": a.id, "standalone_acc": x, "standalone_loss": y} for a, x, y in zip(subnets, acc, loss)]
    by_k = {s["tune_steps"]: s for s in tuned_summaries(again, rows, "uniform", scratch_steps=20)}
    assert sorted(by_k) == [0, 2] and by_k[2]["steps_over_scratch"] == 0.1
    assert by_k[0]["kendall_tau_loss"] == pytest.approx(1.0)  # the inherited losses rank themselves perfectly

    args.tune_steps = [5]  # a new K, with the supernet gone: said and skipped
    (supernet_folder(tmp_path, "uniform", 0, 1) / SUPERNET_FILE).unlink()
    assert tuned_results(args, "uniform", 0, None, data, held_out, subnets).empty
    assert "tuning skipped" in capsys.readouterr().out
