"""Tests for nas.data: built-in digits and mnist1d, .npz image and sequence layouts, CIFAR
batches, validation, batching."""

from __future__ import annotations

import json
import os
import pickle
import random
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.data.datasets import DataError, Split, TaskData, _mnist1d_arrays, iterate_batches, list_datasets, load_data


@pytest.fixture(scope="module")
def digits() -> TaskData:
    return load_data("digits")


def _balanced(n: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % classes)


def _write_npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


def _write_cifar(folder: Path, per_batch: int = 60) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in np.arange(per_batch) % 10],
                 b"batch_label": name.encode()}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    return folder


def _assert_error(spec: str, *needles: str, dims: int = 2) -> str:
    with pytest.raises(DataError) as info:
        load_data(spec, dims=dims)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


# ----------------------------------------------------------------------------- digits


def test_list_datasets() -> None:
    assert list_datasets() == ["digits", "mnist1d"]


def test_digits_shapes_and_sizes(digits: TaskData) -> None:
    assert digits.name == "digits"
    assert (digits.num_classes, digits.in_channels, digits.input_size) == (10, 1, 8)
    sizes = [len(digits.train), len(digits.val), len(digits.test)]
    assert sum(sizes) == 1797
    assert abs(sizes[1] - 0.15 * 1797) <= 2 and abs(sizes[2] - 0.15 * 1797) <= 2
    for split in (digits.train, digits.val, digits.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 8, 8) and split.x.shape[0] == len(split)
        assert set(split.y.tolist()) == set(range(10))
    summary = digits.describe()
    assert summary == {"name": "digits", "sizes": {"train": sizes[0], "val": sizes[1],
                                                  "test": sizes[2]}, "given_splits": [],
                       "num_classes": 10, "in_channels": 1, "input_size": 8, "dims": 2}
    assert json.loads(json.dumps(summary)) == summary


def test_digits_split_is_fixed_and_disjoint(digits: TaskData) -> None:
    again = load_data("digits")
    for a, b in ((digits.train, again.train), (digits.val, again.val), (digits.test, again.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    rows = [{tuple(r) for r in s.x.reshape(len(s), -1).tolist()}
            for s in (digits.train, digits.val, digits.test)]  # digits has no duplicate images
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])
    assert sum(map(len, rows)) == 1797
    other = load_data("digits", split_seed=1)
    assert not torch.equal(other.test.y, digits.test.y)


def test_normalization_uses_train_stats(digits: TaskData) -> None:
    x = digits.train.x
    assert abs(float(x.mean())) < 1e-4
    assert abs(float(x.std()) - 1.0) < 1e-3
    assert 0.0 < digits.mean[0] < 1.0 and len(digits.std) == 1
    restored = digits.test.x * digits.std[0] + digits.mean[0]  # raw pixels were /16 -> [0, 1]
    assert float(restored.min()) > -1e-5 and float(restored.max()) < 1 + 1e-5


# ----------------------------------------------------------------------------- npz


@pytest.mark.parametrize("layout", ["nhw", "nchw", "nhwc"])
def test_npz_layouts(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(1)
    shape = {"nhw": (80, 6, 6), "nchw": (80, 3, 6, 6), "nhwc": (80, 6, 6, 3)}[layout]
    x = rng.normal(size=shape).astype(np.float32)
    data = load_data(_write_npz(tmp_path / "d.npz", x=x, y=_balanced(80, 4, rng)))
    channels = 1 if layout == "nhw" else 3
    assert (data.in_channels, data.input_size, data.num_classes) == (channels, 6, 4)
    assert data.train.x.shape[1:] == (channels, 6, 6)
    assert len(data.train) + len(data.val) + len(data.test) == 80
    per_channel = data.train.x.transpose(0, 1).reshape(channels, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(channels), atol=1e-4)
    assert torch.allclose(per_channel.std(1, correction=0), torch.ones(channels), atol=1e-3)
    assert data.name == "d.npz"


def test_npz_channels_last_values_preserved(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = np.zeros((40, 5, 5, 3), dtype=np.float32)
    x[..., 1] = 1.0 + rng.random((40, 5, 5))  # only channel 1 varies
    data = load_data(_write_npz(tmp_path / "d.npz", x=x, y=_balanced(40, 2, rng)))
    assert data.mean[0] == 0.0 and data.std[0] == 1.0 and data.mean[1] > 1.0
    assert float(data.train.x[:, 0].abs().max()) == 0.0


def test_npz_uint8_scaling(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (60, 4, 4), dtype=np.uint8)
    data = load_data(_write_npz(tmp_path / "u.npz", x=x, y=_balanced(60, 3, rng)))
    assert 0.3 < data.mean[0] < 0.7 and 0.2 < data.std[0] < 0.4


def test_npz_with_given_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    path = _write_npz(tmp_path / "t.npz", x=rng.random((50, 4, 4)), y=_balanced(50, 5, rng),
                      x_test=rng.random((17, 4, 4)), y_test=np.arange(17) % 7)
    data = load_data(path, val_fraction=0.2)
    assert len(data.test) == 17 and len(data.train) + len(data.val) == 50
    assert len(data.val) == 10 and data.num_classes == 7


@pytest.mark.parametrize("with_test", [False, True])
def test_npz_with_given_validation_split(tmp_path: Path, with_test: bool) -> None:
    """x_val, y_val are the validation split as given: nothing carved from x for it; the test
    split is given too or carved from x; describe() (run folders, model.json) says which were given."""
    rng = np.random.default_rng(12)
    x_val = rng.random((13, 4, 4))
    test = {"x_test": rng.random((9, 4, 4)), "y_test": np.arange(9) % 5} if with_test else {}
    path = _write_npz(tmp_path / "v.npz", x=rng.random((60, 4, 4)), y=_balanced(60, 5, rng), x_val=x_val,
                      y_val=np.arange(13) % 6, **test)
    data = load_data(path)
    assert len(data.val) == 13 and data.val.y.tolist() == (np.arange(13) % 6).tolist()
    assert data.num_classes == 6  # label 5 only in the validation split
    restored = data.val.x.double() * data.std[0] + data.mean[0]
    assert np.allclose(restored[:, 0].numpy(), x_val)
    if with_test:
        assert (len(data.train), len(data.test)) == (60, 9) and data.given == ("val", "test")
    else:
        assert len(data.train) + len(data.test) == 60 and len(data.test) == 9 and data.given == ("val",)
    assert data.describe()["given_splits"] == list(data.given)
    assert data.describe()["sizes"] == {"train": len(data.train), "val": 13, "test": len(data.test)}


# ----------------------------------------------------------------------------- CIFAR


def test_cifar_directory(tmp_path: Path) -> None:
    data = load_data(str(_write_cifar(tmp_path / "cifar")))
    assert (data.in_channels, data.input_size, data.num_classes) == (3, 32, 10)
    assert len(data.test) == 60 and len(data.train) + len(data.val) == 300
    assert data.train.x.shape[1:] == (3, 32, 32) and len(data.std) == 3
    assert set(data.val.y.tolist()) == set(range(10))
    again = load_data(str(tmp_path / "cifar"))
    assert torch.equal(again.val.x, data.val.x)


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes str/bytes as Python 2 ``str`` (BINSTRING), like the real CIFAR-10 files."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def test_cifar_python2_pickles(tmp_path: Path) -> None:
    folder = _write_cifar(tmp_path / "cifar")
    rng = np.random.default_rng(7)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (40, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in np.arange(40) % 10], "batch_label": name}
        with open(folder / name, "wb") as fh:
            _Py2Pickler(fh, protocol=2).dump(batch)
    data = load_data(str(folder))
    assert len(data.test) == 40 and len(data.train) + len(data.val) == 200
    assert data.train.x.shape[1:] == (3, 32, 32) and data.num_classes == 10


def test_cifar_malicious_pickle_is_refused(tmp_path: Path) -> None:
    folder = _write_cifar(tmp_path / "cifar")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (f"touch {marker}",)

    with open(folder / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": [0]}, fh)
    _assert_error(str(folder), "data_batch_1", "refused pickle global", "system")
    assert not marker.exists()


def test_cifar_truncated_pickle(tmp_path: Path) -> None:
    folder = _write_cifar(tmp_path / "cifar")
    blob = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(blob[: len(blob) // 2])
    _assert_error(str(folder), "data_batch_3", "corrupt or truncated pickle")


def test_cifar_missing_file_and_bad_content(tmp_path: Path) -> None:
    folder = _write_cifar(tmp_path / "cifar")
    (folder / "test_batch").unlink()
    _assert_error(str(folder), "missing test_batch")
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((5, 100), np.uint8), b"labels": [0] * 5}, fh)
    _assert_error(str(folder), "test_batch", "(N, 3072)")
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((5, 3072), np.uint8), b"labels": [0] * 4}, fh)
    _assert_error(str(folder), "test_batch", "length mismatch")


# ----------------------------------------------------------------------------- bad input


def _bad_npz_cases() -> dict[str, tuple[dict[str, np.ndarray], str]]:
    rng = np.random.default_rng(5)
    x, y = rng.random((40, 4, 4)), _balanced(40, 4, rng)
    nan_x = x.copy()
    nan_x[3, 1, 1] = np.nan
    inf_x = x.copy()
    inf_x[0, 0, 0] = np.inf
    return {
        "missing_y": ({"x": x}, "missing array(s) y"),
        "wrong_ndim": ({"x": x.reshape(40, 16), "y": y}, "must have 3 dims"),
        "bad_channels": ({"x": rng.random((40, 5, 6, 6)), "y": y}, "no channel axis"),
        "non_square": ({"x": rng.random((40, 4, 5)), "y": y}, "must be square"),
        "length": ({"x": x, "y": y[:30]}, "length mismatch"),
        "nan": ({"x": nan_x, "y": y}, "NaN or inf"),
        "inf": ({"x": inf_x, "y": y}, "NaN or inf"),
        "float_labels": ({"x": x, "y": y + 0.5}, "labels must be integers"),
        "str_labels": ({"x": x, "y": y.astype(str)}, "labels must be integers"),
        "negative": ({"x": x, "y": y - 1}, "non-negative"),
        "labels_2d": ({"x": x, "y": y.reshape(20, 2)}, "labels must be 1-D"),
        "one_class": ({"x": x, "y": np.zeros(40, np.int64)}, "fewer than 2 classes"),
        "too_few": ({"x": x[:6], "y": y[:6]}, "too few samples"),
        "rare_class": ({"x": x, "y": np.r_[np.zeros(39, np.int64), 1]}, "too few samples"),
        "only_x_test": ({"x": x, "y": y, "x_test": x}, "x_test and y_test"),
        "test_shape": ({"x": x, "y": y, "x_test": rng.random((5, 3, 3)),
                        "y_test": np.zeros(5, np.int64)}, "x_test images have shape"),
        "only_y_val": ({"x": x, "y": y, "y_val": y}, "x_val and y_val"),
        "val_shape": ({"x": x, "y": y, "x_val": rng.random((5, 3, 3)),
                       "y_val": np.zeros(5, np.int64)}, "x_val images have shape"),
        "val_labels": ({"x": x, "y": y, "x_val": x[:5], "y_val": np.zeros(4, np.int64)}, "[y_val]: length mismatch"),
    }


@pytest.mark.parametrize("case", sorted(_bad_npz_cases()))
def test_bad_npz_raises(tmp_path: Path, case: str) -> None:
    arrays, needle = _bad_npz_cases()[case]
    path = _write_npz(tmp_path / f"{case}.npz", **arrays)
    _assert_error(path, f"{case}.npz", needle)


def test_unknown_and_missing(tmp_path: Path) -> None:
    message = _assert_error("no-such-dataset", "unknown dataset", "digits", ".npz", "CIFAR")
    assert "no-such-dataset" in message
    _assert_error(str(tmp_path / "absent.npz"), "absent.npz", "file not found")
    (tmp_path / "notes.txt").write_text("hi")
    _assert_error(str(tmp_path / "notes.txt"), "unsupported dataset format")
    _assert_error(str(tmp_path), "not a CIFAR-10 python-batches directory")


def test_corrupt_and_truncated_npz(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip archive at all" * 10)
    _assert_error(str(tmp_path / "junk.npz"), "junk.npz", "corrupt or unreadable")
    rng = np.random.default_rng(6)
    good = Path(_write_npz(tmp_path / "cut.npz", x=rng.random((40, 4, 4)),
                           y=_balanced(40, 4, rng)))
    good.write_bytes(good.read_bytes()[:300])
    _assert_error(str(good), "cut.npz", "corrupt or unreadable")
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    _assert_error(str(tmp_path / "single.npz"), "single .npy array")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}] * 12, dtype=object), y=np.arange(12))
    _assert_error(str(tmp_path / "objects.npz"), "objects.npz")


def test_bad_fractions() -> None:
    with pytest.raises(DataError, match="split fractions"):
        load_data("digits", val_fraction=0.6, test_fraction=0.5)


# ----------------------------------------------------------------------------- sequences


@pytest.fixture(scope="module")
def mnist1d() -> TaskData:
    return load_data("mnist1d", dims=1)


def test_mnist1d_shapes_and_sizes(mnist1d: TaskData) -> None:
    assert mnist1d.name == "mnist1d"
    assert (mnist1d.num_classes, mnist1d.in_channels, mnist1d.input_size, mnist1d.dims) == (10, 1,
                                                                                            40, 1)
    assert (len(mnist1d.train), len(mnist1d.val), len(mnist1d.test)) == (3400, 600, 1000)
    for split in (mnist1d.train, mnist1d.val, mnist1d.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape == (len(split), 1, 40)
        assert set(split.y.tolist()) == set(range(10))
    summary = mnist1d.describe()
    assert summary["dims"] == 1 and summary["input_size"] == 40
    assert json.loads(json.dumps(summary)) == summary
    assert abs(float(mnist1d.train.x.mean())) < 1e-4
    assert abs(float(mnist1d.train.x.std()) - 1.0) < 1e-3


def test_mnist1d_splits_disjoint_and_stratified(mnist1d: TaskData) -> None:
    rows = [{tuple(r) for r in s.x.reshape(len(s), -1).tolist()}
            for s in (mnist1d.train, mnist1d.val, mnist1d.test)]
    assert sum(map(len, rows)) == 5000  # no duplicate sequences, so the splits are disjoint
    train_counts = torch.bincount(mnist1d.train.y, minlength=10)
    val_counts = torch.bincount(mnist1d.val.y, minlength=10)
    expected = 0.15 * (train_counts + val_counts).double()
    assert float((val_counts.double() - expected).abs().max()) <= 1.0
    other = load_data("mnist1d", dims=1, split_seed=1)
    assert torch.equal(other.test.y, mnist1d.test.y)  # mnist1d's own test split, whose
    raw, raw_other = (d.test.x * d.std[0] + d.mean[0] for d in (mnist1d, other))  # normalization
    assert torch.allclose(raw, raw_other, atol=1e-5)  # follows the train split
    assert not torch.equal(other.val.y, mnist1d.val.y)


def test_mnist1d_generation_is_deterministic(mnist1d: TaskData) -> None:
    _mnist1d_arrays.cache_clear()  # generate again rather than reuse the cached arrays
    random.seed(3)
    np.random.seed(3)
    expected = (random.random(), np.random.rand())
    random.seed(3)
    np.random.seed(3)
    again = load_data("mnist1d", dims=1)
    assert (random.random(), np.random.rand()) == expected  # global generators left alone
    for a, b in ((mnist1d.train, again.train), (mnist1d.val, again.val),
                 (mnist1d.test, again.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_mnist1d_package_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    _mnist1d_arrays.cache_clear()
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    _assert_error("mnist1d", "mnist1d package", "pip install mnist1d", dims=1)


def _indexed(shape: tuple[int, ...]) -> np.ndarray:
    """[N, T] or [N, T, C] with x[i, t, c] = 10000 c + 100 t + i: each value names its place."""
    n, t, c = (*shape, 1)[:3]
    i, tt, cc = np.meshgrid(np.arange(n), np.arange(t), np.arange(c), indexing="ij")
    return (10000 * cc + 100 * tt + i).reshape(shape).astype(np.float64)


def _restored(data: TaskData, split: Split) -> np.ndarray:
    """Un-normalized (N, C, T) values of ``split``, rounded to the integers they were."""
    mean = torch.tensor(data.mean)[None, :, None]
    std = torch.tensor(data.std)[None, :, None]
    return np.rint((split.x.double() * std + mean).numpy()).astype(np.int64)


@pytest.mark.parametrize("shape", [(60, 12), (60, 12, 2), (60, 7, 5), (60, 2, 3)])
def test_npz_sequences_round_trip(tmp_path: Path, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(8)
    path = _write_npz(tmp_path / "s.npz", x=_indexed(shape), y=_balanced(60, 3, rng))
    data = load_data(path, dims=1)
    t, c = (*shape[1:], 1)[:2]
    assert (data.dims, data.in_channels, data.input_size, data.num_classes) == (1, c, t, 3)
    assert data.describe()["dims"] == 1
    seen = []
    for split in (data.train, data.val, data.test):
        assert split.x.shape == (len(split), c, t)
        values = _restored(data, split)  # (N, C, T)
        index = values[:, 0, 0]
        grid = 10000 * np.arange(c)[:, None] + 100 * np.arange(t)[None, :]
        assert np.array_equal(values, grid[None] + index[:, None, None])
        seen.extend(index.tolist())
    assert sorted(seen) == list(range(60))
    if t > 1:
        per_channel = data.train.x.transpose(0, 1).reshape(c, -1)
        assert torch.allclose(per_channel.mean(1), torch.zeros(c), atol=1e-4)
        assert torch.allclose(per_channel.std(1, correction=0), torch.ones(c), atol=1e-3)


def test_npz_3d_array_read_by_dims(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    path = _write_npz(tmp_path / "a.npz", x=rng.random((60, 6, 6)), y=_balanced(60, 3, rng))
    images, sequences = load_data(path), load_data(path, dims=1)
    assert images.train.x.shape[1:] == (1, 6, 6) and images.dims == 2
    assert sequences.train.x.shape[1:] == (6, 6) and sequences.dims == 1
    path = _write_npz(tmp_path / "b.npz", x=rng.random((60, 8, 3)), y=_balanced(60, 3, rng))
    assert load_data(path, dims=1).train.x.shape[1:] == (3, 8)
    _assert_error(path, "must be square")


def test_npz_sequences_with_given_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    x_test = _indexed((17, 10, 2))
    path = _write_npz(tmp_path / "t.npz", x=rng.random((50, 10, 2)), y=_balanced(50, 5, rng),
                      x_test=x_test, y_test=np.arange(17) % 7)
    data = load_data(path, dims=1, val_fraction=0.2)
    assert len(data.test) == 17 and len(data.train) + len(data.val) == 50 and len(data.val) == 10
    assert data.num_classes == 7 and data.test.y.tolist() == (np.arange(17) % 7).tolist()
    assert np.array_equal(_restored(data, data.test), x_test.transpose(0, 2, 1))


def _bad_sequence_cases() -> dict[str, tuple[dict[str, np.ndarray], str]]:
    rng = np.random.default_rng(11)
    x, y = rng.random((40, 6, 2)), _balanced(40, 4, rng)
    nan_x = x.copy()
    nan_x[3, 1, 1] = np.nan
    inf_x = x.copy()
    inf_x[0, 0, 0] = -np.inf
    shape_msg = "must have shape [N, T] or [N, T, C] for a sequence space, got"
    return {
        "seq_4d": ({"x": rng.random((5, 3, 4, 4)), "y": y[:5]}, f"{shape_msg} (5, 3, 4, 4)"),
        "seq_1d": ({"x": rng.random(40), "y": y}, f"{shape_msg} (40,)"),
        "seq_empty_t": ({"x": np.zeros((40, 0)), "y": y}, "empty sequence array"),
        "seq_no_channel": ({"x": np.zeros((40, 6, 0)), "y": y}, "empty sequence array"),
        "seq_channels_first": ({"x": rng.random((40, 1, 6)), "y": y}, "are 1 step of 6 channels; if they are [N, C, T]"),
        "seq_no_samples": ({"x": np.zeros((0, 6)), "y": y[:0]}, "empty sequence array"),
        "seq_strings": ({"x": x.astype(str), "y": y}, "sequences must be numeric"),
        "seq_nan": ({"x": nan_x, "y": y}, "sequences contain NaN or inf"),
        "seq_inf": ({"x": inf_x, "y": y}, "sequences contain NaN or inf"),
        "seq_length": ({"x": x, "y": y[:30]}, "length mismatch"),
        "seq_float_labels": ({"x": x, "y": y + 0.5}, "labels must be integers"),
        "seq_negative": ({"x": x, "y": y - 1}, "non-negative"),
        "seq_labels_2d": ({"x": x, "y": y.reshape(20, 2)}, "labels must be 1-D"),
        "seq_one_class": ({"x": x, "y": np.zeros(40, np.int64)}, "fewer than 2 classes"),
        "seq_too_few": ({"x": x[:6], "y": y[:6]}, "too few samples"),
        "seq_rare_class": ({"x": x, "y": np.r_[np.zeros(39, np.int64), 1]}, "too few samples"),
        "seq_only_y_test": ({"x": x, "y": y, "y_test": y}, "x_test and y_test"),
        "seq_test_length": ({"x": x, "y": y, "x_test": rng.random((5, 7, 2)),
                             "y_test": np.zeros(5, np.int64)}, "x_test sequences have shape"),
        "seq_test_channels": ({"x": x, "y": y, "x_test": rng.random((5, 6, 3)),
                               "y_test": np.zeros(5, np.int64)}, "x_test sequences have shape"),
        "seq_test_nan": ({"x": x, "y": y, "x_test": nan_x[:5], "y_test": y[:5]},
                         "[x_test]: sequences contain NaN"),
    }


@pytest.mark.parametrize("case", sorted(_bad_sequence_cases()))
def test_bad_sequence_npz_raises(tmp_path: Path, case: str) -> None:
    arrays, needle = _bad_sequence_cases()[case]
    path = _write_npz(tmp_path / f"{case}.npz", **arrays)
    _assert_error(path, f"{case}.npz", needle, dims=1)


@pytest.mark.parametrize("spec, dims, needle", [
    ("digits", 1, "digits is an image dataset; the space takes sequences (dims=1)"),
    ("mnist1d", 2, "mnist1d is a sequence dataset; the space takes images (dims=2)"),
    ("CIFAR", 1, "a CIFAR-10 directory is an image dataset; the space takes sequences (dims=1)"),
    ("digits", 0, "dims must be 1 (sequences) or 2 (images), got 0"),
    ("mnist1d", 3, "dims must be 1 (sequences) or 2 (images), got 3"),
    ("digits", True, "dims must be 1 (sequences) or 2 (images), got True"),
])
def test_dims_mismatch_refused(tmp_path: Path, spec: str, dims: int, needle: str) -> None:
    if spec == "CIFAR":
        spec = str(_write_cifar(tmp_path / "cifar"))
    _assert_error(spec, needle, dims=dims)


def test_accepted_formats_mention_sequences() -> None:
    message = _assert_error("no-such-dataset", "mnist1d", "[N, T] or [N, T, C]", dims=1)
    assert "[N, H, W, C]" in message


# ----------------------------------------------------------------------------- batching


def _toy_split(n: int = 23) -> Split:
    return Split(torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1), torch.arange(n))


def test_iterate_batches_covers_all_once() -> None:
    split = _toy_split()
    seen = [y for _, ys in iterate_batches(split, 5, shuffle=True,
                                           generator=torch.Generator().manual_seed(0))
            for y in ys.tolist()]
    assert sorted(seen) == list(range(23)) and seen != list(range(23))
    batches = list(iterate_batches(split, 5, shuffle=False))
    assert [len(b[1]) for b in batches] == [5, 5, 5, 5, 3]
    assert all(torch.equal(x.flatten().long(), y) for x, y in batches)
    assert [len(b[1]) for b in iterate_batches(split, 5, shuffle=False, drop_last=True)] == [5] * 4


def test_iterate_batches_deterministic() -> None:
    split = _toy_split()

    def order(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return [v for _, y in iterate_batches(split, 4, shuffle=True, generator=gen)
                for v in y.tolist()]

    assert order(7) == order(7) and order(7) != order(8)
    with pytest.raises(ValueError, match="Generator"):
        next(iterate_batches(split, 4, shuffle=True))
    with pytest.raises(ValueError, match="batch_size"):
        next(iterate_batches(split, 0, shuffle=False))
