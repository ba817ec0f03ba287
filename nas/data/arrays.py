"""Arrays a user's data are read into, checked: images become float32 (N, C, H, W), sequences
float32 (N, C, T), labels int64; anything else is one `DataError` line naming where it came from."""

from __future__ import annotations

import pickle
import zipfile
import zlib

import numpy as np

from nas.data.errors import DataError
from nas.data.npy import CHANNEL_SIZES, channels_last, check_steps

MAX_CLASSES = 100_000
# What reading a corrupt/truncated .npz or pickle can raise (DataError is re-raised first).
READ_ERRORS = (OSError, ValueError, EOFError, KeyError, IndexError, TypeError, AttributeError,
               OverflowError, RecursionError, zipfile.BadZipFile, zlib.error,
               pickle.UnpicklingError, MemoryError)  # MemoryError: a header that declares a huge array


def images(arr: np.ndarray, where: str) -> np.ndarray:
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


def sequences(arr: np.ndarray, where: str) -> np.ndarray:
    """Validate ``arr`` ([N, T] or channels-last [N, T, C]) and return float32 (N, C, T)."""
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where}: sequences must be numeric, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise DataError(f"{where}: must have shape [N, T] or [N, T, C] for a sequence space, "
                        f"got {arr.shape}")
    if 0 in arr.shape:
        raise DataError(f"{where}: empty sequence array of shape {arr.shape} ([N, T] or [N, T, C])")
    check_steps(arr.shape, where)
    seq = arr[:, None, :] if arr.ndim == 2 else arr.transpose(0, 2, 1)  # (N, C, T)
    out = np.ascontiguousarray(seq, dtype=np.float32)
    if not np.isfinite(out).all():
        raise DataError(f"{where}: sequences contain NaN or inf values")
    return out


def labels(arr: np.ndarray, where: str, n: int) -> np.ndarray:
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
