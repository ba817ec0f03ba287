"""Interleaved latency rounds: many models timed again and again, in a new order each round, beside a
reference model whose readings show the machine's drift and correct for it.

One reading of a model is noisy in two ways: within the reading (the inter-quartile range of its
samples) and between readings taken at different times (a busy spell of a shared machine, CPU
frequency, the first measurement of a process). The second decides a front of subnets whose
latencies differ by a few percent, and one reading cannot show it. So the models are read in
`rounds`; every round visits them in a fresh random order (no model is always first or last) and
reads the reference before and after. A round's drift factor is its reference reading over the
reference's median over all rounds (or over `baseline_ms`, the median of an earlier session, so that
two sessions are on one scale); each reading is divided by its round's factor. A model's latency is
the median of its corrected readings, and their minimum and maximum say how far they spread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Rounds:
    """One model's readings (ms), one per round, each divided by its round's drift factor."""

    readings_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return float(np.median(self.readings_ms))

    @property
    def low_ms(self) -> float:
        return min(self.readings_ms)

    @property
    def high_ms(self) -> float:
        return max(self.readings_ms)

    @property
    def iqr_ms(self) -> float:
        q1, q3 = np.percentile(self.readings_ms, [25, 75])
        return float(q3 - q1)


@dataclass(frozen=True)
class Interleaved(Generic[K]):
    """The models' rounds, and the reference's reading (ms) and drift factor per round."""

    models: dict[K, Rounds]
    reference_ms: tuple[float, ...]
    drift: tuple[float, ...]
    baseline_ms: float  # the reference's reading that a drift factor of 1 stands for
    seconds: float

    def to_dict(self) -> dict[str, object]:
        """What a run records about the session (the models' figures go to their own rows)."""
        return {"rounds": len(self.drift), "models": len(self.models), "reference_ms": list(self.reference_ms),
                "drift": list(self.drift), "baseline_ms": self.baseline_ms, "seconds": self.seconds}


def interleaved_rounds(readers: Mapping[K, Callable[[], float]], reference: Callable[[], float], *, rounds: int,
                       rng: np.random.Generator, baseline_ms: float | None = None) -> Interleaved[K]:
    """Read every model of `readers` (key -> a function returning one reading in ms) once per round,
    `rounds` times, each round in a new order drawn from `rng`, the `reference` read before and after
    each round (module docstring). `baseline_ms`: the reference reading of drift factor 1 (None: the
    median of this session's reference readings)."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    if baseline_ms is not None and not baseline_ms > 0:
        raise ValueError(f"baseline_ms must be > 0, got {baseline_ms!r}")
    start = time.perf_counter()
    keys = list(readers)
    reference()  # untimed: the first reading of a session pays for cold caches and lazy set-up
    raw: dict[K, list[float]] = {k: [] for k in keys}
    ref: list[float] = []
    for _ in range(rounds):
        before = reference()
        for i in rng.permutation(len(keys)):
            raw[keys[i]].append(readers[keys[i]]())
        ref.append((before + reference()) / 2)
    base = float(np.median(ref)) if baseline_ms is None else float(baseline_ms)
    drift = tuple(r / base for r in ref)
    models = {k: Rounds(tuple(v / d for v, d in zip(raw[k], drift))) for k in keys}
    return Interleaved(models, tuple(ref), drift, base, time.perf_counter() - start)
