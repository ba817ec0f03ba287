"""Baselines on the same split: scikit-learn classifiers fitted on the flattened standardised inputs.

They are the floor a handed-over network must clear. A network below them is a defect of the run,
not a result, and the search says so in one line (`compare`). The check is bounded on purpose:
- at most `MAX_TRAIN` training samples are fitted and `MAX_SCORED` scored: a seeded draw beyond,
  with every class in the training draw;
- inputs are read in chunks and average-pooled to at most `MAX_SIDE` pixels a side, or `MAX_STEPS`
  steps for sequences, before they are flattened. Streamed data are bounded the same way.
- the kernel classifier is left out where its fit and prediction, quadratic in the samples, would
  not be cheap (`MAX_KERNEL_WORK`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas.data.datasets import AnySplit, Split, TaskData

MAX_TRAIN = 10_000  # training samples the baselines fit on at most
MAX_SCORED = 20_000  # samples of a held-out split they are scored on at most
MAX_SIDE = 32  # pixels a side the inputs are pooled to at most (images)
MAX_STEPS = 1_024  # steps the inputs are pooled to at most (sequences)
MAX_KERNEL_WORK = 1e11  # training samples x all samples x features above which the RBF SVC is left out
CHUNK = 1_024  # samples read at once

CHECKED = ("logistic regression", "RBF SVC")  # what a search compares its model with: fast and strong
BASELINES = ("logistic regression", "RBF SVC", "MLP", "1-NN")


def _models(seed: int, max_iter: int) -> dict[str, Callable[[], Any]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    return {"logistic regression": lambda: LogisticRegression(max_iter=max_iter),
            "RBF SVC": lambda: SVC(kernel="rbf"),
            "MLP": lambda: MLPClassifier(hidden_layer_sizes=(256,), max_iter=1000, random_state=seed),
            "1-NN": lambda: KNeighborsClassifier(n_neighbors=1)}


def _draw(y: torch.Tensor, limit: int | None, seed: int) -> torch.Tensor:
    """Positions of at most `limit` samples (all, in order, within it): a seeded draw that keeps one
    sample of every class of `y` at least."""
    n = len(y)
    if limit is None or n <= limit:
        return torch.arange(n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    kept = order[:limit]
    missing = sorted(set(y.tolist()) - set(y[kept].tolist()))
    extra = [order[y[order] == c][0] for c in missing]  # each missing class's first sample in the draw's order
    return torch.cat([kept, torch.stack(extra)]).sort().values if extra else kept.sort().values


def _pooled(x: torch.Tensor) -> torch.Tensor:
    """`x` (N, C, H, W) or (N, C, T) average-pooled to at most `MAX_SIDE` a side or `MAX_STEPS` steps."""
    if x.dim() == 4 and max(x.shape[2:]) > MAX_SIDE:
        return F.adaptive_avg_pool2d(x, (min(x.shape[2], MAX_SIDE), min(x.shape[3], MAX_SIDE)))
    if x.dim() == 3 and x.shape[2] > MAX_STEPS:
        return F.adaptive_avg_pool1d(x, MAX_STEPS)
    return x


def _arrays(split: AnySplit, limit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The split's inputs (pooled, flattened) and labels at `_draw`'s positions, read in chunks."""
    positions = _draw(split.y, limit, seed)
    chunks = []
    for start in range(0, len(positions), CHUNK):
        at = positions[start:start + CHUNK]
        x = split.x[at] if isinstance(split, Split) else split.rows_in_memory(at)[0]
        chunks.append(_pooled(x.float()).flatten(1))
    return torch.cat(chunks).numpy(), split.y[positions].numpy()


def fit_baselines(data: TaskData, names: Sequence[str] = CHECKED, *, seed: int = 0, splits: Sequence[str] = ("test",),
                  max_train: int | None = MAX_TRAIN, max_iter: int = 1000) -> list[dict[str, Any]]:
    """The accuracy on each of `splits` ("val", "test") of each baseline of `names`, and the seconds
    its fit and predictions took; the RBF SVC is left out above `MAX_KERNEL_WORK`. `max_train` None:
    every training sample (the benchmarks'); `max_iter`: logistic regression's iterations."""
    from sklearn.exceptions import ConvergenceWarning

    unknown = sorted(set(names) - set(BASELINES))
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; known: {list(BASELINES)}")
    x, y = _arrays(data.train, max_train, seed)
    held_out = {name: _arrays(getattr(data, name), MAX_SCORED, seed) for name in splits}
    scored = sum(len(ys) for _, ys in held_out.values())
    models = _models(seed, max_iter)
    rows = []
    for name in names:
        if name == "RBF SVC" and len(y) * (len(y) + scored) * x.shape[1] > MAX_KERNEL_WORK:
            continue
        start = time.perf_counter()
        model = models[name]()
        with warnings.catch_warnings():  # an unconverged fit is still the baseline at that iteration count
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x, y)
        acc = {f"{split}_acc": float(np.mean(model.predict(xs) == ys)) for split, (xs, ys) in held_out.items()}
        rows.append({"method": name, **acc, "seconds": time.perf_counter() - start, "train_samples": len(y),
                     **{f"{split}_samples": len(ys) for split, (_, ys) in held_out.items()}})
    return rows


def compare(rows: list[dict[str, Any]], test_acc: float, test_samples: int) -> dict[str, Any]:
    """The handed-over model's test accuracy against the best baseline's: `below` when it gets more
    than one test sample fewer right (a tie within one sample is not a defect)."""
    best = max(rows, key=lambda r: r["test_acc"])
    n = best.get("test_samples", test_samples)  # the baselines' count (a draw of a very large test split)
    below = round(best["test_acc"] * n) - round(test_acc * n) > 1
    return {"baselines": rows, "best": best["method"], "best_test_acc": best["test_acc"], "model_test_acc": test_acc,
            "below": bool(below)}
