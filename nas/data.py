"""Image classification datasets for the NAS pipeline.

``load_data(spec)`` accepts a built-in name (``"digits"``), a path to an
``.npz`` file (arrays ``x``/``y``, optionally ``x_test``/``y_test``) or a
directory holding the CIFAR-10 "python batches".  Every source becomes an
:class:`ImageData` with float32 ``(N, C, H, W)`` images normalized per channel
with the train split's statistics, and a stratified train/val/test split that
is fixed by ``split_seed``.  CIFAR pickles are read with a restricted
unpickler that only rebuilds numpy arrays.  Bad input raises :class:`DataError`
with a one-line message naming the file and the problem.
"""

from __future__ import annotations

import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _np_numeric  # type: ignore[no-redef]

BUILTIN_DATASETS: tuple[str, ...] = ("digits",)
ACCEPTED_FORMATS = (f"a built-in name ({', '.join(BUILTIN_DATASETS)}), a .npz file with arrays "
                    "x and y (optional x_test, y_test), or a CIFAR-10 python-batches directory")
MIN_SAMPLES = 10
MAX_CLASSES = 100_000
_CHANNEL_SIZES = (1, 3, 4)
_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_FILE = "test_batch"
_CIFAR_ROW = 3 * 32 * 32

# The only globals a CIFAR batch pickle needs: numpy array / dtype rebuilding.
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _np_numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _np_numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
# What reading a corrupt/truncated .npz or pickle can raise (DataError is re-raised first).
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, IndexError, TypeError, AttributeError,
                OverflowError, RecursionError, zipfile.BadZipFile, zlib.error,
                pickle.UnpicklingError)


class DataError(ValueError):
    """Bad dataset input; message is one clear line naming the file/key/problem."""


@dataclass(frozen=True)
class Split:
    """Images ``x`` (float32, (N, C, H, W), normalized) and labels ``y`` (int64, (N,))."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class ImageData:
    """A dataset with fixed train/val/test splits and its normalization statistics."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def describe(self) -> dict[str, Any]:
        """JSON-able summary of the dataset."""
        sizes = {"train": len(self.train), "val": len(self.val), "test": len(self.test)}
        return {"name": self.name, "sizes": sizes, "num_classes": self.num_classes,
                "in_channels": self.in_channels, "image_size": self.image_size}


def list_datasets() -> list[str]:
    """Names of the built-in datasets."""
    return list(BUILTIN_DATASETS)


def load_data(spec: str, *, val_fraction: float = 0.15, test_fraction: float = 0.15,
              split_seed: int = 0) -> ImageData:
    """Load ``spec`` (built-in name, ``.npz`` path or CIFAR-10 directory).

    Without a given test set, ``test_fraction`` and ``val_fraction`` are fractions
    of all samples; with ``x_test``/``test_batch``, ``val_fraction`` is a fraction of
    the training samples.  The split depends only on the data and ``split_seed``.
    """
    if not (0.0 < val_fraction < 1.0 and 0.0 < test_fraction < 1.0
            and val_fraction + test_fraction < 1.0):
        raise DataError(f"bad split fractions val={val_fraction}, test={test_fraction}: "
                        "each must be in (0, 1) and their sum below 1")
    test: tuple[np.ndarray, np.ndarray] | None
    if spec in BUILTIN_DATASETS:
        name = source = spec
        x, y, test = *_load_digits(), None
    else:
        path = Path(spec)
        name, source = path.name, str(path)
        if path.is_dir():
            x, y, test = _load_cifar_dir(path)
        elif path.suffix == ".npz":
            x, y, test = _load_npz(path)
        elif path.exists():
            raise DataError(f"{path}: unsupported dataset format; expected {ACCEPTED_FORMATS}")
        else:
            raise DataError(f"unknown dataset {spec!r} (not a built-in name or an existing path); "
                            f"expected {ACCEPTED_FORMATS}")
    return _build(name, source, x, y, test, val_fraction, test_fraction, split_seed)


def iterate_batches(split: Split, batch_size: int, *, shuffle: bool,
                    generator: torch.Generator | None = None,
                    drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches; shuffling needs an explicit (seeded) ``generator``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(split)
    if shuffle and generator is None:
        raise ValueError("shuffle=True needs a torch.Generator (no global RNG is used)")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield split.x[idx], split.y[idx]


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    x = (np.asarray(digits.images, dtype=np.float32) / 16.0)[:, None, :, :]
    return np.ascontiguousarray(x), np.asarray(digits.target, dtype=np.int64)


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        loaded = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: corrupt or unreadable .npz ({_one_line(exc)})") from exc
    if isinstance(loaded, np.ndarray):
        raise DataError(f"{path}: holds a single .npy array, expected an .npz archive with x and y")
    with loaded as archive:
        keys = set(archive.files)
        missing = [k for k in ("x", "y") if k not in keys]
        if missing:
            raise DataError(f"{path}: missing array(s) {', '.join(missing)}; "
                            f"found {sorted(keys)}, need x and y (optional x_test, y_test)")
        if ("x_test" in keys) != ("y_test" in keys):
            raise DataError(f"{path}: x_test and y_test must be given together")
        wanted = [k for k in ("x", "y", "x_test", "y_test") if k in keys]
        try:
            arrays = {k: archive[k] for k in wanted}
        except _READ_ERRORS as exc:
            raise DataError(f"{path}: corrupt or unreadable .npz ({_one_line(exc)})") from exc
    x = _images(arrays["x"], f"{path} [x]")
    y = _labels(arrays["y"], f"{path} [y]", len(x))
    if "x_test" not in arrays:
        return x, y, None
    x_test = _images(arrays["x_test"], f"{path} [x_test]")
    if x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"{path}: x_test images have shape {x_test.shape[1:]} (C, H, W) "
                        f"but x images have {x.shape[1:]}")
    return x, y, (x_test, _labels(arrays["y_test"], f"{path} [y_test]", len(x_test)))


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
        raise DataError(f"{path}: corrupt or truncated pickle ({_one_line(exc)})") from exc
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
        if arr.shape[3] in _CHANNEL_SIZES and arr.shape[1] not in _CHANNEL_SIZES:
            arr = arr.transpose(0, 3, 1, 2)
        elif arr.shape[1] not in _CHANNEL_SIZES:
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


def _labels(arr: np.ndarray, where: str, n: int) -> np.ndarray:
    """Validate labels: 1-D, one per image, non-negative integers; return int64."""
    if arr.ndim != 1:
        raise DataError(f"{where}: labels must be 1-D, got shape {arr.shape}")
    if len(arr) != n:
        raise DataError(f"{where}: length mismatch, {n} images but {len(arr)} labels")
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
           test: tuple[np.ndarray, np.ndarray] | None, val_fraction: float,
           test_fraction: float, seed: int) -> ImageData:
    if len(y) < MIN_SAMPLES:
        raise DataError(f"{source}: too few samples ({len(y)}), need at least {MIN_SAMPLES}")
    classes = np.unique(y)
    if len(classes) < 2:
        raise DataError(f"{source}: fewer than 2 classes (found {len(classes)})")
    everything = np.arange(len(y))
    if test is None:
        pool, test_idx = _stratified(everything, y, test_fraction, seed, source)
        train_idx, val_idx = _stratified(pool, y[pool], val_fraction / (1.0 - test_fraction),
                                         seed, source)
        x_test, y_test = x[test_idx], y[test_idx]
        carved = {"train": y[train_idx], "val": y[val_idx], "test": y_test}
    else:
        train_idx, val_idx = _stratified(everything, y, val_fraction, seed, source)
        x_test, y_test = test
        carved = {"train": y[train_idx], "val": y[val_idx]}
    for split_name, split_y in carved.items():
        absent = np.setdiff1d(classes, split_y)
        if len(absent):
            raise DataError(f"{source}: too few samples for class(es) {absent.tolist()} to appear "
                            f"in the {split_name} split")
    x_train = x[train_idx]
    mean = x_train.mean(axis=(0, 2, 3), dtype=np.float64)
    std = np.array([x_train[:, c].std(dtype=np.float64) for c in range(x.shape[1])])
    std[std == 0.0] = 1.0

    def make(images: np.ndarray, labels: np.ndarray) -> Split:
        out = images - mean.astype(np.float32)[None, :, None, None]  # new array
        out /= std.astype(np.float32)[None, :, None, None]
        return Split(torch.from_numpy(out), torch.from_numpy(np.asarray(labels, dtype=np.int64)))

    return ImageData(name=name, train=make(x_train, y[train_idx]), val=make(x[val_idx], y[val_idx]),
                     test=make(x_test, y_test), num_classes=int(max(y.max(), y_test.max())) + 1,
                     in_channels=int(x.shape[1]), image_size=int(x.shape[2]),
                     mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))


def _stratified(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int,
                source: str) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of ``indices`` into (rest, fraction part), both sorted."""
    try:
        rest, part = train_test_split(indices, test_size=fraction, stratify=labels,
                                      random_state=seed)
    except ValueError as exc:
        raise DataError(f"{source}: too few samples per class for a stratified split "
                        f"({_one_line(exc)})") from exc
    return np.sort(rest), np.sort(part)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
