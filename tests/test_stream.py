"""Streamed data (`nas.data.stream`): image folders read lazily and `.npy` folders memory-mapped give the
same batches, hence the same weights, as the same data in memory; resuming mid-epoch is exact; a file
that turns out unreadable in a worker is named in one line; the pipeline's rate is reported; a search's
validation split is read once when it fits in memory."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.cli.main import main
from nas.data.datasets import DataError, StreamedSplit, TaskData, iterate_batches, load_data
from nas.data.stream import NpyRows, random_resized_crop
from nas.evaluation.accuracy import accuracy_and_loss
from nas.evaluation.evaluator import Evaluator
from nas.hardware.measure import LatencySettings
from nas.training.batches import train_batches
from nas.training.config import TrainConfig
from nas.training.train import train_supernet
from search_spaces import HybridSupernet, SearchSpace, SpaceConfig
from tests.helpers import MICRO_SPACE, max_weight_diff, write_folder

N = 300  # digits written: 30 per class
SIDE = 32
CONFIG = TrainConfig(steps=6, batch_size=64, warmup_epochs=0, num_random=1, sampling="uniform")


@pytest.fixture(scope="module")
def digits32() -> tuple[np.ndarray, np.ndarray]:
    """The first N digits upscaled to uint8 32x32 images, sorted by class (an image folder's order), and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.argsort(d.target[:N], kind="stable")
    small = np.round(d.images[:N][order] * 255 / 16).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(im).resize((SIDE, SIDE), Image.Resampling.BILINEAR)) for im in small])
    return big, d.target[:N][order].astype(np.int64)


@pytest.fixture(scope="module")
def folder(digits32, tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("stream") / "digits", *digits32)


@pytest.fixture(scope="module")
def npz(digits32, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("npz") / "digits.npz"
    np.savez(path, x=digits32[0], y=digits32[1])
    return path


def _supernet(data: TaskData) -> HybridSupernet:
    """A supernet of convolutions only, at the data's 32x32: a step in milliseconds."""
    torch.manual_seed(0)
    stages = [{"depths": [1], "widths": [8], "strides": [2], "block_types": ["conv"]},
              {"depths": [1], "widths": [8], "strides": [2], "block_types": ["conv"]}]
    return HybridSupernet(SearchSpace(SpaceConfig.from_dict({**MICRO_SPACE, "input_size": data.input_size,
                                                             "resolutions": [data.input_size], "stages": stages})))


def test_a_streamed_folder_gives_the_batches_and_weights_of_the_same_npz(folder, npz):
    streamed, in_memory = load_data(str(folder), stream=True, workers=1), load_data(str(npz))
    assert isinstance(streamed.train, StreamedSplit) and not isinstance(in_memory.train, StreamedSplit)
    assert (streamed.mean, streamed.std) == (in_memory.mean, in_memory.std)  # a sample of every training image
    assert streamed.describe()["read"]["stats_sample"] == len(streamed.train)
    for split in ("train", "val", "test"):
        a, b = getattr(streamed, split), getattr(in_memory, split)
        assert torch.equal(a.y, b.y)
        (xa, _), = iterate_batches(a, 1000, shuffle=False)
        assert torch.equal(xa, b.x)
    gens = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for (xa, ya), (xb, yb) in zip(train_batches(streamed, CONFIG, gens[0]), train_batches(in_memory, CONFIG, gens[1]),
                                  strict=True):  # the same shuffle and light augmentation
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    nets = _supernet(streamed), _supernet(in_memory)
    summaries = [train_supernet(net, d, CONFIG, show_progress=False) for net, d in zip(nets, (streamed, in_memory))]
    assert max_weight_diff(*nets) == 0.0
    assert summaries[0]["val_acc_largest"] == summaries[1]["val_acc_largest"]
    assert summaries[0]["data_images_per_second"] > 0 and summaries[1]["data_images_per_second"] is None


def test_npy_folder_is_memory_mapped_and_reads_as_the_npz(digits32, npz, tmp_path):
    np.save(tmp_path / "x.npy", digits32[0][..., None])  # (N, H, W, C)
    np.save(tmp_path / "y.npy", digits32[1])
    data, in_memory = load_data(str(tmp_path), workers=0), load_data(str(npz))
    assert isinstance(data.train, StreamedSplit) and isinstance(data.train.reader, NpyRows)
    assert isinstance(data.train.reader.array(), np.memmap)  # mapped, not loaded
    (x, y), = iterate_batches(data.val, 1000, shuffle=False)
    assert torch.equal(x, in_memory.val.x) and torch.equal(y, in_memory.val.y)
    assert data.shape == in_memory.shape


def test_resume_mid_epoch_on_streamed_data_is_exact(folder, tmp_path):
    data = load_data(str(folder), stream=True, workers=2)
    config = dataclasses.replace(CONFIG, steps=None, epochs=2)  # 4 steps an epoch
    straight = _supernet(data)
    train_supernet(straight, data, config, show_progress=False)
    polls: list[int] = []
    ckpt = tmp_path / "checkpoint.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_supernet(_supernet(data), data, config, checkpoint=ckpt, show_progress=False,
                       stop=lambda: polls.append(1) or len(polls) >= 7)  # after the second step of epoch 2
    resumed = _supernet(data)
    torch.nn.init.zeros_(next(resumed.parameters()))  # everything must come from the checkpoint
    train_supernet(resumed, data, config, checkpoint=ckpt, resume=True, show_progress=False)
    assert max_weight_diff(straight, resumed) == 0.0


def test_large_images_are_cropped_in_the_workers_the_same_whatever_their_number_or_shard(digits32, tmp_path):
    root = tmp_path / "large"
    for i, (img, label) in enumerate(zip(*digits32, strict=True)):
        if i % 3 == 0:  # 100 images, mixed sizes
            f = root / f"c{label}" / f"{i:04d}.png"
            f.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).resize((80, 72) if i % 9 == 0 else (64, 64)).save(f)
    batches = []
    for workers in (0, 2):
        data = load_data(str(root), workers=workers)  # side 64: streamed without asking
        assert data.streamed and data.input_size == 64
        batches.append(list(train_batches(data, CONFIG, torch.Generator().manual_seed(1))))
    shard = train_batches(data, CONFIG, torch.Generator().manual_seed(1), rows=slice(1, None, 2))  # a worker's rows
    for (xa, ya), (xb, yb), (xs, ys) in zip(*batches, shard, strict=True):
        assert xa.shape[1:] == (1, 64, 64) and torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(xs, xa[1::2]) and torch.equal(ys, ya[1::2])  # read alone, cropped as in the whole batch


@pytest.mark.parametrize("fits", [True, False])
def test_a_streamed_validation_split_is_read_once_for_all_the_subnets_evaluated_when_it_fits(folder, fits, monkeypatch):
    data = load_data(str(folder), stream=True, workers=0)
    net = _supernet(data)
    archs = [net.space.largest(), net.space.smallest(), net.space.largest()]
    expected = [accuracy_and_loss(net, data.val, arch) for arch in archs]  # read again by every evaluation
    reads: list[int] = []
    item = StreamedSplit.item
    monkeypatch.setattr(StreamedSplit, "item", lambda split, k, *a, **kw: reads.append(k) or item(split, k, *a, **kw))
    monkeypatch.setattr("nas.data.stream.within_half_memory", lambda need: fits and need == len(data.val) * 4 * SIDE**2)
    evaluator = Evaluator(net, data, LatencySettings())
    rows = [evaluator.evaluate(arch, latency=False) for arch in archs]
    assert [(row["val_acc"], row["val_loss"]) for row in rows] == expected
    assert len(reads) == 1 + len(data.val) * (1 if fits else len(archs))  # one input to size the split, then all


def test_random_resized_crop_is_seeded_and_keeps_the_size():
    x = np.random.default_rng(0).random((3, 50, 70), dtype=np.float32)
    a, b = (random_resized_crop(x, 32, torch.Generator().manual_seed(5), True) for _ in range(2))
    assert a.shape == (3, 32, 32) and np.array_equal(a, b)
    assert not np.array_equal(a, random_resized_crop(x, 32, torch.Generator().manual_seed(6), True))


def test_a_file_truncated_after_listing_is_named_in_one_line(folder, tmp_path, capsys):
    data = load_data(str(folder), stream=True, workers=1)
    victim = data.val.reader.files[int(data.val.rows[-1])]  # type: ignore[union-attr]  # not in the statistics' sample
    copy = tmp_path / "digits"
    import shutil

    shutil.copytree(folder, copy)
    bad = copy / victim.relative_to(folder)
    space = tmp_path / "space.json"
    space.write_text(json.dumps(_supernet(data).space.config.to_dict()))
    for _ in range(2):  # whole, then truncated: found by a worker validating after the first epoch
        code = main(["train", "--data", str(copy), "--space", str(space), "--stream-data", "--data-workers", "1",
                     "--steps", "2", "--num-random", "0", "--quiet", "--no-standalone-check",
                     "--out", str(tmp_path / "run"), "--force"])
        err = capsys.readouterr().err
        if bad.stat().st_size > 60:
            assert code == 0, err
            bad.write_bytes(bad.read_bytes()[:60])  # a valid header, truncated pixels: found while training
            continue
        assert code == 2 and err.count("\n") == 1 and err.startswith("nas: error: ") and str(bad) in err
    val = load_data(str(copy), stream=True, workers=1).val  # the header is whole: listed and loaded
    with pytest.raises(DataError, match="truncated") as raised:  # met by a worker, raised here
        list(iterate_batches(val, 512, shuffle=False))
    assert str(raised.value).startswith(f"{bad}: ") and "\n" not in str(raised.value)


def test_data_workers_flag_is_recorded(folder, tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps(_supernet(load_data(str(folder))).space.config.to_dict()))
    assert main(["train", "--data", str(folder), "--space", str(space), "--stream-data", "--data-workers", "0", "--steps", "2",
                 "--num-random", "0", "--quiet", "--no-standalone-check", "--out", str(tmp_path / "r")]) == 0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["args"]["data_workers"] == 0 and config["data"]["read"]["streamed"] is True
