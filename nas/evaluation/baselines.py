"""Baselines on the same split: scikit-learn classifiers fitted on the flattened standardised inputs.

They are the floor a handed-over network must clear. A network below them is a defect of the run,
not a result, and the search says so in one line (`compare`). The check is cheap on purpose: at
most `MAX_TRAIN` training samples are fitted (a seeded draw of them beyond), and the kernel
classifier is left out where its fit, quadratic in the samples, would not be cheap (`MAX_VALUES`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from nas.data.datasets import AnySplit, TaskData, in_memory

MAX_TRAIN = 10_000  # training samples the baselines fit on at most
MAX_VALUES = 20_000_000  # samples x features above which the RBF SVC is left out


def _models(seed: int) -> dict[str, Callable[[], Any]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    return {"logistic regression": lambda: LogisticRegression(max_iter=5000),
            "RBF SVC": lambda: SVC(kernel="rbf"),
            "MLP": lambda: MLPClassifier(hidden_layer_sizes=(256,), max_iter=1000, random_state=seed),
            "1-NN": lambda: KNeighborsClassifier(n_neighbors=1)}


CHECKED = ("logistic regression", "RBF SVC")  # what a search compares its model with: fast and strong
BASELINES = ("logistic regression", "RBF SVC", "MLP", "1-NN")


def _arrays(split: AnySplit, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The split's inputs flattened and its labels, at most `limit` of them (a seeded draw)."""
    split = in_memory(split, limit, seed)
    x, y = split.x, split.y
    if len(y) > limit:
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:limit]
        x, y = x[keep], y[keep]
    return x.flatten(1).float().numpy(), y.numpy()


def fit_baselines(data: TaskData, names: Sequence[str] = CHECKED, *, seed: int = 0) -> list[dict[str, Any]]:
    """Validation and test accuracy of each baseline of `names` and the seconds its fit and
    predictions took; the RBF SVC is skipped above `MAX_VALUES` (training samples x features)."""
    from sklearn.exceptions import ConvergenceWarning

    unknown = sorted(set(names) - set(BASELINES))
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; known: {list(BASELINES)}")
    x, y = _arrays(data.train, MAX_TRAIN, seed)
    held_out = {name: _arrays(split, len(split), seed) for name, split in (("val", data.val), ("test", data.test))}
    models = _models(seed)
    rows = []
    for name in names:
        if name == "RBF SVC" and x.size > MAX_VALUES:
            continue
        start = time.perf_counter()
        model = models[name]()
        with warnings.catch_warnings():  # an unconverged fit is still the baseline at that iteration count
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x, y)
        acc = {split: float(np.mean(model.predict(xs) == ys)) for split, (xs, ys) in held_out.items()}
        rows.append({"method": name, "val_acc": acc["val"], "test_acc": acc["test"],
                     "seconds": time.perf_counter() - start, "train_samples": len(y)})
    return rows


def compare(rows: list[dict[str, Any]], test_acc: float, test_samples: int) -> dict[str, Any]:
    """The handed-over model's test accuracy against the best baseline's: `below` when it is lower
    by more than one test sample (a tie within one sample is not a defect)."""
    best = max(rows, key=lambda r: r["test_acc"])
    return {"baselines": rows, "best": best["method"], "best_test_acc": best["test_acc"], "model_test_acc": test_acc,
            "below": test_acc < best["test_acc"] - 1.0 / max(1, test_samples)}
