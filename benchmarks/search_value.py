"""Does the search pay? The pipeline against random architectures and "the biggest that fits", at equal compute.

For each seed, under one hardware limit (default: a FLOPs limit at the median FLOPs of random
subnets of the space fitted to the data, which excludes about half of it and is exact under any
load; `--max-latency-ms` for a latency limit instead):
1. `nas search`, the default pipeline: supernet training, the search, the chosen subnet finished.
   Its compute: the wall time of the whole command, and its optimizer steps (the supernet's and the
   finishing's). That wall time is the budget of method 2 unless `--budget-seconds` is given.
2. Random search: random subnets of the space, kept when they meet the limit by the same cost
   functions the search uses (`Evaluator.analytic_cost_functions`, latency measured as the search
   measures it, `Limits.violation`), each trained from scratch with the default recipe
   (`finish_subnet(how="scratch", select="last")`), as many as the budget allows (another one
   starts while the seconds spent plus the mean of one so far fit in it, `another_fits`; with
   `--budget-by steps`, the pipeline's subnet steps instead, which no machine load changes); the
   best by validation (accuracy, the loss breaking ties) is reported.
3. The biggest that fits: the costliest feasible subnet by FLOPs among `--sample` random subnets
   and the space's smallest and largest (`last_true`: bisection over the FLOPs order), trained
   from scratch once.
4. Zero-shot search, a row per proxy of `--zero-shot` (default `params`, the baseline a proxy
   must beat, and `synflow`): the real `nas search --zero-shot PROXY` under the same data, space,
   limit, seed and search budget, with `--finalists K`, K as many from-scratch trainings as random
   search's budget allows (`search_value_rows.py`): random search ordered by the proxy.
5. scikit-learn baselines on the same split (`benchmarks/common.py`).
Compute spent by each: seconds (choosing and training; for the baselines, fitting), optimizer
steps, and subnet steps (a supernet step trains several subnets: steps x subnets per step).

    .venv/bin/python benchmarks/search_value.py --task digits --seeds 0 1 2
    .venv/bin/python benchmarks/search_value.py --task mnist1d --seeds 0 1 2
    .venv/bin/python benchmarks/search_value.py --data my.npz --space seq --seeds 0 1 2
    .venv/bin/python benchmarks/search_value.py --seeds 0 --epochs 1 --budget 10 --finish-budget 0.05 \
        --scratch-epochs 1 --sample 2000   # a quick check of the script, not a measurement
    .venv/bin/python benchmarks/search_value.py --task digits --methods zero-shot --zero-shot naswot  # add rows

`--methods` chooses the rows computed (the pipeline always runs, reused from its folder: its
compute is the others' budget); a rerun with the same settings keeps the other rows of results.csv.
(`--scratch-epochs` does not reach the zero-shot command: it trains with the default recipe.)

Writes under OUT/TASK: s<seed>/ (the search run; reused when rerun with the same settings),
s<seed>-zero-shot-<proxy>/ (the zero-shot runs, reused likewise), settings.json,
results.csv (a row per seed and method), summary.csv (mean and std over seeds), search_value.png
(test accuracy against seconds spent), and prints PASS/FAIL/TIE for: the pipeline >= random search,
>= the biggest that fits and >= each zero-shot row, and each proxy >= `params` (mean over seeds;
within one test sample or the seeds' std: a tie).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import TASKS, baselines, median_flops, plot_methods, run_search, summarize
from benchmarks.search_value_rows import (
    BIGGEST,
    METHODS,
    PIPELINE,
    RANDOM,
    ZERO_SHOT,
    finalists,
    merge,
    previous_results,
    seconds_per_step,
    zero_shot_method,
    zero_shot_row,
)
from nas.cli.checks import device_of
from nas.cli.config import SearchRunConfig
from nas.data.datasets import DataError, TaskData, load_data
from nas.errors import UserError
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import Limits
from nas.finish.finetune import FinishConfig, FinishResult, choose_after_finishing, finish_subnet
from nas.runs.files import load_supernet, read_json
from nas.training.config import training_budget
from nas.training.sampling import make_sampler
from predictors.proxies import list_proxies
from search_spaces import Arch, ArchError, HybridSupernet, get_family, get_space

MAX_DRAWS = 10_000  # random draws for one feasible subnet before giving up


def another_fits(seconds: Sequence[float], budget: float) -> bool:
    """Whether another run fits in `budget` seconds after runs that took `seconds`: the first always
    does; then the time spent plus the mean of one run so far must stay within the budget."""
    if not seconds:
        return True
    return sum(seconds) + sum(seconds) / len(seconds) <= budget


def verdict(a: float, a_std: float, b: float, b_std: float, test_size: int) -> tuple[str, str]:
    """PASS when mean `a` >= mean `b` beyond the noise, FAIL when below it, TIE within it (and why):
    within one test sample (1/test_size), or within the larger std over seeds (NaN with one seed)."""
    diff, sample = a - b, 1 / test_size
    spread = max((s for s in (a_std, b_std) if not math.isnan(s)), default=0.0)
    if abs(diff) <= sample:
        return "TIE", f"difference {diff:+.4f} within one test sample (1/{test_size} = {sample:.4f})"
    if abs(diff) <= spread:
        return "TIE", f"difference {diff:+.4f} within the seeds' std {spread:.4f}"
    return ("PASS" if diff > 0 else "FAIL"), f"difference {diff:+.4f}"


def search_args(args: argparse.Namespace, seed: int, run: Path, max_flops: int | None) -> list[str]:
    """The `nas search` command line of one seed: the default pipeline under the benchmark's limit."""
    argv = ["search", "--space", args.space_name, "--data", args.data_name, "--seed", str(seed),
            "--budget", str(args.budget), "--device", args.device, "--out", str(run)]
    if args.epochs is not None:
        argv += ["--epochs", str(args.epochs)]
    if args.finish_budget is not None:
        argv += ["--finish", "finetune", "--finish-budget", str(args.finish_budget)]  # a fine-tune's budget
    if args.max_latency_ms is not None:
        return argv + ["--max-latency-ms", str(args.max_latency_ms)]
    return argv + ["--objective", "flops", "--max-flops", str(max_flops)]


def feasibility(evaluator: Evaluator, limits: Limits) -> Callable[[Arch], bool]:
    """Whether a subnet meets `limits` by the search's own cost functions (latency measured only
    when a latency limit is set, as the search does)."""
    analytic = evaluator.analytic_cost_functions()

    def ok(arch: Arch) -> bool:
        costs = {column: cost(arch) for column, cost in analytic.items()}
        if limits.max_latency_ms is not None:
            costs["latency_ms"] = evaluator.measure(arch).median_ms
        return limits.violation(costs) == 0

    return ok


def scratch(supernet: HybridSupernet, arch: Arch, data: TaskData, seed: int, args: argparse.Namespace) -> FinishResult:
    """`arch` trained from scratch with the default recipe (`--scratch-epochs`: fewer epochs, for a check)."""
    config = FinishConfig(how="scratch", select="last", seed=seed, device=args.device_name, epochs=args.scratch_epochs)
    return finish_subnet(supernet, arch, data, config, show_progress=not args.quiet)


def random_search(supernet, data, ok: Callable[[Arch], bool], budget: float, seed: int, args) -> dict:
    """Feasible random subnets trained from scratch while the budget allows (in `--budget-by` units:
    seconds, or subnet steps); the best by validation."""
    rng, space = np.random.default_rng(seed), supernet.space
    archs: list[Arch] = []
    results: list[FinishResult] = []
    seconds: list[float] = []
    while another_fits(seconds if args.budget_by == "seconds" else [r.record.steps for r in results], budget):
        start = time.perf_counter()
        arch = next((a for a in (space.sample(rng) for _ in range(MAX_DRAWS)) if a not in archs and ok(a)), None)
        if arch is None:
            raise UserError(f"no new feasible subnet in {MAX_DRAWS} random draws")
        archs.append(arch)
        results.append(scratch(supernet, arch, data, 1000 * seed + len(results), args))
        seconds.append(time.perf_counter() - start)
    i = choose_after_finishing(results, by="val_acc")
    best, steps = results[i].record, sum(r.record.steps for r in results)
    return {"method": RANDOM, "id": best.id, "val_acc": best.val_acc_after, "val_loss": best.val_loss_after,
            "test_acc": best.test_acc_after, "seconds": sum(seconds), "steps": steps, "subnet_steps": steps,
            "subnets": len(results), "budget_seconds": budget, "flops": space.count_flops(archs[i])}


def last_true(items: Sequence, ok: Callable) -> int | None:
    """The index of the last item `ok` holds for, when it holds up to some index and not after
    (bisection: about log2(len) calls); None when it holds for none."""
    lo, hi = -1, len(items)  # ok(items[lo]) holds, ok(items[hi]) fails (the ends as sentinels)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(items[mid]) else (lo, mid)
    return None if lo < 0 else lo


def biggest_that_fits(supernet, data, ok: Callable[[Arch], bool], seed: int, args) -> dict:
    """The costliest feasible subnet by FLOPs among `--sample` random ones, the smallest and the
    largest, trained from scratch. Feasibility is found by bisection over the FLOPs order: exact for
    a FLOPs limit, and a subnet at the limit's edge for a latency limit (latency is near monotone in
    FLOPs; about 15 measurements instead of thousands)."""
    start, space = time.perf_counter(), supernet.space
    rng = np.random.default_rng(seed)
    pool = list(dict.fromkeys([space.smallest(), space.largest(), *(space.sample(rng) for _ in range(args.sample))]))
    pool.sort(key=space.count_flops)
    i = last_true(pool, ok)
    if i is None:
        raise UserError(f"none of {len(pool)} subnets meets the limit")
    arch = pool[i]
    r = scratch(supernet, arch, data, 1000 * seed, args).record
    return {"method": BIGGEST, "id": r.id, "val_acc": r.val_acc_after, "val_loss": r.val_loss_after,
            "test_acc": r.test_acc_after, "seconds": time.perf_counter() - start, "steps": r.steps,
            "subnet_steps": r.steps, "subnets": 1, "flops": space.count_flops(arch)}


def pipeline_row(run: Path, seconds: float, data: TaskData) -> dict:
    """The search's chosen subnet after finishing, with the run's compute: the whole command's wall
    time, the supernet's optimizer steps (x its subnets per step) plus the finishing's."""
    config = SearchRunConfig.from_dict(read_json(run / "config.json", "run config")["args"])
    train = config.train_config("cpu")
    chosen = read_json(run / "search.json", "search summary")["chosen"]
    supernet_steps = training_budget(train, len(data.train)).steps
    per_step = len(make_sampler(train.sampling, get_space(config.space, data.shape), num_random=train.num_random,
                                seed=0, total_steps=supernet_steps).draws())
    finishing = chosen.get("finishing", {}).get("steps", 0) * config.finalists  # the finalists take as many
    return {"method": PIPELINE, "id": chosen["id"], "val_acc": chosen["val_acc"], "test_acc": chosen["test_acc"],
            "seconds": seconds, "steps": supernet_steps + finishing,
            "subnet_steps": supernet_steps * per_step + finishing, "subnets": 1, "flops": chosen["flops"]}


def run_seed(args: argparse.Namespace, seed: int, max_flops: int | None, previous: pd.DataFrame) -> list[dict]:
    """The rows of `args.methods` for `seed` (the pipeline's always); `previous`: the earlier rows."""
    run = args.out / f"s{seed}"
    argv = search_args(args, seed, run, max_flops)
    print(f"seed {seed}: nas {' '.join(argv)}", flush=True)
    seconds = run_search(argv, run)
    supernet = load_supernet(run, args.device_name)
    config = read_json(run / "config.json", "run config")
    data = load_data(config["data_spec"], dims=supernet.space.config.dims)
    search = SearchRunConfig.from_dict(config["args"])
    evaluator = Evaluator(supernet, data, search.latency_source().settings, device=args.device_name)
    ok = feasibility(evaluator, search.limits())
    pipeline = pipeline_row(run, seconds, data)
    budget = args.budget_seconds or (seconds if args.budget_by == "seconds" else pipeline["subnet_steps"])
    rows = [pipeline]
    if "random" in args.methods:
        rows.append(random_search(supernet, data, ok, budget, seed, args))
    if "biggest" in args.methods:
        rows.append(biggest_that_fits(supernet, data, ok, seed, args))
    if "zero-shot" in args.methods:
        per_step = seconds_per_step(merge(previous, pd.DataFrame(rows).assign(seed=seed)), seed)
        k = finalists(budget, args.budget_by, data, per_step)
        rows += [zero_shot_row(argv, proxy, k, args.out / f"s{seed}-zero-shot-{proxy}") for proxy in args.zero_shot]
    if "baselines" in args.methods:
        rows += baselines(data, seed)
    for row in rows:
        row.update(task=args.task_name, seed=seed, test_size=len(data.test))
        print(f"  {row['method']:>20}: test {row['test_acc']:.4f}  val {row['val_acc']:.4f}  {row['seconds']:7.1f} s"
              + (f"  {row['steps']:,} steps, {row['subnets']} subnet(s)" if "steps" in row else ""), flush=True)
    return rows


def targets(summary: pd.DataFrame, test_size: int) -> list[tuple[str, str]]:
    """(PASS/FAIL/TIE, text): the pipeline against random search, the biggest that fits and each
    zero-shot row; each zero-shot proxy against zero-shot `params` (the rows there are)."""
    mean = summary.set_index("method")
    zero_shot = [m for m in mean.index if m.startswith(ZERO_SHOT)]
    pairs = [(PIPELINE, other) for other in (RANDOM, BIGGEST, *zero_shot)]
    pairs += [(m, zero_shot_method("params")) for m in zero_shot if m != zero_shot_method("params")]
    out = []
    for one, other in pairs:
        if one not in mean.index or other not in mean.index:
            continue
        a, b = mean.loc[one], mean.loc[other]
        word, why = verdict(a.test_acc_mean, a.test_acc_std, b.test_acc_mean, b.test_acc_std, test_size)
        out.append((word, f"{one} {a.test_acc_mean:.4f} ({a.seconds_mean:.0f} s) >= {other} "
                          f"{b.test_acc_mean:.4f} ({b.seconds_mean:.0f} s): {why}"))
    return out


def plot(results: pd.DataFrame, summary: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_methods(ax, results, summary, "seconds")
    ax.set_xlabel("compute spent, wall seconds\n(supernet training, search, finishing; proxy scoring; training from scratch)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(TASKS), default="digits")
    ap.add_argument("--data", default=None, help="a dataset of yours (.npz, as `nas search --data`) instead of --task")
    ap.add_argument("--space", default=None, help="the search space for --data (default: the task's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget", default=SearchRunConfig().budget, help="search evaluations (default: nas search's)")
    ap.add_argument("--epochs", type=int, default=None, help="supernet training epochs (default: the default budget)")
    ap.add_argument("--max-flops", type=int, default=None, help="FLOPs limit (default: the median of random subnets)")
    ap.add_argument("--max-latency-ms", type=float, default=None, help="a latency limit instead of the FLOPs limit")
    ap.add_argument("--budget-seconds", type=float, default=None,
                    help="random search's budget in seconds (default: what `nas search` took for that seed)")
    ap.add_argument("--budget-by", choices=["seconds", "steps"], default="seconds",
                    help="random search's budget: the pipeline's wall seconds, or its subnet steps (load-independent)")
    ap.add_argument("--finish-budget", type=float, default=None,
                    help="finish by a fine-tune of this --finish-budget (default: nas search's finishing; for a quick "
                         "check)")
    ap.add_argument("--scratch-epochs", type=int, default=None,
                    help="from-scratch epochs (default: the default recipe's; fewer only for a quick check)")
    ap.add_argument("--sample", type=int, default=20_000, help="random subnets the biggest that fits is chosen from")
    ap.add_argument("--zero-shot", nargs="+", choices=list_proxies(), default=["params", "synflow"], metavar="PROXY",
                    help=f"a zero-shot row per proxy ({', '.join(list_proxies())}; default: params synflow)")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                    help="the rows to compute (default all; the pipeline always runs, reused from its folder); "
                         "a rerun with the same settings keeps the others' rows")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/search_value"))
    ap.add_argument("--quiet", action="store_true", help="no progress bars while training from scratch")
    args = ap.parse_args()
    if args.space is not None and args.data is None:
        raise UserError("--space goes with --data (a task has its own space)")
    if args.budget_seconds is not None and args.budget_by == "steps":
        raise UserError("--budget-seconds goes with --budget-by seconds")
    if args.max_flops is not None and args.max_latency_ms is not None:
        raise UserError("--max-flops and --max-latency-ms are alternatives: give one")
    args.space_name, args.data_name = (args.space or TASKS[args.task][0], args.data or TASKS[args.task][1])
    args.task_name = Path(args.data).stem if args.data else args.task
    args.out, args.device_name = args.out / args.task_name, device_of(args.device)
    max_flops = args.max_flops
    if args.max_latency_ms is None and max_flops is None:  # on the space as the search fits it to the data
        data = load_data(args.data_name, dims=get_family(args.space_name).dims)
        max_flops = median_flops(get_space(args.space_name, data.shape))
    args.out.mkdir(parents=True, exist_ok=True)
    args.max_flops = max_flops
    results = previous_results(args)
    for seed in args.seeds:
        results = merge(results, pd.DataFrame(run_seed(args, seed, max_flops, results)))
        results.to_csv(args.out / "results.csv", index=False)
    results = results[results["seed"].isin(args.seeds)]  # the summary: these seeds' rows
    summary = summarize(results, ["val_acc", "test_acc", "seconds", "steps", "subnet_steps", "subnets"])
    summary.to_csv(args.out / "summary.csv", index=False)
    limit = f"latency <= {args.max_latency_ms} ms" if max_flops is None else f"FLOPs <= {max_flops:,}"
    title = (f"{args.task_name}, {limit}: {len(args.seeds)} seed(s), search budget {args.budget}, "
             f"{args.epochs or 'default'} supernet epochs,\nfrom scratch {args.scratch_epochs or 'default'} epochs, "
             f"random search{' and zero-shot' * ('zero-shot' in args.methods)} for the pipeline's {args.budget_by}")
    plot(results, summary, args.out / "search_value.png", title)
    print("\n" + title.replace("\n", " "))
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for word, text in targets(summary, int(results["test_size"].iloc[0])):
        print(f"{word:<4}  {text}")
    print(f"results: {args.out / 'results.csv'}, {args.out / 'summary.csv'}, {args.out / 'search_value.png'}")


if __name__ == "__main__":
    try:
        main()
    except (UserError, DataError, ArchError) as e:  # a bad --data or --space: one line, no traceback
        sys.exit(f"search_value: {e}")
