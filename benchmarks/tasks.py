"""Generated tasks for the benchmarks, written as `.npz` files a user could have brought (`nas search
--data FILE.npz`); not built-in datasets of `nas`.

"digits28": scikit-learn's 1,797 8x8 digits upsampled to 28x28 (bilinear), each drawn `copies`
times under a random affine map (shift up to +-3 px, rotation +-15 degrees, scale 0.9-1.1) with a
little Gaussian pixel noise (std 0.05), clipped to [0, 1]. The original digits are split 70/15/15,
stratified by class, into train (`x`, `y`), validation (`x_val`, `y_val`) and test (`x_test`,
`y_test`), every copy of a digit on its digit's side: validation and test digits are digits the
training set never showed, in any pose. `digit`, `digit_val`, `digit_test` hold each row's original
index. Everything follows from `seed` alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas.runs.files import write_atomically

SIDE, SHIFT_PX, ROTATE_DEG, SCALE, NOISE = 28, 3.0, 15.0, (0.9, 1.1), 0.05
SPLITS = {"": 0.70, "_val": 0.15, "_test": 0.15}  # .npz suffix -> fraction of the original digits


def digit_splits(y: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Indices of the original digits per split (suffix -> sorted indices), stratified by class."""
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_val, n_test = (round(len(members) * SPLITS[s]) for s in ("_val", "_test"))
        for suffix, chunk in zip(SPLITS, np.split(members, [len(members) - n_val - n_test, len(members) - n_test])):
            parts[suffix].append(chunk)
    return {s: np.sort(np.concatenate(chunks)) for s, chunks in parts.items()}


def drawn(images: torch.Tensor, copies: int, rng: np.random.Generator) -> torch.Tensor:
    """`copies` random affine draws of each 28x28 image, copies of one image adjacent, with pixel noise."""
    x = images.repeat_interleave(copies, dim=0)  # (N*copies, 1, 28, 28)
    n = len(x)
    angle = np.deg2rad(rng.uniform(-ROTATE_DEG, ROTATE_DEG, n))
    scale = rng.uniform(*SCALE, n)
    shift = rng.uniform(-SHIFT_PX, SHIFT_PX, (n, 2)) * 2 / SIDE  # pixels -> grid units ([-1, 1] spans the side)
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale  # the output->input map: inverse of the zoom
    theta = np.stack([np.stack([cos, -sin, -shift[:, 0]], 1), np.stack([sin, cos, -shift[:, 1]], 1)], 1)
    grid = F.affine_grid(torch.as_tensor(theta, dtype=torch.float32), list(x.shape), align_corners=False)
    moved = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    noise = torch.as_tensor(rng.normal(0.0, NOISE, moved.shape), dtype=torch.float32)
    return (moved + noise).clamp_(0.0, 1.0)


def digits28(seed: int = 0, copies: int = 4, limit: int | None = None) -> dict[str, np.ndarray]:
    """The "digits28" arrays (module docstring); `limit`: only the first `limit` original digits (tests)."""
    from sklearn.datasets import load_digits

    if copies < 1 or (limit is not None and limit < 1):
        raise ValueError(f"copies and limit must be >= 1, got {copies} and {limit}")
    digits = load_digits()
    images = torch.as_tensor(np.asarray(digits.images[:limit], dtype=np.float32) / 16.0)[:, None]  # (N, 1, 8, 8)
    y = np.asarray(digits.target[:limit], dtype=np.int64)
    big = F.interpolate(images, size=(SIDE, SIDE), mode="bilinear", align_corners=False)  # (N, 1, 28, 28)
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for suffix, index in digit_splits(y, rng).items():
        arrays[f"x{suffix}"] = drawn(big[index], copies, rng).numpy()
        arrays[f"y{suffix}"] = np.repeat(y[index], copies)
        arrays[f"digit{suffix}"] = np.repeat(index, copies)
    return arrays


def write_digits28(path: Path, seed: int = 0, copies: int = 4) -> Path:
    """Write the "digits28" task to `path` (an .npz; the same bytes' arrays for the same seed and copies); `path`."""
    arrays: dict[str, Any] = digits28(seed, copies)  # Any: savez's keywords are arrays, mypy reads allow_pickle

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: savez given a name would append ".npz" to it
            np.savez_compressed(f, **arrays)

    write_atomically(path, write)
    return path
