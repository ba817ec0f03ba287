"""Int8 in the search: Pareto fronts of fp32-only, int8-only and searched precision, in one run.

One supernet is trained (by the fp32 search, the default job's `nas search`) and searched three
times with the same seed, budget and latency limit, latency measured on ONNX Runtime for all three
(`--target onnxruntime`: fp32 and int8 on the same runtime), `--precision fp32`, `int8` and `search`.
For each, the feasible front of validation accuracy against measured latency and against the
weights' bytes (`model_bytes`: 4 per parameter in fp32, the quantized graph's initializers in int8)
is written and plotted; then:
- does the searched front dominate the fp32 one? Every fp32 front point is matched by a searched
  point at most 0.5 points less accurate and no costlier (latency; bytes), and the handed-over
  models: the searched one within 0.5 points of test accuracy of the fp32 one, its latency or its
  bytes at least 1.5x lower (the target of issue 21);
- every int8 model handed over (`model.int8.onnx`): its validation and test accuracy re-measured
  here with ONNX Runtime from the written file, on the data as stored, equal the recorded ones.
Per-candidate cost: the mean seconds of one evaluation in each search (int8: export, quantization,
session, accuracy and latency).

Tasks (`--task`; `both` runs them one after the other, each in OUT/<task>, with one OUT/summary.json):
- `digits` (the default): the default job, 8x8 digits, space `tiny`, the 1 ms limit, 200 evaluations;
- `digits28`: the generated 28x28 task (`benchmarks/tasks.py`: scikit-learn's digits upsampled and
  drawn 4 times under random affine maps; its test digits are digits training never saw), written
  to OUT/digits28.npz, on `benchmarks/spaces/digits28.json` (the `cifar` space nas picks for 28 px
  is too slow to train here: docs/benchmarks.md), 20 supernet epochs, 200 evaluations,
  and a limit that binds: the median ONNX Runtime fp32 latency of 20 random subnets of the fitted
  space (random weights; measured once, before the searches, and kept in OUT/latency_limit.json).
`--space`, `--epochs`, `--budget` and `--max-latency-ms` replace the task's own. `--objective size`
searches all three arms by the weights' bytes instead of latency, under the same latency limit (a
device limited by storage); `--supernet RUN` searches a supernet trained before (a run folder, e.g.
OUT/fp32 of an earlier run) in all three arms instead of training one.

    .venv/bin/python benchmarks/quantization.py --out runs/benchmarks/quantization   # the default job
    .venv/bin/python benchmarks/quantization.py --task digits28 --out runs/benchmarks/quantization-digits28
    .venv/bin/python benchmarks/quantization.py --task both --out runs/benchmarks/quantization-both
    .venv/bin/python benchmarks/quantization.py --objective size --supernet runs/benchmarks/quantization/fp32 \
        --out runs/benchmarks/quantization-size   # by size, on the supernet of the first command
    .venv/bin/python benchmarks/quantization.py --epochs 1 --budget 6 --finish inherit \
        --out /tmp/quantization-check   # a quick check of the script (< 2 min), not a measurement

Writes under OUT: fp32/ (the trained supernet and its search), int8/, search/ (reused when rerun
with the same arguments), fronts.csv, summary.json and quantization.png (digits28: also the task's
digits28.npz and latency_limit.json), and prints the verdicts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` from the repository root

from benchmarks.common import run_search
from benchmarks.tasks import write_digits28
from nas.cli.spaces import fitted_space
from nas.data.datasets import load_data
from nas.finish.package import INT8_FILE, MODEL_META, stored
from nas.hardware.quantize import Int8Model
from nas.hardware.targets import measure_on_target
from nas.runs.files import read_json, write_json
from nas.search.pareto import pareto_indices
from search_spaces import ModelSpec, SubnetModel

ARMS = ("fp32", "int8", "search")
AXES = {"latency": "latency_ms", "bytes": "model_bytes"}
ACC_SLACK, BETTER = 0.005, 1.5  # the target: accuracy within 0.5 points, latency or size 1.5x better
LIMIT_SUBNETS = 20  # random subnets whose median fp32 latency is a task's limit when it states none
TASK_SEED = 0  # of a generated task and of the subnets its limit is measured on: one task whatever --seed


@dataclass(frozen=True)
class Task:
    """One job of the benchmark: its space, budget, supernet epochs (None: nas's default) and latency
    limit (None: the median of `LIMIT_SUBNETS` random subnets, measured here)."""

    space: str
    budget: str
    epochs: int | None
    max_latency_ms: float | None


# the space file relative to the working directory (the repository root, as the docs run it), so that
# the run folder's recorded command, which decides whether a search is reused, is the same in any clone
DIGITS28_SPACE = os.path.relpath(Path(__file__).resolve().parent / "spaces" / "digits28.json")
TASKS = {"digits": Task("tiny", "200", None, 1.0), "digits28": Task(DIGITS28_SPACE, "200", 20, None)}


@dataclass(frozen=True)
class Job:
    """A task with the command line's overrides, its data and its run folder."""

    data: str
    space: str
    budget: str
    epochs: int | None
    max_latency_ms: float
    out: Path
    limit_measured: dict | None  # how the limit was measured (`latency_limit`); None: given
    objective: str = "latency"
    supernet: Path | None = None  # trained before: no arm trains one


def task_data(name: str, out: Path) -> str:
    """The `--data` of task `name`: a built-in name, or the generated task written under `out`."""
    return str(write_digits28(out / "digits28.npz", TASK_SEED)) if name == "digits28" else name


def latency_limit(space: str, data: str, out: Path, seed: int) -> dict:
    """The median ONNX Runtime fp32 latency (batch 1, 1 thread, as the searches time) of
    `LIMIT_SUBNETS` random subnets of `space` fitted to `data`, randomly initialised: a limit about
    half the space meets (`max_latency_ms`), with the latencies it is the median of. Kept in
    out/latency_limit.json and reused for the same space and seed."""
    record, key = out / "latency_limit.json", {"space": space, "seed": seed, "subnets": LIMIT_SUBNETS}
    if record.is_file() and all(read_json(record, "latency limit").get(k) == v for k, v in key.items()):
        return read_json(record, "latency limit")
    fitted = fitted_space(space, data)
    spec, rng = ModelSpec.from_config(fitted.config), np.random.default_rng(seed)
    ms = [measure_on_target(SubnetModel(spec, fitted.sample(rng)).eval(), spec.input_shape(1),
                            target="onnxruntime").median_ms for _ in range(LIMIT_SUBNETS)]
    measured = {**key, "latencies_ms": ms, "max_latency_ms": round(float(np.median(ms)), 3)}
    write_json(record, measured)
    return measured


def make_job(name: str, args: argparse.Namespace, out: Path) -> Job:
    task = TASKS[name]
    out.mkdir(parents=True, exist_ok=True)
    data, space = task_data(name, out), args.space or task.space
    given: float | None = args.max_latency_ms or task.max_latency_ms
    measured = None if given else latency_limit(space, data, out, TASK_SEED)
    limit = given or float(measured["max_latency_ms"])  # type: ignore[index]  # measured when not given
    how = "given" if given else f"the median fp32 latency of {LIMIT_SUBNETS} random subnets"
    print(f"task {name}: data {data}, space {space}, latency limit {limit:.3f} ms ({how})", flush=True)
    return Job(data, space, args.budget or task.budget, args.epochs or task.epochs, limit, out, measured,
               args.objective, args.supernet)


def front(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """The feasible non-dominated rows: accuracy up, `column` down."""
    ok = table[table["feasible"].astype(bool)].reset_index(drop=True)
    rows = pareto_indices(np.column_stack([-ok["val_acc"].to_numpy(float), ok[column].to_numpy(float)]))
    return ok.loc[rows]


def covers(searched: pd.DataFrame, fp32: pd.DataFrame, column: str) -> bool:
    """Every fp32 front point has a searched one at most `ACC_SLACK` less accurate and no costlier."""
    return all(((searched["val_acc"] >= a - ACC_SLACK) & (searched[column] <= c)).any()
               for a, c in zip(fp32["val_acc"], fp32[column]))


def remeasured(run: Path, data) -> dict | None:
    """The handed-over int8 model's recorded and re-measured accuracies (None: handed over in fp32)."""
    summary = read_json(run / "search.json", "search summary")
    folder = run / summary["chosen"]["path"]
    if not (folder / INT8_FILE).is_file():
        return None
    recorded = read_json(folder / MODEL_META, "model description")["int8"]
    model = Int8Model.load(folder / INT8_FILE)
    again = {s: model.accuracy_and_loss(stored(data, s), getattr(data, s).y)[0] for s in ("val", "test")}
    return {"model": str(folder), **{f"{s}_acc_recorded": recorded[f"{s}_acc"] for s in again},
            **{f"{s}_acc_remeasured": v for s, v in again.items()},
            "equal": all(again[s] == recorded[f"{s}_acc"] for s in again)}


def handed_over_test(chosen: dict) -> float:
    """The test accuracy of the model a search hands over: its int8 model's when it is handed over in
    int8 (search.json's `chosen.int8`), else the float model's."""
    return float(chosen["int8"]["test_acc"] if "int8" in chosen else chosen["test_acc"])


def search_argv(job: Job, arm: str, seed: int, finish: str) -> list[str]:
    argv = ["search", "--data", job.data, "--seed", str(seed), "--budget", job.budget,
            "--max-latency-ms", str(job.max_latency_ms), "--target", "onnxruntime", "--precision", arm,
            "--finish", finish, "--out", str(job.out / arm)]
    if job.objective != "latency":
        argv[-2:-2] = ["--objective", job.objective]
    if job.supernet is not None:
        return argv + ["--supernet", str(job.supernet)]
    if arm != "fp32":
        return argv + ["--supernet", str(job.out / "fp32")]  # the fp32 search trained it
    return argv + ["--space", job.space] + ([] if job.epochs is None else ["--epochs", str(job.epochs)])


def plot(fronts: dict[str, dict[str, pd.DataFrame]], path: Path, limit: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (axis, column) in zip(axes, AXES.items()):
        for arm in ARMS:
            f = fronts[arm][axis].sort_values(column)
            x = f[column] / (1 if axis == "latency" else 1024)
            ax.step(x, f["val_acc"], where="post", marker="o", label=arm, alpha=0.8)
        if axis == "latency":
            ax.axvline(limit, color="grey", linestyle=":", label=f"{limit:g} ms limit")
        ax.set_xlabel("measured latency (ms, ONNX Runtime)" if axis == "latency" else "weights (KiB)")
        ax.set_ylabel("validation accuracy")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_task(job: Job, seed: int, finish: str) -> dict:
    """The three searches of `job`, their fronts, plot and verdicts; its summary (also in job.out)."""
    seconds = {arm: run_search(search_argv(job, arm, seed, finish), job.out / arm) for arm in ARMS}
    data = load_data(job.data)
    tables = {arm: pd.read_csv(job.out / arm / "evaluations.csv", dtype={"id": str}) for arm in ARMS}
    fronts = {arm: {axis: front(t, c) for axis, c in AXES.items()} for arm, t in tables.items()}
    chosen = {arm: read_json(job.out / arm / "search.json", "search summary")["chosen"] for arm in ARMS}
    checks = {arm: remeasured(job.out / arm, data) for arm in ARMS}
    fp32, best = chosen["fp32"], chosen["search"]
    summary: dict[str, Any] = {
        "data": job.data, "space": job.space, "budget": job.budget, "epochs": job.epochs, "objective": job.objective,
        "supernet": None if job.supernet is None else str(job.supernet),
        "max_latency_ms": job.max_latency_ms,
        "latency_limit_measured": job.limit_measured,
        "arms": {arm: {"seconds": seconds[arm], "evaluations": len(tables[arm]),
                       "seconds_per_candidate": float(tables[arm]["seconds"].mean()),
                       "feasible": int(tables[arm]["feasible"].astype(bool).sum()),
                       "precisions": tables[arm]["precision"].value_counts().to_dict(),
                       "chosen": {**{k: chosen[arm][k] for k in ("id", "precision", "val_acc", "test_acc", "latency_ms",
                                                                "model_bytes")},
                                  "handed_over_test_acc": handed_over_test(chosen[arm])}} for arm in ARMS},
        "searched_front_covers_fp32": {axis: covers(fronts["search"][axis], fronts["fp32"][axis], c)
                                       for axis, c in AXES.items()},
        "target": {"accuracy_within": handed_over_test(best) >= fp32["test_acc"] - ACC_SLACK,
                   "latency_ratio": fp32["latency_ms"] / best["latency_ms"],
                   "bytes_ratio": fp32["model_bytes"] / best["model_bytes"]},
        "int8_models_remeasured": {arm: c for arm, c in checks.items() if c is not None},
    }
    target = summary["target"]
    target["met"] = bool(target["accuracy_within"]) and max(target["latency_ratio"], target["bytes_ratio"]) >= BETTER
    summary["every_int8_model_equal"] = all(c["equal"] for c in summary["int8_models_remeasured"].values())
    pd.concat([f.assign(arm=arm, axis=axis) for arm, by in fronts.items() for axis, f in by.items()]).to_csv(
        job.out / "fronts.csv", index=False)
    (job.out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    plot(fronts, job.out / "quantization.png", job.max_latency_ms)
    report(summary)
    return summary


def report(summary: dict) -> None:
    for arm, s in summary["arms"].items():
        c = s["chosen"]
        print(f"{arm:>6}: {s['evaluations']} candidates ({s['feasible']} feasible), {s['seconds_per_candidate']:.2f} s "
              f"each, {s['precisions']}; chosen {c['id']} ({c['precision']}) test {c['handed_over_test_acc']:.4f}, "
              f"{c['latency_ms']:.3f} ms, {c['model_bytes']:,.0f} B")
    target = summary["target"]
    print("searched front covers the fp32 front:", summary["searched_front_covers_fp32"])
    print(f"target (test acc within {ACC_SLACK * 100:g} points, latency or bytes {BETTER:g}x lower): "
          f"{'PASS' if target['met'] else 'FAIL'} (latency {target['latency_ratio']:.2f}x, bytes "
          f"{target['bytes_ratio']:.2f}x)")
    print(f"every int8 model re-measured from its file equals its record: "
          f"{'PASS' if summary['every_int8_model_equal'] else 'FAIL'} ({len(summary['int8_models_remeasured'])} models)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="digits", choices=[*TASKS, "both"])
    p.add_argument("--space", default=None, help="the space (default: the task's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", default=None, help="evaluations or a duration (default: the task's)")
    p.add_argument("--max-latency-ms", type=float, default=None, help="the limit (default: the task's)")
    p.add_argument("--epochs", type=int, default=None, help="supernet epochs (default: the task's)")
    p.add_argument("--finish", default="finetune", choices=["inherit", "finetune", "scratch"])
    p.add_argument("--objective", default="latency", choices=["latency", "size"], help="what every arm trades accuracy against")
    p.add_argument("--supernet", type=Path, default=None, help="a trained supernet's run folder, for every arm")
    p.add_argument("--out", type=Path, default=Path("runs/benchmarks/quantization"))
    args = p.parse_args()
    names = list(TASKS) if args.task == "both" else [args.task]
    if args.supernet is not None and len(names) > 1:
        p.error("--supernet serves one task: give --task digits or --task digits28")
    if args.supernet is not None and (args.space is not None or args.epochs is not None):
        p.error("--space and --epochs are the supernet's: --supernet reuses one trained before")
    summaries = {}
    for name in names:
        print(f"== {name}", flush=True)
        job = make_job(name, args, args.out if len(names) == 1 else args.out / name)
        summaries[name] = run_task(job, args.seed, args.finish)
    if len(names) > 1:
        (args.out / "summary.json").write_text(json.dumps(summaries, indent=2, default=float))
        for name, summary in summaries.items():
            print(f"== {name}: limit {summary['max_latency_ms']:.3f} ms, target "
                  f"{'PASS' if summary['target']['met'] else 'FAIL'}, int8 models equal to their records "
                  f"{'PASS' if summary['every_int8_model_equal'] else 'FAIL'}")


if __name__ == "__main__":
    main()
