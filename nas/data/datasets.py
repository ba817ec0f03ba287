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
unpickler that only rebuilds numpy arrays.  Bad input raises :class:`DataError`
with a one-line message naming the file and the problem.

MNIST-1D (Greydanus & Kobak, "Scaling Down Deep Learning with MNIST-1D", 2024)
is generated locally, without download, by the ``mnist1d`` package.
"""

from __future__ import annotations

import contextlib
import functools
import io
import pickle
import random
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import torch

from nas.data.errors import DataError, one_line
from nas.data.images import fits_in_memory, is_image_folder, list_image_folder, read_image_folder
from nas.data.npy import CHANNEL_SIZES, channels_last, is_npy_folder, read_npy_folder
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

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _np_numeric  # type: ignore[no-redef]

ACCEPTED_FORMATS = ("a built-in name (digits, mnist1d), a .npz file with arrays "
                    "x and y (optional x_val, y_val and x_test, y_test; images x as [N, H, W], [N, C, H, W] or "
                    "[N, H, W, C], sequences x as [N, T] or [N, T, C]), "
                    "a CIFAR-10 python-batches directory, or an image folder (one sub-folder of "
                    "PNG/JPEG/WebP images per class, optionally under train/, val/ and test/)")
# dims -> (what such data is, what a space of those dims takes), for mismatch messages
_KINDS = {1: ("a sequence dataset", "sequences (dims=1)"),
          2: ("an image dataset", "images (dims=2)")}
MAX_CLASSES = 100_000
_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_FILE = "test_batch"
_CIFAR_ROW = 3 * 32 * 32

# The only globals a CIFAR batch pickle needs: numpy array / dtype rebuilding.
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    # _frombuffer is private, so numpy's stubs leave it out
    ("numpy.core.numeric", "_frombuffer"): _np_numeric._frombuffer,  # type: ignore[attr-defined]
    ("numpy._core.numeric", "_frombuffer"): _np_numeric._frombuffer,  # type: ignore[attr-defined]
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
# What reading a corrupt/truncated .npz or pickle can raise (DataError is re-raised first).
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, IndexError, TypeError, AttributeError,
                OverflowError, RecursionError, zipfile.BadZipFile, zlib.error,
                pickle.UnpicklingError, MemoryError)  # MemoryError: a header that declares a huge array


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
            x, y, test = _load_cifar_dir(path)
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
    x, x_test = _sequences(raw["x"], "mnist1d [x]"), _sequences(raw["x_test"], "mnist1d [x_test]")
    arrays = (x, _labels(raw["y"], "mnist1d [y]", len(x)),
              x_test, _labels(raw["y_test"], "mnist1d [y_test]", len(x_test)))
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
    except _READ_ERRORS as exc:
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
        except _READ_ERRORS as exc:
            raise DataError(f"{path}: corrupt or unreadable .npz ({one_line(exc)})") from exc
    x = (_images if dims == 2 else _sequences)(arrays["x"], f"{path} [x]")
    y = _labels(arrays["y"], f"{path} [y]", len(x))
    return x, y, _given_split(arrays, "test", x, path, dims), _given_split(arrays, "val", x, path, dims)


def _given_split(arrays: dict[str, np.ndarray], split: str, x: np.ndarray, path: Path, dims: int
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """The split `split` ("val", "test") of an .npz file, shaped as its x; None when the file has none."""
    if f"x_{split}" not in arrays:
        return None
    inputs, noun, layout = ((_images, "images", "(C, H, W)") if dims == 2
                            else (_sequences, "sequences", "(C, T)"))
    xs = inputs(arrays[f"x_{split}"], f"{path} [x_{split}]")
    if xs.shape[1:] != x.shape[1:]:
        raise DataError(f"{path}: x_{split} {noun} have shape {xs.shape[1:]} {layout} "
                        f"but x {noun} have {x.shape[1:]}")
    return xs, _labels(arrays[f"y_{split}"], f"{path} [y_{split}]", len(xs))


def _load_cifar_dir(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    missing = [n for n in (*_CIFAR_TRAIN_FILES, _CIFAR_TEST_FILE) if not (path / n).is_file()]
    if missing:
        raise DataError(f"{path}: not a CIFAR-10 python-batches directory, missing "
                        f"{', '.join(missing)}; expected {ACCEPTED_FORMATS}")
    batches = [_read_cifar_batch(path / n) for n in _CIFAR_TRAIN_FILES]
    x = _images(np.concatenate([b[0] for b in batches]), f"{path} [train batches]")
    y = np.concatenate([b[1] for b in batches])
    x_test, y_test = _read_cifar_batch(path / _CIFAR_TEST_FILE)
    return x, y, (_images(x_test, str(path / _CIFAR_TEST_FILE)), y_test)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays and plain containers."""

    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(f"{self._source}: refused pickle global {module}.{name} "
                            "(only numpy array globals are allowed)") from None


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as fh:
            batch = _ArrayUnpickler(fh, str(path)).load()
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: corrupt or truncated pickle ({one_line(exc)})") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == _CIFAR_ROW):
        found = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                 else type(data).__name__)
        raise DataError(f"{path}: b'data' must be a uint8 array of shape (N, {_CIFAR_ROW}), "
                        f"got {found}")
    if not (isinstance(labels, np.ndarray) or (isinstance(labels, list)
                                                and all(isinstance(v, int) for v in labels))):
        raise DataError(f"{path}: b'labels' must be a list of ints, got {type(labels).__name__}")
    return data.reshape(-1, 3, 32, 32), _labels(np.asarray(labels), f"{path} [labels]", len(data))


def _images(arr: np.ndarray, where: str) -> np.ndarray:
    """Validate ``arr`` and return float32 (N, C, H, W); uint8 is scaled to [0, 1]."""
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where}: images must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[:, None, :, :]
    elif arr.ndim == 4:
        if channels_last(arr.shape):
            arr = arr.transpose(0, 3, 1, 2)
        elif arr.shape[1] not in CHANNEL_SIZES:
            raise DataError(f"{where}: no channel axis of size 1, 3 or 4 in shape {arr.shape}")
    else:
        raise DataError(f"{where}: images must have 3 dims (N,H,W) or 4 dims (N,C,H,W)/(N,H,W,C), "
                        f"got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[2] == 0:
        raise DataError(f"{where}: empty image array of shape {arr.shape}")
    if arr.shape[2] != arr.shape[3]:
        raise DataError(f"{where}: images must be square, got {arr.shape[2]}x{arr.shape[3]}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.dtype == np.uint8:
        out /= 255.0
    if not np.isfinite(out).all():
        raise DataError(f"{where}: images contain NaN or inf values")
    return out


def _sequences(arr: np.ndarray, where: str) -> np.ndarray:
    """Validate ``arr`` ([N, T] or channels-last [N, T, C]) and return float32 (N, C, T)."""
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where}: sequences must be numeric, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise DataError(f"{where}: must have shape [N, T] or [N, T, C] for a sequence space, "
                        f"got {arr.shape}")
    if 0 in arr.shape:
        raise DataError(f"{where}: empty sequence array of shape {arr.shape} ([N, T] or [N, T, C])")
    seq = arr[:, None, :] if arr.ndim == 2 else arr.transpose(0, 2, 1)  # (N, C, T)
    out = np.ascontiguousarray(seq, dtype=np.float32)
    if not np.isfinite(out).all():
        raise DataError(f"{where}: sequences contain NaN or inf values")
    return out


def _labels(arr: np.ndarray, where: str, n: int) -> np.ndarray:
    """Validate labels: 1-D, one per sample, non-negative integers; return int64."""
    if arr.ndim != 1:
        raise DataError(f"{where}: labels must be 1-D, got shape {arr.shape}")
    if len(arr) != n:
        raise DataError(f"{where}: length mismatch, {n} samples but {len(arr)} labels")
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise DataError(f"{where}: labels must be integers, got non-integer {arr.dtype} values")
    elif arr.dtype.kind not in "iu":
        raise DataError(f"{where}: labels must be integers, got dtype {arr.dtype}")
    if n and arr.min() < 0:
        raise DataError(f"{where}: labels must be non-negative, got minimum {arr.min()}")
    if n and arr.max() >= MAX_CLASSES:
        raise DataError(f"{where}: label {arr.max()} too large (at most {MAX_CLASSES} classes)")
    return arr.astype(np.int64)


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
