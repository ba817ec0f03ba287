"""The training budget and the health checks of supernet training, each on a run built to fail."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from rich.console import Console
from sklearn.datasets import load_digits

from nas.cli.main import main
from nas.errors import FieldError, UserError
from nas.runs import progress
from nas.training import train as train_mod
from nas.training.assess import assess_training
from nas.training.checkpoint import CHECKPOINT_FILE
from nas.training.config import DEFAULT_EPOCHS, MIN_STEPS, TrainConfig, training_budget
from nas.training.health import chance_streaks, final_problems, teacher_learned
from nas.training.train import lr_at, train_supernet
from tests.helpers import few_digits, rewrite_checkpoint_metadata, stop_training_after, tiny_supernet


def digits_npz(path, n: int = 130, *, shuffle_labels: bool = False):
    """The first n digits as an .npz (`nas train --data`), labels shuffled when asked: nothing to learn."""
    digits = load_digits()
    y = digits.target[:n]
    np.savez(path, x=digits.images[:n].astype(np.float32), y=np.random.default_rng(0).permutation(y) if shuffle_labels else y)
    return str(path)


# ------------------------------------------------------------------------------ the budget
def test_the_default_budget_gives_at_least_min_steps_on_a_tiny_set():
    tiny = training_budget(TrainConfig(), 139)  # 3 steps an epoch: 40 epochs would be 120 steps
    assert tiny.steps >= MIN_STEPS and tiny.steps % tiny.steps_per_epoch == 0 and tiny.epochs > DEFAULT_EPOCHS
    large = training_budget(TrainConfig(), 42_500)  # 665 steps an epoch: the 40 epochs, nothing added
    assert (large.epochs, large.steps) == (DEFAULT_EPOCHS, DEFAULT_EPOCHS * 665)
    assert training_budget(TrainConfig(epochs=3), 139).steps == 9
    steps = training_budget(TrainConfig(steps=10), 139)
    assert (steps.steps, steps.epochs, steps.epoch_steps(2), steps.epoch_steps(3)) == (10, 4, 3, 1)
    with pytest.raises(FieldError, match=r"steps and epochs are alternatives: give one, not both \(got 5 and 2\)"):
        TrainConfig(epochs=2, steps=5)


def test_a_budget_in_steps_cuts_the_last_epoch_and_the_schedule_spans_it(monkeypatch):
    lrs: list[float] = []
    set_lr = train_mod._set_lr
    monkeypatch.setattr(train_mod, "_set_lr", lambda opt, lr: lrs.append(lr) or set_lr(opt, lr))
    config = TrainConfig(steps=5, num_random=0, warmup_epochs=0)
    summary = train_supernet(tiny_supernet(), few_digits(128), config, show_progress=False)  # 2 steps an epoch
    assert [h["step"] for h in summary["epochs"]] == [2, 4, 5] and summary["steps"] == 5
    assert lrs == [lr_at(i, 5, 0, config.lr) for i in range(5)] and lrs[-1] > 0


def test_a_checkpoint_written_before_steps_existed_resumes(tmp_path):
    data, config = few_digits(128), TrainConfig(epochs=2, num_random=0)
    ckpt = tmp_path / CHECKPOINT_FILE
    stop_training_after(1, data, config, ckpt)
    rewrite_checkpoint_metadata(ckpt, lambda meta: meta["config"].pop("steps"))  # as an older nas wrote it
    summary = train_supernet(tiny_supernet(), data, config, checkpoint=ckpt, resume=True, show_progress=False)
    assert [h["epoch"] for h in summary["epochs"]] == [1, 2]


# ------------------------------------------------------------------------------ during training
def test_a_diverging_run_stops_with_one_line_and_its_folder_stays_resumable(tmp_path, capsys):
    run = tmp_path / "run"  # 1 step an epoch: an epoch's checkpoint is written before the weights blow up
    argv = ["train", "--data", digits_npz(tmp_path / "d.npz"), "--lr", "1e6", "--steps", "20", "--batch-size", "128",
            "--warmup-epochs", "0", "--num-random", "0", "--quiet", "--out", str(run)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nas: error: training diverged: ") and "lower --lr (now 1e+06)" in err
    assert not (run / "supernet.safetensors").exists() and (run / CHECKPOINT_FILE).is_file()
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 2  # it resumes, and diverges again
    assert "training diverged" in capsys.readouterr().err


def test_shuffled_labels_stay_at_chance_and_the_run_says_it_failed(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    argv = ["train", "--data", digits_npz(tmp_path / "d.npz", shuffle_labels=True), "--steps", "10",
            "--batch-size", "128", "--num-random", "0", "--train-threads", "3", "--out", str(run), "--quiet"]
    threads: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)  # asked for, not taken: a busy test machine
    assert main(argv) == 0  # it went to its end, and says it failed
    assert threads == [3] and json.loads((run / "config.json").read_text())["args"]["train_threads"] == 3
    out, err = capsys.readouterr()
    assert "nas: warning: the supernet has not learned in 3 epochs" in err
    assert "nas: failed: supernet training failed: its largest and smallest subnets score" in err
    assert out.strip().endswith("(SUPERNET TRAINING FAILED: its results can't be trusted (see above))")
    health = json.loads((run / "space.json").read_text())["summary"]["health"]
    assert health["status"] == "failed" and health["standalone"] is None  # no standalone check of a failed run
    assert [p["check"] for p in health["problems"]] == ["chance_streak", "at_chance", "short_budget"]

    search = ["search", "--supernet", str(run), "--budget", "2", "--objective", "flops", "--finish", "inherit",
              "--quiet", "--out", str(tmp_path / "search")]
    assert main(search) == 0
    out, err = capsys.readouterr()
    assert "nas: failed: supernet training failed" in err
    assert out.splitlines()[-1].startswith("nas: this run's supernet training FAILED: supernet training failed: ")
    assert out.splitlines()[-1].endswith("(and 2 more); recorded in search.json")
    recorded = json.loads((tmp_path / "search" / "search.json").read_text())["supernet"]
    assert recorded["health"]["status"] == "failed" and 0 <= recorded["val_acc_largest"] <= 1
    # the default finishing: a failed supernet's weights are no start, so the chosen subnet is trained from scratch
    monkeypatch.setattr("nas.finish.finetune.scratch_steps", lambda data: 2)
    assert main([*search[:-5], "--quiet", "--out", str(tmp_path / "search2")]) == 0
    assert "nas: note: the chosen subnet is trained from scratch, not fine-tuned" in capsys.readouterr().err
    chosen = json.loads((tmp_path / "search2" / "search.json").read_text())["chosen"]
    assert chosen["finishing"]["how"] == "scratch" and chosen["finishing"]["steps"] == 2
    # so does `nas finetune` on that run by default; named, the fine-tune runs, with a warning
    finetune = ["finetune", str(tmp_path / "search"), "--quiet", "--out"]
    recorded_before = (tmp_path / "search" / "search.json").read_text()
    assert main([*finetune, str(tmp_path / "m1")]) == 0
    out, err = capsys.readouterr()
    assert "nas: note: the chosen subnet is trained from scratch" in err and " (scratch in " in out
    assert "baselines on the same split (scikit-learn, test acc, " in out  # nas finetune checks what it hands over
    assert (tmp_path / "search" / "search.json").read_text() == recorded_before  # the search's record: untouched
    assert main([*finetune, str(tmp_path / "m2"), "--finish", "finetune", "--finish-budget", "0.5"]) == 0
    out, err = capsys.readouterr()
    assert "nas: warning: fine-tuning from the weights of a supernet whose training failed" in err
    assert " (finetune in " in out


def test_a_streak_at_chance_after_learning_reads_as_a_collapse():
    budget = training_budget(TrainConfig(epochs=40), 640)  # 10 steps an epoch: a streak of 3 epochs counts
    learned = {"loss": 0.5, "train_acc": 0.9}
    chance = {"loss": math.log(10), "train_acc": 0.1}
    history = [learned] * 10 + [chance] * 3 + [learned] + [chance] * 2
    problems = chance_streaks(history, 10, 0.1, 640, budget, TrainConfig(epochs=40))
    assert len(problems) == 1 and problems[0].check == "chance_streak"
    assert problems[0].message.startswith("training collapsed: the training loss went back to chance (ln 10 = 2.303) "
                                          "at epoch 11 and stayed there 3 epochs, after it had reached 0.500")
    start = chance_streaks([chance] * 7, 10, 0.1, 640, budget, TrainConfig(epochs=40))
    assert start == []  # from the start, a streak counts from 20% of the epochs on: 8
    assert len(chance_streaks([chance] * 8, 10, 0.1, 640, budget, TrainConfig(epochs=40))) == 1


def test_students_distill_only_a_teacher_below_chance():
    assert not teacher_learned([], 10)  # the first epoch: from the labels
    assert not teacher_learned([{"loss": 1.0}, {"loss": 0.99 * math.log(10)}], 10)  # back at chance
    assert teacher_learned([{"loss": 1.0}], 10)
    summary = train_supernet(tiny_supernet(), few_digits(64), TrainConfig(epochs=2, num_random=0), show_progress=False)
    assert [h["distilled"] for h in summary["epochs"]] == [False, teacher_learned(summary["epochs"][:1], 10)]


# ------------------------------------------------------------------------------ after training
def test_the_largest_below_the_smallest_is_a_warning():
    budget, config = training_budget(TrainConfig(), 1000), TrainConfig()
    [problem] = final_problems(0.40, 0.80, [0.5], 0.1, 200, budget, config)
    assert problem.level == "warning" and problem.check == "largest_below_smallest"
    assert problem.message.startswith("the largest subnet scores 0.400 on validation, below the smallest (0.800)")
    assert final_problems(0.78, 0.80, [0.5], 0.1, 200, budget, config) == []  # within noise
    [chance] = final_problems(0.12, 0.19, [0.1], 0.1, 40, budget, config)  # 0.19 of 40: chance still
    assert chance.check == "at_chance" and chance.level == "failed"
    [extremes] = final_problems(0.12, 0.19, [0.1, 0.6], 0.1, 40, budget, config)  # a random subnet learned
    assert extremes.level == "warning" and "1 of 2 random subnets do better (best 0.600)" in extremes.message


def test_a_supernet_far_below_its_smallest_subnet_trained_alone_is_a_warning():
    data = few_digits(256)
    config = TrainConfig(steps=120, batch_size=32, lr=3e-3, warmup_epochs=0, num_random=0)
    summary = {"val_acc_largest": 0.6, "val_acc_smallest": 0.2, "problems": []}  # as an undertrained supernet ends
    health = assess_training(tiny_supernet(), data, config, summary)
    assert health["standalone"]["steps"] == 30 and health["standalone"]["val_acc"] > 0.4
    assert health["status"] == "warning" and [p["check"] for p in health["problems"]] == ["short_budget",
                                                                                          "below_standalone"]
    assert "trained alone for 30 steps (25% of the supernet's) it scores" in health["problems"][1]["message"]
    skipped = assess_training(tiny_supernet(), data, config, summary, standalone=False)
    assert [p["check"] for p in skipped["problems"]] == ["short_budget"] and skipped["standalone"] is None


def test_a_supernet_file_with_nan_weights_is_refused(trained_run, tmp_path, capsys):
    from nas.runs.files import load_supernet, save_supernet

    supernet = load_supernet(trained_run)
    with torch.no_grad():
        next(supernet.parameters()).fill_(float("nan"))
    save_supernet(tmp_path / "nan", supernet, {})
    with pytest.raises(UserError, match=r"holds NaN or infinite weights \(1 tensors, e.g. .*\): its training diverged"):
        load_supernet(tmp_path / "nan")


# ------------------------------------------------------------------------------ progress
def test_a_resumed_progress_bar_estimates_the_time_left_from_its_own_steps(monkeypatch):
    clock = iter([0.0, 20.0, 20.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    text = io.StringIO()
    bar = progress.Bar(None, None, Console(file=text, width=200), "training", total=100, completed=50)
    bar.update("status", advance=10)  # 10 steps in 20 s, 40 to go
    assert "training: 60/100 after 20 s, ~80 s left  status" in text.getvalue()


def test_the_time_left_follows_the_latest_half_of_the_run():
    # 10 steps a second for 10 s (a CPU's turbo, say), then 5 a second: the second half's rate counts
    times = [float(t) for t in range(41)]
    done = [10.0 * t if t <= 10 else 100 + 5.0 * (t - 10) for t in range(41)]
    assert progress.time_left(times, done, 500) == pytest.approx(250 / 5)
    assert progress.time_left([0.0], [0.0], 10) is None and progress.time_left([0.0, 1.0], [0.0, 0.0], 10) is None
