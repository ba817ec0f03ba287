"""CIFAR-10's "python batches" directory, read with a restricted unpickler that only rebuilds
numpy arrays (a pickle can run code; these can't)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from nas.data.arrays import READ_ERRORS, images, labels
from nas.data.errors import DataError, one_line

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _np_numeric  # type: ignore[no-redef]

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


def load_cifar_dir(path: Path, accepted: str) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The training batches' images and labels and the test batch; `accepted`: the formats a
    missing file's message names."""
    missing = [n for n in (*_CIFAR_TRAIN_FILES, _CIFAR_TEST_FILE) if not (path / n).is_file()]
    if missing:
        raise DataError(f"{path}: not a CIFAR-10 python-batches directory, missing "
                        f"{', '.join(missing)}; expected {accepted}")
    batches = [_read_cifar_batch(path / n) for n in _CIFAR_TRAIN_FILES]
    x = images(np.concatenate([b[0] for b in batches]), f"{path} [train batches]")
    y = np.concatenate([b[1] for b in batches])
    x_test, y_test = _read_cifar_batch(path / _CIFAR_TEST_FILE)
    return x, y, (images(x_test, str(path / _CIFAR_TEST_FILE)), y_test)


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
    except READ_ERRORS as exc:
        raise DataError(f"{path}: corrupt or truncated pickle ({one_line(exc)})") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    targets = batch.get(b"labels", batch.get("labels"))
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == _CIFAR_ROW):
        found = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                 else type(data).__name__)
        raise DataError(f"{path}: b'data' must be a uint8 array of shape (N, {_CIFAR_ROW}), "
                        f"got {found}")
    if not (isinstance(targets, np.ndarray) or (isinstance(targets, list)
                                                 and all(isinstance(v, int) for v in targets))):
        raise DataError(f"{path}: b'labels' must be a list of ints, got {type(targets).__name__}")
    return data.reshape(-1, 3, 32, 32), labels(np.asarray(targets), f"{path} [labels]", len(data))
