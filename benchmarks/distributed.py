"""Ray on this machine: supernet training in one process against Ray Train workers, and search
throughput in one process against Ray evaluation actors, on the same budget.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distributed.py --out runs/benchmarks/distributed

1. `nas train` with the default recipe (digits, `tiny`, 40 epochs) in one process (`--threads`
   torch threads, default 1), then `nas train --workers N` (Ray Train, one thread each):
   wall time, validation accuracy of the largest and smallest subnet, largest weight difference.
2. `run_search` on the one-process supernet, `--budget` evaluations with the default strategy, in
   one process (`--threads`) and on N Ray actors (one thread each): evaluations per second of the
   search itself (Ray's start-up, timed apart, is paid once per command), for objective FLOPs
   (accuracy only) and for the default job (latency measured, limit 1 ms); with FLOPs the two
   `evaluations.csv` must agree except for timing.

Writes `summary.json` and the run folders to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd
import torch

from nas import cluster
from nas.cli.main import main as nas
from nas.cluster.evaluate import RayPool
from nas.data.datasets import load_data
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import Limits
from nas.hardware.measure import LatencySettings
from nas.runs.files import load_supernet
from nas.search.loop import Budget, run_search

SEARCHES = {"flops": Limits(), "latency": Limits(max_latency_ms=1.0)}


def train(out: Path, epochs: int, workers: int) -> dict:
    runs = {}
    for name, extra in (("one_process", []), (f"ray_train_{workers}", ["--workers", str(workers)])):
        start = time.perf_counter()
        assert nas(["train", "--epochs", str(epochs), "--out", str(out / name), "--force", "--quiet", *extra]) == 0
        summary = json.loads((out / name / "space.json").read_text())["summary"]
        runs[name] = {"wall_s": time.perf_counter() - start, "train_s": summary["seconds"],
                      "val_acc_largest": summary["val_acc_largest"], "val_acc_smallest": summary["val_acc_smallest"]}
        print(name, runs[name], flush=True)
    a, b = (load_supernet(out / name).state_dict() for name in runs)
    runs["max_abs_weight_difference"] = max(float((a[k] - b[k]).abs().max()) for k in a)
    return runs


def search(out: Path, budget: int, workers: int) -> dict:
    evaluator = Evaluator(load_supernet(out / "one_process"), load_data("digits"), LatencySettings())
    start = time.perf_counter()
    pool = RayPool(evaluator, workers=workers)
    results = {"ray_actors_start_s": time.perf_counter() - start}
    with pool:
        for objective, limits in SEARCHES.items():
            rates = {}
            for name, where in (("one_process", None), ("ray", pool)):
                run = out / f"search_{objective}_{name}"
                run.mkdir(parents=True, exist_ok=True)
                summary = run_search(evaluator, run, budget=Budget(evaluations=budget), limits=limits,
                                     strategy="predictor", seed=0, objective=objective, show_progress=False, pool=where)
                rates[name] = {"search_s": summary["seconds"], "evaluations_per_s": budget / summary["seconds"],
                               "overhead_fraction": summary["overhead_fraction"]}
            rates["speed_up"] = rates["ray"]["evaluations_per_s"] / rates["one_process"]["evaluations_per_s"]
            if objective == "flops":
                tables = [pd.read_csv(out / f"search_flops_{n}" / "evaluations.csv").drop(columns=["seconds", "time"])
                          for n in ("one_process", "ray")]
                rates["same_evaluations"] = bool(tables[0].equals(tables[1]))
            results[objective] = rates
            print(objective, rates, flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--budget", type=int, default=200)
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers and evaluation actors")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the one-process runs (default 1, as each worker)")
    p.add_argument("--out", type=Path, default=Path("runs/benchmarks/distributed"))
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    cluster.connect()
    load = os.getloadavg()[0]
    summary = {"cpus": os.cpu_count(), "threads_one_process": args.threads, "workers": args.workers,
               "epochs": args.epochs, "budget": args.budget, "load_average_before": load,
               "train": train(args.out, args.epochs, args.workers), "search": search(args.out, args.budget, args.workers),
               "load_average_after": os.getloadavg()[0]}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
