"""Finishing the handed-over subnet: inherited weights, finished, trained from scratch, and scikit-learn.

For each seed:
1. The search a user runs (`nas search`, which trains the supernet first): for `--task digits` the
   default job, `--budget 200 --max-latency-ms 1.0`; for `--task mnist1d` (space `seq`) and for
   `--data PATH --space S` the FLOPs objective with `--max-flops` at the median FLOPs of random
   subnets of the space, so that the limit excludes about half of it. FLOPs rather than latency
   there: a FLOPs limit is exact and the same on every machine and under any load, so each seed
   searches under the same constraint, whose only role here is to make the search pick a
   mid-sized subnet.
2. The subnet the search chose, on the run's split: test accuracy with its inherited weights,
   after finishing (`nas.finish.finetune.finish_subnet`, default `FinishConfig`, with this seed),
   after the fine-tune (`how="finetune"`) when that is not the finishing, and trained from scratch
   with the default recipe and budget (`how="scratch", select="last"`: `TrainConfig`'s recipe, as
   `train_standalone` runs it, the last epoch kept; when the finishing is that very training, it
   is trained once and both rows show it).
   With `--blend L ...`, also the fine-tune started from L x the inherited weights + (1 - L) x a
   fresh initialisation with this seed (shrink and perturb, Ash & Adams 2020: a remedy for warm
   starts that generalise worse than none; 1 is the plain fine-tune, 0 a fresh start trained with
   the fine-tune's recipe and budget).
3. scikit-learn on the same split and the same standardised inputs, flattened: logistic
   regression, an RBF SVC, an MLP, and 1-nearest-neighbour for sequences.
The wall time of each: the search (supernet training included), the finishing, the training from
scratch, each baseline's fit and prediction.

    .venv/bin/python benchmarks/finishing.py --task digits --seeds 0 1 2 --out runs/benchmarks/finishing
    .venv/bin/python benchmarks/finishing.py --task mnist1d --seeds 0 1 2 --out runs/benchmarks/finishing
    .venv/bin/python benchmarks/finishing.py --data my.npz --space seq --seeds 0 --out runs/benchmarks/finishing
    .venv/bin/python benchmarks/finishing.py --task mnist1d --seeds 0 1 2 --blend 0.5 0.25 0 --out runs/benchmarks/finishing
    .venv/bin/python benchmarks/finishing.py --task digits --seeds 0 --epochs 10 --budget 60   # a quick check

Writes under OUT/TASK: s<seed>/ (the search run; reused when rerun with the same settings),
results.csv (a row per seed and method), summary.csv (mean and std over seeds per method),
finishing.png (test accuracy against seconds, per method), and prints whether the targets hold:
finished >= from scratch within one test sample (mean over seeds), finishing cheaper than
training from scratch, finished above every baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import TASKS, baselines, median_flops, plot_methods, run_search, summarize
from nas.cli.checks import device_of
from nas.data.datasets import DataError, load_data
from nas.errors import UserError
from nas.finish.finetune import FinishConfig, FinishResult, finish_subnet
from nas.runs.files import load_supernet, read_json
from search_spaces import Arch, ArchError, HybridSupernet, SubnetModel, get_space
from search_spaces.static import initialised_subnet

DEFAULT_BUDGET = "200"  # the default job: nas search --budget 200 --max-latency-ms 1.0 (digits)
NAS_METHODS = ("inherited", "finished", "finetuned", "scratch")  # and "blend L" (--blend)


def search_args(args: argparse.Namespace, seed: int, run: Path) -> list[str]:
    """The `nas search` command line of one seed."""
    space = args.space or TASKS[args.task][0]
    argv = ["search", "--space", space, "--data", args.data or TASKS[args.task][1], "--seed", str(seed),
            "--budget", str(args.budget), "--device", args.device, "--out", str(run)]
    if args.epochs is not None:
        argv += ["--epochs", str(args.epochs)]
    if args.task == "digits" and args.data is None:
        return argv + ["--max-latency-ms", "1.0"]
    return argv + ["--objective", "flops", "--max-flops", str(args.max_flops or median_flops(get_space(space)))]


def nas_row(method: str, result: FinishResult, search_seconds: float) -> dict:
    r = result.record
    return {"method": method, "id": r.id, "val_acc": r.val_acc_after, "test_acc": r.test_acc_after,
            "val_loss": r.val_loss_after, "seconds": r.seconds, "total_seconds": search_seconds + r.seconds,
            "steps": r.steps, "best_step": r.best_step}


def run_seed(args: argparse.Namespace, seed: int, finish: dict, device: str) -> list[dict]:
    run = args.out / f"s{seed}"
    argv = search_args(args, seed, run)
    print(f"seed {seed}: nas {' '.join(argv)}", flush=True)
    search_seconds = run_search(argv, run)
    supernet = load_supernet(run, device)
    data = load_data(read_json(run / "config.json", "run config")["data_spec"], dims=supernet.space.config.dims)
    chosen = read_json(run / "search.json", "search summary")["chosen"]
    table = pd.read_csv(run / "evaluations.csv", dtype={"id": str})
    arch = supernet.space.parse(table.loc[table["id"] == chosen["id"], "arch"].iloc[0])
    rows = [nas_row("inherited", finish_subnet(supernet, arch, data, FinishConfig(how="inherit", device=device)),
                    search_seconds)]
    config = FinishConfig(**{"seed": seed, "device": device, **finish})
    reference = FinishConfig(how="scratch", select="last", seed=seed, device=device)
    finished = finish_subnet(supernet, arch, data, config, show_progress=not args.quiet)
    rows.append(nas_row("finished", finished, search_seconds))
    if config.how != "finetune":  # the fine-tune beside the default, at its default settings
        rows.append(nas_row("finetuned", finish_subnet(supernet, arch, data, replace(config, how="finetune", select="auto"),
                                                       show_progress=not args.quiet), search_seconds))
    # the reference: trained once when the finishing is the very same training
    same = replace(config, select=config.selection) == reference
    scratch = finished if same else finish_subnet(supernet, arch, data, reference, show_progress=not args.quiet)
    rows.append(nas_row("scratch", scratch, search_seconds))
    for blend in args.blend:
        start = blended(supernet, arch, blend, seed)
        result = finish_subnet(supernet, arch, data, replace(config, how="finetune", select="auto"),
                               show_progress=not args.quiet, start=start)
        rows.append(nas_row(f"blend {blend:g}", result, search_seconds))
    rows += baselines(data, seed)
    for row in rows:
        row.update(task=args.task_name, seed=seed, test_size=len(data.test))
        print(f"  {row['method']:>20}: test {row['test_acc']:.4f}  val {row['val_acc']:.4f}  "
              f"{row['seconds']:7.1f} s (with the search {row['total_seconds']:.1f} s)", flush=True)
    return rows


def blended(supernet: HybridSupernet, arch: Arch, blend: float, seed: int) -> SubnetModel:
    """`arch` with `blend` x its inherited weights + (1 - blend) x a fresh initialisation (seeded)."""
    model = supernet.extract(arch)
    fresh = initialised_subnet(supernet.spec, arch, seed).state_dict()
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                value.mul_(blend).add_(fresh[name].to(value.device), alpha=1 - blend)
    return model


def check_targets(summary: pd.DataFrame, test_size: int) -> list[tuple[str, bool]]:
    mean = summary.set_index("method")
    finished, scratch = mean.loc["finished"], mean.loc["scratch"]
    others = mean.drop(index=[m for m in mean.index if m in NAS_METHODS or m.startswith("blend ")])
    best = others["test_acc_mean"].idxmax()
    return [
        (f"finished {finished.test_acc_mean:.4f} >= from scratch {scratch.test_acc_mean:.4f} within one test sample "
         f"(1/{test_size} = {1 / test_size:.4f})", finished.test_acc_mean >= scratch.test_acc_mean - 1 / test_size),
        (f"finishing {finished.seconds_mean:.1f} s cheaper than training from scratch {scratch.seconds_mean:.1f} s",
         finished.seconds_mean < scratch.seconds_mean),
        (f"finished {finished.test_acc_mean:.4f} above every baseline (best: {best} {others.test_acc_mean.max():.4f})",
         finished.test_acc_mean > others["test_acc_mean"].max()),
    ]


def plot(results: pd.DataFrame, summary: pd.DataFrame, path: Path, title: str) -> None:
    """Test accuracy against wall time: with the search counted for the subnet's methods (left), and
    each method's own time without the inherited weights, which take none (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, column, skip in ((axes[0], "total_seconds", ()), (axes[1], "seconds", ("inherited",))):
        plot_methods(ax, results, summary, column, skip)
    axes[0].set_xlabel("wall time (s), the search included for the subnet")
    axes[1].set_xlabel("wall time of the method alone (s): finishing, training from scratch, fitting")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_finish(items: list[str]) -> dict:
    """FIELD=VALUE overrides of the finishing config (values read as JSON, else as text)."""
    known = {f.name for f in fields(FinishConfig)} - {"seed", "device"}
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in known:
            raise UserError(f"--finish {item!r} is not FIELD=VALUE with a FinishConfig field ({', '.join(sorted(known))})")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    FinishConfig(**out)  # refuse a bad value before any search runs
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(TASKS), default="digits")
    ap.add_argument("--data", default=None, help="a dataset of yours (.npz, as `nas search --data`) instead of --task")
    ap.add_argument("--space", default=None, help="the search space for --data (default: the task's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget", default=DEFAULT_BUDGET, help="search evaluations (default: the default job's)")
    ap.add_argument("--epochs", type=int, default=None, help="supernet training epochs (default: the default budget)")
    ap.add_argument("--max-flops", type=int, default=None,
                    help="FLOPs limit of the search (default: the median of random subnets of the space)")
    ap.add_argument("--finish", nargs="*", default=[], metavar="FIELD=VALUE",
                    help="finishing config changes, e.g. augment=true budget=0.3")
    ap.add_argument("--blend", type=float, nargs="*", default=[], metavar="L",
                    help="also fine-tune from L x the inherited weights + (1 - L) x a fresh initialisation, per L in [0, 1]")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/finishing"))
    ap.add_argument("--quiet", action="store_true", help="no progress bars while finishing")
    args = ap.parse_args()
    if args.space is not None and args.data is None:
        raise UserError("--space goes with --data (a task has its own space)")
    if any(not 0 <= b <= 1 for b in args.blend):
        raise UserError(f"--blend takes fractions in [0, 1], got {args.blend}")
    args.task_name = Path(args.data).stem if args.data else args.task
    args.out = args.out / args.task_name
    device = device_of(args.device)
    finish = parse_finish(args.finish)
    args.out.mkdir(parents=True, exist_ok=True)
    results = pd.DataFrame()
    for seed in args.seeds:
        results = pd.concat([results, pd.DataFrame(run_seed(args, seed, finish, device))], ignore_index=True)
        results.to_csv(args.out / "results.csv", index=False)
    summary = summarize(results, ["val_acc", "test_acc", "seconds", "total_seconds"])
    summary.to_csv(args.out / "summary.csv", index=False)
    title = f"{args.task_name}: {len(args.seeds)} seed(s), search budget {args.budget}, {args.epochs or 'default'} supernet epochs"
    plot(results, summary, args.out / "finishing.png", title)
    print(f"\n{title}; finishing config {FinishConfig(**finish).to_dict()}")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    test_size = int(results["test_size"].iloc[0])
    targets = check_targets(summary, test_size)
    for text, ok in targets:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    default_job = args.task == "digits" and args.data is None and str(args.budget) == DEFAULT_BUDGET \
        and args.epochs is None
    if default_job:
        total = results.loc[results["method"] == "finished", "total_seconds"].mean()
        print(f"{'PASS' if total <= 300 else 'FAIL'}  the default job with finishing: {total:.0f} s (within 300 s)")
    print(f"results: {args.out / 'results.csv'}, {args.out / 'summary.csv'}, {args.out / 'finishing.png'}")


if __name__ == "__main__":
    try:
        main()
    except (UserError, DataError, ArchError) as e:  # a bad --data or --space: one line, no traceback
        sys.exit(f"finishing: {e}")
