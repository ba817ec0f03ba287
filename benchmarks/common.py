"""Pieces the pipeline benchmarks share (`finishing.py`, `search_value.py`): the FLOPs limit that
excludes half a space, `nas search` run once per argument list, scikit-learn baselines on the
run's split, mean and std over seeds, and test accuracy plotted against seconds per method."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from nas.cli.main import main as nas_main
from nas.data.datasets import TaskData
from nas.errors import UserError
from nas.evaluation.baselines import BASELINES, fit_baselines
from nas.runs.files import read_json, write_json
from search_spaces import SearchSpace

TASKS = {"digits": ("tiny", "digits"), "mnist1d": ("seq", "mnist1d")}  # task -> (space, data)


def median_flops(space: SearchSpace, n: int = 2000, seed: int = 0) -> int:
    """The median FLOPs (multiply-adds) of `n` random subnets: a limit that excludes about half the space."""
    rng = np.random.default_rng(seed)
    return int(np.median([space.count_flops(space.sample(rng)) for _ in range(n)]))


def run_search(argv: list[str], run: Path) -> float:
    """Run `nas search` (or reuse its run folder when it was run with the same arguments); its seconds."""
    record = run / "benchmark.json"
    if (run / "search.json").is_file() and record.is_file() and read_json(record, "benchmark record")["argv"] == argv:
        print(f"reusing the search in {run}", flush=True)
        return float(read_json(record, "benchmark record")["seconds"])
    start = time.perf_counter()
    if nas_main([*argv, "--force", "--quiet"]) != 0:
        raise UserError(f"nas {' '.join(argv)} failed")
    seconds = time.perf_counter() - start
    write_json(record, {"argv": argv, "seconds": seconds})
    return seconds


def baselines(data: TaskData, seed: int) -> list[dict]:
    """scikit-learn classifiers on the flattened standardised inputs (`nas.evaluation.baselines`, all of
    them; 1-NN for sequences only): validation and test accuracy, seconds."""
    names = [n for n in BASELINES if n != "1-NN" or data.dims == 1]
    rows = fit_baselines(data, names, seed=seed, splits=("val", "test"), max_train=None, max_iter=5000)
    return [{**row, "total_seconds": row["seconds"]} for row in rows]


def summarize(results: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Mean and std over seeds of `columns` per method, in the order the methods first appear."""
    order = list(dict.fromkeys(results["method"]))
    stats = results.groupby("method")[columns].agg(["mean", "std"])
    stats.columns = [f"{col}_{stat}" for col, stat in stats.columns]
    stats["seeds"] = results.groupby("method")["seed"].nunique()
    return stats.loc[order].reset_index()


def plot_methods(ax, results: pd.DataFrame, summary: pd.DataFrame, column: str, skip: tuple[str, ...] = ()) -> None:
    """Test accuracy against `column` (seconds) on a log axis: each seed faint, the mean over seeds
    with its std as an error bar, one colour per method."""
    for i, row in summary.iterrows():
        if row["method"] in skip:
            continue
        seeds = results[results["method"] == row["method"]]
        ax.scatter(seeds[column], seeds["test_acc"], color=f"C{i}", alpha=0.35, s=14)
        ax.errorbar(row[f"{column}_mean"], row["test_acc_mean"], yerr=np.nan_to_num(row["test_acc_std"]),
                    fmt="o", color=f"C{i}", label=row["method"], capsize=3)
    ax.set_xscale("log")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
