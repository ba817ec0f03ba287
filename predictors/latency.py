"""Latency predictor for one device: lookup-table sum plus a learned linear correction.

The lookup table (LUT) holds the latency of every unit (`search_spaces.blocks.BlockSpec`) timed
alone on the device; the sum over a subnet's units is the classic LUT estimate (ProxylessNAS,
Once-for-All). Timing a unit alone misses what a whole network adds or saves (per-call overhead,
caches, the time between units), so a linear correction is fitted on whole subnets measured on
the same device (as nn-Meter and HELP correct kernel sums). Several feature sets are fitted by
least squares on the relative error; the one with the lowest k-fold cross-validated error on the
profile's subnets is kept, refitted on all of them.

A predictor is built from a profile dict (`nas profile` writes one) and saved as JSON, never pickle.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search_spaces import Arch, ModelSpec, SearchSpace, SpaceConfig
from search_spaces.arch import is_finite_number, show
from search_spaces.blocks import KINDS, BlockSpec, block_specs
from search_spaces.static import at_input_size

PREDICTOR_FORMAT, PREDICTOR_VERSION = "nas-latency-predictor", "1"
RIDGE = 1e-6  # relative to the mean diagonal of the normal equations: only keeps them solvable


class MissingBlockError(LookupError):
    """A unit of the subnet has no entry in the lookup table; the message names it."""


# A feature set maps (LUT latency per unit kind, unit count per kind) to the regression features.
Features = Callable[[dict[str, float], dict[str, int]], list[float]]
FEATURE_SETS: dict[str, Features] = {
    "lut": lambda t, n: [sum(t.values())],
    "lut+offset": lambda t, n: [sum(t.values()), 1.0],
    "lut+units": lambda t, n: [sum(t.values()), sum(n.values()), 1.0],
    "per-kind": lambda t, n: [*(t[k] for k in KINDS), *(n[k] for k in KINDS), 1.0],
}


@dataclass(frozen=True, eq=False)
class LatencyPredictor:
    """`predict(arch)` in milliseconds for the device, threads and batch of the profile it came from."""

    space: SpaceConfig
    table: Mapping[BlockSpec, float]
    model: str = "lut"
    coef: tuple[float, ...] = (1.0,)
    cv_error: Mapping[str, float] = field(default_factory=dict)  # relative RMSE per candidate feature set
    meta: Mapping[str, Any] = field(default_factory=dict)  # device, settings: informative only
    input_size: int = 0  # the input size (sequence length) the latencies are for; 0: the space's own
    _spec: ModelSpec = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or self.model not in FEATURE_SETS:
            raise ValueError(f"model must be one of {sorted(FEATURE_SETS)}, got {show(self.model)}")
        size = self.input_size or self.space.input_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"input_size must be a positive integer, got {show(self.input_size)}")
        object.__setattr__(self, "input_size", size)
        object.__setattr__(self, "_spec", ModelSpec.from_config(self.space))

    # ---- prediction ---------------------------------------------------------------------------
    def breakdown(self, arch: Arch) -> tuple[dict[str, float], dict[str, int]]:
        """LUT latency and number of units per unit kind."""
        times, counts = dict.fromkeys(KINDS, 0.0), dict.fromkeys(KINDS, 0)
        for b in block_specs(*at_input_size(self._spec, arch, self.input_size)):
            try:
                times[b.kind] += self.table[b]
            except KeyError:
                raise MissingBlockError(
                    f"the latency table has no entry for {b}; the profile was built from a sample of the "
                    "space: measure it again with a larger --max-units"
                ) from None
            counts[b.kind] += 1
        return times, counts

    def lut_sum(self, arch: Arch) -> float:
        return sum(self.breakdown(arch)[0].values())

    def predict(self, arch: Arch) -> float:
        """Predicted latency in milliseconds."""
        return float(np.dot(self.coef, FEATURE_SETS[self.model](*self.breakdown(arch))))

    # ---- fitting ------------------------------------------------------------------------------
    @classmethod
    def fit(cls, profile: Mapping[str, Any], *, folds: int = 5, candidates: tuple[str, ...] | None = None) -> LatencyPredictor:
        """Fit from a profile dict: its LUT, and the correction on its measured subnets."""
        space = SpaceConfig.from_dict(profile["space"])
        table = {BlockSpec.from_dict(row["block"]): float(row["latency_ms"]) for row in profile["lut"]}
        meta = {"device": profile.get("device", {}), "settings": profile.get("settings", {})}
        size = meta["settings"].get("input_size", 0)
        base = cls(space, table, meta=meta, input_size=size)
        searchable = SearchSpace(space)
        rows = [(base.breakdown(searchable.parse(s["arch"])), float(s["latency_ms"])) for s in profile["subnets"]]
        candidates = tuple(FEATURE_SETS) if candidates is None else candidates
        usable = [c for c in candidates if _n_features(c) <= max(1, len(rows) // 3)]
        if not rows or not usable:  # nothing to learn from: the plain LUT sum
            return base
        y = np.array([t for _, t in rows])
        errors = {c: _cv_error(_design(c, rows), y, folds) for c in usable}
        best = min(errors, key=errors.__getitem__)
        coef = _solve(_design(best, rows), y)
        return cls(space, table, best, tuple(float(v) for v in coef), errors, meta, size)

    # ---- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PREDICTOR_FORMAT, "format_version": PREDICTOR_VERSION, "space": self.space.to_dict(),
            "model": self.model, "coef": list(self.coef), "cv_error": dict(self.cv_error), "meta": dict(self.meta),
            "input_size": self.input_size,
            "lut": [{"block": b.to_dict(), "latency_ms": t} for b, t in self.table.items()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyPredictor:
        """A saved predictor, checked: `ValueError` (one line) for anything malformed."""
        if (not isinstance(data, Mapping) or data.get("format") != PREDICTOR_FORMAT
                or data.get("format_version") != PREDICTOR_VERSION):
            raise ValueError(f"not a latency predictor of format {PREDICTOR_FORMAT!r} version {PREDICTOR_VERSION!r}")
        try:
            table = {BlockSpec.from_dict(row["block"]): _finite("lut latency_ms", row["latency_ms"])
                     for row in data["lut"]}
            coef = tuple(_finite("coef", c) for c in data["coef"])
            predictor = cls(SpaceConfig.from_dict(data["space"]), table, data["model"], coef,
                            dict(data["cv_error"]), dict(data["meta"]), data.get("input_size", 0))
        except (KeyError, TypeError) as e:
            raise ValueError(f"latency predictor is malformed: {type(e).__name__}: {e}") from None
        if len(coef) != _n_features(predictor.model):
            raise ValueError(f"coef has {len(coef)} values, model {predictor.model!r} takes "
                             f"{_n_features(predictor.model)}")
        return predictor

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyPredictor:
        try:  # ValueError: also bad UTF-8 or JSON, and a malformed predictor; RecursionError: nesting too deep
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, RecursionError) as e:
            raise ValueError(f"latency predictor {path}: {e}") from None


def _finite(name: str, value: Any) -> float:
    if not is_finite_number(value):
        raise ValueError(f"{name} must be a finite number, got {show(value)}")
    return float(value)


def _n_features(name: str) -> int:
    return len(FEATURE_SETS[name](dict.fromkeys(KINDS, 0.0), dict.fromkeys(KINDS, 0)))


def _design(name: str, rows: list) -> np.ndarray:
    return np.array([FEATURE_SETS[name](*breakdown) for breakdown, _ in rows], dtype=float)


def _solve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares on the relative error (rows divided by the measured latency), lightly ridged."""
    xw, yw = x / y[:, None], np.ones_like(y)
    gram = xw.T @ xw
    gram += RIDGE * np.trace(gram) / len(gram) * np.eye(len(gram))
    return np.linalg.solve(gram, xw.T @ yw)


def _cv_error(x: np.ndarray, y: np.ndarray, folds: int) -> float:
    """Relative RMSE of k-fold cross-validated predictions (leave-one-out below `folds` rows)."""
    k = min(folds, len(y))
    fold = np.arange(len(y)) % k  # profiles' subnets are random draws: a fixed interleaving is a fair split
    rel = np.empty_like(y)
    for i in range(k):
        test = fold == i
        train = ~test if (~test).any() else test
        rel[test] = x[test] @ _solve(x[train], y[train]) / y[test] - 1.0
    return float(np.sqrt(np.mean(rel**2)))
