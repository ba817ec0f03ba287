"""Image folders (`nas.data.images`) read through `load_data`: the same arrays as the same images
given as an .npz file, the train/val/test layout, class names up to the model folder, mixed sizes
and modes, and one-line refusals naming the file or folder at fault."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.cli.main import main
from nas.data.datasets import DataError, load_data
from nas.data.images import read_image_folder
from nas.finish.package import DeployedModel, describe_model
from nas.runs import resources
from tests.helpers import FAST, tiny_supernet, write_folder

N = 300  # digits per folder: 30 per class


@pytest.fixture(scope="module")
def digits8() -> tuple[np.ndarray, np.ndarray]:
    """The first N digits as uint8 (N, 8, 8) images, sorted by class (an image folder's order), and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images[:N] * 255 / 16).astype(np.uint8)
    order = np.argsort(d.target[:N], kind="stable")
    return images[order], d.target[:N][order].astype(np.int64)


@pytest.fixture(scope="module")
def folder(digits8, tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("images") / "digits", *digits8)


def test_png_folder_reads_as_the_same_npz(folder, digits8, tmp_path):
    images, labels = digits8
    np.savez(tmp_path / "same.npz", x=images, y=labels)
    from_folder, from_npz = load_data(str(folder)), load_data(str(tmp_path / "same.npz"))
    for split in ("train", "val", "test"):
        a, b = getattr(from_folder, split), getattr(from_npz, split)
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)  # PNG is lossless: exactly equal
    assert (from_folder.mean, from_folder.std) == (from_npz.mean, from_npz.std)  # train split's statistics
    summary = from_folder.describe()
    assert summary["class_names"] == [f"c{i}" for i in range(10)] and summary["in_channels"] == 1
    assert summary["read"] == {"format": "image folder", "layout": "class folders", "images": N, "mode": "L",
                               "size": [8, 8], "resized": 0, "resize": None, "ignored_files": 0}


def test_train_val_test_folders_are_used_as_given(digits8, tmp_path):
    images, labels = digits8
    part = np.arange(N) % 5  # 0, 1, 2: train; 3: val; 4: test
    root = tmp_path / "split"
    write_folder(root / "train", images[part < 3], labels[part < 3])
    write_folder(root / "val", images[part == 3], labels[part == 3])
    write_folder(root / "test", images[part == 4], labels[part == 4], fmt="jpg")
    (root / "train" / "c0" / "notes.txt").write_text("not an image")  # ignored, counted
    data = load_data(str(root))
    assert data.given == ("val", "test") and data.describe()["given_splits"] == ["val", "test"]
    assert (len(data.train), len(data.val), len(data.test)) == (180, 60, 60)
    assert torch.equal(data.val.y, torch.from_numpy(labels[part == 3]))
    assert data.describe()["read"]["layout"] == "train/val/test folders"
    assert data.describe()["read"]["ignored_files"] == 1
    (root / "test").rename(tmp_path / "elsewhere")  # no test folder: carved from train
    carved = load_data(str(root))
    assert carved.given == ("val",) and len(carved.test) > 0 and len(carved.train) + len(carved.test) == 180


def test_mixed_sizes_and_modes_are_resized_to_the_most_common_in_rgb(digits8, tmp_path):
    images, labels = digits8
    root = write_folder(tmp_path / "mixed", images, labels)
    big = Image.fromarray(np.stack([images[0]] * 3, axis=-1)).resize((16, 16))  # RGB, 16x16
    big.save(root / "c0" / "big.jpg")
    big.save(root / "c1" / "big.webp")
    data = load_data(str(root))
    assert (data.in_channels, data.input_size, data.train.x.shape[1:]) == (3, 8, (3, 8, 8))
    read = data.describe()["read"]
    assert read["mode"] == "RGB" and read["resized"] == 2 and read["resize"].startswith("bilinear")
    for split in (data.train, data.val, data.test):  # gray images as RGB: three equal channels before standardizing
        raw = split.x * torch.tensor(data.std).view(1, 3, 1, 1) + torch.tensor(data.mean).view(1, 3, 1, 1)
        assert torch.allclose(raw[:, 0], raw[:, 1], atol=0.05) and torch.allclose(raw[:, 0], raw[:, 2], atol=0.05)


def test_16_bit_grayscale_reads_as_its_8_bit_original(digits8, tmp_path):
    images, labels = digits8
    root = write_folder(tmp_path / "deep", images[::5], labels[::5])
    Image.fromarray(images[0].astype(np.uint16) * 257).save(root / "c0" / "0000b.png")  # v * 257 / 65535 = v / 255
    assert Image.open(root / "c0" / "0000b.png").mode.startswith("I;16")
    folder = read_image_folder(root)
    assert folder.record["mode"] == "L" and np.array_equal(folder.x[0], folder.x[1])


def test_class_names_reach_the_model_folder_description(folder):
    data = load_data(str(folder))
    supernet = tiny_supernet()
    model = DeployedModel.for_data(supernet.extract(supernet.space.smallest()), data)
    assert model.labels == tuple(f"c{i}" for i in range(10))
    meta = describe_model(model, metrics={}, costs={}, data=data.describe(), space="tiny")
    assert meta["labels"] == meta["data"]["class_names"] == [f"c{i}" for i in range(10)]
    assert meta["input"]["shape"] == [None, 1, 8, 8]


def test_corrupt_and_truncated_images_are_named(digits8, tmp_path):
    images, labels = digits8
    root = write_folder(tmp_path / "bad", images[::5], labels[::5])
    (root / "c3" / "garbage.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"garbage\.png: unreadable image"):
        load_data(str(root))
    (root / "c3" / "garbage.png").unlink()
    whole = (root / "c2" / "0013.png").read_bytes()
    (root / "c2" / "0013.png").write_bytes(whole[: len(whole) // 2])  # header intact, pixels cut
    with pytest.raises(DataError, match=r"0013\.png: unreadable or truncated image"):
        load_data(str(root))


def test_folders_that_are_not_image_datasets_are_refused(digits8, tmp_path, monkeypatch):
    images, labels = digits8
    root = write_folder(tmp_path / "f", images[::5], labels[::5])
    (root / "zz").mkdir()
    (root / "zz" / "readme.txt").write_text("")
    with pytest.raises(DataError, match=r"zz: empty class folder"):
        load_data(str(root))
    (root / "zz" / "readme.txt").unlink()
    (root / "zz").rmdir()
    with pytest.raises(DataError, match=r"not a CIFAR-10 python-batches directory.* or an image folder"):
        load_data(str(root / "c0"))  # no class folders below
    one = write_folder(tmp_path / "one", images[:5], labels[:5])
    with pytest.raises(DataError, match="at least 2 classes; found 1"):
        load_data(str(one))
    split = tmp_path / "split"
    write_folder(split / "train", images[::5], labels[::5])
    write_folder(split / "val", images[:3], np.full(3, 17))
    with pytest.raises(DataError, match=r"val: class folder\(s\) c17 not among the training classes"):
        load_data(str(split))
    monkeypatch.setattr(resources, "available_memory", lambda: 1000)  # bytes: refused before decoding
    with pytest.raises(DataError, match=r"60 images read as 1x8x8 float32 .* needs at least .* of memory; this machine"):
        load_data(str(root), stream=False)  # not streamed as it would be when not asked (it does not fit)
    monkeypatch.undo()
    with pytest.raises(DataError, match="an image folder is an image dataset; the space takes sequences"):
        load_data(str(root), dims=1)


def test_nas_train_on_an_image_folder(folder, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", str(folder), "--out", str(out), *FAST]) == 0
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["data"]["class_names"] == [f"c{i}" for i in range(10)]
