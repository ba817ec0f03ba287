"""Image and sequence classification datasets for the NAS pipeline.

``load_data(spec, dims=...)`` accepts a built-in name (``"digits"`` images,
``"mnist1d"`` sequences), a path to an ``.npz`` file (arrays ``x``/``y``,
optionally ``x_val``/``y_val`` and ``x_test``/``y_test``), a directory holding the CIFAR-10 "python
batches" or an image folder (`nas.data.images`).  ``dims`` comes from the search space: 2 for images, 1 for sequences;
it also settles how a 3-D ``.npz`` array is read ((N, H, W) grayscale images or
(N, T, C) channels-last sequences).  Every source becomes a :class:`TaskData`
with float32 ``(N, C, H, W)`` images or ``(N, C, T)`` sequences, normalized per
channel with the train split's statistics, and train/val/test splits: those the
data give (``x_val``, ``x_test``, CIFAR's test batch) as given, the others carved
from ``x`` by a stratified split fixed by ``split_seed``.  CIFAR pickles are read with a restricted
unpickler that only rebuilds numpy arrays (`nas.data.cifar`).  Bad input raises :class:`DataError`
with a one-line message naming the file and the problem.

MNIST-1D (Greydanus & Kobak, "Scaling Down Deep Learning with MNIST-1D", 2024)
is generated locally, without download, by the ``mnist1d`` package.
"""

from __future__ import annotations

import contextlib
import functools
import io
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from nas.data.arrays import READ_ERRORS, images, labels, sequences
from nas.data.cifar import load_cifar_dir
from nas.data.errors import DataError, one_line
from nas.data.images import fits_in_memory, is_image_folder, list_image_folder, read_image_folder
from nas.data.npy import is_npy_folder, read_npy_folder
from nas.data.splits import carve, channel_stats
from nas.data.stream import (
    LARGE_IMAGE,
    ImageFiles,
    ItemReader,
    StreamedSplit,
    default_workers,
    read_whole,
    sample_stats,
    stream_batches,
)
from search_spaces.fit import DataShape
from search_spaces.registry import Registry

ACCEPTED_FORMATS = ("a built-in name (digits, mnist1d), a .npz file with arrays "
                    "x and y (optional x_val, y_val and x_test, y_test; images x as [N, H, W], [N, C, H, W] or "
                    "[N, H, W, C], sequences x as [N, T] or [N, T, C]), "
                    "a CIFAR-10 python-batches directory, or an image folder (one sub-folder of "
                    "PNG/JPEG/WebP images per class, optionally under train/, val/ and test/)")
# dims -> (what such data is, what a space of those dims takes), for mismatch messages
_KINDS = {1: ("a sequence dataset", "sequences (dims=1)"),
          2: ("an image dataset", "images (dims=2)")}


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (float32, normalized; (N, C, H, W) images or (N, C, T) sequences) and
    labels ``y`` (int64, (N,))."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


AnySplit = Split | StreamedSplit  # in memory, or read as needed (`nas.data.stream`)


@dataclass(frozen=True)
class TaskData:
    """A dataset with fixed train/val/test splits and its normalization statistics.

    ``dims`` is 2 for images (``input_size`` = H = W) and 1 for sequences (``input_size`` = T).
    """

    name: str
    train: AnySplit
    val: AnySplit
    test: AnySplit
    num_classes: int
    in_channels: int
    input_size: int
    dims: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    given: tuple[str, ...] = ()  # the splits that came with the data ("val", "test"); the others are carved
    class_names: tuple[str, ...] = ()  # class i's name, when the data name their classes (image folders)
    origin: dict[str, Any] = field(default_factory=dict)  # how the data were read (image folders), for describe()

    @property
    def streamed(self) -> bool:
        """Whether the training split is read as needed (`nas.data.stream`) rather than held in memory."""
        return isinstance(self.train, StreamedSplit)

    @property
    def shape(self) -> DataShape:
        """What a search space takes from the data (`search_spaces.fit`)."""
        return DataShape(self.dims, self.in_channels, self.input_size, self.num_classes)

    def describe(self) -> dict[str, Any]:
        """JSON-able summary of the dataset; `given_splits`: those that came with the data (not carved)."""
        sizes = {"train": len(self.train), "val": len(self.val), "test": len(self.test)}
        named = {"class_names": list(self.class_names)} if self.class_names else {}
        return {"name": self.name, "sizes": sizes, "given_splits": list(self.given), "num_classes": self.num_classes,
                "in_channels": self.in_channels, "input_size": self.input_size, "dims": self.dims, **named,
                **({"read": dict(self.origin)} if self.origin else {})}


Arrays = tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]  # x, y, and a given test set


@dataclass(frozen=True)
class BuiltinDataset:
    dims: Literal[1, 2]  # 2: images, 1: sequences
    input_size: int  # the image side or the sequence length
    load: Callable[[], Arrays]


DATASETS: Registry[BuiltinDataset] = Registry("dataset", DataError)


def builtin_dataset(name: str, *, dims: Literal[1, 2],
                    input_size: int) -> Callable[[Callable[[], Arrays]], Callable[[], Arrays]]:
    """Decorator: registers a function returning (x, y, test or None) as the built-in dataset `name`."""
    def register(load: Callable[[], Arrays]) -> Callable[[], Arrays]:
        DATASETS.add(name, BuiltinDataset(dims, input_size, load))
        return load
    return register


def list_datasets() -> list[str]:
    """Names of the built-in datasets."""
    return DATASETS.names()


def load_data(spec: str, *, dims: int = 2, val_fraction: float = 0.15,
              test_fraction: float = 0.15, split_seed: int = 0, stream: bool | None = None,
              workers: int | None = None) -> TaskData:
    """Load ``spec`` (built-in name, ``.npz`` path, CIFAR-10 directory or image folder,
    `nas.data.images`) for a space of ``dims``.

    ``dims`` is 2 for images (N, C, H, W) and 1 for sequences (N, C, T).  A split the data
    give (``x_val``/``y_val``, ``x_test``/``y_test`` or ``test_batch``) is used as given; the
    others are carved from ``x``: without a given test set, ``test_fraction`` and
    ``val_fraction`` are fractions of all samples; with one, ``val_fraction`` is a fraction of
    the training samples. The split depends only on the data and ``split_seed``.

    A folder of ``.npy`` files (`nas.data.npy`) is always streamed (`nas.data.stream`); an image
    folder is streamed when ``stream`` is true, or when ``stream`` is None and its images are large
    (side >= `LARGE_IMAGE`: their augmentation crops the originals) or would take more than half the
    memory available decoded. A streamed dataset is read by ``workers`` DataLoader processes (None:
    `default_workers()`; 0: in this process).
    """
    if not (0.0 < val_fraction < 1.0 and 0.0 < test_fraction < 1.0
            and val_fraction + test_fraction < 1.0):
        raise DataError(f"bad split fractions val={val_fraction}, test={test_fraction}: "
                        "each must be in (0, 1) and their sum below 1")
    if isinstance(dims, bool) or not isinstance(dims, (int, np.integer)) or dims not in (1, 2):
        raise DataError(f"dims must be 1 (sequences) or 2 (images), got {dims!r}")
    test: tuple[np.ndarray, np.ndarray] | None
    val: tuple[np.ndarray, np.ndarray] | None = None
    if spec in DATASETS:
        builtin = DATASETS.get(spec)
        if builtin.dims != dims:
            raise DataError(_mismatch(spec, builtin.dims, dims))
        name = source = spec
        x, y, test = builtin.load()  # a built-in gives no validation split
    else:
        path = Path(spec)
        name, source = path.name, str(path)
        workers = default_workers() if workers is None else workers
        if workers < 0:
            raise DataError(f"workers must be >= 0, got {workers}")
        if is_npy_folder(path):
            arrays = read_npy_folder(path, dims)
            return _build_streamed(name, source, {k: (rows, y, None) for k, (rows, y) in arrays.items()},
                                   val_fraction, test_fraction, split_seed, workers)
        if path.is_dir() and dims == 2 and is_image_folder(path):
            listing = list_image_folder(path)
            if stream or (stream is None and (listing.side >= LARGE_IMAGE or not fits_in_memory(listing))):
                given = {split: (ImageFiles(tuple(f for f, _ in pairs), listing.channels),
                                 np.array([c for _, c in pairs], dtype=np.int64), listing.side)
                         for split, pairs in listing.files.items()}
                built = _build_streamed(name, source, given, val_fraction, test_fraction, split_seed, workers)
                return replace(built, class_names=listing.class_names, origin={**listing.record, **built.origin})
            folder = read_image_folder(path)
            built = _build(name, source, folder.x, folder.y, {"val": folder.val, "test": folder.test},
                           val_fraction, test_fraction, split_seed)
            return replace(built, class_names=folder.class_names, origin=folder.record)
        if path.is_dir():
            if dims != 2:
                what = "an image folder" if is_image_folder(path) else "a CIFAR-10 directory"
                raise DataError(_mismatch(f"{path}: {what}", 2, dims))
            x, y, test = load_cifar_dir(path, ACCEPTED_FORMATS)
        elif path.suffix == ".npz":
            x, y, test, val = _load_npz(path, dims)
        elif path.exists():
            raise DataError(f"{path}: unsupported dataset format; expected {ACCEPTED_FORMATS}")
        else:
            raise DataError(f"unknown dataset {spec!r} (not a built-in name or an existing path); "
                            f"expected {ACCEPTED_FORMATS}")
    return _build(name, source, x, y, {"val": val, "test": test}, val_fraction, test_fraction, split_seed)


def iterate_batches(split: AnySplit, batch_size: int, *, shuffle: bool,
                    generator: torch.Generator | None = None,
                    drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches; shuffling needs an explicit (seeded) ``generator``. A streamed split
    is read by its DataLoader workers (`nas.data.stream.stream_batches`), without augmentation."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(split)
    if shuffle and generator is None:
        raise ValueError("shuffle=True needs a torch.Generator (no global RNG is used)")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    if isinstance(split, StreamedSplit):
        yield from stream_batches(split, batch_size, order[:stop])
        return
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield split.x[idx], split.y[idx]


def in_memory(split: AnySplit, limit: int, seed: int = 0) -> Split:
    """`split` itself when in memory; else `limit` of its inputs (drawn with `seed`; all, in order, when
    there are no more) read into memory, without augmentation (training-free proxies' batches)."""
    if isinstance(split, Split):
        return split
    positions = (torch.arange(len(split)) if limit >= len(split)
                 else torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:limit])
    return Split(*split.rows_in_memory(positions))


def held_in_memory(split: AnySplit) -> AnySplit:
    """`split` with its inputs in memory, for splits read again and again (the validation split of a
    search): itself when in memory; a streamed split read once when it fits (`nas.data.stream.read_whole`),
    else itself (every pass reads it again)."""
    whole = read_whole(split) if isinstance(split, StreamedSplit) else None
    return split if whole is None else Split(*whole)


@builtin_dataset("digits", dims=2, input_size=8)
def _load_digits() -> Arrays:
    """scikit-learn's 1,797 handwritten digits, 8x8, scaled to [0, 1]; shipped with scikit-learn."""
    from sklearn.datasets import load_digits  # scikit-learn takes seconds to import: only when used

    digits = load_digits()
    x = (np.asarray(digits.images, dtype=np.float32) / 16.0)[:, None, :, :]
    return np.ascontiguousarray(x), np.asarray(digits.target, dtype=np.int64), None


def _mismatch(what: str, data_dims: int, dims: int) -> str:
    return f"{what} is {_KINDS[data_dims][0]}; the space takes {_KINDS[dims][1]}"


@functools.cache
def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D's default x (4000, 1, 40), y, x_test (1000, 1, 40), y_test; read-only, cached."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise DataError(f"mnist1d needs the mnist1d package (pip install mnist1d): "
                        f"{one_line(exc)}") from exc
    # make_dataset reseeds the global `random` and `np.random` generators: restore them after.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            raw = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x, x_test = sequences(raw["x"], "mnist1d [x]"), sequences(raw["x_test"], "mnist1d [x_test]")
    arrays = (x, labels(raw["y"], "mnist1d [y]", len(x)),
              x_test, labels(raw["y_test"], "mnist1d [y_test]", len(x_test)))
    for arr in arrays:
        arr.setflags(write=False)
    return arrays


@builtin_dataset("mnist1d", dims=1, input_size=40)
def _load_mnist1d() -> Arrays:
    """MNIST-1D (Greydanus, 2020), generated locally with its default arguments."""
    x, y, x_test, y_test = _mnist1d_arrays()
    return x, y, (x_test, y_test)


def _load_npz(path: Path, dims: int) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None,
                                               tuple[np.ndarray, np.ndarray] | None]:
    """x, y, and the test and validation splits the file gives (None where it gives none)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        loaded = np.load(path, allow_pickle=False)
    except READ_ERRORS as exc:
        raise DataError(f"{path}: corrupt or unreadable .npz ({one_line(exc)})") from exc
    if isinstance(loaded, np.ndarray):
        raise DataError(f"{path}: holds a single .npy array, expected an .npz archive with x and y")
    with loaded as archive:
        keys = set(archive.files)
        missing = [k for k in ("x", "y") if k not in keys]
        if missing:
            raise DataError(f"{path}: missing array(s) {', '.join(missing)}; "
                            f"found {sorted(keys)}, need x and y (optional x_val, y_val and x_test, y_test)")
        for split in ("val", "test"):
            if (f"x_{split}" in keys) != (f"y_{split}" in keys):
                raise DataError(f"{path}: x_{split} and y_{split} must be given together")
        wanted = [k for k in ("x", "y", "x_val", "y_val", "x_test", "y_test") if k in keys]
        try:
            arrays = {k: archive[k] for k in wanted}
        except READ_ERRORS as exc:
            raise DataError(f"{path}: corrupt or unreadable .npz ({one_line(exc)})") from exc
    x = (images if dims == 2 else sequences)(arrays["x"], f"{path} [x]")
    y = labels(arrays["y"], f"{path} [y]", len(x))
    return x, y, _given_split(arrays, "test", x, path, dims), _given_split(arrays, "val", x, path, dims)


def _given_split(arrays: dict[str, np.ndarray], split: str, x: np.ndarray, path: Path, dims: int
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """The split `split` ("val", "test") of an .npz file, shaped as its x; None when the file has none."""
    if f"x_{split}" not in arrays:
        return None
    inputs, noun, layout = ((images, "images", "(C, H, W)") if dims == 2
                            else (sequences, "sequences", "(C, T)"))
    xs = inputs(arrays[f"x_{split}"], f"{path} [x_{split}]")
    if xs.shape[1:] != x.shape[1:]:
        raise DataError(f"{path}: x_{split} {noun} have shape {xs.shape[1:]} {layout} "
                        f"but x {noun} have {x.shape[1:]}")
    return xs, labels(arrays[f"y_{split}"], f"{path} [y_{split}]", len(xs))


def _build(name: str, source: str, x: np.ndarray, y: np.ndarray,
           given: dict[str, tuple[np.ndarray, np.ndarray] | None], val_fraction: float,
           test_fraction: float, seed: int) -> TaskData:
    """TaskData from x, y and the splits the data give (`given`: "val", "test" or None): the
    splits not given are carved from x (stratified, `nas.data.splits.carve`), the rest of x is the train split."""
    train_idx, carved = carve(y, {k: v is not None for k, v in given.items()}, val_fraction, test_fraction,
                              seed, source)
    splits = {k: v if v is not None else (x[carved[k]], y[carved[k]]) for k, v in given.items()}
    x_train = x[train_idx]  # (N, C, H, W) or (N, C, T)
    mean, std = channel_stats(x_train)
    per_channel = (1, x.shape[1]) + (1,) * (x.ndim - 2)

    def make(inputs: np.ndarray, labels: np.ndarray) -> Split:
        out = inputs - mean.astype(np.float32).reshape(per_channel)  # new array
        out /= std.astype(np.float32).reshape(per_channel)
        return Split(torch.from_numpy(out), torch.from_numpy(np.array(labels, dtype=np.int64)))

    labels = [y, *(split[1] for split in splits.values())]
    return TaskData(name=name, train=make(x_train, y[train_idx]), val=make(*splits["val"]), test=make(*splits["test"]),
                    num_classes=int(max(part.max(initial=0) for part in labels)) + 1,
                    in_channels=int(x.shape[1]), input_size=int(x.shape[2]), dims=x.ndim - 2,
                    mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
                    given=tuple(k for k in ("val", "test") if given[k] is not None))


Streamed = tuple[ItemReader, np.ndarray, int | None]  # a split's reader, labels, and side (images) or None


def _build_streamed(name: str, source: str, given: Mapping[str, Streamed], val_fraction: float,
                    test_fraction: float, seed: int, workers: int) -> TaskData:
    """TaskData of streamed splits (`nas.data.stream`): `given["train"]` and the "val"/"test" splits the
    data give, the others carved from the train one as `_build` carves them; the normalization statistics
    come from a sample of the training split (`sample_stats`)."""
    reader, y, side = given["train"]
    train_idx, carved = carve(y, {k: k in given for k in ("val", "test")}, val_fraction, test_fraction, seed, source)
    sample, sampled = sample_stats(reader, train_idx, side, seed)
    mean, std = channel_stats(sample)  # (N, C, ...) float32
    f32 = (mean.astype(np.float32), std.astype(np.float32))

    def make(split: str) -> StreamedSplit:
        r, labels, s = (reader, y[carved[split]], side) if split in carved else given[split]
        rows = carved[split] if split in carved else (train_idx if split == "train" else np.arange(len(labels)))
        if split == "train":
            labels = y[train_idx]
        return StreamedSplit(r, rows.astype(np.int64), torch.from_numpy(np.array(labels, dtype=np.int64)), s, *f32,
                             workers=workers)

    labels = [given[k][1] for k in given]
    first = sample[0]
    return TaskData(name=name, train=make("train"), val=make("val"), test=make("test"),
                    num_classes=int(max(part.max(initial=0) for part in labels)) + 1,
                    in_channels=int(first.shape[0]), input_size=int(first.shape[1]), dims=first.ndim - 1,
                    mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
                    given=tuple(k for k in ("val", "test") if k in given),
                    origin={"streamed": True, "stats_sample": sampled, "workers": workers})
