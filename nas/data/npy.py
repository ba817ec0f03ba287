"""`.npy` folders: data larger than memory as memory-mapped arrays, read row by row (`nas.data.stream`).

A folder holding ``x.npy`` and ``y.npy``, optionally ``x_val.npy``/``y_val.npy`` and
``x_test.npy``/``y_test.npy``: the arrays of an ``.npz`` file, one file each, with the same shapes
(images [N, H, W], [N, C, H, W] or [N, H, W, C], uint8 scaled by 1/255 or float; sequences [N, T] or
[N, T, C]). The inputs are opened with ``np.load(mmap_mode="r", allow_pickle=False)``: never loaded
whole and never unpickled; the labels are read into memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nas.data.errors import DataError, one_line
from nas.data.stream import NpyRows

CHANNEL_SIZES = (1, 3, 4)  # the sizes an image array's channel axis may have
_READ_ERRORS = (OSError, ValueError, EOFError, MemoryError)


def channels_last(shape: tuple[int, ...]) -> bool:
    """Whether an image array of `shape` is [N, H, W, C]: 4-D, its last axis a channel axis and its
    second not (else [N, C, H, W])."""
    return len(shape) == 4 and shape[3] in CHANNEL_SIZES and shape[1] not in CHANNEL_SIZES


def is_npy_folder(path: Path) -> bool:
    return path.is_dir() and (path / "x.npy").is_file()


def read_npy_folder(path: Path, dims: int) -> dict[str, tuple[NpyRows, np.ndarray]]:
    """{"train": (inputs, labels), and "val"/"test" when the folder gives them}; `DataError` naming the file."""
    if not (path / "y.npy").is_file():
        raise DataError(f"{path}: a .npy folder needs y.npy beside x.npy")
    out = {"train": _pair(path, "x.npy", "y.npy", dims)}
    for split in ("val", "test"):
        x, y = path / f"x_{split}.npy", path / f"y_{split}.npy"
        if x.is_file() != y.is_file():
            raise DataError(f"{path}: x_{split}.npy and y_{split}.npy must be given together")
        if x.is_file():
            out[split] = _pair(path, x.name, y.name, dims)
            if _item_shape(out[split][0]) != _item_shape(out["train"][0]):
                raise DataError(f"{x}: rows of shape {_item_shape(out[split][0])} but x.npy's are "
                                f"{_item_shape(out['train'][0])}")
    return out


def _pair(path: Path, x_name: str, y_name: str, dims: int) -> tuple[NpyRows, np.ndarray]:
    x_file, y_file = path / x_name, path / y_name
    x = _open(x_file)
    rows = NpyRows(x_file, int(x.shape[0]) if x.ndim else 0, _layout(x, dims, x_file),
                   255.0 if x.dtype == np.uint8 else 1.0)
    y = np.asarray(_open(y_file))
    if y.ndim != 1 or len(y) != rows.rows:
        raise DataError(f"{y_file}: labels must be 1-D with one per row of {x_name} ({rows.rows}), got shape {y.shape}")
    if y.dtype.kind not in "iu" or (len(y) and y.min() < 0):
        raise DataError(f"{y_file}: labels must be non-negative integers, got dtype {y.dtype}")
    return rows, y.astype(np.int64)


def _open(f: Path) -> np.ndarray:
    try:
        return np.load(f, mmap_mode="r", allow_pickle=False)
    except _READ_ERRORS as exc:
        raise DataError(f"{f}: corrupt or unreadable .npy ({one_line(exc)})") from exc


def check_steps(shape: tuple[int, ...], where: object) -> None:
    """Refuse [N, 1, C] sequences: read channels-last they are one time step, which is almost always
    an [N, C, T] array given the wrong way round."""
    if len(shape) == 3 and shape[1] == 1 and shape[2] > 1:
        raise DataError(f"{where}: sequences of shape {list(shape)} read as [N, T, C] are 1 step of {shape[2]} "
                        f"channels; if they are [N, C, T], pass x.transpose(0, 2, 1)")


def _layout(x: np.ndarray, dims: int, where: Path) -> str:
    """How a row of `x` becomes (C, H, W) or (C, T) (`NpyRows.layout`)."""
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: inputs must be numeric, got dtype {x.dtype}")
    if 0 in x.shape:
        raise DataError(f"{where}: empty array of shape {x.shape}")
    if dims == 1:
        if x.ndim not in (2, 3):
            raise DataError(f"{where}: sequences must have shape [N, T] or [N, T, C], got {x.shape}")
        check_steps(x.shape, where)
        return "t" if x.ndim == 2 else "tc"
    if x.ndim == 3:
        layout, (h, w) = "hw", x.shape[1:]
    elif channels_last(x.shape):
        layout, (h, w) = "hwc", x.shape[1:3]
    elif x.ndim == 4 and x.shape[1] in CHANNEL_SIZES:
        layout, (h, w) = "chw", x.shape[2:]
    else:
        raise DataError(f"{where}: images must have shape [N, H, W], [N, C, H, W] or [N, H, W, C] "
                        f"(C 1, 3 or 4), got {x.shape}")
    if h != w:
        raise DataError(f"{where}: images must be square, got {h}x{w}")
    return layout


def _item_shape(rows: NpyRows) -> tuple[int, ...]:
    return rows.read(0, None).shape
