"""End to end through the CLI: train, search, extract, load_model; and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import nas
from nas.cli.main import main
from nas.data.datasets import load_data
from nas.evaluation.accuracy import evaluate
from nas.search.pareto import pareto_indices
from tests.helpers import FAST, QUICK_FINISH, ROOT, TRAIN_ARGS, same_weights, stored_digits, subprocess_env


@pytest.fixture(scope="module")
def search_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "search"
    assert main(["search", "--budget", "8", "--max-latency-ms", "200", "--out", str(out), *FAST, *QUICK_FINISH]) == 0
    return out


def test_search_writes_every_artifact(search_run):
    for name in ("config.json", "supernet.safetensors", "space.json", "evaluations.csv", "pareto.csv",
                 "pareto.png", "search.json"):
        assert (search_run / name).is_file(), name
    config = json.loads((search_run / "config.json").read_text())
    assert config["args"]["seed"] == 0 and config["versions"]["torch"] == torch.__version__
    assert "processor" in config["hardware"]
    table = pd.read_csv(search_run / "evaluations.csv", dtype={"id": str})
    assert len(table) == 8 and table["id"].is_unique
    assert set(table.columns) >= {"arch", "id", "val_acc", "latency_ms", "flops", "params", "feasible"}
    assert (table["latency_ms"] > 0).all() and (table["flops"] > 0).all()
    pareto = pd.read_csv(search_run / "pareto.csv", dtype={"id": str})
    feasible = table[table["feasible"]]
    front = feasible.iloc[pareto_indices(np.column_stack([-feasible["val_acc"], feasible["latency_ms"]]))]
    assert pareto["feasible"].all() and len(pareto) == len(front) >= 1 and set(pareto["id"]) == set(front["id"])
    assert pareto["val_acc"].is_monotonic_increasing and pareto["latency_ms"].is_monotonic_increasing


def test_extracted_model_reproduces_recorded_accuracy(search_run):
    summary = json.loads((search_run / "search.json").read_text())
    chosen = summary["chosen"]
    assert chosen["path"] == f"models/{chosen['id']}"  # relative to the run folder
    model = nas.load_model(search_run / chosen["path"])
    assert isinstance(model, torch.nn.Module)
    assert not any("Elastic" in type(m).__name__ for m in model.modules())
    data = load_data("digits")  # the model standardises the data itself: it takes the images as stored
    assert evaluate(model, stored_digits(data, "test")) == pytest.approx(chosen["test_acc"], abs=1e-12)
    assert evaluate(model, stored_digits(data, "val")) == pytest.approx(chosen["val_acc"], abs=1e-12)
    meta = json.loads((search_run / chosen["path"] / "model.json").read_text())
    assert meta["metrics"]["params"] == sum(p.numel() for p in model.parameters())
    assert meta["costs"]["latency_ms"]["value"] == chosen["latency_ms"] and meta["costs"]["latency_ms"]["target"] == "cpu"
    assert {p.name for p in (search_run / chosen["path"]).iterdir()} == {"model.safetensors", "model.json", "model.onnx",
                                                                        "README.md"}


def test_extract_command_and_no_overwrite(search_run, capsys):
    table = pd.read_csv(search_run / "evaluations.csv", dtype={"id": str})
    arch_id = table["id"].iloc[-1]
    assert main(["extract", str(search_run), "--arch", arch_id]) == 0
    model = nas.load_model(search_run / "models" / arch_id)
    data = load_data("digits")
    assert evaluate(model, stored_digits(data, "val")) == pytest.approx(table["val_acc"].iloc[-1], abs=1e-12)
    meta = json.loads((search_run / "models" / arch_id / "model.json").read_text())
    assert meta["costs"]["flops"]["value"] == table["flops"].iloc[-1] and (search_run / "models" / arch_id / "model.onnx").is_file()
    before = (search_run / "models" / arch_id / "model.safetensors").read_bytes()
    assert main(["extract", str(search_run), "--arch", arch_id]) == 2
    assert "--force" in capsys.readouterr().err
    assert (search_run / "models" / arch_id / "model.safetensors").read_bytes() == before
    assert main(["extract", str(search_run), "--arch", "nope"]) == 2
    assert "no subnet with id 'nope'" in capsys.readouterr().err


def test_search_reuses_a_supernet_and_keeps_old_runs(search_run, tmp_path, capsys):
    out = tmp_path / "again"
    args = ["search", "--supernet", str(search_run), "--budget", "3", "--max-params", "60000", "--out", str(out), "--quiet",
            *QUICK_FINISH]
    assert main(args) == 0
    chosen = json.loads((out / "search.json").read_text())["chosen"]
    weights = f"{chosen['model_bytes'] / 2**20:.2f} MiB of weights -> "  # the last line says the size as deployed
    printed = capsys.readouterr().out
    assert chosen["model_bytes"] == 4 * chosen["params"] and weights in printed
    assert "baselines on the same split (scikit-learn, test acc, " in printed and "): logistic regression " in printed
    model = json.loads((out / chosen["path"] / "model.json").read_text())  # and its model folder records them
    assert set(model["metrics"]["baselines"]["test_acc"]) == {"logistic regression", "RBF SVC"}
    assert not (out / "supernet.safetensors").exists()  # reused, not retrained
    assert (pd.read_csv(out / "pareto.csv")["params"] <= 60000).all()
    written = (out / "evaluations.csv").read_text()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "evaluations.csv").read_text() == written


@pytest.mark.parametrize("argv, message", [
    (["search", "--data", "imagenet-21k"], "unknown dataset"),
    (["search", "--space", "galaxy"], "unknown space 'galaxy'"),
    (["search", "--budget", "ten"], "--budget 'ten' is malformed"),
    (["search", "--budget", "0"], "at least 1"),
    (["search", "--supernet", "missing/supernet.safetensors"], "does not exist"),
    (["search", "--max-params", "-5"], "must be > 0"),
])
def test_bad_input_is_one_clear_line(argv, message, tmp_path, capsys):
    fast = ["--quiet"] if "--supernet" in argv else FAST  # training flags have no effect with --supernet: refused
    assert main([*argv, "--out", str(tmp_path / "r"), *fast]) == 2
    err = capsys.readouterr().err.strip()
    assert message.lower() in err.lower() and len(err.splitlines()) == 1 and "Traceback" not in err


def test_corrupt_supernet_and_impossible_limits(search_run, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "space.json").write_text((search_run / "space.json").read_text())
    (bad / "supernet.safetensors").write_bytes((search_run / "supernet.safetensors").read_bytes()[:1000])
    assert main(["search", "--supernet", str(bad), "--out", str(tmp_path / "r1"), "--quiet"]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert main(["search", "--supernet", str(search_run), "--max-params", "100", "--out", str(tmp_path / "r2"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--max-params 100" in err and "smallest achievable is" in err
    assert main(["search", "--supernet", str(search_run), "--max-latency-ms", "0.0001", "--out",
                 str(tmp_path / "r3"), "--quiet"]) == 2
    assert "ms on cpu" in capsys.readouterr().err
    assert main(["search", "--supernet", str(search_run), "--max-flops", "1000", "--out", str(tmp_path / "r4"),
                 "--quiet"]) == 2
    assert "multiply-adds" in capsys.readouterr().err and not (tmp_path / "r4").exists()


def test_npz_data_through_the_cli(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8, 8)).astype(np.float32)
    y = np.repeat(np.arange(4), 30)
    x[np.arange(120), y, y] += 4.0  # a learnable signal
    np.savez(tmp_path / "toy.npz", x=x, y=y)
    out = tmp_path / "train"
    assert main(["train", "--data", str(tmp_path / "toy.npz"), "--out", str(out), *FAST]) == 0
    supernet = nas.load_supernet(out)
    assert supernet.space.config.name == "tiny"


def test_console_script_help_runs_without_traceback(capsys):
    proc = subprocess.run([sys.executable, "-m", "nas", "--help"], capture_output=True, text=True,
                          env=subprocess_env(), cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and "usage: nas" in proc.stdout and not proc.stderr
    for cmd in ("train", "search", "extract", "finetune", "profile", "ablate", "space"):  # in this process: no start-up
        with pytest.raises(SystemExit) as stop:
            main([cmd, "--help"])
        out, err = capsys.readouterr()
        assert stop.value.code == 0 and out.startswith(f"usage: nas {cmd}") and not err


@pytest.mark.slow
def test_bad_arguments_leave_no_folder_and_same_seed_same_weights(trained_run, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--space", "bogus", "--out", str(out), *FAST]) == 2
    assert main(["search", "--max-params", "100", "--out", str(out), *FAST]) == 2  # impossible: fails before training
    assert not out.exists()
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "again"), *TRAIN_ARGS]) == 0  # as trained_run was trained
    a, b = (nas.load_supernet(run).state_dict() for run in (trained_run, tmp_path / "again"))
    assert same_weights(a, b)


def test_supernet_file_alone_carries_its_space(search_run, tmp_path):
    alone = tmp_path / "alone.safetensors"
    alone.write_bytes((search_run / "supernet.safetensors").read_bytes())
    supernet = nas.load_supernet(alone)
    reference = nas.load_supernet(search_run)
    assert supernet.space == reference.space
    x = torch.randn(2, 1, 8, 8)
    arch = supernet.space.largest()
    torch.testing.assert_close(supernet.eval()(x, arch), reference.eval()(x, arch))


def test_search_hands_over_the_finished_subnet_with_its_figures_before_and_after(search_run):
    chosen = json.loads((search_run / "search.json").read_text())["chosen"]
    assert chosen["finishing"]["how"] == "finetune" and chosen["finishing"]["steps"] > 0
    before = chosen["before_finishing"]
    assert chosen["val_acc"] > before["val_acc"]  # one epoch of supernet training: the fine-tune must gain
    pareto = pd.read_csv(search_run / "pareto.csv", dtype={"id": str}).set_index("id")
    assert pareto.at[chosen["id"], "val_acc_finished"] == pytest.approx(chosen["val_acc"])
    assert pareto.at[chosen["id"], "val_acc"] == pytest.approx(before["val_acc"])  # the search's own figure kept
    meta = json.loads((search_run / chosen["path"] / "model.json").read_text())
    assert meta["metrics"]["before_finishing"] == before and meta["metrics"]["val_acc"] == chosen["val_acc"]
    card = (search_run / chosen["path"] / "README.md").read_text()
    assert "before finishing" in card and f"{before['test_acc']:.4f}" in card


def test_finetune_finishes_finalists_and_marks_the_best(search_run, tmp_path, capsys):
    assert main(["finetune", str(search_run), "--finalists", "2", "--finish-budget", "0.05", "--quiet",
                 "--out", str(tmp_path)]) == 0
    *lines, baselines = capsys.readouterr().out.strip().splitlines()
    assert baselines.startswith("baselines on the same split (scikit-learn, test acc, ")  # of the best, last
    front = pd.read_csv(search_run / "pareto.csv", dtype={"id": str})
    assert len(lines) == min(2, len(front)) and sum("[best by validation]" in line for line in lines) == (len(lines) > 1)
    for line in lines:
        arch_id = line.split()[1]
        meta = json.loads((tmp_path / arch_id / "model.json").read_text())
        assert meta["metrics"]["finishing"]["how"] == "finetune" and "before_finishing" in meta["metrics"]
        assert evaluate(nas.load_model(tmp_path / arch_id), stored_digits(load_data("digits"), "val")) == \
            pytest.approx(meta["metrics"]["val_acc"], abs=1e-12)
    assert main(["finetune", str(search_run), "--out", str(tmp_path), "--quiet"]) == 2  # folders exist: --force
    assert main(["finetune", str(search_run), "--finish-budget", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--finish-budget must be > 0" in capsys.readouterr().err
    assert main(["export", str(search_run), "--arch", front["id"].iloc[0], "--out", str(tmp_path / "inherited")]) == 0
    assert (tmp_path / "inherited" / "model.onnx").is_file()
