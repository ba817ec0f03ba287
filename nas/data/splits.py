"""Which samples form the train, val and test splits: the splits the data give are kept, the others
carved from the rest by a stratified split fixed by a seed. Shared by the in-memory and streamed
datasets (`nas.data.datasets`, `nas.data.stream`), which then differ only in how they read samples."""

from __future__ import annotations

import numpy as np

from nas.data.errors import DataError, one_line

MIN_SAMPLES = 10


def carve(y: np.ndarray, given: dict[str, bool], val_fraction: float, test_fraction: float, seed: int,
          source: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(train indices into `y`, {split: indices} of the splits carved from `y`): "test" unless `given`
    says the data give it (`test_fraction` of all samples), "val" likewise (`val_fraction` of all
    samples, or of the training ones when the test split is given); every class in every split."""
    if len(y) < MIN_SAMPLES:
        raise DataError(f"{source}: too few samples ({len(y)}), need at least {MIN_SAMPLES}")
    classes = np.unique(y)
    if len(classes) < 2:
        raise DataError(f"{source}: fewer than 2 classes (found {len(classes)})")
    train_idx, carved = np.arange(len(y)), {}
    if not given["test"]:
        train_idx, carved["test"] = _stratified(train_idx, y, test_fraction, seed, source)
    if not given["val"]:
        fraction = val_fraction / (1.0 - test_fraction) if not given["test"] else val_fraction
        train_idx, carved["val"] = _stratified(train_idx, y[train_idx], fraction, seed, source)
    for split_name, idx in {"train": train_idx, **carved}.items():
        absent = np.setdiff1d(classes, y[idx])
        if len(absent):
            raise DataError(f"{source}: too few samples for class(es) {absent.tolist()} to appear "
                            f"in the {split_name} split")
    return train_idx, carved


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float64 mean and std of (N, C, ...) inputs; a constant channel gets std 1."""
    mean = x.mean(axis=(0, *range(2, x.ndim)), dtype=np.float64)
    std = np.array([x[:, c].std(dtype=np.float64) for c in range(x.shape[1])])
    std[std == 0.0] = 1.0
    return mean, std


def _stratified(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int,
                source: str) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of ``indices`` into (rest, fraction part), both sorted."""
    from sklearn.model_selection import train_test_split  # slow to import: only when used

    try:
        rest, part = train_test_split(indices, test_size=fraction, stratify=labels,
                                      random_state=seed)
    except ValueError as exc:
        raise DataError(f"{source}: too few samples per class for a stratified split "
                        f"({one_line(exc)})") from exc
    return np.sort(rest), np.sort(part)
