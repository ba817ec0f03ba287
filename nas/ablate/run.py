"""Research ablations: `nas ablate CONFIG` sweeps training and search settings as Ray Tune trials.

A sweep is a JSON file (see `examples/ablation.json`) parsed once into a frozen `AblationConfig`
(`nas.ablate.config`). Its `grid` crosses sampling rules, search strategies, accuracy predictor
families (only for a strategy that learns one), budgets and seeds. It runs in two phases of Ray
Tune trials (`nas.cluster.tune`), each with the config's resources per trial:

1. one supernet per distinct training setting (sampling rule, seed; the shared `train` recipe),
   trained once into `supernets/<id>/` and shared by every search trial that needs it;
2. one search per grid point into `trials/<id>/`, on its supernet, with deterministic costs
   (analytic FLOPs, parameters, memory, or latency predicted from a profile), so that trials
   differ only by their settings.

A trial's folder is named by its settings, so a retried or resumed trial finds what its earlier
attempt wrote: training continues from its last epoch checkpoint, a search replays its recorded
evaluations (`run_search(resume=True)`), and a finished trial (`trial.json`) returns its recorded
metrics. No evaluation is repeated or lost. `attempts.jsonl` logs every call of a trial.

The results: `results.csv` (one row per search trial: settings, metrics, its supernet's
metrics), then (`nas.ablate.report`) `summary.csv` (mean and standard deviation over seeds per
setting), `hypervolume.png` and `best_val_acc.png` (one panel per sampling rule, one line per
method over the budgets). Hypervolume is that of the feasible evaluated subnets (accuracy maximized, cost minimized) as a
fraction of the box between the reference point and (accuracy 1, cost 0); the reference point is
(`search.reference_accuracy`, the objective's limit or else the largest subnet's cost), the same
for every trial.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from nas.ablate.config import AblationConfig, Grid, Resources, SearchSettings
from nas.ablate.report import write_results
from nas.cluster.tune import check_resources, ray_session, run_trials
from nas.data.datasets import DataError, load_data
from nas.errors import UserError, named
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import OBJECTIVES
from nas.hardware.measure import describe_hardware
from nas.hardware.profile import search_latency
from nas.runs.files import load_supernet, open_run_file, package_versions, read_json, save_supernet, write_json
from nas.runs.lock import claimed, holds_files
from nas.runs.progress import progress_bar
from nas.search.loop import Budget, run_search
from nas.search.pareto import front_hypervolume, hypervolume_reference
from nas.search.strategies import strategies_with_predictor
from nas.training.checkpoint import CHECKPOINT_FILE
from nas.training.train import train_supernet
from search_spaces import ArchError, HybridSupernet, get_family, get_space

SUPERNETS, TRIALS, TUNE = "supernets", "trials", "tune"
TRIAL_FILE, ATTEMPTS_FILE = "trial.json", "attempts.jsonl"
COLUMNS = ["trial", "sampling", "strategy", "predictor", "method", "budget", "seed", "status", "hypervolume",
           "best_val_acc", "test_acc", "chosen_cost", "feasible", "evaluations", "pareto_size", "search_seconds",
           "supernet_val_acc_largest", "supernet_val_acc_smallest", "train_seconds", "error"]  # of results.csv


# --------------------------------------------------------------------------- the trials
@dataclass(frozen=True)
class SupernetTrial:
    sampling: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.sampling}-seed{self.seed}"


@dataclass(frozen=True)
class SearchTrial:
    sampling: str
    strategy: str
    predictor: str | None  # None: a strategy that learns no accuracy predictor
    budget: str
    seed: int

    @property
    def supernet(self) -> str:
        return SupernetTrial(self.sampling, self.seed).id

    @property
    def method(self) -> str:
        return self.strategy if self.predictor is None else f"{self.strategy} ({self.predictor})"

    @property
    def id(self) -> str:
        method = self.strategy if self.predictor is None else f"{self.strategy}-{self.predictor}"
        return f"{self.sampling}-{method}-b{self.budget}-seed{self.seed}"


def supernet_trials(grid: Grid) -> list[SupernetTrial]:
    return [SupernetTrial(sampling, seed) for sampling in grid.sampling for seed in grid.seed]


def search_trials(grid: Grid) -> list[SearchTrial]:
    learners = strategies_with_predictor()
    return [SearchTrial(sampling, strategy, predictor, budget, seed)
            for sampling in grid.sampling for strategy in grid.strategy
            for predictor in (grid.predictor if strategy in learners else (None,))
            for budget in grid.budget for seed in grid.seed]


def _setting(trial: SupernetTrial | SearchTrial) -> dict[str, Any]:
    """A trial as Ray Tune's parameter: its settings and its id (the name of its folders)."""
    return {"id": trial.id, **asdict(trial)}


def _trial_of(cls: type, setting: dict[str, Any]):
    return cls(**{f.name: setting[f.name] for f in fields(cls)})


# --------------------------------------------------------------------------- what a trial runs (on a Ray worker)
def train_job(setting: dict[str, Any], *, config: AblationConfig, out: Path,
              reference: tuple[float, float]) -> dict[str, Any]:
    """Train one supernet into `supernets/<id>/`, from its last epoch checkpoint when an earlier
    attempt left one; returns (and records in trial.json) its training metrics."""
    trial = _trial_of(SupernetTrial, setting)
    folder = out / SUPERNETS / trial.id
    checkpoint = folder / CHECKPOINT_FILE
    recorded = _start_attempt(folder, "resumed from its last epoch checkpoint" if checkpoint.is_file() else "new")
    if recorded is not None:
        return recorded
    _set_threads(config.resources)
    data = load_data(config.data, dims=get_family(config.space).dims)
    space = get_space(config.space, data.shape)  # fitted to the data
    train = config.train_config(trial.sampling, trial.seed)
    torch.manual_seed(trial.seed)
    supernet = HybridSupernet(space)
    summary = train_supernet(supernet, data, train, checkpoint=checkpoint, resume=checkpoint.is_file(),
                             show_progress=False)
    save_supernet(folder, supernet, {"train": train.to_dict(), "data": data.describe(), "summary": summary})
    metrics = {"supernet_val_acc_largest": summary["val_acc_largest"],
               "supernet_val_acc_smallest": summary["val_acc_smallest"], "train_seconds": summary["seconds"]}
    write_json(folder / TRIAL_FILE, metrics)
    checkpoint.unlink(missing_ok=True)  # the finished supernet supersedes it
    return metrics


def search_job(setting: dict[str, Any], *, config: AblationConfig, out: Path,
               reference: tuple[float, float]) -> dict[str, Any]:
    """Search one grid point into `trials/<id>/` on its trained supernet; an earlier attempt's
    evaluations are replayed, not repeated. Returns (and records in trial.json) its metrics, with
    the hypervolume against the sweep's recorded `reference`."""
    trial = _trial_of(SearchTrial, setting)
    folder = out / TRIALS / trial.id
    evaluations = folder / "evaluations.csv"
    resumed = evaluations.is_file()
    recorded = _start_attempt(folder, f"resumed: {_rows(evaluations)} evaluations recorded" if resumed else "new")
    if recorded is not None:
        return recorded
    _set_threads(config.resources)
    device = config.resources.device
    evaluator = make_evaluator(config, load_supernet(out / SUPERNETS / trial.supernet, device), device)
    try:
        run_search(evaluator, folder, budget=Budget.parse(trial.budget), limits=config.search.limits(),
                   strategy=trial.strategy, seed=trial.seed, objective=config.search.objective,
                   show_progress=False, check_limits=False, resume=resumed, predictor=trial.predictor,
                   strategy_options=config.search.options_of(trial.strategy))
    except UserError:
        if not _none_feasible(folder):
            raise
    metrics = search_metrics(folder, config.search, reference)
    write_json(folder / TRIAL_FILE, metrics)
    return metrics


def _start_attempt(folder: Path, state: str) -> dict[str, Any] | None:
    """Log this call of a trial in attempts.jsonl; the recorded metrics when the trial had finished."""
    done = folder / TRIAL_FILE
    if done.is_file():
        state = "finished before: recorded metrics returned"
    folder.mkdir(parents=True, exist_ok=True)
    with open_run_file(folder / ATTEMPTS_FILE, append=True) as fh:
        fh.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": socket.gethostname(),
                             "pid": os.getpid(), "state": state}) + "\n")
    return read_json(done, "trial result") if done.is_file() else None


def _set_threads(resources: Resources) -> None:
    torch.set_num_threads(max(1, int(resources.cpu)))


def _rows(csv_path: Path) -> int:
    """Complete data rows of a CSV file (a line cut off by a kill is not counted)."""
    return max(0, csv_path.read_text().count("\n") - 1)


def _none_feasible(folder: Path) -> bool:
    """The search finished, but no evaluated subnet met the limits (a result, not a failure)."""
    summary = folder / "search.json"
    return summary.is_file() and read_json(summary, "search summary")["chosen"] is None


def make_evaluator(config: AblationConfig, supernet: HybridSupernet, device: str) -> Evaluator:
    """Accuracy on the sweep's data; costs analytic or predicted from the profile (never measured)."""
    source = search_latency(config.search.target or "cpu", threads=1, batch=1)
    data = load_data(config.data, dims=supernet.space.config.dims)
    return Evaluator(supernet, data, source.settings, device=device, predictor=source.predictor,
                     remeasure=False)


def sweep_reference(evaluator: Evaluator, search: SearchSettings) -> tuple[float, float]:
    """The sweep's hypervolume reference point (accuracy, cost) (`nas.search.pareto.hypervolume_reference`):
    `search.reference_accuracy` and the objective's limit, or else the cost of the space's largest
    subnet (the same for every trial, so trials compare)."""

    def largest_cost() -> float:
        largest = evaluator.supernet.space.largest()
        column = OBJECTIVES[search.objective]
        return evaluator.predict_latency(largest) if column == "latency_ms" else evaluator.analytic_costs(largest)[column]

    return hypervolume_reference(search.limits().limit_of(search.objective), accuracy=search.reference_accuracy,
                                 without_limit=largest_cost)


def search_metrics(folder: Path, search: SearchSettings, reference: tuple[float, float]) -> dict[str, Any]:
    table = pd.read_csv(folder / "evaluations.csv")
    summary = read_json(folder / "search.json", "search summary")
    ok = table[table["feasible"].astype(bool)]
    chosen = summary["chosen"]
    return {
        "hypervolume": front_hypervolume(ok["val_acc"].to_numpy(), ok[OBJECTIVES[search.objective]].to_numpy(dtype=float),
                                         reference, normalize=True),
        "best_val_acc": float(ok["val_acc"].max()) if len(ok) else None,
        "test_acc": chosen["test_acc"] if chosen else None,  # of the subnet the search chose
        "chosen_cost": chosen[OBJECTIVES[search.objective]] if chosen else None,
        "feasible": len(ok), "evaluations": len(table), "pareto_size": summary["pareto_size"],
        "search_seconds": summary["seconds"],
    }


# --------------------------------------------------------------------------- the sweep (driver)
def run_ablation(config: AblationConfig, out: Path, *, resume: bool, address: str | None = None,
                 show_progress: bool = True) -> pd.DataFrame:
    """Run (or, with `resume`, continue) the sweep in `out`; returns the summary table.

    Everything that can refuse the sweep (config, data, profile, limits, Ray, resources) is
    checked before `out` is written. One driver at a time works on a sweep folder (a lock file)."""
    out = out.resolve()
    evaluator = _check_inputs(config)
    reference = sweep_reference(evaluator, config.search)
    supernets, searches = supernet_trials(config.grid), search_trials(config.grid)
    with ray_session(address):
        check_resources(config.resources.cpu, config.resources.gpu)
        with _sweep_lock(out):
            reference = _prepare(out, config, reference, resume=resume)

            def phase(name: str, job: Callable[..., dict], trials: list, root: Path, label: str) -> dict[str, str]:
                """Run the trials; the errors of those that failed on every attempt."""
                with _progress(label, [root / t.id for t in trials], enabled=show_progress):
                    outcome = run_trials(partial(job, config=config, out=out, reference=reference),
                                         [_setting(t) for t in trials], folder=out / TUNE, name=name,
                                         cpu=config.resources.cpu, gpu=config.resources.gpu,
                                         max_concurrent=config.resources.max_concurrent,
                                         max_failures=config.max_failures)
                if outcome.interrupted:  # Ctrl-C: Tune saved its state
                    raise KeyboardInterrupt
                return outcome.errors

            if failed := phase("train", train_job, supernets, out / SUPERNETS, "training supernets"):
                raise UserError(f"{_failures(failed, len(supernets), out / TUNE / 'train')}; the searches wait for "
                                "them: fix the cause and continue with --resume")
            failed = phase("search", search_job, searches, out / TRIALS, "search trials")
    summary = write_results(out, collect(out, searches, failed), config.search.objective)
    if failed:
        raise UserError(f"{_failures(failed, len(searches), out / TUNE / 'search')}; the others are in "
                        f"{out / 'results.csv'}; --resume runs the failed ones again")
    return summary


def _check_inputs(config: AblationConfig) -> Evaluator:
    """The sweep's space, data, profile and limits, checked before anything is written; errors name the key."""
    family = get_family(config.space)
    try:
        data = load_data(config.data, dims=family.dims)
    except DataError as e:
        raise UserError(f"data: {e}") from None
    try:
        space = get_space(config.space, data.shape)  # fitted to the data
    except ArchError as e:
        raise UserError(f"space: {e}") from None
    try:
        evaluator = make_evaluator(config, HybridSupernet(space), "cpu")
    except UserError as e:
        raise UserError(f"search.target: {e}") from None
    with named(lambda field: f"search.{field}"):
        evaluator.check_feasible(config.search.limits())  # weights play no part: fail before any trial
    return evaluator


def _failures(errors: dict[str, str], total: int, tune_folder: Path) -> str:
    trial, error = next(iter(errors.items()))
    return (f"{len(errors)} of {total} trials failed on every attempt (first: {trial}: {error}; tracebacks in "
            f"{tune_folder}/<trial>/error.txt)")


def _digests(config: AblationConfig) -> dict[str, str]:
    """SHA-256 of the input files the config names (data, space, profile): a resumed sweep must read
    the same contents, not only the same paths."""
    files = {"data": config.data, "space": config.space, "search.target": config.search.target}
    out = {}
    for key, spec in files.items():
        if spec and Path(spec).is_file():
            out[key] = hashlib.sha256(Path(spec).read_bytes()).hexdigest()
    return out


def _prepare(out: Path, config: AblationConfig, reference: tuple[float, float], *,
             resume: bool) -> tuple[float, float]:
    """A new sweep folder with the resolved config, or (resume) the check that it is this sweep's.
    Returns the hypervolume reference every trial uses: the recorded one on resume."""
    record = out / "config.json"
    column = OBJECTIVES[config.search.objective]
    if resume:
        recorded = read_json(record, "sweep record")
        if not isinstance(recorded, dict) or recorded.get("format") != "nas-ablation":
            raise UserError(f"{record} is not the record of a `nas ablate` sweep")
        changed = _changed(recorded["config"], config.to_dict())
        if changed:
            raise UserError(f"the config differs from the one {out} was started with in {changed}: "
                            "a resumed sweep keeps its settings (give the new one another name)")
        if changed := sorted(k for k, v in _digests(config).items() if recorded.get("digests", {}).get(k) != v):
            raise UserError(f"the file(s) named by {changed} changed since {out} was started: a resumed sweep "
                            "reads the same inputs (give the new one another name)")
        ref = recorded["hypervolume_reference"]
        return float(ref["accuracy"]), float(ref[column])
    if holds_files(out):
        raise UserError(f"{out} already holds a sweep: continue it with --resume, or give the config another name")
    out.mkdir(parents=True, exist_ok=True)
    write_json(record, {"format": "nas-ablation", "config": config.to_dict(), "digests": _digests(config),
                        "hypervolume_reference": {"accuracy": reference[0], column: reference[1]},
                        "versions": package_versions(), "hardware": describe_hardware(config.resources.device)})
    return reference


def _sweep_lock(out: Path) -> AbstractContextManager[None]:
    """`out` (created) locked while this driver runs (`nas.runs.lock`): two drivers on one sweep
    would run the same trial into the same folder."""
    return claimed(out, f"nas ablate --out {out}")


def _changed(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON objects."""
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return [prefix.rstrip(".") or "the config"] if before != after else []
    return [key for k in sorted(before.keys() | after.keys())
            for key in _changed(before.get(k), after.get(k), f"{prefix}{k}.")]


@contextmanager
def _progress(label: str, folders: list[Path], *, enabled: bool) -> Iterator[None]:
    """A progress bar over the trials of a phase, counting their trial.json files from a thread."""
    with progress_bar(len(folders), label, enabled=enabled) as bar:
        stop = threading.Event()

        def watch() -> None:
            done = 0
            while True:
                now = sum((f / TRIAL_FILE).is_file() for f in folders)
                if now > done:
                    bar.update(advance=now - done)
                    done = now
                if stop.is_set():
                    break
                stop.wait(0.5)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def collect(out: Path, trials: list[SearchTrial], errors: dict[str, str]) -> pd.DataFrame:
    """One row per search trial, in grid order, with its supernet's metrics."""
    rows = []
    for t in trials:
        done = out / TRIALS / t.id / TRIAL_FILE
        metrics = read_json(done, "trial result") if done.is_file() else {}
        supernet = read_json(out / SUPERNETS / t.supernet / TRIAL_FILE, "trial result")
        rows.append({"trial": t.id, **asdict(t), "method": t.method, "status": "done" if metrics else "failed",
                     "error": errors.get(t.id, ""), **metrics, **supernet})
    return pd.DataFrame(rows, columns=COLUMNS)
