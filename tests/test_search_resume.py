"""Crash-safe search: a search killed with SIGKILL mid-run and resumed ends as an uninterrupted one."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from nas.cli.main import main
from nas.search.records import read_evaluations
from search_spaces import get_space
from tests.helpers import QUICK_FINISH, evaluations, kill_when, nas_process, same_weights

# deterministic costs only (no timing), so an interrupted and an uninterrupted run can be compared
SEARCH = ["--budget", "40", "--objective", "params", "--max-flops", "1500000", "--quiet", *QUICK_FINISH]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["predictor", "optuna-nsga2"])
def test_search_killed_then_resumed_matches_an_uninterrupted_run(strategy, trained_run, tmp_path):
    args = ["search", "--supernet", str(trained_run), "--strategy", strategy, *SEARCH]
    whole = tmp_path / "whole"
    assert main([*args, "--out", str(whole)]) == 0

    run = tmp_path / "killed"
    path = run / "evaluations.csv"
    # kill once a part of the budget is recorded
    kill_when([*args, "--out", str(run)], lambda: path.is_file() and path.read_text().count("\n") >= 26)
    recorded = len(read_evaluations(run / "evaluations.csv", get_space("tiny")))
    assert 25 <= recorded < 40 and not (run / "search.json").exists()

    assert main(["search", "--out", str(run), "--resume", "--quiet"]) == 0
    pd.testing.assert_frame_equal(evaluations(run), evaluations(whole))  # nothing repeated, nothing lost, same order
    done, ref = (json.loads((r / "search.json").read_text()) for r in (run, whole))
    assert done["chosen"]["id"] == ref["chosen"]["id"] and done["hypervolume"] == ref["hypervolume"]


@pytest.mark.slow
def test_resume_drops_a_row_cut_off_mid_write(trained_run, tmp_path):
    run = tmp_path / "cut"
    assert main(["search", "--supernet", str(trained_run), "--strategy", "evolution", *SEARCH, "--out", str(run)]) == 0
    whole = evaluations(run)
    (run / "search.json").unlink()
    lines = (run / "evaluations.csv").read_text().splitlines(keepends=True)
    (run / "evaluations.csv").write_text("".join(lines[:15]) + lines[15][: len(lines[15]) // 2])  # killed mid-row
    assert len(read_evaluations(run / "evaluations.csv", get_space("tiny"))) == 14
    assert main(["search", "--out", str(run), "--resume", "--quiet"]) == 0
    pd.testing.assert_frame_equal(evaluations(run), whole)


def test_a_search_by_size_resumes_as_it_ran(trained_run, tmp_path):
    run = tmp_path / "size"
    args = ["--budget", "20", "--objective", "size", "--max-size-mb", "0.2", "--quiet", *QUICK_FINISH]
    assert main(["search", "--supernet", str(trained_run), *args, "--out", str(run)]) == 0
    whole, chosen = evaluations(run), json.loads((run / "search.json").read_text())["chosen"]["id"]
    (run / "search.json").unlink()
    lines = (run / "evaluations.csv").read_text().splitlines(keepends=True)
    (run / "evaluations.csv").write_text("".join(lines[:11]))  # stopped after 10 evaluations
    recorded = read_evaluations(run / "evaluations.csv", get_space("tiny"))
    assert [row["model_bytes"] for _, row in recorded] == whole["model_bytes"][:10].tolist()  # replayed as numbers
    assert main(["search", "--out", str(run), "--resume", "--quiet"]) == 0
    pd.testing.assert_frame_equal(evaluations(run), whole)
    assert json.loads((run / "search.json").read_text())["chosen"]["id"] == chosen


def test_resume_refusals(trained_run, tmp_path, capsys):
    run = tmp_path / "done"
    assert main(["search", "--supernet", str(trained_run), *SEARCH, "--budget", "3", "--out", str(run)]) == 0
    assert main(["search", "--out", str(run), "--resume"]) == 2
    assert "finished search" in capsys.readouterr().err
    assert main(["search", "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    assert main(["search", "--out", str(trained_run), "--resume"]) == 2  # a training run, not a search
    assert "not the config of a `nas search` run" in capsys.readouterr().err
    (run / "search.json").unlink()
    (run / "evaluations.csv").write_text("index,id\n0,abc\n")
    assert main(["search", "--out", str(run), "--resume"]) == 2
    assert "evaluations.csv: the header is not that of a search" in capsys.readouterr().err


@pytest.mark.slow
def test_search_killed_while_training_its_supernet_resumes_both(tmp_path):
    """`nas search` trains first: killed (SIGKILL) after the first epoch's checkpoint, `--resume`
    finishes the training from it (the path `nas train --resume` takes too), then searches; weights
    and evaluations equal an uninterrupted run's."""
    from nas.runs.files import load_supernet

    args = ["search", "--epochs", "2", "--num-random", "0", "--batch-size", "256", "--strategy", "evolution", *SEARCH]
    whole, run = tmp_path / "whole", tmp_path / "killed"
    assert main([*args, "--out", str(whole)]) == 0
    kill_when([*args, "--out", str(run)], lambda: (run / "checkpoint.safetensors").is_file())
    assert not (run / "supernet.safetensors").exists()
    assert main(["search", "--out", str(run), "--resume", "--quiet"]) == 0
    assert same_weights(load_supernet(whole).state_dict(), load_supernet(run).state_dict())
    pd.testing.assert_frame_equal(evaluations(run), evaluations(whole))


def test_resume_of_a_time_budget_continues_with_the_time_left(trained_run, tmp_path):
    """5 s of an 8 s budget were used before the kill: the resumed search evaluates in the 3 s left."""
    from nas.data.datasets import load_data
    from nas.evaluation.evaluator import Evaluator
    from nas.evaluation.limits import Limits
    from nas.hardware.measure import LatencySettings
    from nas.runs.files import load_supernet
    from nas.search.loop import Budget, run_search

    evaluator = Evaluator(load_supernet(trained_run), load_data("digits"), LatencySettings())
    limits, run = Limits(max_flops=1_500_000), tmp_path / "timed"
    run.mkdir()
    common = dict(limits=limits, strategy="evolution", seed=0, objective="params", show_progress=False)
    run_search(evaluator, run, budget=Budget(evaluations=10), **common)
    table = pd.read_csv(run / "evaluations.csv", dtype={"id": str})
    table["time"] = 0.5 * (table.index + 1)  # as if each evaluation had taken 0.5 s: 5 s used
    table.to_csv(run / "evaluations.csv", index=False)
    (run / "search.json").unlink()
    summary = run_search(evaluator, run, budget=Budget(seconds=8), resume=True, **common)
    after = pd.read_csv(run / "evaluations.csv", dtype={"id": str})
    assert len(after) > 10 and after["id"].is_unique
    assert after["time"].iloc[10:].min() > 5 and summary["seconds"] <= 8 + 0.5  # the last one may just overrun


def test_resume_refuses_other_settings(trained_run, tmp_path, capsys):
    run = tmp_path / "other"
    assert main(["search", "--supernet", str(trained_run), *SEARCH, "--budget", "2", "--out", str(run)]) == 0
    (run / "search.json").unlink()
    assert main(["search", "--out", str(run), "--resume", "--budget", "400"]) == 2
    err = capsys.readouterr().err
    assert "only --device, --quiet, --ray, --ray-address, --workers, --data-workers and --stream-data may be given with it (got --budget)" in err
    recorded = json.loads((run / "config.json").read_text())["args"]
    assert Path(recorded["supernet"]).is_absolute()


@pytest.mark.slow
def test_ctrl_c_finishes_the_evaluation_under_way_and_says_how_to_resume(trained_run, tmp_path):
    args = ["search", "--supernet", str(trained_run), "--strategy", "evolution", *SEARCH]
    whole, run = tmp_path / "whole", tmp_path / "stopped"
    assert main([*args, "--out", str(whole)]) == 0
    proc = nas_process([*args, "--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    path, deadline = run / "evaluations.csv", time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if path.is_file() and path.read_text().count("\n") >= 11:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"resume with: nas search --out {run} --resume" in err and "Traceback" not in err
    text = path.read_text()
    assert text.endswith("\n") and 10 <= text.count("\n") - 1 < 40  # whole rows only, the last one finished
    assert not (run / "search.json").exists()
    assert main(["search", "--out", str(run), "--resume", "--quiet"]) == 0
    pd.testing.assert_frame_equal(evaluations(run), evaluations(whole))


def test_a_run_recorded_before_a_setting_existed_resumes(trained_run, tmp_path):
    run = tmp_path / "old"
    assert main(["search", "--supernet", str(trained_run), *SEARCH, "--budget", "3", "--out", str(run)]) == 0
    (run / "search.json").unlink()
    config = json.loads((run / "config.json").read_text())
    del config["args"]["seq_len"]  # as written before --seq-len existed
    (run / "config.json").write_text(json.dumps(config))
    assert main(["search", "--out", str(run), "--resume", "--quiet"]) == 0


@pytest.mark.slow
def test_ctrl_c_on_the_last_training_step_stops_before_the_search(tmp_path, monkeypatch, capsys):
    import contextlib

    import nas.cli.main as cli

    @contextlib.contextmanager
    def pressed(unit):  # Ctrl-C came during the single step of the last epoch
        yield lambda: True

    monkeypatch.setattr(cli, "finish_on_interrupt", pressed)
    run = tmp_path / "run"
    args = ["search", "--epochs", "1", "--batch-size", "4096", "--num-random", "0", *SEARCH, "--out", str(run)]
    assert main(args) == 130
    assert f"resume with: nas search --out {run} --resume" in capsys.readouterr().err
    assert (run / "supernet.safetensors").is_file() and not (run / "evaluations.csv").exists()
    monkeypatch.undo()
    assert main(["search", "--out", str(run), "--resume", "--quiet"]) == 0
    assert len(pd.read_csv(run / "evaluations.csv")) == 40
