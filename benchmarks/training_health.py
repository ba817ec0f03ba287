"""Supernet training health at the default budget, on small and large training sets (issue 18).

For each task (MNIST-1D subsets of `--sizes` samples, space `seq`; and digits, space `tiny`):
1. the supernet trained with the default recipe for its space (`TrainConfig()` with the space's
   `SPACE_SAMPLING`, as `nas train` takes it) and budget (`training_budget`, at least `MIN_STEPS`
   optimizer steps), its health (`assess_training`, the standalone check
   included) and the validation and test accuracy of its largest and smallest subnets;
2. the same two subnets trained alone from scratch, with the same recipe for the same steps;
3. the supernet trained for `--long` times the default budget: does it stay healthy (no streak of
   epochs at chance, no collapse)?
With `--sweep STEPS...`, the supernet is also trained for each of those budgets (step counts) on
each MNIST-1D subset: the accuracy the extremes reach against the budget, behind `MIN_STEPS`.

An MNIST-1D subset of n samples is drawn (stratified, `--seed`) from MNIST-1D's 4,000 training
samples; 15% of it validates, and every subset is tested on MNIST-1D's whole test set (1,000
samples), so that the test figures compare across sizes (normalised as the whole set is). `--scale` multiplies every budget (a
smoke run: `--scale 0.01`).

    .venv/bin/python benchmarks/training_health.py --out runs/benchmarks/training_health
    .venv/bin/python benchmarks/training_health.py --sizes 150 500 --no-digits --long 0 \\
        --sweep 100 250 500 1000 2000 --out runs/benchmarks/training_budget
    .venv/bin/python benchmarks/training_health.py --sizes 150 --no-digits --scale 0.01 --long 2   # smoke

Writes OUT/results.csv (a row per task, run and subnet) and prints the table and the checks: the
default budget gives at least MIN_STEPS steps; the supernet's extremes within 0.05 (test) of the
same subnets trained alone; healthy at the default budget and at `--long` times it; the time-left
estimate of the progress display (`time_left`, replayed from the epoch ends) within 25% of the time
that was left, from 10% to 90% of training; the standalone check's cost as a share of training.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.data.datasets import Split, TaskData, load_data
from nas.evaluation.accuracy import evaluate
from nas.runs.progress import time_left
from nas.training.assess import assess_training
from nas.training.config import MIN_STEPS, SPACE_SAMPLING, TrainConfig, training_budget
from nas.training.train import train_standalone, train_supernet
from search_spaces import HybridSupernet, SubnetModel, get_space

GAP = 0.05  # the supernet's extremes within this of the same subnets trained alone (test accuracy)


def mnist1d_subset(full: TaskData, n: int, seed: int) -> TaskData:
    """n samples drawn (stratified) from MNIST-1D's 4,000 training samples, 15% of them for
    validation; MNIST-1D's test set and normalisation as they are."""
    x, y = torch.cat([full.train.x, full.val.x]), torch.cat([full.train.y, full.val.y])
    idx = np.arange(len(y))
    if n < len(y):
        idx, _ = train_test_split(idx, train_size=n, stratify=y.numpy(), random_state=seed)
    train, val = train_test_split(idx, test_size=0.15, stratify=y[idx].numpy(), random_state=seed)
    return replace(full, name=f"mnist1d-{n}", train=Split(x[np.sort(train)], y[np.sort(train)]),
                   val=Split(x[np.sort(val)], y[np.sort(val)]))


def tasks(args: argparse.Namespace) -> list[tuple[str, str, TaskData]]:
    """(name, space, data) of each task."""
    full = load_data("mnist1d", dims=1)
    out = [(f"mnist1d-{n}", "seq", mnist1d_subset(full, n, args.seed)) for n in args.sizes]
    if args.digits:
        out.append(("digits", "tiny", load_data("digits")))
    return out


def accuracies(model: torch.nn.Module, data: TaskData, arch=None) -> dict[str, float]:
    return {"val_acc": evaluate(model, data.val, arch), "test_acc": evaluate(model, data.test, arch)}


def mean_rate_left(times: list[float], done: list[float], total: float) -> float | None:
    """The estimate the progress display made before: the work left at the mean rate since the start."""
    return times[-1] * (total - done[-1]) / done[-1] if done[-1] > 0 else None


def estimate_error(history: list[dict], total: int, estimate=time_left) -> float:
    """The largest relative error of a time-left estimate (`nas.runs.progress.time_left`, from the
    epoch ends) against the time that was left, between 10% and 90% of the steps."""
    times, done = [0.0] + [h["seconds"] for h in history], [0.0] + [float(h["step"]) for h in history]
    worst = 0.0
    for k in range(1, len(times)):
        left, actual = estimate(times[:k + 1], done[:k + 1], total), times[-1] - times[k]
        if 0.1 <= done[k] / total <= 0.9 and left is not None and actual > 0:
            worst = max(worst, abs(left - actual) / actual)
    return worst


def supernet_rows(task: str, space: str, data: TaskData, config: TrainConfig, run: str, standalone: bool) -> list[dict]:
    torch.manual_seed(config.seed)
    supernet = HybridSupernet(get_space(space))
    start = time.perf_counter()
    summary = train_supernet(supernet, data, config, show_progress=False)
    seconds = time.perf_counter() - start
    health = assess_training(supernet, data, config, summary, standalone=standalone)
    alone = health["standalone"] or {}
    common = {"task": task, "train_size": len(data.train), "run": run, "steps": summary["steps"],
              "epochs": len(summary["epochs"]), "seconds": seconds, "health": health["status"],
              "estimate_error": estimate_error(summary["epochs"], summary["steps"]),
              "estimate_error_mean_rate": estimate_error(summary["epochs"], summary["steps"], mean_rate_left),
              "problems": " | ".join(p["check"] for p in health["problems"]),
              "check_seconds": alone.get("seconds"), "check_val_acc": alone.get("val_acc")}
    return [{**common, "subnet": name, **accuracies(supernet, data, arch)}
            for name, arch in (("largest", supernet.space.largest()), ("smallest", supernet.space.smallest()))]


def alone_rows(task: str, space: str, data: TaskData, config: TrainConfig, steps: int) -> list[dict]:
    rows = []
    s = get_space(space)
    for name, arch in (("largest", s.largest()), ("smallest", s.smallest())):
        torch.manual_seed(config.seed)
        model = SubnetModel(HybridSupernet(s).spec, arch)
        start = time.perf_counter()
        train_standalone(model, data, config, steps=steps)
        rows.append({"task": task, "train_size": len(data.train), "run": "alone", "steps": steps,
                     "seconds": time.perf_counter() - start, "subnet": name, **accuracies(model, data)})
    return rows


def run(args: argparse.Namespace) -> pd.DataFrame:
    rows: list[dict] = []
    for task, space, data in tasks(args):
        recipe = TrainConfig(seed=args.seed, **SPACE_SAMPLING.get(space, {}))  # the CLI's default for the space
        default = training_budget(recipe, len(data.train)).steps
        steps = max(1, round(args.scale * default))
        print(f"{task}: {len(data.train)} training samples, {recipe.sampling} sampling, {recipe.num_random} random "
              f"subnets a step, default budget {default} steps (running {steps})", flush=True)
        rows += supernet_rows(task, space, data, replace(recipe, steps=steps), "supernet", True)
        rows += alone_rows(task, space, data, recipe, steps)
        if args.long:
            rows += supernet_rows(task, space, data, replace(recipe, steps=args.long * steps), f"supernet x{args.long}",
                                  False)
        if task.startswith("mnist1d"):
            for budget in args.sweep:
                rows += supernet_rows(task, space, data, replace(recipe, steps=max(1, round(args.scale * budget))),
                                      f"sweep {budget}", False)
        pd.DataFrame(rows).to_csv(args.out / "results.csv", index=False)
    return pd.DataFrame(rows)


def checks(results: pd.DataFrame, scale: float) -> list[tuple[str, bool]]:
    out = []
    main = results[results["run"] == "supernet"]
    if scale == 1:
        out.append((f"the default budget gives at least {MIN_STEPS} steps", bool((main["steps"] >= MIN_STEPS).all())))
    for task, group in results.groupby("task", sort=False):
        acc = group.set_index(["run", "subnet"])["test_acc"]
        for subnet in ("largest", "smallest"):
            gap = acc[("alone", subnet)] - acc[("supernet", subnet)]
            out.append((f"{task}: the supernet's {subnet} within {GAP} of it trained alone (test, gap {gap:+.3f})",
                        bool(gap <= GAP)))
        for run_name in [r for r in group["run"].unique() if r.startswith("supernet")]:
            row = group[group["run"] == run_name].iloc[0]
            out.append((f"{task}: {run_name} healthy ({row['health']}{': ' + row['problems'] if row['problems'] else ''})",
                        row["health"] != "failed" and "chance_streak" not in str(row["problems"])))
        for run_name, row in group.groupby("run", sort=False).first().iterrows():
            if str(run_name).startswith("supernet") and row["epochs"] >= 10:
                out.append((f"{task}: {run_name}: the time-left estimate within 25% after 10% of training "
                            f"(worst {row['estimate_error']:.0%}; the mean rate since the start: "
                            f"{row['estimate_error_mean_rate']:.0%})", bool(row["estimate_error"] <= 0.25)))
        check = group[group["run"] == "supernet"].iloc[0]
        if pd.notna(check["check_seconds"]):
            print(f"{task}: standalone check {check['check_seconds']:.1f} s, "
                  f"{check['check_seconds'] / check['seconds']:.1%} of supernet training")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[150, 500, 4000], help="MNIST-1D subset sizes")
    ap.add_argument("--digits", action=argparse.BooleanOptionalAction, default=True, help="also digits (space tiny)")
    ap.add_argument("--long", type=int, default=5, help="also train for this many times the budget (0: not)")
    ap.add_argument("--sweep", type=int, nargs="*", default=[], metavar="STEPS",
                    help="also train the supernet for these budgets on each MNIST-1D subset")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every budget (a smoke run: 0.01)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/training_health"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(args)
    columns = ["task", "run", "steps", "subnet", "val_acc", "test_acc", "seconds", "health", "problems"]
    print(results[[c for c in columns if c in results]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for text, ok in checks(results, args.scale):
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print(f"results: {args.out / 'results.csv'}")


if __name__ == "__main__":
    main()
