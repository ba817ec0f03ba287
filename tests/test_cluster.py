"""Ray: a search on Ray actors is the in-process search; a killed actor is retried; data-parallel
training equals one process; Ray is imported only when asked for. One local Ray (2 CPUs) for the file."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nas.cli.main import main
from nas.cluster.evaluate import RayPool
from nas.data.datasets import load_data
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import Limits
from nas.hardware.measure import LatencySettings
from nas.runs.files import load_supernet, save_supernet
from nas.search.loop import Budget, run_search
from nas.training.config import TrainConfig
from nas.training.train import train_supernet
from search_spaces import HybridSupernet, get_space
from tests.helpers import QUICK_FINISH, evaluations, npy_digits

pytestmark = [pytest.mark.ray,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")]  # Ray Train imports Ray Data
LIMITS = Limits(max_flops=1_500_000)
BUDGET = 36  # predictor: 20 random subnets + 16 of its first round; evolution: 2 generations of 16 + 4


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    """An untrained supernet: results need not be good to be compared, only deterministic."""
    torch.manual_seed(0)
    return Evaluator(HybridSupernet(get_space("tiny")), load_data("digits"), LatencySettings())


def _search(evaluator: Evaluator, out: Path, strategy: str, pool: RayPool | None = None) -> pd.DataFrame:
    out.mkdir()
    run_search(evaluator, out, budget=Budget(evaluations=BUDGET), limits=LIMITS, strategy=strategy, seed=3,
               objective="flops", show_progress=False, pool=pool)
    return evaluations(out)


@pytest.fixture(scope="class")
def pool(local_ray, evaluator):
    """Two evaluation actors for `TestSearchOnRay`: closed before the training tests need the 2 CPUs."""
    with RayPool(evaluator, workers=2) as pool:
        yield pool


class TestSearchOnRay:
    @pytest.mark.parametrize("strategy", ["random", "evolution", "predictor", "optuna-nsga2"])
    def test_ray_search_equals_the_in_process_search(self, strategy, evaluator, pool, tmp_path):
        alone = _search(evaluator, tmp_path / "alone", strategy)
        pd.testing.assert_frame_equal(_search(evaluator, tmp_path / "ray", strategy, pool), alone)
        summary = json.loads((tmp_path / "ray" / "search.json").read_text())
        assert summary["evaluation"]["engine"] == "ray" and summary["evaluation"]["workers"] == 2

    def test_killed_actor_is_restarted_and_its_evaluation_retried(self, evaluator, pool, tmp_path, monkeypatch):
        import ray

        submitted, killed = [], []
        submit = pool.submit

        def submit_then_kill(arch, *, latency):
            handle = submit(arch, latency=latency)
            submitted.append(arch)
            if len(submitted) == 21:  # its evaluation is under way: the actor dies, Ray restarts it
                ray.kill(pool._busy[handle], no_restart=False)
                killed.append(arch)
            return handle

        monkeypatch.setattr(pool, "submit", submit_then_kill)
        table = _search(evaluator, tmp_path / "killed", "evolution", pool)
        assert len(killed) == 1 and len(table) == BUDGET and table["id"].is_unique  # nothing lost, nothing twice
        monkeypatch.undo()
        pd.testing.assert_frame_equal(table, _search(evaluator, tmp_path / "alone", "evolution"))








@pytest.mark.slow
def test_two_worker_training_through_the_cli_equals_one_process(local_ray, tmp_path):
    digits = load_data("digits")  # a small .npz: 2 uneven batches per epoch (63 + the rest)
    x = torch.cat([digits.train.x, digits.val.x])[:130, 0].numpy()
    np.savez(tmp_path / "small.npz", x=x, y=torch.cat([digits.train.y, digits.val.y])[:130].numpy())
    args = ["train", "--data", str(tmp_path / "small.npz"), "--epochs", "2", "--batch-size", "63", "--optimizer", "sgd",
            "--warmup-epochs", "0", "--num-random", "1", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--workers", "2", "--out", str(tmp_path / "two")]) == 0
    one, two = (load_supernet(tmp_path / name).state_dict() for name in ("one", "two"))
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6)
    history = [json.loads((tmp_path / name / "space.json").read_text())["summary"]["epochs"] for name in ("one", "two")]
    assert np.isfinite([e["loss"] for e in history[1]]).all()
    assert [e["loss"] for e in history[1]] == pytest.approx([e["loss"] for e in history[0]], rel=1e-5)
    assert json.loads((tmp_path / "two" / "config.json").read_text())["args"]["workers"] == 2
    assert not (tmp_path / "two" / "ray-train").exists() and not (tmp_path / "two" / "checkpoint.safetensors").exists()


@pytest.mark.slow  # Ray Train's start-up: about 30 s on the 2-core machine
def test_two_ray_workers_reading_their_rows_of_a_streamed_npy_folder_equal_one_process(local_ray, tmp_path):
    """Each Ray Train worker reads its rows of every batch in its own DataLoader process (`--data-workers 1`):
    batches of 63, 63 and 1 rows (a worker without rows in the last), one epoch."""
    from nas.cluster.train import train_distributed

    data = load_data(str(npy_digits(tmp_path / "npy", 127)), workers=1)
    assert data.streamed
    config = TrainConfig(epochs=1, batch_size=63, optimizer="sgd", warmup_epochs=0, num_random=1)
    torch.manual_seed(0)
    one = HybridSupernet(get_space("tiny"))
    two = copy.deepcopy(one)
    summary = train_supernet(one, data, config, show_progress=False)
    (tmp_path / "run").mkdir()
    distributed = train_distributed(two, data, config, workers=2, run=tmp_path / "run")
    for key, value in one.state_dict().items():
        torch.testing.assert_close(two.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    assert [e["loss"] for e in distributed["epochs"]] == pytest.approx([e["loss"] for e in summary["epochs"]], rel=1e-5)


def test_search_resumed_with_another_worker_count_ends_as_the_uninterrupted_one(local_ray, evaluator, tmp_path):
    supernet = save_supernet(tmp_path, evaluator.supernet, {})
    args = ["search", "--supernet", str(supernet), "--budget", "24", "--objective", "flops", "--max-flops", "1500000",
            "--strategy", "predictor", "--quiet", *QUICK_FINISH]
    whole, run = tmp_path / "whole", tmp_path / "cut"
    assert main([*args, "--out", str(whole)]) == 0
    shutil.copytree(whole, run)
    lines = (run / "evaluations.csv").read_text().splitlines(keepends=True)
    (run / "evaluations.csv").write_text("".join(lines[:11]))  # as if killed after 10 evaluations
    (run / "search.json").unlink()
    assert main(["search", "--out", str(run), "--resume", "--workers", "2", "--quiet"]) == 0
    pd.testing.assert_frame_equal(evaluations(run), evaluations(whole))


@pytest.mark.parametrize("flags, message", [
    (["--workers", "0"], "--workers must be >= 1, got 0"),
    (["--ray-address", "127.0.0.1:1"], "could not reach the Ray cluster at 127.0.0.1:1"),
    (["--ray-address", "nowhere"], "is not HOST:PORT"),
])
def test_bad_ray_flags_are_one_line(flags, message, tmp_path, capsys):
    assert main(["train", *flags, "--epochs", "1", "--quiet", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not (tmp_path / "r").exists()


