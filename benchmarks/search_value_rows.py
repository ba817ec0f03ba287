"""The zero-shot rows of `search_value.py` and how a rerun adds rows to its results.

A zero-shot row is the real `nas search --zero-shot PROXY` command (`nas.search.zero_shot`: no
supernet; `--budget` random subnets scored by the proxy at initialisation, the best `--finalists K`
trained from scratch, the best by validation handed over) under the pipeline's data, space, limit
and seed. K is as many from-scratch trainings as the random-search row's budget allows: random
search ordered by the proxy instead of by chance, at equal compute.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from benchmarks.common import run_search
from nas.data.datasets import TaskData
from nas.errors import UserError
from nas.finish.finetune import scratch_steps
from nas.runs.files import read_json, write_json

PIPELINE, RANDOM, BIGGEST = "nas search", "random search", "biggest that fits"
ZERO_SHOT = "zero-shot"  # a row per proxy: "zero-shot PROXY"
METHODS = ("random", "biggest", "zero-shot", "baselines")  # `--methods`; the pipeline always runs (the others' budget)
SETTINGS = ("task_name", "data_name", "space_name", "budget", "epochs", "max_flops", "max_latency_ms", "budget_seconds",
            "budget_by", "finish_budget", "scratch_epochs", "sample", "device")  # what changes the figures


def zero_shot_method(proxy: str) -> str:
    return f"{ZERO_SHOT} {proxy}"


def finalists(budget: float, budget_by: str, data: TaskData, seconds_per_step: float | None = None) -> int:
    """K: the from-scratch trainings (the default recipe's `scratch_steps` each) that fit in `budget`
    (subnet steps, or seconds at `seconds_per_step`), as random search counts them (`another_fits`
    with runs of equal cost: floor(budget / one)); at least 1, as the first random subnet always runs."""
    steps = scratch_steps(data)
    if budget_by == "steps":
        return max(1, math.floor(budget / steps))
    if seconds_per_step is None:
        raise UserError("the zero-shot rows under --budget-by seconds need the random-search row of the seed "
                        "(its seconds per from-scratch step): add random to --methods")
    return max(1, math.floor(budget / (steps * seconds_per_step)))


def seconds_per_step(rows: pd.DataFrame, seed: int) -> float | None:
    """Seconds per optimizer step of random search for `seed` (choosing and training), from `rows`; None without it."""
    row = rows[(rows["method"] == RANDOM) & (rows["seed"] == seed)] if len(rows) else rows
    return None if row.empty else float(row["seconds"].iloc[0] / row["steps"].iloc[0])


def zero_shot_args(pipeline_argv: list[str], proxy: str, k: int, run: Path) -> list[str]:
    """The `nas search --zero-shot` command line of `pipeline_argv` (its data, space, seed, search budget,
    device and limit; not its supernet epochs or finishing: a zero-shot search trains from scratch)."""
    argv, skip = ["search", "--zero-shot", proxy, "--finalists", str(k)], {"--epochs", "--finish", "--finish-budget"}
    pairs = zip(pipeline_argv[1::2], pipeline_argv[2::2])  # after "search": flag, value pairs
    for flag, value in pairs:
        if flag not in skip:
            argv += [flag, str(run) if flag == "--out" else value]
    return argv


def zero_shot_row(pipeline_argv: list[str], proxy: str, k: int, run: Path) -> dict:
    """The zero-shot command run (or its folder reused), as a row: the chosen subnet after training,
    the whole command's seconds (proxy scoring included), K x the from-scratch steps."""
    seconds = run_search(zero_shot_args(pipeline_argv, proxy, k, run), run)
    summary = read_json(run / "search.json", "zero-shot search summary")
    chosen = summary["chosen"]
    steps = chosen["finishing"]["steps"] * len(summary["finalists"])  # the finalists train alike
    return {"method": zero_shot_method(proxy), "id": chosen["id"], "val_acc": chosen["val_acc"],
            "test_acc": chosen["test_acc"], "seconds": seconds, "steps": steps, "subnet_steps": steps,
            "subnets": len(summary["finalists"]), "flops": chosen["flops"],
            "scoring_seconds": summary["scoring_seconds"]}


def method_rank(method: str) -> int:
    """The order of rows in the tables: the pipeline, random search, the biggest, zero-shot, baselines."""
    fixed = {PIPELINE: 0, RANDOM: 1, BIGGEST: 2}
    return fixed.get(method, 3 if method.startswith(ZERO_SHOT) else 4)


def merge(previous: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """`previous` rows with `new` rows in place of those of the same seed and method, ordered by seed
    and `method_rank` (the zero-shot rows in the order they first came)."""
    if previous.empty:
        return new.reset_index(drop=True)
    records = previous.to_dict("records")
    where = {(r["seed"], r["method"]): i for i, r in enumerate(records)}
    for row in new.to_dict("records"):
        i = where.setdefault((row["seed"], row["method"]), len(records))
        records[i:i + 1] = [row]  # in place of the earlier row, or appended
    records.sort(key=lambda r: (r["seed"], method_rank(r["method"])))  # stable: the zero-shot rows keep their order
    return pd.DataFrame(records)


def previous_results(args: argparse.Namespace) -> pd.DataFrame:
    """The rows an earlier run wrote in `args.out` with the same settings (`settings.json`); none when
    there are none or the settings changed (then the new run starts a fresh results.csv)."""
    settings, record, csv = {k: vars(args)[k] for k in SETTINGS}, args.out / "settings.json", args.out / "results.csv"
    same = record.is_file() and read_json(record, "benchmark settings") == json.loads(json.dumps(settings))
    if csv.is_file() and not same:
        print(f"{csv}: written with other settings (or none recorded); starting a fresh one", flush=True)
    write_json(record, settings)
    return pd.read_csv(csv, dtype={"id": str}) if csv.is_file() and same else pd.DataFrame()
