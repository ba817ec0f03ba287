"""`nas ablate`: config validation, and a tiny sweep on a local Ray (2 CPUs, small object store) in
which a training worker is killed (the trial is retried and continues from its checkpoint) and the
sweep is interrupted with Ctrl-C, then resumed: finished trials are not run again, no evaluation is
lost or recorded twice, and every table and plot is written."""

from __future__ import annotations

import copy
import fcntl
import json
import operator
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from nas.ablate.config import AblationConfig, Grid, load_config
from nas.ablate.report import format_summary, summarize
from nas.ablate.run import (
    ATTEMPTS_FILE,
    SUPERNETS,
    TRIAL_FILE,
    TRIALS,
    SearchTrial,
    _sweep_lock,
    collect,
    search_job,
    search_trials,
    supernet_trials,
)
from nas.cli.main import main
from nas.cluster.tune import run_trials
from nas.errors import UserError
from nas.search.strategies import make_strategy, strategies_with_predictor
from nas.training.checkpoint import CHECKPOINT_FILE
from search_spaces import get_space

pytestmark = pytest.mark.ray

CONFIG = {
    "name": "tiny-sweep",
    "space": "tiny",
    "train": {"epochs": 2, "num_random": 0, "warmup_epochs": 0},
    "search": {"objective": "flops", "max_flops": 4000000},
    "grid": {"sampling": ["sandwich"], "strategy": ["random", "evolution"], "budget": [12], "seed": [0, 1]},
    "resources": {"cpu": 1, "max_concurrent": 1},  # one trial at a time: the sabotage below is deterministic
    "max_failures": 2,
}
KILLED, FINISHED = "sandwich-seed0", "sandwich-seed1"  # supernet trials: a worker killed mid-training / left alone


def _write_config(folder: Path, changes: dict) -> Path:
    config = copy.deepcopy(CONFIG)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = folder / "sweep.json"
    path.write_text(json.dumps(config))
    return path


def _attempts(folder: Path) -> list[dict]:
    path = folder / ATTEMPTS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


# --------------------------------------------------------------------------- validation (no Ray)
@pytest.mark.parametrize("changes, message", [
    ({"gird": {}}, "gird is not a key of the config"),
    ({"name": "../up"}, "name must be"),
    ({"grid": {"strategy": ["annealing"]}}, "grid.strategy: 'annealing' is not one of"),
    ({"grid": {"sampling": "sandwich"}}, "grid.sampling must be a list"),
    ({"grid": {"seed": [0, 0]}}, "grid.seed must be a non-empty list without repeats"),
    ({"grid": {"seed": [-1]}}, "grid.seed: seeds are integers"),
    ({"grid": {"seed": [[0]]}}, "grid.seed: [0] is not a string or a number"),
    ({"search": {"objective": ["flops"]}}, "search.objective: ['flops'] is not one of"),
    ({"resources": {"max_concurrent": 0}}, "resources.max_concurrent must be an integer >= 1"),
    ({"grid": {"budget": ["ten"]}}, "grid.budget: each budget is"),
    ({"grid": {"budget": ["90s"]}}, "durations are not comparable"),
    ({"grid": {"budget": [5, " 5"]}}, "grid.budget must be a non-empty list without repeats"),  # both are 5
    ({"grid": {"budget": ["\u0665"]}}, "grid.budget: each budget is"),  # an Arabic-Indic 5
    ({"grid": {"predictor": ["xgboost"]}}, "grid.predictor: 'xgboost' is not one of"),
    ({"grid": {"predictor": ["gp"]}}, "grid.predictor applies only to the strategies ['predictor']"),
    ({"grid": {"colour": ["red"]}}, "grid.colour is not a key of grid"),
    ({"train": {"sampling": "uniform"}}, "train.sampling: the sweep sets it from grid.sampling"),
    ({"train": {"epochs": 0}}, "train.epochs must be >= 1, got 0"),
    ({"search": {"objective": "latency"}}, "search.target: latency needs a profile"),
    ({"search": {"max_flops": -5}}, "search.max_flops must be > 0, got -5"),
    ({"search": {"max_flops": 10}}, "search.max_flops 10 cannot be met by any subnet of space 'tiny'"),
    ({"resources": {"cpu": 0}}, "resources.cpu must be a number > 0"),
    ({"max_failures": -1}, "max_failures must be an integer >= 0"),
    ({"space": "nowhere"}, "space: unknown space 'nowhere'"),
    ({"data": "nodata"}, "data: unknown dataset 'nodata'"),
    ({"resources": {"gpu": 1}}, "resources: a trial needs"),
])
def test_bad_config_is_one_line_error(tmp_path, capsys, changes, message):
    path = _write_config(tmp_path, changes)
    assert main(["ablate", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("nas: error: ") and message in err, err
    assert not (tmp_path / "out").exists()


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ablate", "--help"])
    assert exit_info.value.code == 0 and "--resume" in capsys.readouterr().out


def test_missing_name_and_non_object(tmp_path, capsys):
    for content in ('{"grid": {}}', "[1, 2]", "{not json"):
        path = tmp_path / "c.json"
        path.write_text(content)
        assert main(["ablate", str(path)]) == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_grid_expands_predictors_only_for_strategies_that_learn_one():
    assert strategies_with_predictor() == ["predictor"]
    grid = Grid(sampling=("sandwich", "uniform"), strategy=("random", "predictor"), predictor=("ridge", "gp"),
                budget=("20", 50), seed=(0, 1))
    trials = search_trials(grid)
    assert len(trials) == 2 * (1 + 2) * 2 * 2 and len({t.id for t in trials}) == len(trials)
    assert {t.predictor for t in trials if t.strategy == "random"} == {None}
    assert [t.id for t in supernet_trials(grid)] == ["sandwich-seed0", "sandwich-seed1", "uniform-seed0", "uniform-seed1"]
    assert {t.supernet for t in trials} == {t.id for t in supernet_trials(grid)}


def test_predictor_family_reaches_the_strategy():
    space = get_space("tiny")
    assert make_strategy("predictor", space, seed=0, predictor="gp").predictor == "gp"
    with pytest.raises(UserError, match="learns no accuracy predictor"):
        make_strategy("random", space, seed=0, predictor="gp")


# --------------------------------------------------------------------------- a sweep on a local Ray
@dataclass(frozen=True)
class Sweep:
    config: Path
    out: Path
    first_rc: int
    second_rc: int
    killed_pid: int | None
    recorded: frozenset[str]  # search trials Tune had recorded as finished when Ctrl-C was pressed
    attempts: dict[str, list[dict]]  # trial folder -> its attempts when the first run ended


def _sabotage(out: Path, done: threading.Event, killed: list[int], recorded: set[str]) -> None:
    """Kill the worker training KILLED once its first epoch checkpoint is written; then press Ctrl-C
    (SIGINT to this process) once the second search trial has started. Trials run one at a time,
    so every trial that had finished before the latest one started was recorded by Tune."""
    deadline = time.monotonic() + 240
    while not done.is_set() and time.monotonic() < deadline:
        attempts = _attempts(out / SUPERNETS / KILLED)
        if not killed and len(attempts) == 1 and (out / SUPERNETS / KILLED / CHECKPOINT_FILE).is_file():
            killed.append(attempts[0]["pid"])
            os.kill(attempts[0]["pid"], signal.SIGKILL)
        trials = list((out / TRIALS).iterdir()) if (out / TRIALS).is_dir() else []
        finished = {t.name for t in trials if (t / TRIAL_FILE).is_file()}  # before `started`: no race
        started = [t for t in trials if (t / ATTEMPTS_FILE).is_file()]
        if len(started) >= 2:
            latest = max(started, key=lambda t: (t / ATTEMPTS_FILE).stat().st_mtime_ns).name
            recorded |= finished - {latest}
            os.kill(os.getpid(), signal.SIGINT)
            return
        time.sleep(0.02)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, local_ray) -> Sweep:  # runs a whole sweep twice: the tests using it are marked slow
    root = tmp_path_factory.mktemp("ablate")
    digits = load_digits()
    pick = np.random.default_rng(0).permutation(len(digits.target))[:300]
    np.savez(root / "digits300.npz", x=digits.images[pick].astype(np.float32), y=digits.target[pick])
    config = _write_config(root, {"data": str(root / "digits300.npz")})
    out = root / "sweep"
    done, killed, recorded = threading.Event(), [], set()
    saboteur = threading.Thread(target=_sabotage, args=(out, done, killed, recorded), daemon=True)
    saboteur.start()
    try:
        first = main(["ablate", str(config), "--out", str(out), "--quiet"])
    finally:
        done.set()
        saboteur.join()
    attempts = {f"{kind}/{p.name}": _attempts(p) for kind in (SUPERNETS, TRIALS) for p in (out / kind).iterdir()}
    second = main(["ablate", str(config), "--out", str(out), "--quiet", "--resume"])
    return Sweep(config, out, first, second, killed[0] if killed else None, frozenset(recorded), attempts)


@pytest.mark.slow
def test_killed_worker_is_retried_from_its_checkpoint(sweep):
    assert sweep.killed_pid is not None
    killed = sweep.attempts[f"{SUPERNETS}/{KILLED}"]
    assert [a["state"] for a in killed] == ["new", "resumed from its last epoch checkpoint"]  # Tune's retry
    assert killed[0]["pid"] == sweep.killed_pid != killed[1]["pid"]
    assert [a["state"] for a in sweep.attempts[f"{SUPERNETS}/{FINISHED}"]] == ["new"]


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_rerunning_finished_trials(sweep):
    assert sweep.first_rc == 130 and sweep.second_rc == 0 and sweep.recorded
    for folder in (sweep.out / SUPERNETS, sweep.out / TRIALS):
        for trial in folder.iterdir():
            before, after = sweep.attempts.get(f"{folder.name}/{trial.name}", []), _attempts(trial)
            if folder.name == SUPERNETS or trial.name in sweep.recorded:
                assert after == before, trial.name  # finished before Ctrl-C: not run again
            states = [a["state"] for a in after]
            assert states[0] in ("new", "resumed from its last epoch checkpoint") and states.count("new") == 1
            assert all(s.startswith(("resumed", "finished before")) for s in states[1:]), states


@pytest.mark.slow
def test_each_supernet_is_trained_once_and_shared(sweep):
    folders = sorted(p.name for p in (sweep.out / SUPERNETS).iterdir())
    assert folders == [KILLED, FINISHED]  # one per (sampling rule, seed), not one per search trial
    for name in folders:
        space = json.loads((sweep.out / SUPERNETS / name / "space.json").read_text())
        assert [e["epoch"] for e in space["summary"]["epochs"]] == [1, 2]  # epochs once each, across attempts
        assert not (sweep.out / SUPERNETS / name / CHECKPOINT_FILE).exists()
    for trial in (sweep.out / TRIALS).iterdir():
        assert not (trial / "supernet.safetensors").exists()
        assert not (trial / "models").exists() or len(list((trial / "models").iterdir())) == 1


@pytest.mark.slow
def test_tables_and_plots(sweep):
    table = pd.read_csv(sweep.out / "results.csv")
    assert len(table) == 4 and (table["status"] == "done").all()
    assert sorted(table["trial"]) == sorted(t.id for t in search_trials(load_config(sweep.config).grid))
    assert table["hypervolume"].between(0, 1).all() and (table["evaluations"] == 12).all()
    assert (table["chosen_cost"] <= 4000000).all() and table["supernet_val_acc_largest"].notna().all()
    for trial in table["trial"]:
        evaluations = pd.read_csv(sweep.out / TRIALS / trial / "evaluations.csv")
        assert len(evaluations) == 12 and evaluations["id"].is_unique
    summary = pd.read_csv(sweep.out / "summary.csv")
    assert list(summary["method"]) == ["random", "evolution"] and (summary["seeds"] == 2).all()
    assert {"hypervolume_mean", "hypervolume_std", "best_val_acc_mean", "test_acc_std"} <= set(summary.columns)
    for plot in ("hypervolume.png", "best_val_acc.png"):
        assert (sweep.out / plot).read_bytes()[:4] == b"\x89PNG"
    record = json.loads((sweep.out / "config.json").read_text())
    assert record["format"] == "nas-ablation" and record["hypervolume_reference"] == {"accuracy": 0.0, "flops": 4000000}
    assert record["config"]["grid"]["budget"] == ["12"] and record["config"]["data"].endswith("digits300.npz")


@pytest.mark.slow
def test_a_failed_trial_is_a_row_with_its_error_and_no_mean(sweep):
    trials = search_trials(load_config(sweep.config).grid)
    lost = SearchTrial("sandwich", "random", None, "99", 0)  # no trial.json: it failed on every attempt
    table = collect(sweep.out, [*trials, lost], {lost.id: "KeyError: 'x'"})
    assert list(table["status"]) == ["done"] * 4 + ["failed"] and table["error"].iloc[-1] == "KeyError: 'x'"
    assert pd.isna(table["hypervolume"].iloc[-1]) and table["supernet_val_acc_largest"].notna().all()
    summary = summarize(table)
    assert len(summary) == 2 and "| sandwich | random | 12 |" in format_summary(summary)


@pytest.mark.slow
def test_interrupted_search_is_replayed_not_repeated(sweep, tmp_path):
    """A search trial whose worker died after 5 evaluations (and mid-row) continues from its file and
    ends exactly as the uninterrupted trial did; a finished trial called again evaluates nothing."""
    config = load_config(sweep.config)
    trial = SearchTrial("sandwich", "evolution", None, "12", 1)
    out = tmp_path / "sweep"
    shutil.copytree(sweep.out / SUPERNETS / trial.supernet, out / SUPERNETS / trial.supernet)
    lines = (sweep.out / TRIALS / trial.id / "evaluations.csv").read_text().splitlines(keepends=True)
    folder = out / TRIALS / trial.id
    folder.mkdir(parents=True)
    (folder / "evaluations.csv").write_text("".join(lines[:6]) + lines[6][:40])  # header, 5 rows, a cut-off row
    setting = {"id": trial.id, "sampling": "sandwich", "strategy": "evolution", "predictor": None, "budget": "12",
               "seed": 1}
    recorded = json.loads((sweep.out / "config.json").read_text())["hypervolume_reference"]
    reference = (recorded["accuracy"], recorded["flops"])
    metrics = search_job(setting, config=config, out=out, reference=reference)
    resumed = pd.read_csv(folder / "evaluations.csv")
    original = pd.read_csv(sweep.out / TRIALS / trial.id / "evaluations.csv")
    assert list(resumed["arch"]) == list(original["arch"]) and list(resumed["index"]) == list(range(12))
    assert metrics == json.loads((sweep.out / TRIALS / trial.id / TRIAL_FILE).read_text()) | {
        "search_seconds": metrics["search_seconds"]}
    assert _attempts(folder)[0]["state"] == "resumed: 5 evaluations recorded"
    before = (folder / "evaluations.csv").stat().st_mtime_ns
    assert search_job(setting, config=config, out=out, reference=reference) == metrics
    assert (folder / "evaluations.csv").stat().st_mtime_ns == before
    assert _attempts(folder)[-1]["state"] == "finished before: recorded metrics returned"


@pytest.mark.slow
def test_resume_refuses_a_changed_config_and_a_new_run_an_existing_folder(sweep, tmp_path, capsys):
    changed = json.loads(sweep.config.read_text())
    changed["grid"]["seed"] = [0, 1, 2]
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(changed))
    assert main(["ablate", str(path), "--out", str(sweep.out), "--resume"]) == 2
    assert "in ['grid.seed']" in capsys.readouterr().err
    assert main(["ablate", str(sweep.config), "--out", str(sweep.out)]) == 2
    assert "already holds a sweep: continue it with --resume" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_refuses_changed_input_files(sweep, tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    record = json.loads((sweep.out / "config.json").read_text())
    assert set(record["digests"]) == {"data"}  # the .npz; the space and the objective are built-in
    record["digests"]["data"] = "0" * 64  # as if the file had been rewritten since the start
    (out / "config.json").write_text(json.dumps(record))
    assert main(["ablate", str(sweep.config), "--out", str(out), "--resume"]) == 2
    assert "the file(s) named by ['data'] changed since" in capsys.readouterr().err


def test_one_driver_at_a_time(tmp_path):
    lock = tmp_path / ".nas.lock"
    with lock.open("a+") as other:  # another driver: the lock held by an open file of its own
        fcntl.flock(other, fcntl.LOCK_EX)
        other.write(json.dumps({"host": "elsewhere", "pid": 4242, "command": "nas ablate x.json"}))
        other.flush()
        with pytest.raises(UserError, match=r"in use by `nas ablate x.json` \(pid 4242 on host elsewhere"), \
                _sweep_lock(tmp_path):
            pass
    # that driver died (the kernel released its lock) and left its file: taken over
    with _sweep_lock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_run_trials_retries_then_reports_each_failure_on_one_line(local_ray, tmp_path):
    settings = [{"id": "ok", "metrics": {"x": 1.0}}, {"id": "broken"}]  # the job pops "metrics": a KeyError for "broken"
    outcome = run_trials(operator.methodcaller("pop", "metrics"), settings, folder=tmp_path, name="toy", cpu=1, gpu=0,
                         max_concurrent=None, max_failures=1)
    assert outcome.errors == {"broken": "KeyError: 'metrics'"} and not outcome.interrupted
    assert (tmp_path / "toy" / "broken" / "error.txt").is_file()


def test_a_config_without_space_takes_the_one_for_its_data():
    assert AblationConfig.from_dict({"name": "s", "data": "mnist1d"}).space == "seq"
    assert AblationConfig.from_dict({"name": "d"}).space == "tiny"  # digits, the default data
    assert AblationConfig.from_dict({"name": "g", "data": "mnist1d", "space": "tiny"}).space == "tiny"  # as given
