"""Crash-safe search: a search killed with SIGKILL mid-run and resumed ends as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from nas.cli import main
from nas.search import read_evaluations
from search_spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
# deterministic costs only (no timing), so an interrupted and an uninterrupted run can be compared
SEARCH = ["--budget", "40", "--objective", "params", "--max-flops", "1500000", "--quiet"]


@pytest.fixture(scope="module")
def supernet(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "supernet"
    assert main(["train", "--epochs", "1", "--num-random", "0", "--quiet", "--out", str(out)]) == 0
    return out


def _table(run: Path) -> pd.DataFrame:
    table = pd.read_csv(run / "evaluations.csv", dtype={"id": str})
    return table.drop(columns=["seconds", "time"])


@pytest.mark.parametrize("strategy", ["predictor", "optuna-nsga2"])
def test_search_killed_then_resumed_matches_an_uninterrupted_run(strategy, supernet, tmp_path):
    args = ["search", "--supernet", str(supernet), "--strategy", strategy, *SEARCH]
    whole = tmp_path / "whole"
    assert main([*args, "--out", str(whole)]) == 0

    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "nas", *args, "--out", str(run)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # kill once a part of the budget is recorded
            path = run / "evaluations.csv"
            if path.is_file() and path.read_text().count("\n") >= 26:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the search finished before it could be killed"
    recorded = len(read_evaluations(run / "evaluations.csv", get_space("tiny")))
    assert 20 <= recorded < 40 and not (run / "search.json").exists()

    assert main(["search", "--out", str(run), "--resume", "--quiet"]) == 0
    pd.testing.assert_frame_equal(_table(run), _table(whole))  # nothing repeated, nothing lost, same order
    done, ref = (json.loads((r / "search.json").read_text()) for r in (run, whole))
    assert done["chosen"]["id"] == ref["chosen"]["id"] and done["hypervolume"] == ref["hypervolume"]


def test_resume_drops_a_row_cut_off_mid_write(supernet, tmp_path):
    run = tmp_path / "cut"
    assert main(["search", "--supernet", str(supernet), "--strategy", "evolution", *SEARCH, "--out", str(run)]) == 0
    whole = _table(run)
    (run / "search.json").unlink()
    lines = (run / "evaluations.csv").read_text().splitlines(keepends=True)
    (run / "evaluations.csv").write_text("".join(lines[:15]) + lines[15][: len(lines[15]) // 2])  # killed mid-row
    assert len(read_evaluations(run / "evaluations.csv", get_space("tiny"))) == 14
    assert main(["search", "--out", str(run), "--resume", "--quiet"]) == 0
    pd.testing.assert_frame_equal(_table(run), whole)


def test_resume_refusals(supernet, tmp_path, capsys):
    run = tmp_path / "done"
    assert main(["search", "--supernet", str(supernet), *SEARCH, "--budget", "3", "--out", str(run)]) == 0
    assert main(["search", "--out", str(run), "--resume"]) == 2
    assert "finished search" in capsys.readouterr().err
    assert main(["search", "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    assert main(["search", "--out", str(supernet), "--resume"]) == 2  # a training run, not a search
    assert "not the config of a `nas search` run" in capsys.readouterr().err
    (run / "search.json").unlink()
    (run / "evaluations.csv").write_text("index,id\n0,abc\n")
    assert main(["search", "--out", str(run), "--resume"]) == 2
    assert "evaluations.csv: the header is not that of a search" in capsys.readouterr().err
