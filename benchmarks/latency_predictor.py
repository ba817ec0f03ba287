"""Latency predictor accuracy on this CPU: predicted vs measured latency of held-out random subnets.

    python benchmarks/latency_predictor.py --space tiny --subnets 100 --heldout 150 --passes 4

Builds a profile of the space on this CPU (`nas profile`: every unit timed alone, `--subnets`
whole random subnets, `--threads`, `--batch`), fits the predictor from it, then measures
`--heldout` other random subnets (another seed, none of the profile's) with the same timing
settings, in shuffled passes keeping each subnet's fastest median as the profile does. Reports
the share within +-10%, Kendall's tau and the RMSE, for the predictor and for the plain lookup-
table sum; writes the profile, the predictor, a CSV, a JSON summary and a scatter plot to `--out`.
The load average before and after is recorded: other jobs on the machine inflate timings.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from nas.hardware.profile import ProfileSettings, build_profile, measure
from nas.runs.files import write_json
from nas.runs.progress import progress_bar
from predictors import LatencyPredictor
from search_spaces import ModelSpec, SubnetModel, get_space


def heldout_archs(space, n: int, seed: int, exclude: set) -> list:
    rng, archs, seen = np.random.default_rng(seed), [], set(exclude)
    for _ in range(100 * n):  # bounded: a small space may have fewer distinct subnets than asked
        arch = space.sample(rng)
        if arch not in seen:
            seen.add(arch)
            archs.append(arch)
            if len(archs) == n:
                break
    return archs


def metrics(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    rel = pred / meas - 1.0
    return {
        "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
        "kendall_tau": float(kendalltau(pred, meas).statistic),
        "rmse_ms": float(np.sqrt(np.mean((pred - meas) ** 2))),
        "mean_abs_rel_error": float(np.mean(np.abs(rel))),
    }


def plot(path: Path, measured: np.ndarray, predicted: np.ndarray, lut: np.ndarray, title: str, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    lo = float(min(measured.min(), predicted.min(), lut.min())) * 0.9
    hi = float(max(measured.max(), predicted.max(), lut.max())) * 1.1
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="0.9", label="±10%")
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=1)
    ax.scatter(measured, lut, s=10, color="tab:gray", alpha=0.6, label="lookup-table sum")
    ax.scatter(measured, predicted, s=12, color="tab:blue", label=f"predictor ({model})")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="measured latency (ms)", ylabel="predicted latency (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="tiny")
    p.add_argument("--subnets", type=int, default=100, help="whole subnets in the profile (fit the correction)")
    p.add_argument("--heldout", type=int, default=150, help="held-out subnets to measure")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--passes", type=int, default=4, help="timing passes; each measurement keeps its fastest median")
    p.add_argument("--max-seconds", type=float, default=0.25, help="timing budget of one measurement")
    p.add_argument("--seed", type=int, default=0, help="profile seed; held-out subnets use seed + 1000")
    p.add_argument("--out", type=Path, default=Path("runs/benchmarks/latency_predictor"))
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()

    load_before = os.getloadavg()
    start = time.perf_counter()
    space = get_space(args.space)
    settings = ProfileSettings(target="cpu", threads=args.threads, batch=args.batch, subnets=args.subnets,
                               seed=args.seed, passes=args.passes, max_seconds=args.max_seconds)
    profile = build_profile(space, settings, show_progress=not args.quiet)
    write_json(args.out / "profile.json", profile)
    predictor = LatencyPredictor.fit(profile)
    predictor.save(args.out / "predictor.json")

    spec = ModelSpec.from_config(space.config)
    archs = heldout_archs(space, args.heldout, args.seed + 1000, {space.parse(s["arch"]) for s in profile["subnets"]})
    shape = spec.input_shape(args.batch)
    measured = np.full(len(archs), np.inf)
    rng = np.random.default_rng(args.seed + 1000)
    with progress_bar(args.passes * len(archs), "measuring held-out subnets", enabled=not args.quiet) as bar:
        for _ in range(args.passes):
            for i in rng.permutation(len(archs)):
                measured[i] = min(measured[i], measure(SubnetModel(spec, archs[i]), shape, settings).median_ms)
                bar.update()
    predicted = np.array([predictor.predict(a) for a in archs])
    lut = np.array([predictor.lut_sum(a) for a in archs])

    table = pd.DataFrame({"id": [a.id for a in archs], "measured_ms": measured, "predicted_ms": predicted,
                          "lut_sum_ms": lut, "arch": [a.to_json() for a in archs]})
    table.to_csv(args.out / "heldout.csv", index=False)
    summary = {
        "space": args.space, "heldout": len(archs), "profile_subnets": args.subnets, "units": profile["units"],
        "settings": profile["settings"], "device": profile["device"], "model": predictor.model,
        "cv_error": dict(predictor.cv_error), "predictor": metrics(predicted, measured), "lut_sum": metrics(lut, measured),
        "profile_seconds": profile["seconds"], "seconds": time.perf_counter() - start,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
    }
    write_json(args.out / "summary.json", summary)

    plot(args.out / "predicted_vs_measured.png", measured, predicted, lut,
         f"{args.space}, {len(archs)} held-out subnets: {summary['predictor']['within_10pct']:.0%} within ±10%, "
         f"τ={summary['predictor']['kendall_tau']:.3f}", predictor.model)

    for name in ("predictor", "lut_sum"):
        m = summary[name]
        print(f"{name:9s}: {m['within_10pct']:.1%} within ±10%, Kendall tau {m['kendall_tau']:.3f}, "
              f"RMSE {m['rmse_ms']:.4f} ms, mean |error| {m['mean_abs_rel_error']:.1%}")
    print(f"model {predictor.model}; cross-validated relative errors {json.dumps(summary['cv_error'])}")
    print(f"{len(profile['lut'])} units, {args.subnets} profile subnets, {len(archs)} held-out; "
          f"{summary['seconds']:.0f} s; load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"written to {args.out}/")


if __name__ == "__main__":
    main()
