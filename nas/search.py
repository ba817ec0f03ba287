"""The search loop: ask a strategy, evaluate on the supernet, record, tell; then the outputs.

Every evaluation is appended to `evaluations.csv` (flushed) as it completes. At the end the
feasible non-dominated subnets (accuracy against the objective: latency, FLOPs, parameters or
peak memory) go to `pareto.csv` and `pareto.png`, the
summary (hypervolume and its reference point, chosen subnet) to `search.json`, and the most
accurate subnet under the limits is extracted to `models/<id>/`. When latency was predicted from
a profile of this machine, the subnets of the front are measured too, and `evaluations.csv`,
`pareto.csv` and `search.json` hold the predicted and the measured latency side by side.
"""

from __future__ import annotations

import csv
import math
import re
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nas.errors import UserError
from nas.evaluation import OBJECTIVE_LABELS, OBJECTIVES, Evaluator, Limits
from nas.interrupt import finish_on_interrupt
from nas.pareto import hypervolume_2d, pareto_indices, plot_front
from nas.progress import progress_bar
from nas.runs import save_model, write_json, write_text
from nas.strategies import Surrogate, make_strategy
from search_spaces import Arch

COLUMNS = ["index", "id", "strategy", "val_acc", "latency_ms", "latency_iqr_ms", "latency_predicted_ms",
           "latency_measured_ms", "flops", "params", "memory_bytes", "feasible", "violation", "acc_predicted",
           "cost_predicted", "seconds", "time", "arch"]
MAX_REPEATS = 500  # consecutive already-evaluated proposals before the space is taken as exhausted
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Budget:
    """A number of subnet evaluations (`200`) or a wall-clock duration (`90s`, `10m`, `1h`)."""

    evaluations: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str) -> Budget:
        text = str(text).strip().lower()
        if re.fullmatch(r"\d+", text):
            if int(text) < 1:
                raise UserError(f"--budget must be at least 1 evaluation, got {text!r}")
            return cls(evaluations=int(text))
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smh])", text)
        if not match or float(match.group(1)) <= 0:
            raise UserError(f"--budget {text!r} is malformed: give a count of evaluations (200) or a duration (90s, 10m, 1h)")
        return cls(seconds=float(match.group(1)) * _UNITS[match.group(2)])

    def describe(self) -> str:
        return f"{self.evaluations} evaluations" if self.evaluations else f"{self.seconds:g} s"


def make_surrogate(evaluator: Evaluator, limits: Limits, objective: str) -> Surrogate:
    """What a model-based strategy may compute without the supernet: analytic costs, and latency
    when it is predicted from a profile; a measured latency is left for the strategy to learn."""
    column = OBJECTIVES[objective]
    space, size = evaluator.supernet.space, evaluator.cost_size  # costs at the deployment input size
    analytic = {"params": space.count_params, "flops": lambda a: space.count_flops(a, input_size=size),
                "memory_bytes": lambda a: space.peak_memory_bytes(a, evaluator.latency.batch_size, input_size=size)}
    if evaluator.predictor is not None:
        analytic["latency_ms"] = evaluator.predict_latency
    needed = [k for k in limits.bounds() if k != column and k in analytic]

    def violation(arch: Arch, cost: float) -> float:
        return limits.violation({column: cost} | {k: analytic[k](arch) for k in needed})

    cost = analytic.get(column)
    complete = all(k == column or k in analytic for k in limits.bounds())
    return Surrogate(cost=None if cost is None else (lambda a: float(cost(a))), violation=violation, complete=complete)


def run_search(evaluator: Evaluator, out: Path, *, budget: Budget, limits: Limits, strategy: str, seed: int,
               objective: str = "latency", show_progress: bool = True, check_limits: bool = True,
               resume: bool = False, predictor: str | None = None) -> dict:
    """Accuracy (maximized) against `objective` (minimized: one of OBJECTIVES) under hard `limits`.
    `check_limits=False` when the caller already ran `evaluator.check_feasible(limits)`; `predictor`:
    the accuracy predictor family of a strategy that learns one (None: the strategy's default).

    `resume=True` continues the search recorded in `out/evaluations.csv`: the strategy is asked
    again from the start and told the recorded values instead of evaluating (a replay, so with the
    same seed and settings it reaches the state it had and goes on as the uninterrupted run would);
    nothing recorded is evaluated again, and the budget counts the recorded evaluations and time."""
    if objective not in OBJECTIVES:
        raise UserError(f"unknown objective {objective!r}; choose from {sorted(OBJECTIVES)}")
    space = evaluator.supernet.space
    if check_limits:
        evaluator.check_feasible(limits)
    column = OBJECTIVES[objective]
    need_latency = column == "latency_ms" or limits.max_latency_ms is not None
    strat = make_strategy(strategy, space, seed=seed, prefilter=lambda a: limits.params_ok(space.count_params(a)),
                          surrogate=make_surrogate(evaluator, limits, objective), predictor=predictor)
    path = out / "evaluations.csv"
    replay = deque(read_evaluations(path, space)) if resume else deque()
    results: dict[Arch, tuple[tuple[float, float], float]] = {}
    previous = replay[-1][1]["time"] if replay else 0.0  # search time spent before the interruption
    start, repeats, evaluating = time.perf_counter() - previous, 0, sum(r["seconds"] for _, r in replay)
    diverged, best = False, float("nan")  # best: highest feasible accuracy so far, for the progress line
    total = budget.evaluations or budget.seconds
    with path.open("a" if replay else "w", newline="") as fh, finish_on_interrupt("the evaluation under way") as interrupted, \
            progress_bar(total, f"searching ({strategy})", enabled=show_progress) as bar:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        if not replay:
            writer.writeheader()
            fh.flush()
        while not interrupted():
            elapsed = time.perf_counter() - start
            if budget.evaluations is not None and len(results) >= budget.evaluations:
                break
            if budget.seconds is not None and results and not replay and elapsed + elapsed / len(results) > budget.seconds:
                break  # the next evaluation would not finish inside the budget (recorded ones cost nothing now)
            arch = strat.ask()
            if arch in results:  # already evaluated: tell again, costs no budget
                strat.tell(arch, *results[arch])
                repeats += 1
                if repeats >= MAX_REPEATS:
                    break
                continue
            repeats = 0
            if replay:  # recorded before the interruption: tell what was measured then
                recorded, row = replay.popleft()  # the same arch as asked when code and settings are the same
                if recorded != arch and not diverged:
                    diverged = True
                    print(f"nas: warning: resuming {path}: at row {len(results) + 2} the strategy now proposes another "
                          "subnet than the one recorded (other code or settings); the recorded evaluations are kept and "
                          "told as recorded, but the search will not end as the uninterrupted one would",
                          file=sys.stderr)
                arch = recorded
                results[arch] = ((-row["val_acc"], row[column]), row["violation"])
                if row["violation"] == 0 and not row["val_acc"] <= best:
                    best = row["val_acc"]
                strat.tell(arch, *results[arch])
                bar.update("replaying the recorded evaluations", advance=1 if budget.evaluations else 0)
                continue
            t0 = time.perf_counter()
            row = {"index": len(results), "id": arch.id, "strategy": strategy, "val_acc": evaluator.accuracy(arch),
                   **evaluator.costs(arch, latency=need_latency)}
            row["violation"] = limits.violation(row)
            predicted = strat.predictions.get(arch, {})
            row |= {"feasible": row["violation"] == 0, "seconds": time.perf_counter() - t0, "arch": arch.to_json(),
                    "acc_predicted": predicted.get("accuracy"), "cost_predicted": predicted.get("cost"),
                    "time": time.perf_counter() - start}
            evaluating += row["seconds"]
            writer.writerow(row)
            fh.flush()  # on disk (in the OS's hands) before the strategy hears of it: a killed run loses nothing
            results[arch] = ((-row["val_acc"], row[column]), row["violation"])
            strat.tell(arch, *results[arch])
            if row["violation"] == 0 and not row["val_acc"] <= best:  # running best: no scan of all results per step
                best = row["val_acc"]
            bar.update(f"best feasible acc {best:.3f}", advance=1 if budget.evaluations else time.perf_counter() - start - elapsed)
    if interrupted():  # Ctrl-C: the evaluation under way was finished and written; no summary
        raise KeyboardInterrupt
    seconds = time.perf_counter() - start
    return summarize(evaluator, out, limits=limits, budget=budget, strategy=strategy, objective=objective,
                     seconds=seconds, overhead=1.0 - evaluating / seconds if seconds > 0 else 0.0)


def read_evaluations(path: Path, space) -> list[tuple[Arch, dict]]:
    """The complete rows of an interrupted search's `evaluations.csv`, in order. A last line cut off
    by a kill is dropped (the file is rewritten without it, atomically); anything else malformed is
    an error naming the file and the line."""
    if not path.is_file():
        return []  # killed before the first evaluation was written
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]  # a row cut off mid-write
        write_text(path, "".join(lines))
    if not lines:
        return []
    reader = csv.DictReader(lines)
    if reader.fieldnames != COLUMNS:
        raise UserError(f"{path}: the header is not that of a search's evaluations (expected {','.join(COLUMNS)})")
    rows = []
    for number, raw in enumerate(reader, start=2):
        try:
            arch = space.parse(raw["arch"])
            row = {k: float(raw[k]) if raw[k] not in ("", None) else float("nan")
                   for k in ("val_acc", "latency_ms", "flops", "params", "memory_bytes", "violation", "seconds", "time")}
        except (ValueError, TypeError) as e:
            raise UserError(f"{path}, line {number}: not a valid evaluation ({e})") from None
        rows.append((arch, row))
    return rows


def summarize(evaluator: Evaluator, out: Path, *, limits: Limits, budget: Budget, strategy: str, seconds: float,
              objective: str = "latency", overhead: float = 0.0) -> dict:
    table = pd.read_csv(out / "evaluations.csv", dtype={"id": str})
    column = OBJECTIVES[objective]
    feasible = table["feasible"].to_numpy(dtype=bool)
    ok = table[feasible]
    objectives = np.column_stack([-ok["val_acc"].to_numpy(), ok[column].to_numpy(dtype=float)])
    front_rows = ok.index[pareto_indices(objectives)].tolist() if len(ok) else []
    front_rows.sort(key=lambda i: table.at[i, column])
    # reference point: zero accuracy and the objective's limit (or 1.01 x the costliest evaluated subnet)
    ref = np.array([0.0, limits.limit_of(objective) or float(table[column].max()) * 1.01])
    hv = hypervolume_2d(objectives, ref) if len(ok) else 0.0
    remeasured = (evaluator.predictor is not None and evaluator.remeasure and bool(front_rows)
                  and bool(table["latency_ms"].notna().any()))
    if remeasured:  # predicted latency: measure the front here too, side by side
        for i in front_rows:
            table.at[i, "latency_measured_ms"] = evaluator.measure(Arch.from_json(table.at[i, "arch"])).median_ms
        write_text(out / "evaluations.csv", table.to_csv(index=False))
    pareto = table.loc[front_rows].copy()
    pareto["test_acc"] = [evaluator.accuracy(Arch.from_json(a), "test") for a in pareto["arch"]]
    pareto.to_csv(out / "pareto.csv", index=False)
    chosen = None
    if len(ok):
        chosen = int(ok.sort_values(["val_acc", column], ascending=[False, True]).index[0])
    plot_front(out / "pareto.png", cost=table[column].to_numpy(dtype=float), accuracy=table["val_acc"].to_numpy(),
               feasible=feasible, front=front_rows, chosen=chosen, limit=limits.limit_of(objective),
               xlabel=("measured " if evaluator.predictor is None and objective == "latency" else "")
               + OBJECTIVE_LABELS[objective],
               title=f"{evaluator.supernet.space.config.name} on {evaluator.data.name}: {len(table)} subnets ({strategy})")
    summary = {
        "strategy": strategy, "objective": objective, "budget": budget.describe(), "evaluations": len(table),
        "seconds": seconds, "overhead_fraction": overhead,
        "limits": {k: v for k, v in vars(limits).items()}, "feasible": int(feasible.sum()),
        "hypervolume": hv, "hypervolume_reference": {"accuracy": 0.0, column: float(ref[1])},
        "pareto_size": len(front_rows), "chosen": None,
        "latency": {"source": "measured" if evaluator.predictor is None else "predicted", "front_remeasured": remeasured},
    }
    if chosen is None:
        write_json(out / "search.json", summary)
        raise UserError(f"none of the {len(table)} evaluated subnets met the limits; evaluations are in "
                        f"{out / 'evaluations.csv'}: loosen a limit or raise --budget")
    row = table.loc[chosen]
    arch = Arch.from_json(row["arch"])
    info = {k: plain_value(row[k]) for k in ("val_acc", "latency_ms", "latency_predicted_ms", "latency_measured_ms", "flops",
                                        "params", "memory_bytes")}
    info["test_acc"] = float(pareto.at[chosen, "test_acc"])  # the chosen subnet is on the front: measured above
    info["cost_input_size"] = evaluator.cost_size or evaluator.supernet.spec.input_size  # what the costs are for
    model_dir = save_model(out / "models" / arch.id, evaluator.supernet.extract(arch), {
        "metrics": info, "data": evaluator.data.describe(), "space": evaluator.supernet.space.config.name,
    })
    summary["chosen"] = {"id": arch.id, "path": str(model_dir), **info}
    write_json(out / "search.json", summary)
    return summary


def plain_value(value):
    """A pandas/numpy scalar as a JSON-ready Python value; NaN becomes None (JSON has no NaN)."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value
