"""The search loop: ask a strategy, evaluate on the supernet, record, tell; then the outputs.

Every evaluation is appended to `evaluations.csv` (flushed) as it completes. At the end the
feasible non-dominated subnets (accuracy against the objective: latency, FLOPs, parameters or
peak memory) go to `pareto.csv` and `pareto.png`, the summary (hypervolume and its reference
point, chosen subnet, bounded retries that ran out) to `search.json`, and the most accurate subnet
under the limits is extracted to `models/<id>/`. When latency was predicted from a profile of this
machine, the subnets of the front are measured too, and `evaluations.csv`, `pareto.csv` and
`search.json` hold the predicted and the measured latency side by side.
"""

from __future__ import annotations

import csv
import math
import re
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from nas.errors import FieldError, UserError, retries_exhausted
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import OBJECTIVE_LABELS, OBJECTIVES, Limits
from nas.finish.finetune import FinishConfig, FinishResult, choose_after_finishing, finish_subnet, finished_metrics
from nas.finish.package import MODEL_META, DeployedModel, evaluator_costs, quantize_deployed, save_model_folder
from nas.finish.qat import int8_handover
from nas.hardware.quantize import is_int8
from nas.runs.files import open_run_file, read_json, write_json, write_text
from nas.runs.interrupt import finish_on_interrupt
from nas.runs.progress import progress_bar
from nas.search.pareto import front_hypervolume, hypervolume_reference, plot_front
from nas.search.ranking import Ranking, search_ranking
from nas.search.records import COLUMNS, header, read_evaluations
from nas.search.remeasure import COLUMNS as REMEASURE_COLUMNS
from nas.search.remeasure import (
    REMEASURE,
    Remeasure,
    feasible_front,
    handed_over,
    noise_note,
    precision_of,
    remeasure_latency,
)
from nas.search.strategies import Surrogate, make_strategy
from search_spaces import Arch
from search_spaces.arch import is_finite_number

MAX_REPEATS = 500  # consecutive already-evaluated proposals before the space is taken as exhausted
MAX_EVALUATIONS, MAX_SECONDS = 10**7, 366 * 86400.0  # a budget beyond is a typo (a year of search)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Budget:
    """A number of subnet evaluations (`200`) or a wall-clock duration (`90s`, `10m`, `1h`)."""

    evaluations: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if (self.evaluations is None) == (self.seconds is None):
            raise FieldError("budget", "must be a count of evaluations or a duration, not both or neither")
        if self.evaluations is not None and (type(self.evaluations) is not int or self.evaluations < 1):
            raise FieldError("budget", f"must be at least 1 evaluation, got {self.evaluations!r}")
        if self.evaluations is not None and self.evaluations > MAX_EVALUATIONS:
            raise FieldError("budget", f"must be at most {MAX_EVALUATIONS:,} evaluations, got {self.evaluations:,}")
        if self.seconds is not None and not (is_finite_number(self.seconds) and self.seconds > 0):
            raise FieldError("budget", f"must be a duration > 0 s, got {self.seconds!r}")
        if self.seconds is not None and self.seconds > MAX_SECONDS:
            raise FieldError("budget", f"must be at most {MAX_SECONDS:.0f} s (366 days), got {self.seconds:.3g} s")

    @classmethod
    def parse(cls, text: str) -> Budget:
        text = str(text).strip().lower()
        if re.fullmatch(r"\d+", text):
            if len(text) > 30:  # int() of a long string takes time; far beyond any budget anyway
                raise FieldError("budget", f"must be at most {MAX_EVALUATIONS:,} evaluations, got {text[:30]}...")
            if int(text) < 1:
                raise FieldError("budget", f"must be at least 1 evaluation, got {text!r}")
            return cls(evaluations=int(text))
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smh])", text)
        if not match or float(match.group(1)) <= 0:
            raise FieldError("budget", f"{text!r} is malformed: give a count of evaluations (200) or a duration "
                                       "(90s, 10m, 1h)")
        return cls(seconds=float(match.group(1)) * _UNITS[match.group(2)])

    def describe(self) -> str:
        return f"{self.evaluations} evaluations" if self.evaluations else f"{self.seconds:g} s"


def make_surrogate(evaluator: Evaluator, limits: Limits, objective: str) -> Surrogate:
    """What a model-based strategy may compute without the supernet: analytic costs, latency when
    it is predicted from a profile (a measured latency is left for the strategy to learn), and
    training-free proxies."""
    column = OBJECTIVES[objective]
    analytic = evaluator.analytic_cost_functions()
    if evaluator.predictor is not None:
        analytic["latency_ms"] = evaluator.predict_latency
    needed = [k for k in limits.bounds() if k != column and k in analytic]

    def violation(arch: Arch, cost: float) -> float:
        return limits.violation({column: cost} | {k: analytic[k](arch) for k in needed})

    cost = analytic.get(column)
    complete = all(k == column or k in analytic for k in limits.bounds())
    return Surrogate(cost=None if cost is None else (lambda a: float(cost(a))), violation=violation, complete=complete,
                     proxies=evaluator.proxies)


class EvaluationPool(Protocol):
    """Where subnet evaluations run: `LocalPool` (this process, one at a time: the default) or
    `nas.cluster.evaluate.RayPool` (Ray actors). Results are collected in the order of submission."""

    workers: int

    def capacity(self) -> int:
        """How many evaluations can start now."""

    def submit(self, arch: Arch, *, latency: bool) -> Any:
        """Start evaluating `arch`; returns a handle for `wait` and `result`."""

    def wait(self, handle: Any, *, any_slot: bool) -> bool:
        """Block until `handle` is done (True) or, with `any_slot`, another evaluation frees a slot first (False)."""

    def result(self, handle: Any) -> dict[str, Any]:
        """`Evaluator.evaluate`'s row for `handle` (blocks until it is done)."""

    def describe(self) -> dict[str, Any]:
        """What search.json records about where evaluations ran."""


class LocalPool:
    """Evaluations in this process, one at a time, run when their result is asked for."""

    workers = 1

    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator
        self._pending: tuple[Arch, bool] | None = None

    def capacity(self) -> int:
        return 0 if self._pending else 1

    def submit(self, arch: Arch, *, latency: bool) -> Arch:
        self._pending = (arch, latency)
        return arch

    def wait(self, handle: Arch, *, any_slot: bool) -> bool:
        return True

    def result(self, handle: Arch) -> dict[str, Any]:
        assert self._pending is not None, "result() before submit()"
        arch, latency = self._pending
        self._pending = None
        return self.evaluator.evaluate(arch, latency=latency)

    def describe(self) -> dict[str, Any]:
        return {"engine": "in-process", "workers": 1}


@dataclass(frozen=True)
class _Asked:
    """A proposal waiting for its turn to be told: a submitted evaluation (`handle`), a recorded
    one being replayed (`recorded`), or neither: a subnet asked again, told its earlier result."""

    arch: Arch
    handle: Any = None
    recorded: dict | None = None
    predicted: dict[str, float] = field(default_factory=dict)

    @property
    def new(self) -> bool:
        return self.handle is not None or self.recorded is not None


def run_search(evaluator: Evaluator, out: Path, *, budget: Budget, limits: Limits, strategy: str, seed: int,
               objective: str = "latency", show_progress: bool = True, check_limits: bool = True,
               resume: bool = False, predictor: str | None = None, strategy_options: Mapping[str, Any] | None = None,
               pool: EvaluationPool | None = None, finish: FinishConfig | None = None, finalists: int = 1,
               remeasure: Remeasure = REMEASURE) -> dict:
    """Accuracy (maximized) against `objective` (minimized: one of OBJECTIVES) under hard `limits`.
    `check_limits=False` when the caller already ran `evaluator.check_feasible(limits)`; `predictor`:
    the accuracy predictor family of a strategy that learns one (None: the strategy's default);
    `strategy_options`: more keyword arguments of the strategy's constructor (`strategy_options(name)`).
    `finish`: how the chosen subnet is finished before it is handed over (None: its inherited
    weights); with `finalists` K > 1 the K most accurate subnets of the front are finished and the
    best by validation after finishing is handed over (`nas.finish.finetune`).

    `resume=True` continues the search recorded in `out/evaluations.csv`: the strategy is asked
    again from the start and told the recorded values instead of evaluating (a replay, so with the
    same seed and settings it reaches the state it had and goes on as the uninterrupted run would);
    nothing recorded is evaluated again, and the budget counts the recorded evaluations and time.

    `pool` runs the evaluations (default: this process, one at a time). With several workers, up to
    that many evaluations are in flight, as many as the strategy's `ready()` allows, and results are
    recorded and told in ask order: the search is the one a single process would run.

    `remeasure`: how the subnets that decide the front or the latency limit are measured again before
    the choice, and the handed-over model after it (`nas.search.remeasure`)."""
    if objective not in OBJECTIVES:
        raise UserError(f"unknown objective {objective!r}; choose from {sorted(OBJECTIVES)}")
    space = evaluator.supernet.space
    if check_limits:
        evaluator.check_feasible(limits)
    pool = pool or LocalPool(evaluator)
    column = OBJECTIVES[objective]
    need_latency = column == "latency_ms" or limits.max_latency_ms is not None
    strat = make_strategy(strategy, space, seed=seed, prefilter=lambda a: limits.params_ok(space.count_params(a)),
                          surrogate=make_surrogate(evaluator, limits, objective), predictor=predictor,
                          options=strategy_options)
    path = out / "evaluations.csv"
    replay = deque(read_evaluations(path, space)) if resume else deque()
    columns = header(path) if replay else COLUMNS  # a resumed search goes on in its file's columns
    ranking = search_ranking(len(evaluator.data.val), loss_recorded="val_loss" in columns)
    if ranking.column != "val_acc":
        print(f"nas: note: {ranking.reason}", file=sys.stderr)
    results: dict[Arch, tuple[tuple[float, float], float]] = {}
    queue: deque[_Asked] = deque()  # asked, not told yet, in ask order
    queued: set[Arch] = set()  # the new subnets among them
    previous = replay[-1][1]["time"] if replay else 0.0  # search time spent before the interruption
    start, repeats, evaluating = time.perf_counter() - previous, 0, sum(r["seconds"] for _, r in replay)
    replayed, diverged, best = 0, False, float("nan")  # best: highest feasible accuracy so far, for the progress line
    total = budget.evaluations or budget.seconds
    with open_run_file(path, append=bool(replay)) as fh, finish_on_interrupt("the evaluations under way") as interrupted, \
            progress_bar(total, f"searching ({strategy})", enabled=show_progress) as bar:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        if not replay:
            writer.writeheader()
            fh.flush()

        def may_ask() -> bool:
            if interrupted() or repeats >= MAX_REPEATS or strat.ready() < 1:
                return False
            if budget.evaluations is not None and len(results) + len(queued) >= budget.evaluations:
                return False
            elapsed = time.perf_counter() - start
            # the next evaluation would not finish inside the budget (recorded ones cost nothing now)
            return not (budget.seconds is not None and results and not replay
                        and elapsed + pool.workers * elapsed / len(results) > budget.seconds)

        def ask() -> _Asked:
            nonlocal repeats, replayed, diverged
            arch = strat.ask()
            if arch in results or arch in queued:  # already evaluated: tell again, costs no budget
                repeats += 1
                if repeats == MAX_REPEATS:
                    retries_exhausted(f"a proposal of strategy {strategy!r}", MAX_REPEATS, "was a subnet not evaluated yet",
                                      fallback=f"the search stops after {len(results) + len(queued)} evaluations, short "
                                      f"of its budget of {budget.describe()} (the space may be exhausted)")
                return _Asked(arch)
            repeats = 0
            if replay:  # recorded before the interruption: tell what was measured then
                recorded, row = replay.popleft()  # the same arch as asked when code and settings are the same
                replayed += 1
                if recorded != arch and not diverged:
                    diverged = True
                    print(f"nas: warning: resuming {path}: at row {replayed + 1} the strategy now proposes another "
                          "subnet than the one recorded (other code or settings); the recorded evaluations are kept and "
                          "told as recorded, but the search will not end as the uninterrupted one would",
                          file=sys.stderr)
                queued.add(recorded)
                return _Asked(recorded, recorded=row)
            queued.add(arch)
            return _Asked(arch, handle=pool.submit(arch, latency=need_latency), predicted=strat.predictions.get(arch, {}))

        shown = time.perf_counter()  # progress of a time budget: advanced by the time since it was last shown
        while True:
            while pool.capacity() > 0 and may_ask():
                queue.append(ask())
            if not queue:
                break
            if queue[0].handle is not None and not pool.wait(queue[0].handle, any_slot=may_ask()):
                continue  # a slot came free before the oldest evaluation finished: ask again
            asked = queue.popleft()
            queued.discard(asked.arch)
            if not asked.new:
                strat.tell(asked.arch, *results[asked.arch])
                continue
            if asked.recorded is not None:
                row = asked.recorded
            else:
                row = {"index": len(results), "id": asked.arch.id, "strategy": strategy, **pool.result(asked.handle)}
                row["violation"] = limits.violation(row)
                row |= {"feasible": row["violation"] == 0, "arch": asked.arch.to_json(),
                        "acc_predicted": asked.predicted.get("accuracy") if ranking.column == "val_acc" else None,
                        "cost_predicted": asked.predicted.get("cost"),
                        "time": time.perf_counter() - start}
                evaluating += row["seconds"]
                writer.writerow(row)
                fh.flush()  # on disk (in the OS's hands) before the strategy hears of it: a killed run loses nothing
            results[asked.arch] = ((ranking.score(row), row[column]), row["violation"])
            strat.tell(asked.arch, *results[asked.arch])
            if row["violation"] == 0 and not row["val_acc"] <= best:  # running best: no scan of all results per step
                best = row["val_acc"]
            now = time.perf_counter()
            if asked.recorded is not None:
                bar.update("replaying the recorded evaluations", advance=1 if budget.evaluations else 0)
            else:
                bar.update(f"best feasible acc {best:.3f}", advance=1 if budget.evaluations else now - shown)
            shown = now
    if interrupted():  # Ctrl-C: the evaluations under way were finished and written; no summary
        raise KeyboardInterrupt
    seconds = time.perf_counter() - start
    busy = evaluating / (seconds * pool.workers) if seconds > 0 else 1.0  # share of the workers' time spent evaluating
    # bounded retries that ran out (each also said so in a RetryWarning)
    exhausted = {"prefilter": strat.exhausted_redraws, "repeats": int(repeats >= MAX_REPEATS)}
    return summarize(evaluator, out, limits=limits, budget=budget, strategy=strategy, objective=objective,
                     seconds=seconds, overhead=1.0 - busy, parallel=pool.describe(), exhausted=exhausted,
                     finish=finish, finalists=finalists, show_progress=show_progress, seed=seed, remeasure=remeasure)


def summarize(evaluator: Evaluator, out: Path, *, limits: Limits, budget: Budget, strategy: str, seconds: float,
              parallel: dict[str, Any], exhausted: dict[str, int], objective: str = "latency",
              overhead: float = 0.0, finish: FinishConfig | None = None, finalists: int = 1,
              show_progress: bool = False, seed: int = 0, remeasure: Remeasure = REMEASURE) -> dict:
    """The outputs of a finished search from its `evaluations.csv`; the chosen subnet finished as
    `finish` says (`run_search`). `exhausted`: how many times each
    bounded retry ran out, `search.json`'s `retries_exhausted`: `prefilter`, proposals that failed the
    strategy's prefilter in every redraw (evaluated anyway); `repeats`, 1 when the search stopped
    because the strategy proposed only subnets already evaluated, MAX_REPEATS times in a row.
    `remeasure`: how latency measured during the search is measured again before the choice, and the
    handed-over model after it (`nas.search.remeasure`; the orders of its rounds are drawn from `seed`)."""
    table = pd.read_csv(out / "evaluations.csv", dtype={"id": str})
    column = OBJECTIVES[objective]
    ranking = search_ranking(len(evaluator.data.val), loss_recorded="val_loss" in table.columns)  # as run_search's
    merit = -ranking.scores(table)  # higher is better
    rng = np.random.default_rng(seed)  # the orders of the latency rounds
    # feasibility and the front below come from the re-measured latencies (written with search.json)
    rounds = remeasure_latency(evaluator, table, limits=limits, column=column, settings=remeasure, rng=rng,
                               merit=merit)
    feasible = table["feasible"].to_numpy(dtype=bool)
    ok = table[feasible]
    resolution = rounds.resolution if rounds is not None else 0.0
    front_rows = feasible_front(table, column, merit, resolution=resolution if column == "latency_ms" else 0.0)
    # the hypervolume is accuracy's whatever the ranking (the reported metric: comparable across runs);
    # reference point: zero accuracy and the objective's limit (or 1.01 x the costliest evaluated subnet)
    ref = hypervolume_reference(limits.limit_of(objective), without_limit=lambda: float(table[column].max()) * 1.01)
    hv = front_hypervolume(ok["val_acc"].to_numpy(), ok[column].to_numpy(dtype=float), ref)
    remeasured = (evaluator.predictor is not None and evaluator.remeasure and bool(front_rows)
                  and bool(table["latency_ms"].notna().any()))
    if remeasured:  # predicted latency: measure the front here too, side by side
        for i in front_rows:
            arch = Arch.from_json(table.at[i, "arch"])
            table.at[i, "latency_measured_ms"] = evaluator.measure(arch, precision_of(table, i)).median_ms
        write_text(out / "evaluations.csv", table.to_csv(index=False))
    pareto = table.loc[front_rows].copy()
    pareto["test_acc"] = [evaluator.accuracy(Arch.from_json(pareto.at[i, "arch"]), "test", precision_of(pareto, i))
                          for i in pareto.index]
    write_text(out / "pareto.csv", pareto.to_csv(index=False))
    chosen = None
    if len(ok):
        chosen = int(ok.assign(rank=ranking.scores(ok)).sort_values(["rank", column]).index[0])
    plot_front(out / "pareto.png", cost=table[column].to_numpy(dtype=float), accuracy=table["val_acc"].to_numpy(),
               feasible=feasible, front=front_rows, chosen=chosen, limit=limits.limit_of(objective),
               xlabel=("measured " if evaluator.predictor is None and objective == "latency" else "")
               + OBJECTIVE_LABELS[objective],
               title=f"{evaluator.supernet.space.config.name} on {evaluator.data.name}: {len(table)} subnets ({strategy})"
               + ("\nranked by validation loss" if ranking.column == "val_loss" else ""))
    latency: dict[str, Any] = {"source": "measured" if evaluator.predictor is None else "predicted",
                               "front_remeasured": remeasured}
    if rounds is not None:
        latency["rounds"] = rounds.record(remeasure)
    summary = {
        "strategy": strategy, "objective": objective, "budget": budget.describe(), "evaluations": len(table),
        "seconds": seconds, "overhead_fraction": overhead, "evaluation": parallel,
        "limits": {k: v for k, v in vars(limits).items()}, "feasible": int(feasible.sum()),
        "hypervolume": hv, "hypervolume_reference": {"accuracy": ref[0], column: ref[1]},
        "pareto_size": len(front_rows), "ranking": ranking.describe(table), "chosen": None, "retries_exhausted": exhausted,
        "latency": latency, "precision": evaluator.precision,
    }
    if chosen is None:
        _write_summary(out, summary, table if rounds is not None else None)
        raise UserError(f"none of the {len(table)} evaluated subnets met the limits; evaluations are in "
                        f"{out / 'evaluations.csv'}: loosen a limit or raise --budget")
    finished: FinishResult | None = None
    if finish is not None and finish.how != "inherit":
        chosen, finished = _finish_finalists(evaluator, table, pareto, chosen, finish, finalists, show_progress,
                                             ranking)
        write_text(out / "pareto.csv", pareto.to_csv(index=False))
    row = table.loc[chosen]
    arch = Arch.from_json(row["arch"])
    info = {k: plain_value(row[k]) for k in ("val_acc", "latency_ms", "latency_predicted_ms", "latency_measured_ms", "flops",
                                        "params", "memory_bytes", "model_bytes", *REMEASURE_COLUMNS) if k in row}
    info["precision"] = precision = precision_of(table, chosen)
    info["test_acc"] = float(pareto.at[chosen, "test_acc"])  # the chosen subnet is on the front: measured above
    info["cost_input_size"] = evaluator.cost_size or evaluator.supernet.spec.input_size  # what the costs are for
    subnet = evaluator.supernet.extract(arch)
    if finished is not None:
        info |= finished_metrics(finished.record)
        subnet = finished.model.cpu()
    model, int8, qat = DeployedModel.for_data(subnet, evaluator.data), None, None
    if is_int8(precision):  # the file handed over; when finished, after QAT as finish.qat says
        trained = None if finished is None or finish is None else replace(finish, device=evaluator.device)
        handover = int8_handover(model, evaluator.data, trained, precision=precision, show_progress=show_progress)
        model, int8, qat = handover.model, handover.int8, handover.record
        info |= handover.metrics  # the QAT weights' float accuracy, when they are kept
        # the file handed over (batch free); the search counted the fixed-batch graph it timed, a few % more
        info["model_bytes"] = float(handover.int8.weight_bytes())
    timed = None if int8 is None else quantize_deployed(model, evaluator.data, batch=evaluator.latency.batch_size,
                                                         threads=evaluator.latency.threads, precision=precision)
    costs = evaluator_costs(evaluator, row)
    check = handed_over(evaluator, model, costs, table, chosen, out, limits=limits, column=column, settings=remeasure,
                        rng=rng, rounds=rounds, int8=timed)  # never a silent miss
    latency["note"] = noise_note(table, front_rows, column=column, limit=limits.max_latency_ms, chosen=chosen,
                                 resolution=resolution)
    model_dir = save_model_folder(out / "models" / arch.id, model, metrics=info, costs=costs,
                                  data=evaluator.data.describe(), space=evaluator.supernet.space.config.name,
                                  int8=int8, task=evaluator.data, qat=qat)
    chosen_record = {"id": arch.id, "path": str(model_dir.relative_to(out)), **info,  # relative to the run folder
                     "latency_handed_over": check}
    if int8 is not None:  # the int8 model's accuracy, re-measured from the written file
        chosen_record["int8"] = read_json(model_dir / MODEL_META, "model description")["int8"]
    summary["chosen"] = chosen_record
    _write_summary(out, summary, table if rounds is not None else None)
    return summary


def _write_summary(out: Path, summary: dict, remeasured: pd.DataFrame | None) -> None:
    """`search.json`, the mark of a finished search, and just before it `evaluations.csv` with the
    re-measured latencies (`remeasured`): a search stopped before then resumes from its own readings."""
    if remeasured is not None:
        write_text(out / "evaluations.csv", remeasured.to_csv(index=False))
    write_json(out / "search.json", summary)


def _finish_finalists(evaluator: Evaluator, table: pd.DataFrame, pareto: pd.DataFrame, chosen: int,
                      finish: FinishConfig, finalists: int, show_progress: bool,
                      ranking: Ranking) -> tuple[int, FinishResult]:
    """Finish the `finalists` best subnets of the front by `ranking` (the search's choice first); the
    one with the best validation after finishing is handed over. Their figures before and after go
    to `pareto`'s finishing columns; returns the row handed over and its result."""
    ranked = pareto.assign(rank=ranking.scores(pareto)).sort_values("rank", kind="stable").index
    order = [chosen] + [i for i in ranked if i != chosen]
    rows = order[:max(1, finalists)]
    config = replace(finish, device=evaluator.device)
    results = [finish_subnet(evaluator.supernet, Arch.from_json(table.at[i, "arch"]), evaluator.data, config,
                             show_progress=show_progress) for i in rows]
    for column in ("val_acc_finished", "test_acc_finished", "finish_seconds"):
        pareto[column] = np.nan
    for i, result in zip(rows, results):
        r = result.record
        pareto.loc[i, ["val_acc_finished", "test_acc_finished", "finish_seconds"]] = \
            [r.val_acc_after, r.test_acc_after, r.seconds]
    best = choose_after_finishing(results, by=ranking.column)
    return rows[best], results[best]


def plain_value(value):
    """A pandas/numpy scalar as a JSON-ready Python value; NaN becomes None (JSON has no NaN)."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value
