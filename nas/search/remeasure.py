"""Latency that ranks subnets, not noise: the subnets that decide the front or the limit are measured
again in interleaved rounds before the choice, as they are deployed, and the model handed over is
re-measured the same way.

A search measures each subnet once. On a shared machine one reading can be off by a quarter or more
(a busy spell, the first measurement of a process), which is more than the differences between
neighbours on a front. Before the choice, `remeasure_latency` takes the subnets that a reading off
by `margin` either way could put on the front or on the other side of the latency limit (every
other subnet is dominated, or over the limit, whatever its latency within the margin), as many as
fit in `max_seconds` of measuring (at most `max_subnets`; those a smaller error could move first),
and measures each as it is deployed (extracted, preprocessing inside, at the input size the costs
are for) in `rounds` interleaved rounds beside a reference subnet that corrects for the machine's
drift (`nas.hardware.rounds`). Their latency becomes the median of the rounds, and the rounds'
minimum and maximum are recorded beside the search's reading.

Repeated rounds still differ, and two sessions differ by about twice the spread of one subnet's
rounds. That is the machine's **resolution**: `resolution_iqrs` times the median relative
inter-quartile range of the rounds. Latencies closer than it are ties: the front is the resolved
front (`nas.search.pareto.resolved_front_indices`: a subnet leaves it only for one at least as
accurate and not resolvably slower), and a subnet is feasible only when its latency meets the limit
with the resolution to spare (latency x (1 + resolution)), so that the model handed over meets its
limit when measured again. That holds for every subnet, re-measured or not: one the time allowed
no rounds for keeps its single reading, no more certain than a median of rounds, and on a machine
whose resolution exceeds `margin` it may lie nearer the limit than the candidates were chosen for.
`noise_note` says when the resolution is coarse.

`check_handed_over` measures the model that is handed over (finished, preprocessing inside) as it
is deployed, on the same target, threads and batch, in the same kind of rounds on the same scale,
and says whether it meets the limit. A miss is said (`miss_note`, naming the most accurate subnet
whose every round met the limit), never silent, but the search does not switch by itself: the
model met the limit over the rounds before the choice, so it is within the machine's noise of it,
and switching would cost another finishing and accuracy for a difference the machine cannot
resolve (docs/devices.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from nas.errors import FieldError
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import Limits
from nas.finish.package import DeployedModel
from nas.hardware.quantize import Int8Model, Precision, is_int8, recorded_precision
from nas.hardware.rounds import Interleaved, interleaved_rounds
from nas.hardware.targets import TargetTimer
from nas.search.pareto import pareto_indices, resolved_front_indices
from search_spaces import Arch, SubnetModel
from search_spaces.static import at_input_size

# the columns `remeasure_latency` adds to evaluations.csv: the search's own reading, the rounds' minimum and
# maximum (drift-corrected) and their number (0: not re-measured, `latency_ms` is the search's reading)
COLUMNS = ["latency_search_ms", "latency_low_ms", "latency_high_ms", "latency_rounds"]


@dataclass(frozen=True)
class Remeasure:
    """How latency is re-measured before the choice (module docstring). `rounds` 0: not at all.
    A reading is the median of `samples` forward passes after `warmup` passes. `max_seconds`: the
    measuring time the subnets may take, estimated from their search readings; `resolution_iqrs`:
    the machine's resolution in median relative inter-quartile ranges of the rounds (0: none, every
    difference counts)."""

    rounds: int = 5
    margin: float = 0.25
    max_subnets: int = 200
    samples: int = 10
    warmup: int = 3
    max_seconds: float = 30.0
    resolution_iqrs: float = 2.0

    def __post_init__(self) -> None:
        for name, least in (("rounds", 0), ("max_subnets", 1), ("samples", 1), ("warmup", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise FieldError(name, f"must be an integer >= {least}, got {value!r}")
        if not (isinstance(self.margin, (int, float)) and 0 <= self.margin < 1):
            raise FieldError("margin", f"must be a number in [0, 1), got {self.margin!r}")
        for name in ("max_seconds", "resolution_iqrs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise FieldError(name, f"must be a finite number >= 0, got {value!r}")

    def seconds_for(self, latency_ms: float) -> float:
        """Estimated seconds of measuring one subnet of `latency_ms` in every round."""
        return self.rounds * (self.warmup + self.samples) * latency_ms / 1000.0

    def reader(self, timer: TargetTimer) -> Callable[[], float]:
        """One reading of `timer`'s model (ms)."""
        return lambda: timer.measure(warmup=self.warmup, min_repeats=self.samples, max_repeats=self.samples).median_ms


REMEASURE = Remeasure()  # the default settings


def precision_of(table: pd.DataFrame, row: Any) -> Precision:
    """The precision `row` of a search's evaluations was evaluated in (fp32 in tables recorded before
    precision was)."""
    return recorded_precision(table.at[row, "precision"] if "precision" in table else "fp32")


def _merit(table: pd.DataFrame, merit: np.ndarray | None) -> np.ndarray:
    """Per row, higher is better: `merit` (the search's ranking, `nas.search.ranking`), else accuracy."""
    return table["val_acc"].to_numpy(dtype=float) if merit is None else np.asarray(merit, dtype=float)


def feasible_front(table: pd.DataFrame, column: str, merit: np.ndarray | None = None, *,
                   resolution: float = 0.0) -> list[int]:
    """Row labels of the feasible non-dominated subnets (merit, by default accuracy, against
    `column`), cheapest first. `resolution` > 0: the resolved front, costs closer than that
    (relative) being ties (`resolved_front_indices`)."""
    feasible = table["feasible"].to_numpy(dtype=bool)
    ok = table[feasible]
    if not len(ok):
        return []
    merits, costs = _merit(table, merit)[feasible], ok[column].to_numpy(dtype=float)
    rows = (resolved_front_indices(merits, costs, resolution) if resolution > 0
            else pareto_indices(np.column_stack([-merits, costs])))
    return sorted(ok.index[rows].tolist(), key=lambda i: table.at[i, column])


def _may_decide(table: pd.DataFrame, limits: Limits, column: str, margin: float, acc: np.ndarray) -> np.ndarray:
    """Per row: whether a latency reading off by `margin` either way could put the subnet on the front
    or on the other side of the latency limit (with another objective than latency: only the latter)."""
    lat = table["latency_ms"].to_numpy(dtype=float)
    costs = {k: table[k].to_numpy(dtype=float) for k in limits.bounds() if k != "latency_ms"}

    def feasible_at(latency: np.ndarray) -> np.ndarray:
        return np.array([limits.violation({k: v[i] for k, v in costs.items()} | {"latency_ms": latency[i]}) == 0
                         for i in range(len(table))], dtype=bool)

    maybe, surely = feasible_at(lat * (1 - margin)), feasible_at(lat * (1 + margin))
    on_latency = column == "latency_ms"
    low = lat * (1 - margin) if on_latency else table[column].to_numpy(dtype=float)
    high = lat * (1 + margin) if on_latency else low
    # surely dominated: a surely feasible subnet at least as accurate is surely cheaper
    order = np.flatnonzero(surely)[np.argsort(high[surely], kind="stable")]
    best_acc = np.maximum.accumulate(acc[order]) if len(order) else np.zeros(0)
    cheaper = np.searchsorted(high[order], low, side="left")  # how many of them are surely cheaper
    dominated = np.array([n > 0 and best_acc[n - 1] >= a for n, a in zip(cheaper, acc)], dtype=bool)
    return maybe & ~dominated if on_latency else maybe & ~surely & ~dominated


def candidates(table: pd.DataFrame, *, limits: Limits, column: str, margin: float, steps: int = 5,
               merit: np.ndarray | None = None) -> list[int]:
    """Row labels of the subnets whose place on the front or against the latency limit a latency
    reading off by `margin` either way could change (`_may_decide`). Those a smaller error could
    already move come first (margins in `steps` steps; at 0, the first reading's front), the more
    accurate first among equals (`merit`, as `feasible_front`): they are the ones to re-measure when
    not all can be."""
    acc = _merit(table, merit)
    first = np.full(len(table), np.inf)
    for m in np.linspace(0.0, margin, steps + 1)[::-1]:
        first[_may_decide(table, limits, column, float(m), acc)] = m
    rows = np.flatnonzero(np.isfinite(first))
    rows = rows[np.lexsort((-acc[rows], first[rows]))]
    return [int(table.index[i]) for i in rows]


@dataclass(frozen=True)
class Remeasured:
    """What `remeasure_latency` did: the session of rounds, the rows it re-measured, and the reference subnet."""

    session: Interleaved[int]
    rows: list[int]
    reference: Arch
    considered: int  # candidates before `max_subnets` and `max_seconds` were applied
    resolution: float  # relative: latencies closer than this are ties (module docstring)

    def record(self, settings: Remeasure) -> dict[str, Any]:
        """For search.json."""
        return {"subnets": len(self.rows), "candidates": self.considered, "margin": settings.margin,
                "samples": settings.samples, "reference": self.reference.id, "resolution": self.resolution,
                "resolution_iqrs": settings.resolution_iqrs, "how": "as deployed (preprocessing inside)",
                **self.session.to_dict()}


def _within_time(table: pd.DataFrame, rows: list[int], settings: Remeasure) -> list[int]:
    """The first of `rows` (at least one) whose estimated measuring time fits in `settings.max_seconds`."""
    spent = np.cumsum([settings.seconds_for(float(table.at[i, "latency_ms"])) for i in rows])
    return rows[:max(1, int(np.searchsorted(spent, settings.max_seconds, side="right")))]


def resolution_of(session: Interleaved[int], iqrs: float) -> float:
    """The machine's resolution (relative) from a session of rounds: `iqrs` times the median of the
    models' inter-quartile range over their median; 0 with fewer than 3 rounds (no spread to tell)."""
    spreads = [r.iqr_ms / r.median_ms for r in session.models.values() if len(r.readings_ms) >= 3 and r.median_ms > 0]
    return float(iqrs * np.median(spreads)) if spreads else 0.0


def deployed_timer(evaluator: Evaluator, arch: Arch, precision: Precision = "fp32") -> TargetTimer:
    """The subnet `arch` as it would be handed over (extracted from the supernet, the data's
    preprocessing inside), at the input size the costs are for, prepared for timing. In int8, the
    quantized subnet the search measured (cached: quantized once), without the two elementwise
    operations of the preprocessing."""
    if is_int8(precision):
        return evaluator.subnet_timer(arch, precision)
    model = DeployedModel.for_data(evaluator.supernet.extract(arch), evaluator.data)
    return evaluator.timer(as_deployed(model, evaluator.cost_size))


def guarded_feasibility(table: pd.DataFrame, rows: list[int], limits: Limits, resolution: float) -> None:
    """`violation` and `feasible` of `rows`, their latency taken with the resolution to spare."""
    for i in rows:
        costs = {k: float(table.at[i, k]) for k in limits.bounds()}
        if "latency_ms" in costs:
            costs["latency_ms"] *= 1.0 + resolution
        table.at[i, "violation"] = limits.violation(costs)
        table.at[i, "feasible"] = table.at[i, "violation"] == 0


def measures_latency_here(evaluator: Evaluator, limits: Limits, column: str) -> bool:
    """Whether latency matters to the search (objective or limit) and this machine can measure it:
    measured during the search, or predicted from a profile of this machine."""
    needed = column == "latency_ms" or limits.max_latency_ms is not None
    return needed and (evaluator.predictor is None or evaluator.remeasure)


def remeasure_latency(evaluator: Evaluator, table: pd.DataFrame, *, limits: Limits, column: str,
                      settings: Remeasure, rng: np.random.Generator, merit: np.ndarray | None = None) -> Remeasured | None:
    """Re-measure the candidates of `table` (a search's evaluations) as deployed, in interleaved rounds,
    when its latency was measured on this machine and matters; their `latency_ms`,
    `latency_measured_ms` and `latency_iqr_ms`, and every row's `violation` and `feasible` (with the
    machine's resolution to spare) are updated in place, and `COLUMNS` are added. None when there is nothing
    to do (the table is then unchanged)."""
    if (settings.rounds == 0 or evaluator.predictor is not None or not measures_latency_here(evaluator, limits, column)
            or not len(table) or table["latency_ms"].isna().any()):
        return None
    found = candidates(table, limits=limits, column=column, margin=settings.margin, merit=merit)
    rows = _within_time(table, found[:settings.max_subnets], settings) if found else []
    if not rows:
        return None
    table["latency_search_ms"] = table["latency_ms"]
    table["latency_low_ms"] = table["latency_high_ms"] = np.nan
    table["latency_rounds"] = 0
    reference = evaluator.supernet.space.smallest()
    readers = {i: settings.reader(deployed_timer(evaluator, Arch.from_json(table.at[i, "arch"]), precision_of(table, i)))
               for i in rows}
    session = interleaved_rounds(readers, settings.reader(evaluator.subnet_timer(reference)), rounds=settings.rounds,
                                 rng=rng)
    for i, r in session.models.items():
        table.loc[i, ["latency_ms", "latency_measured_ms", "latency_iqr_ms", "latency_low_ms", "latency_high_ms",
                      "latency_rounds"]] = [r.median_ms, r.median_ms, r.iqr_ms, r.low_ms, r.high_ms, len(r.readings_ms)]
    resolution = resolution_of(session, settings.resolution_iqrs)
    guarded_feasibility(table, list(table.index), limits, resolution)  # re-measured or not (module docstring)
    return Remeasured(session, rows, reference, len(found), resolution)


COARSE = 0.10  # a resolution from which `noise_note` speaks


def noise_note(table: pd.DataFrame, front: list[int], *, column: str, limit: float | None,
               chosen: int | None, resolution: float = 0.0) -> str | None:
    """One line when this machine's `resolution` (relative, `resolution_of`) is `COARSE` or worse;
    when, without a resolution, the re-measured rounds of a subnet differ by more than neighbours on
    the front (the median inter-quartile range of the rounds against the median gap: neighbours that
    close swap places in many re-measurements); or when the chosen subnet's rounds straddle the
    latency limit. Else None."""
    if "latency_rounds" not in table or not (table["latency_rounds"] > 0).any():
        return None
    measured = table[table["latency_rounds"] > 0]
    spread = float(measured["latency_iqr_ms"].median())
    parts = []
    if resolution >= COARSE:
        parts.append(f"this machine resolves latency only to {resolution:.0%} ({len(measured)} subnets re-measured): "
                     "closer latencies are ties on the front, and a subnet needs that much room under a latency limit")
    elif column == "latency_ms" and len(front) >= 2 and resolution == 0:
        gap = float(np.median(np.diff(np.sort(table.loc[front, "latency_ms"].to_numpy(dtype=float)))))
        if spread > gap:
            parts.append(f"the rounds of a re-measured subnet differ by {spread:.3f} ms (inter-quartile range, median "
                         f"of {len(measured)} subnets), more than the {gap:.3f} ms between neighbours on the front "
                         "(median)")
    if limit is not None:
        straddle = measured[(measured["latency_low_ms"] <= limit) & (measured["latency_high_ms"] > limit)]
        if chosen is not None and chosen in straddle.index:
            parts.append(f"the rounds of {len(straddle)} subnet(s), the chosen one among them, straddle the "
                         f"{limit:g} ms limit")
    return "latency differences are mostly noise: " + "; ".join(parts) if parts else None


def as_deployed(model: DeployedModel, size: int | None) -> nn.Module:
    """`model` as it is deployed at input size `size` (a sequence length the costs are for; None:
    the data's): the same weights and preprocessing, its input resampling scaled (`at_input_size`)."""
    if size is None or size == model.spec.input_size:
        return model
    spec, arch = at_input_size(model.spec, model.arch, size)
    subnet = SubnetModel(spec, arch)
    subnet.load_state_dict(model.subnet.state_dict(), strict=True)
    mean, std = (model.mean.flatten().tolist(), model.std.flatten().tolist()) if model.standardizes else (None, None)
    return DeployedModel(subnet, mean=mean, std=std, labels=model.labels)


def check_handed_over(evaluator: Evaluator, model: DeployedModel, *, limit: float | None, settings: Remeasure,
                      rng: np.random.Generator, baseline_ms: float | None, int8: Int8Model | None = None) -> dict[str, Any]:
    """The handed-over `model` re-measured as deployed, in `settings.rounds` interleaved rounds (at
    least 3) beside the reference subnet, on the scale of the re-measurement before the choice
    (`baseline_ms`: its reference's median; None: this check's own); whether it meets `limit`.
    `int8`: the model is handed over quantized, and this is what is timed."""
    reference = evaluator.supernet.space.smallest()
    if int8 is not None:
        timer = int8.timer(evaluator.input_shape(evaluator.latency.batch_size))
    else:
        timer = evaluator.timer(as_deployed(model, evaluator.cost_size))
    session = interleaved_rounds({0: settings.reader(timer)}, settings.reader(evaluator.subnet_timer(reference)),
                                 rounds=max(3, settings.rounds), rng=rng, baseline_ms=baseline_ms)
    r = session.models[0]
    s = evaluator.latency
    return {"median_ms": r.median_ms, "low_ms": r.low_ms, "high_ms": r.high_ms, "rounds": len(r.readings_ms),
            "limit_ms": limit, "meets_limit": None if limit is None else r.median_ms <= limit,
            "target": s.device, "threads": s.threads, "batch": s.batch_size, "reference": reference.id,
            "drift": list(session.drift), "seconds": session.seconds,
            "precision": "fp32" if int8 is None else int8.precision,
            "how": "the model as handed over (preprocessing inside), median of interleaved rounds beside the "
                   "reference subnet, corrected for the machine's drift"}


def handed_over(evaluator: Evaluator, model: DeployedModel, costs: dict[str, Any], table: pd.DataFrame, chosen: int,
                run: Path, *, limits: Limits, column: str, settings: Remeasure, rng: np.random.Generator,
                rounds: Remeasured | None, int8: Int8Model | None = None) -> dict[str, Any] | None:
    """`check_handed_over` with its `miss_note`, also put into `costs` (`cost_record`'s, for model.json)
    as `latency_ms.handed_over`, when latency matters and this machine measures it; else None."""
    if not settings.rounds or not measures_latency_here(evaluator, limits, column):
        return None
    check = check_handed_over(evaluator, model, limit=limits.max_latency_ms, settings=settings, rng=rng,
                              baseline_ms=rounds.session.baseline_ms if rounds is not None else None, int8=int8)
    costs["latency_ms"]["handed_over"] = check = check | {"note": miss_note(check, table, chosen, run)}
    return check


def miss_note(check: dict[str, Any], table: pd.DataFrame, chosen: int, run: Path) -> str | None:
    """One line when the handed-over model missed its limit, naming the most accurate other feasible
    subnet whose every round met it (and how to hand it over instead); None when it met it."""
    if check["meets_limit"] is not False:
        return None
    line = (f"the handed-over model re-measured {check['median_ms']:.3f} ms ({check['low_ms']:.3f}-"
            f"{check['high_ms']:.3f} over {check['rounds']} rounds), over the {check['limit_ms']:g} ms limit")
    if "latency_rounds" in table and table.at[chosen, "latency_rounds"] > 0:
        line += " that its rounds before the choice met: it is within this machine's noise of the limit"
    if "latency_high_ms" in table:
        safe = table[table["feasible"].astype(bool) & (table["latency_high_ms"] <= check["limit_ms"])]
        safe = safe.drop(index=chosen, errors="ignore").sort_values("val_acc", ascending=False, kind="stable")
        if len(safe):
            other = safe.iloc[0]
            line += (f"; subnet {other['id']} (val acc {other['val_acc']:.4f}) met it in every round: "
                     f"nas finetune {run} --arch {other['id']}")
    return line
