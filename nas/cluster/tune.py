"""Ray Tune trials for `nas ablate`: one trial per setting, resources per trial, retries, resume.

`run_trials(job, settings, ...)` runs `job(setting)` for every setting as a Ray Tune trial in the
experiment folder `folder/name`. A trial that fails (the job raised, or its worker died) is
retried up to `max_failures` times. When the folder already holds the experiment, it is restored
(`Tuner.restore`): finished trials are not run again, unfinished and failed ones are. The job
itself must make a retried attempt continue where the last one stopped (`nas.ablate` keeps every
trial's files in a folder named by its settings).

Ray is imported inside the functions (style: `nas.cluster` is the only package importing ray).
The experiment state Ray Tune keeps in `folder/name` (`tuner.pkl`, `experiment_state-*.json`) is
Ray's own bookkeeping, pickled: restore only a folder you trust.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.cluster import connect, shutdown
from nas.errors import UserError

Job = Callable[[dict[str, Any]], dict[str, Any]]
NEW_OUTPUT = "RAY_AIR_NEW_OUTPUT"


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Connected to Ray for the block; a Ray started here is shut down after it, one that was
    already connected (a test's, a notebook's) is left running."""
    import ray

    started = not ray.is_initialized()
    connect(address)
    try:
        yield
    finally:
        if started:
            shutdown()


def check_resources(cpu: float, gpu: float) -> None:
    """Refuse resources per trial that no node of the connected cluster has (Tune would wait forever)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    if not any(n.get("CPU", 0) >= cpu and n.get("GPU", 0) >= gpu for n in nodes):
        most = max(((n.get("CPU", 0), n.get("GPU", 0)) for n in nodes), default=(0, 0))
        raise UserError(f"resources: a trial needs {cpu:g} CPU and {gpu:g} GPU, but the largest Ray node has "
                        f"{most[0]:g} CPU and {most[1]:g} GPU")


@dataclass(frozen=True)
class Outcome:
    errors: dict[str, str]  # id -> the error of a trial that failed on every attempt, on one line
    interrupted: bool  # Ctrl-C stopped the run; Tune saved its state, the unfinished trials run on restore


def run_trials(job: Job, settings: list[dict[str, Any]], *, folder: Path, name: str, cpu: float, gpu: float,
               max_concurrent: int | None, max_failures: int) -> Outcome:
    """Run `job(setting)` for every setting (each with a unique "id", which names its trial) as Ray
    Tune trials in the experiment folder `folder/name`, restored from there when it exists."""
    from ray import tune

    trainable = tune.with_resources(tune.with_parameters(_trial, job=job), {"cpu": cpu, "gpu": gpu})
    path = folder / name
    handler = _sigint_handler()
    try:
        with _quiet_tune():
            if tune.Tuner.can_restore(path):
                tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
            else:
                tuner = tune.Tuner(
                    trainable, param_space={"setting": tune.grid_search(settings)},
                    tune_config=tune.TuneConfig(trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
                                                max_concurrent_trials=max_concurrent,
                                                reuse_actors=True),  # a worker runs trial after trial: one start
                    run_config=tune.RunConfig(name=name, storage_path=str(folder), verbose=0,
                                              failure_config=tune.FailureConfig(max_failures=max_failures)),
                )
            grid = tuner.fit()
    finally:
        caught = _restore_sigint(handler)
    results = [grid[i] for i in range(len(grid))]  # a ResultGrid is indexed, and iterable only through that
    errors: dict[str, str] = {}
    for r in results:
        if r.error is not None:
            assert r.config is not None  # Tune records every trial's config
            errors[r.config["setting"]["id"]] = _first_line(r.error)
    finished = sum(1 for r in results if r.error is None and r.metrics)  # the job reports once, when it is done
    return Outcome(errors, caught or finished + len(errors) < len(results))


def _trial(config: dict[str, Any], job: Job) -> None:
    from ray import tune

    tune.report(job(config["setting"]))


def _trial_name(trial: Any) -> str:
    return trial.config["setting"]["id"]


def _first_line(error: BaseException) -> str:
    """A failed trial's error on one line: the exception the job raised (Ray wraps it), or why the
    worker died."""
    from ray.exceptions import RayTaskError

    if isinstance(error, RayTaskError):
        error = error.cause
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


_NO_HANDLER = object()


def _sigint_handler() -> Any:
    """The SIGINT handler before Tune runs (signals are handled in the main thread only)."""
    return signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else _NO_HANDLER


def _restore_sigint(before: Any) -> bool:
    """Put back the SIGINT handler Tune replaced; whether Tune caught a Ctrl-C. Tune installs its
    own handler while it runs and puts the previous one back only when it catches a Ctrl-C; after a
    run that was not interrupted its handler stays, and would swallow the next Ctrl-C."""
    if before is _NO_HANDLER:
        return False
    caught = signal.getsignal(signal.SIGINT) is before and os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") == "0"
    signal.signal(signal.SIGINT, before)
    return caught


@contextmanager
def _quiet_tune() -> Iterator[None]:
    """Nothing from Ray Tune on the terminal: `nas` shows its own progress and failed trials' errors
    (each attempt's traceback is in `error.txt` in its Tune trial folder). Ray's newer output engine
    prints an experiment banner even at verbosity 0; the legacy one prints nothing."""
    logger = logging.getLogger("ray.tune")
    level, engine = logger.level, os.environ.get(NEW_OUTPUT)
    logger.setLevel(logging.CRITICAL)
    os.environ[NEW_OUTPUT] = "0"
    try:
        yield
    finally:
        logger.setLevel(level)
        if engine is None:
            del os.environ[NEW_OUTPUT]
        else:
            os.environ[NEW_OUTPUT] = engine
