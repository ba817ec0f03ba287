"""Supernet training: sampling rules, checkpoints, exact resume, standalone training."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from nas.cli.main import main
from nas.data.datasets import Split
from nas.errors import RetryWarning, UserError
from nas.evaluation.accuracy import evaluate
from nas.runs.files import load_supernet
from nas.training import train as train_mod
from nas.training.batches import augment
from nas.training.checkpoint import CHECKPOINT_FILE, read_checkpoint
from nas.training.config import TrainConfig
from nas.training.sampling import ComplexitySampler, SandwichSampler, UniformSampler, make_sampler
from nas.training.train import lr_at, train_standalone, train_supernet
from search_spaces import HybridSupernet, get_space
from tests.helpers import (
    TRAIN_ARGS,
    few_digits,
    max_weight_diff,
    nas_process,
    rewrite_checkpoint_metadata,
    stop_training_after,
    tiny_supernet,
)

SPACE = get_space("tiny")


@pytest.fixture(scope="module")
def small_data():
    return few_digits(192)


def test_sandwich_draws_extremes_then_random():
    draws = SandwichSampler(SPACE, num_random=2, seed=0).draws()
    assert [d.role for d in draws] == ["teacher", "student", "student", "student"]
    assert draws[0].arch == SPACE.largest() and draws[1].arch == SPACE.smallest()
    uniform = UniformSampler(SPACE, num_random=3, seed=0).draws()
    assert len(uniform) == 3 and all(d.role == "label" for d in uniform)
    assert len({d.arch for d in uniform}) == 3


def test_complexity_sampler_stays_in_band_and_covers_the_range():
    cost = SPACE.count_params
    sampler = ComplexitySampler(SPACE, num_random=2, seed=3, cost=cost, bands=4)
    assert np.all(np.diff(sampler.edges) > 0)  # no empty band
    bands, inside = [], 0
    for _ in range(300):
        band = sampler.band
        lo, hi = sampler.edges[band], sampler.edges[band + 1]
        draws = sampler.draws()
        assert draws[0].role == "teacher" and draws[0].arch == SPACE.largest()
        inside += sum(lo <= cost(d.arch) <= hi for d in draws[1:])
        assert abs(sampler.band - band) <= 1  # consecutive steps stay in neighbouring bands
        bands.append(band)
    assert set(bands) == {0, 1, 2, 3}  # the whole range is visited
    assert inside >= 0.95 * 600


def test_complexity_sampler_says_when_no_draw_falls_in_its_band():
    cost = SPACE.count_params
    sampler = ComplexitySampler(SPACE, num_random=1, seed=0, cost=cost, bands=1, tries=5)
    sampler.edges = np.array([1.0, 2.0])  # a band no subnet falls in
    with pytest.warns(RetryWarning, match=r"none of 5 draws of a subnet for complexity sampling had a cost \(FLOPs\) "
                                          r"in band 0 \[1, 2\]; training the closest draw instead"):
        student = sampler.draws()[1].arch
    rng = np.random.default_rng(0)
    rng.integers(1)  # the band drawn at construction
    assert cost(student) == min(cost(SPACE.sample(rng)) for _ in range(5))


@pytest.mark.parametrize("rule", ["uniform", "sandwich", "complexity"])
def test_sampler_state_round_trips_through_json(rule):
    a = make_sampler(rule, SPACE, num_random=2, seed=7)
    for _ in range(5):
        a.draws()
    state = json.loads(json.dumps(a.state_dict()))
    b = make_sampler(rule, SPACE, num_random=2, seed=99)
    b.load_state_dict(state)
    assert [d.arch for _ in range(5) for d in a.draws()] == [d.arch for _ in range(5) for d in b.draws()]


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["uniform", "sandwich", "complexity"])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(rule, small_data, tmp_path, monkeypatch):
    config = TrainConfig(epochs=2, batch_size=64, warmup_epochs=1, sampling=rule, num_random=1)
    straight = tiny_supernet()
    summary = train_supernet(straight, small_data, config, checkpoint=tmp_path / "a" / CHECKPOINT_FILE,
                             show_progress=False)
    assert [h["epoch"] for h in summary["epochs"]] == [1, 2]

    saved = train_mod.save_checkpoint

    def crash_after_first_epoch(*args, **kwargs):
        saved(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_checkpoint", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(tiny_supernet(), small_data, config, checkpoint=tmp_path / "b" / CHECKPOINT_FILE, show_progress=False)
    monkeypatch.setattr(train_mod, "save_checkpoint", saved)
    resumed = tiny_supernet(seed=123)  # different init: everything must come from the checkpoint
    again = train_supernet(resumed, small_data, config, checkpoint=tmp_path / "b" / CHECKPOINT_FILE, resume=True,
                           show_progress=False)
    assert max_weight_diff(straight, resumed) == 0.0
    def timeless(history):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert timeless(again["epochs"]) == timeless(summary["epochs"])


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["sandwich", "complexity"])
def test_stop_mid_epoch_finishes_the_step_and_resumes_exactly(rule, small_data, tmp_path):
    config = TrainConfig(epochs=2, batch_size=32, warmup_epochs=1, sampling=rule, num_random=1)
    straight = tiny_supernet()
    summary = train_supernet(straight, small_data, config, show_progress=False)
    steps = []

    def stop_after_eight_steps() -> bool:  # polled after each step and at the epoch's end (6 steps an epoch)
        steps.append(1)
        return len(steps) >= 9  # after the second step of epoch 2

    ckpt = tmp_path / CHECKPOINT_FILE
    with pytest.raises(KeyboardInterrupt):
        train_supernet(tiny_supernet(), small_data, config, checkpoint=ckpt, show_progress=False,
                       stop=stop_after_eight_steps)
    assert len(steps) == 9  # the step under way finished, no further one started
    _, meta = read_checkpoint(ckpt)
    assert meta["progress"]["epoch"] == 1 and meta["progress"]["epoch_steps"] == 2 and meta["progress"]["step"] == 8
    resumed = tiny_supernet(seed=123)
    again = train_supernet(resumed, small_data, config, checkpoint=ckpt, resume=True, show_progress=False)
    assert max_weight_diff(straight, resumed) == 0.0
    drop = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert drop(again["epochs"]) == drop(summary["epochs"])


def test_pause_at_a_step_then_resume_gives_the_uninterrupted_weights(small_data, tmp_path):
    pause_at = 2  # mid-epoch (3 steps an epoch): the resumed run replays the epoch's draws
    config = TrainConfig(epochs=2, batch_size=64, num_random=0)
    straight = tiny_supernet()
    train_supernet(straight, small_data, config, show_progress=False)
    ckpt = tmp_path / CHECKPOINT_FILE
    paused = train_supernet(tiny_supernet(), small_data, config, checkpoint=ckpt, pause_at=pause_at, show_progress=False)
    assert paused == {"paused_at": pause_at} and read_checkpoint(ckpt)[1]["progress"]["step"] == pause_at
    resumed = tiny_supernet(seed=123)
    train_supernet(resumed, small_data, config, checkpoint=ckpt, resume=True, show_progress=False)
    assert max_weight_diff(straight, resumed) == 0.0
    with pytest.raises(ValueError, match="pause_at needs a checkpoint"):
        train_supernet(tiny_supernet(), small_data, config, pause_at=2, show_progress=False)


def test_a_checkpoint_written_before_space_dims_and_best_of_existed_resumes(small_data, tmp_path):
    config = TrainConfig(epochs=2, batch_size=64, num_random=0)
    ckpt = tmp_path / CHECKPOINT_FILE
    stop_training_after(1, small_data, config, ckpt)
    def before_the_fields(meta: dict) -> None:  # a space and a config recorded before these fields existed
        meta["space"].pop("dims")
        meta["config"].pop("best_of")

    rewrite_checkpoint_metadata(ckpt, before_the_fields)
    summary = train_supernet(tiny_supernet(), small_data, config, checkpoint=ckpt, resume=True, show_progress=False)
    assert len(summary["epochs"]) == 2


def test_stop_on_the_last_step_of_an_epoch_ends_the_epoch_first(small_data, tmp_path):
    config = TrainConfig(epochs=2, batch_size=64, num_random=0)
    ckpt = tmp_path / CHECKPOINT_FILE
    stop_training_after(3, small_data, config, ckpt)  # on the third and last step of epoch 1
    _, meta = read_checkpoint(ckpt)
    assert meta["progress"]["epoch"] == 1 and "epoch_steps" not in meta["progress"]
    assert len(meta["progress"]["history"]) == 1  # the epoch was evaluated and recorded


def test_a_mid_epoch_checkpoint_with_inconsistent_progress_is_refused(small_data, tmp_path):
    config = TrainConfig(epochs=2, batch_size=32, num_random=0)
    ckpt = tmp_path / CHECKPOINT_FILE
    stop_training_after(2, small_data, config, ckpt)
    rewrite_checkpoint_metadata(ckpt, lambda meta: meta["progress"].update(epoch_losses=[0.5]))  # two steps, one loss
    with pytest.raises(UserError, match=r"interrupted epoch .* inconsistent"):
        train_supernet(tiny_supernet(), small_data, config, checkpoint=ckpt, resume=True, show_progress=False)


def test_resume_refuses_other_settings_and_bad_files(small_data, tmp_path):
    config = TrainConfig(epochs=1, batch_size=64, num_random=0)
    ckpt = tmp_path / CHECKPOINT_FILE
    train_supernet(tiny_supernet(), small_data, config, checkpoint=ckpt, show_progress=False)
    with pytest.raises(UserError, match=r"other training settings: lr=0.001 \(now 0.01\)"):
        train_supernet(tiny_supernet(), small_data, dataclasses.replace(config, lr=0.01), checkpoint=ckpt, resume=True)
    with pytest.raises(UserError, match="another search space"):
        train_supernet(HybridSupernet(get_space("cifar")), small_data, config, checkpoint=ckpt, resume=True)
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(UserError, match="corrupt"):
        train_supernet(tiny_supernet(), small_data, config, checkpoint=ckpt, resume=True)
    with pytest.raises(UserError, match="does not exist"):
        train_supernet(tiny_supernet(), small_data, config, checkpoint=tmp_path / "none.safetensors", resume=True)


def test_nan_loss_stops_with_a_message_and_keeps_the_checkpoint(small_data, tmp_path, monkeypatch):
    config = TrainConfig(epochs=2, batch_size=64, num_random=0)
    ckpt = tmp_path / CHECKPOINT_FILE
    x = small_data.train.x.clone()
    calls = []
    saved = train_mod.save_checkpoint

    def poison_after_first_epoch(*args, **kwargs):
        saved(*args, **kwargs)
        calls.append(ckpt.read_bytes())
        x[:] = float("nan")

    monkeypatch.setattr(train_mod, "save_checkpoint", poison_after_first_epoch)
    data = dataclasses.replace(small_data, train=Split(x, small_data.train.y))
    with pytest.raises(UserError, match="diverged"):
        train_supernet(tiny_supernet(), data, config, checkpoint=ckpt, show_progress=False)
    assert len(calls) == 1 and ckpt.read_bytes() == calls[0]  # the epoch-1 checkpoint is intact


def test_standalone_training_learns(small_data):
    torch.manual_seed(0)
    model = HybridSupernet(SPACE).extract(SPACE.smallest())
    result = train_standalone(model, small_data, TrainConfig(epochs=8, batch_size=32, warmup_epochs=0, lr=3e-3))
    assert result["val_acc"] == evaluate(model, small_data.val) and result["val_acc"] > 0.5


@pytest.mark.slow
def test_cli_train_interrupted_then_resumed(trained_run, tmp_path, monkeypatch, capsys):
    argv = ["train", *TRAIN_ARGS]  # the straight run: trained_run
    saved = train_mod.save_checkpoint

    def crash(*args, **kwargs):
        saved(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_checkpoint", crash)
    assert main(argv + ["--out", str(tmp_path / "cut")]) == 130
    assert f"nas train --out {tmp_path / 'cut'} --resume" in capsys.readouterr().err
    monkeypatch.setattr(train_mod, "save_checkpoint", saved)
    assert main(["train", "--out", str(tmp_path / "cut"), "--resume", "--quiet"]) == 0
    assert max_weight_diff(load_supernet(trained_run), load_supernet(tmp_path / "cut")) == 0.0
    assert not (tmp_path / "cut" / CHECKPOINT_FILE).exists()
    assert main(["train", "--out", str(tmp_path / "cut"), "--resume", "--quiet"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_during_training_finishes_the_step_and_resumes_to_the_same_weights(tmp_path, capsys):
    argv = ["train", "--epochs", "3", "--num-random", "0", "--quiet", "--batch-size", "128"]
    assert main(argv + ["--out", str(tmp_path / "straight")]) == 0
    run = tmp_path / "cut"
    proc = nas_process([*argv, "--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not (run / CHECKPOINT_FILE).is_file():
        time.sleep(0.01)  # the first epoch's checkpoint: training is under way in epoch 2
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "stopping after the training step under way" in err and "Traceback" not in err
    assert f"resume with: nas train --out {run} --resume" in err
    _, meta = read_checkpoint(run / CHECKPOINT_FILE)
    assert meta["progress"]["epoch"] < 3
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    assert max_weight_diff(load_supernet(tmp_path / "straight"), load_supernet(run)) == 0.0


def test_augment_shifts_within_bounds_and_is_seeded():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8) + 1
    a = augment(x, 1, False, torch.Generator().manual_seed(0))
    b = augment(x, 1, False, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    # every output pixel is either padding (0) or an input pixel at most one step away
    for n in range(2):
        vals = set(a[n].flatten().tolist()) - {0.0}
        assert vals <= set(x[n].flatten().tolist())
    assert torch.equal(augment(x, 0, False, torch.Generator()), x)


def test_cosine_schedule_with_warmup():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(99, 100, 10, 1.0) < 0.01


def test_sequence_augmentation_shifts_in_time_with_zero_padding():
    x = torch.arange(1.0, 11.0).view(1, 1, 10).repeat(64, 2, 1)
    out = augment(x, 2, False, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    shifts = set()
    for row in out[:, 0]:
        nonzero = row[row != 0]
        assert torch.equal(nonzero, torch.arange(nonzero[0].item(), nonzero[0].item() + len(nonzero)))
        shifts.add(int(nonzero[0].item()) - 1 if row[0] != 0 else -int((row == 0).sum()))
    assert shifts == {-2, -1, 0, 1, 2}
    assert torch.equal(out[:, 0], out[:, 1])  # channels move together


@pytest.mark.parametrize("shape", [(4, 1, 8, 8), (4, 3, 8, 8), (4, 1, 40), (4, 2, 40)])
def test_augment_gives_one_memory_layout_whether_or_not_it_changes_the_batch(shape):
    x, gen = torch.randn(*shape), torch.Generator().manual_seed(0)
    plain, shifted, flipped = augment(x, 0, False, gen), augment(x, 1, False, gen), \
        augment(x, 0, True, gen)
    assert torch.equal(plain, x)
    assert plain.stride() == shifted.stride() == flipped.stride()  # the same convolution kernels: the same speed
