"""Search strategies compared by hypervolume against a reference front, and the search overhead.

1. A trained supernet (`--supernet`, default OUT/supernet: the default job's `nas train --out ...`,
   or any space's) with its data (`--data`, default the data its run folder names, else digits),
   and a latency profile of this machine (`--profile`; `nas profile` settings otherwise): latency
   is *predicted*, so every strategy and the reference see the same deterministic latency of a subnet.
2. Reference front: `--reference` distinct random subnets (5,000 by default), each evaluated on the
   supernet (validation accuracy with inherited weights) and its latency predicted.
3. Every strategy runs `nas.search.run_search` for the largest budget with `--seeds` seeds. Strategies
   do not know the budget, so the first 50 / 100 evaluations of a 200-evaluation run are the run with
   that budget. Accuracy evaluations are cached across runs (they are deterministic). A strategy of
   `--strategies` may carry constructor options, `NAME:KEY=VALUE[:KEY=VALUE...]`, read as
   `nas search --strategy-option KEY=VALUE` reads them (`predictor:warm_start=naswot`); the
   rows name the whole spec. The search passes the training data, which a warm start's proxy scores.
4. Hypervolume of the feasible evaluated subnets (latency under `--max-latency-ms`; `median`: the
   median predicted latency of the reference sample, about half the space) as a fraction of the
   reference front's, with the reference point (lowest accuracy on the reference front, latency
   limit): the region a search must cover to match the front, nothing below it.
5. Overhead: `run_search` once per strategy without any cache and with latency measured, as the
   default job runs; the share of wall-clock time not spent evaluating subnets.

    .venv/bin/python benchmarks/search_strategies.py --out runs/benchmarks/search
    .venv/bin/python benchmarks/search_strategies.py --supernet runs/seq-supernet --data mnist1d \
        --max-latency-ms median --strategies predictor,predictor:warm_start=naswot,random --out runs/ws

Writes reference.csv, runs.csv (one row per strategy, seed and budget), summary.csv,
hypervolume.png, overhead.csv, and each run's folder under runs/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.cli.config import Scalar, parse_option
from nas.data.datasets import load_data
from nas.errors import UserError
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import Limits
from nas.hardware.measure import LatencySettings
from nas.hardware.profile import ProfileSettings, build_profile, load_profile
from nas.hardware.quantize import Precision
from nas.runs.files import load_supernet, read_json, write_json
from nas.search.loop import Budget, run_search
from nas.search.pareto import front_hypervolume, hypervolume_reference, pareto_indices
from nas.search.strategies import check_options
from predictors import LatencyPredictor
from search_spaces import Arch


class CachedEvaluator(Evaluator):
    """Evaluations shared across runs: the same subnet always gets the same accuracy (and, with
    latency predicted, the same row of a search)."""

    def __init__(self, *args, cache: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.cache = cache

    def accuracy(self, arch: Arch, split: str = "val", precision: Precision = "fp32") -> float:
        key = (arch, split, precision)
        if key not in self.cache:
            self.cache[key] = super().accuracy(arch, split, precision)
        return self.cache[key]

    def _evaluate_at(self, arch: Arch, precision: Precision, *, latency: bool) -> dict[str, Any]:
        key = ("row", arch, precision, latency)
        if key not in self.cache:
            self.cache[key] = super()._evaluate_at(arch, precision, latency=latency)
        return dict(self.cache[key])


def strategy_spec(spec: str) -> tuple[str, dict[str, Scalar]]:
    """`NAME:KEY=VALUE:...` -> (NAME, {KEY: VALUE}), each option read as `nas search --strategy-option`
    reads it and checked against the strategy's constructor (its values are checked when it is built)."""
    name, *texts = spec.split(":")
    pairs = [parse_option(text) for text in texts]
    options = dict(pairs)
    if len(options) < len(pairs):
        raise UserError(f"strategy {spec!r} gives an option twice")
    check_options(name.strip(), options)
    return name.strip(), options


def supernet_data(supernet: Path) -> str:
    """The data a supernet's run folder was trained on (its config.json), else digits."""
    config = supernet / "config.json"
    data = read_json(config, "run config").get("args", {}).get("data") if config.is_file() else None
    return data if isinstance(data, str) else "digits"


def reference_sample(evaluator: Evaluator, n: int, seed: int, out: Path) -> pd.DataFrame:
    path = out / "reference.csv"
    space = evaluator.supernet.space
    if path.is_file():
        table = pd.read_csv(path, dtype={"id": str})
        if len(table) >= n:
            for a, acc in zip(table["arch"], table["val_acc"]):
                evaluator.cache[(Arch.from_json(a), "val", "fp32")] = float(acc)
            return table.head(n)
    rng = np.random.default_rng(seed)
    archs: dict[Arch, None] = {}
    for _ in range(50 * n):
        archs.setdefault(space.sample(rng))
        if len(archs) >= n:
            break
    rows, t0 = [], time.perf_counter()
    for i, a in enumerate(archs):
        rows.append({"id": a.id, "val_acc": evaluator.accuracy(a), "latency_ms": evaluator.predict_latency(a),
                     "arch": a.to_json()})
        if (i + 1) % 500 == 0:
            print(f"  reference: {i + 1}/{len(archs)} subnets, {time.perf_counter() - t0:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(path, index=False)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", type=Path, default=None,
                   help="trained supernet (run folder or .safetensors; default OUT/supernet); train the default "
                        "one with `nas train --out ...`")
    p.add_argument("--profile", type=Path, default=None, help="latency profile of this machine (built when missing)")
    p.add_argument("--data", default=None, help="default: the data the supernet's run folder names, else digits")
    p.add_argument("--reference", type=int, default=5000, help="random subnets of the reference front")
    p.add_argument("--strategies", default="random,evolution,predictor,optuna-nsga2,optuna-tpe",
                   help="comma-separated NAME or NAME:KEY=VALUE[:KEY=VALUE...] (constructor options)")
    p.add_argument("--budgets", default="50,100,200")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--max-latency-ms", default="1.0",
                   help="latency limit in ms, or 'median': the median predicted latency of the reference sample")
    p.add_argument("--overhead-strategies", default="evolution,predictor",
                   help="strategies whose overhead is measured in an uncached run with measured latency ('' for none)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/benchmarks/search"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    budgets = sorted(int(b) for b in args.budgets.split(","))
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    specs = {spec: strategy_spec(spec) for spec in strategies}  # a bad spec fails before any work

    supernet_path = args.supernet or args.out / "supernet"
    supernet = load_supernet(supernet_path)
    space = supernet.space
    data = load_data(args.data or supernet_data(supernet_path), dims=space.config.dims)
    profile_path = args.profile or args.out / f"profile-{space.config.name}.json"
    if not profile_path.is_file():
        print(f"building latency profile {profile_path} ...", flush=True)
        write_json(profile_path, build_profile(space, ProfileSettings(threads=args.threads), show_progress=False))
    profile = load_profile(profile_path)
    predictor = LatencyPredictor.fit(profile)
    s = profile["settings"]
    latency = LatencySettings(device=s["target"], threads=s["threads"], batch_size=s["batch"], max_seconds=s["max_seconds"])
    cache: dict = {}
    evaluator = CachedEvaluator(supernet, data, latency, predictor=predictor, remeasure=False, cache=cache)

    t0 = time.perf_counter()
    ref_table = reference_sample(evaluator, args.reference, seed=12345, out=args.out)
    max_latency = (float(ref_table["latency_ms"].median()) if args.max_latency_ms == "median"
                   else float(args.max_latency_ms))
    print(f"latency limit {max_latency:.4f} ms ({args.max_latency_ms})", flush=True)
    limits = Limits(max_latency_ms=max_latency)
    feasible = ref_table[ref_table["latency_ms"] <= max_latency]
    acc, lat = feasible["val_acc"].to_numpy(), feasible["latency_ms"].to_numpy()
    front = pareto_indices(np.column_stack([-acc, lat]))
    ref_point = hypervolume_reference(max_latency, accuracy=float(acc[front].min()))
    ref_hv = front_hypervolume(acc, lat, ref_point)
    print(f"reference: {len(ref_table)} subnets ({len(feasible)} feasible) in {time.perf_counter() - t0:.0f} s; "
          f"front of {len(front)}, reference point (acc {ref_point[0]:.4f}, {ref_point[1]} ms), hypervolume {ref_hv:.5f}")

    rows = []
    for strategy in strategies:
        for seed in range(args.seeds):
            name, options = specs[strategy]
            run_dir = args.out / "runs" / f"{strategy.replace(':', '+')}-{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            run_search(evaluator, run_dir, budget=Budget(evaluations=budgets[-1]), limits=limits, strategy=name,
                       seed=seed, show_progress=False, check_limits=False, strategy_options=options)
            table = pd.read_csv(run_dir / "evaluations.csv")
            for b in budgets:
                head = table.head(b)
                ok = head[head["feasible"].astype(bool)]
                hv = front_hypervolume(ok["val_acc"].to_numpy(), ok["latency_ms"].to_numpy(), ref_point)
                rows.append({"strategy": strategy, "seed": seed, "budget": b, "evaluations": len(head),
                             "hypervolume": hv, "fraction": hv / ref_hv, "best_feasible_acc": ok["val_acc"].max()})
            last = rows[-1]
            print(f"  {strategy:>13} seed {seed}: fraction at {budgets[-1]} = {last['fraction']:.4f} "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
    runs = pd.DataFrame(rows)
    runs.to_csv(args.out / "runs.csv", index=False)
    summary = runs.groupby(["strategy", "budget"])["fraction"].agg(["mean", "std", "min", "max"]).reset_index()
    summary.to_csv(args.out / "summary.csv", index=False)
    table = summary.pivot(index="strategy", columns="budget", values="mean").reindex(strategies)
    print("\nhypervolume / reference (mean over seeds)")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    plot(summary, strategies, args.out / "hypervolume.png", len(ref_table))

    overhead = []
    for strategy in [s.strip() for s in args.overhead_strategies.split(",") if s.strip()]:
        name, options = strategy_spec(strategy)
        run_dir = args.out / "overhead" / strategy.replace(":", "+")
        run_dir.mkdir(parents=True, exist_ok=True)
        measured = Evaluator(supernet, data, LatencySettings(threads=args.threads))
        result = run_search(measured, run_dir, budget=Budget(evaluations=budgets[-1]), limits=limits,
                            strategy=name, seed=0, show_progress=False, check_limits=False, strategy_options=options)
        overhead.append({"strategy": strategy, "seconds": result["seconds"], "overhead": result["overhead_fraction"]})
        print(f"overhead {strategy}: {result['overhead_fraction']:.1%} of {result['seconds']:.1f} s "
              f"({budgets[-1]} evaluations, latency measured)", flush=True)
    if overhead:
        pd.DataFrame(overhead).to_csv(args.out / "overhead.csv", index=False)


def plot(summary: pd.DataFrame, strategies: list[str], path: Path, n_ref: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for strategy in strategies:
        part = summary[summary["strategy"] == strategy]
        ax.errorbar(part["budget"], part["mean"], yerr=part["std"], marker="o", capsize=3, label=strategy)
    ax.axhline(1.0, ls="--", c="gray", lw=1)
    ax.set_xlabel("supernet evaluations")
    ax.set_ylabel(f"hypervolume / reference ({n_ref} random subnets)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
