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

    .venv/bin/python benchmarks/quantization.py --out runs/benchmarks/quantization   # the default job
    .venv/bin/python benchmarks/quantization.py --epochs 1 --budget 6 --finish inherit \
        --out /tmp/quantization-check   # a quick check of the script (< 2 min), not a measurement

Writes under OUT: fp32/ (the trained supernet and its search), int8/, search/ (reused when rerun
with the same arguments), fronts.csv, summary.json and quantization.png, and prints the verdicts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` from the repository root

from benchmarks.common import run_search
from nas.data.datasets import load_data
from nas.finish.package import INT8_FILE, MODEL_META, stored
from nas.hardware.quantize import Int8Model
from nas.runs.files import read_json
from nas.search.pareto import pareto_indices

ARMS = ("fp32", "int8", "search")
AXES = {"latency": "latency_ms", "bytes": "model_bytes"}
ACC_SLACK, BETTER = 0.005, 1.5  # the target: accuracy within 0.5 points, latency or size 1.5x better


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


def search_argv(args: argparse.Namespace, arm: str, out: Path) -> list[str]:
    argv = ["search", "--data", args.data, "--seed", str(args.seed), "--budget", args.budget,
            "--max-latency-ms", str(args.max_latency_ms), "--target", "onnxruntime", "--precision", arm,
            "--finish", args.finish, "--out", str(out / arm)]
    if arm != "fp32":
        return argv + ["--supernet", str(out / "fp32")]  # the fp32 search trained it
    return argv + ["--space", args.space] + ([] if args.epochs is None else ["--epochs", str(args.epochs)])
    return argv


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits")
    p.add_argument("--space", default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", default="200")
    p.add_argument("--max-latency-ms", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=None, help="supernet epochs (default: the default job's)")
    p.add_argument("--finish", default="finetune", choices=["inherit", "finetune", "scratch"])
    p.add_argument("--out", type=Path, default=Path("runs/benchmarks/quantization"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    seconds = {arm: run_search(search_argv(args, arm, args.out), args.out / arm) for arm in ARMS}
    data = load_data(args.data)
    tables = {arm: pd.read_csv(args.out / arm / "evaluations.csv", dtype={"id": str}) for arm in ARMS}
    fronts = {arm: {axis: front(t, c) for axis, c in AXES.items()} for arm, t in tables.items()}
    chosen = {arm: read_json(args.out / arm / "search.json", "search summary")["chosen"] for arm in ARMS}
    checks = {arm: remeasured(args.out / arm, data) for arm in ARMS}
    fp32, best = chosen["fp32"], chosen["search"]
    summary = {
        "arms": {arm: {"seconds": seconds[arm], "evaluations": len(tables[arm]),
                       "seconds_per_candidate": float(tables[arm]["seconds"].mean()),
                       "precisions": tables[arm]["precision"].value_counts().to_dict(),
                       "chosen": {k: chosen[arm][k] for k in ("id", "precision", "val_acc", "test_acc", "latency_ms",
                                                             "model_bytes")}} for arm in ARMS},
        "searched_front_covers_fp32": {axis: covers(fronts["search"][axis], fronts["fp32"][axis], c)
                                       for axis, c in AXES.items()},
        "target": {"accuracy_within": best["test_acc"] >= fp32["test_acc"] - ACC_SLACK,
                   "latency_ratio": fp32["latency_ms"] / best["latency_ms"],
                   "bytes_ratio": fp32["model_bytes"] / best["model_bytes"]},
        "int8_models_remeasured": {arm: c for arm, c in checks.items() if c is not None},
    }
    target = summary["target"]
    target["met"] = bool(target["accuracy_within"]) and max(target["latency_ratio"], target["bytes_ratio"]) >= BETTER
    summary["every_int8_model_equal"] = all(c["equal"] for c in summary["int8_models_remeasured"].values())
    pd.concat([f.assign(arm=arm, axis=axis) for arm, by in fronts.items() for axis, f in by.items()]).to_csv(
        args.out / "fronts.csv", index=False)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    plot(fronts, args.out / "quantization.png", args.max_latency_ms)
    for arm, s in summary["arms"].items():
        c = s["chosen"]
        print(f"{arm:>6}: {s['evaluations']} candidates, {s['seconds_per_candidate']:.2f} s each, {s['precisions']}; "
              f"chosen {c['id']} ({c['precision']}) test {c['test_acc']:.4f}, {c['latency_ms']:.3f} ms, "
              f"{c['model_bytes']:,.0f} B")
    print("searched front covers the fp32 front:", summary["searched_front_covers_fp32"])
    print(f"target (test acc within {ACC_SLACK * 100:g} points, latency or bytes {BETTER:g}x lower): "
          f"{'PASS' if target['met'] else 'FAIL'} (latency {target['latency_ratio']:.2f}x, bytes "
          f"{target['bytes_ratio']:.2f}x)")
    print(f"every int8 model re-measured from its file equals its record: "
          f"{'PASS' if summary['every_int8_model_equal'] else 'FAIL'} ({len(summary['int8_models_remeasured'])} models)")


if __name__ == "__main__":
    main()
