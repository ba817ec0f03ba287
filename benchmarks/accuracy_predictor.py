"""Accuracy predictor quality: Kendall tau between predicted and supernet accuracy of held-out subnets.

    python benchmarks/accuracy_predictor.py --supernet runs/benchmarks/search/supernet --ceiling 500 \
        --sample runs/benchmarks/search/accuracy_sample.csv --out runs/benchmarks/accuracy_predictor

With `--supernet` and no sample file yet, evaluates `--subnets` random subnets (`space.sample` with
`--sample-seed`) on the validation split with inherited weights, once, and writes them to `--sample`
(columns id, arch, val_acc) for reuse; later runs read the file. The last `--heldout` rows of a
seeded shuffle are held out; for every training size and repeat, a training set is drawn from the
other rows, each family of `predictors.accuracy` (and "auto", which selects by cross-validation on
the training set only) is fitted on it and scores the held-out subnets. Writes taus.csv (one row per
family, size and repeat, with fit and predict times), summary.csv (mean and std), taus.png, and
prints the table. Predict time is for 2000 candidates; feature time per architecture is printed.
`--ceiling N` also scores N subnets on the test split: validation accuracy on a small split is
noisy, and no predictor can rank it better than its own reproducibility allows. About 1 minute to
build the sample of 1200 subnets (tiny space, digits, 1 thread), then 1 to 2 minutes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from predictors.accuracy import AutoPredictor, arch_features, kendall_tau, list_predictors, make_predictor
from search_spaces import SearchSpace, get_space

CANDIDATES = 2000  # candidates the search scores after each refit


def build_sample(supernet_path: Path, data_spec: str, n: int, seed: int, out: Path) -> None:
    import torch

    from nas.data.datasets import load_data
    from nas.evaluation.accuracy import evaluate
    from nas.runs.files import load_supernet
    from nas.runs.progress import progress_bar

    torch.set_num_threads(1)
    supernet = load_supernet(supernet_path)
    data = load_data(data_spec, dims=supernet.space.config.dims)
    space, rng, seen, rows = supernet.space, np.random.default_rng(seed), set(), []
    with progress_bar(n, "evaluating subnets", enabled=True) as bar:
        for _ in range(20 * n):  # bounded: a small space may hold fewer distinct subnets
            arch = space.sample(rng)
            if arch in seen:
                continue
            seen.add(arch)
            rows.append({"id": arch.id, "arch": arch.to_json(), "val_acc": evaluate(supernet, data.val, arch)})
            bar.update()
            if len(rows) == n:
                break
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)


def plot(path: Path, summary: pd.DataFrame, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for family, rows in summary.groupby("family"):
        ax.errorbar(rows["train_size"], rows["tau_mean"], yerr=rows["tau_std"], marker="o", capsize=3, label=family)
    ax.axhline(0.8, color="0.6", ls="--", lw=1, label="target 0.8")
    ax.set(xscale="log", xlabel="training subnets", ylabel="Kendall tau on held-out subnets")
    ax.minorticks_off()
    ax.set_xticks(sorted(summary["train_size"].unique()), [str(v) for v in sorted(summary["train_size"].unique())])
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sample", type=Path, default=Path("runs/benchmarks/search/accuracy_sample.csv"),
                   help="CSV of evaluated subnets (id, arch, val_acc); built from --supernet when missing")
    p.add_argument("--supernet", type=Path, help="trained supernet folder, to build the sample")
    p.add_argument("--space", default="tiny", help="space of the sample's architectures (without --supernet)")
    p.add_argument("--data", default="digits", help="dataset whose validation split scores the subnets")
    p.add_argument("--subnets", type=int, default=1200, help="subnets to evaluate when building the sample")
    p.add_argument("--sample-seed", type=int, default=1)
    p.add_argument("--train-sizes", default="25,50,100,200")
    p.add_argument("--heldout", type=int, default=500)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--families", default=",".join(list_predictors()))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ceiling", type=int, default=0, metavar="N",
                   help="with --supernet: also score the first N sample subnets on the test split, to estimate "
                        "how much of the validation ranking any predictor could reproduce")
    p.add_argument("--out", type=Path, default=Path("runs/benchmarks/accuracy_predictor"))
    args = p.parse_args()
    sizes = [int(v) for v in args.train_sizes.split(",")]
    families = args.families.split(",")

    if args.supernet is not None and not args.sample.is_file():
        build_sample(args.supernet, args.data, args.subnets, args.sample_seed, args.sample)
    table = pd.read_csv(args.sample)
    space = supernet_space(args.supernet) if args.supernet is not None else get_space(args.space)
    archs = [space.parse(a) for a in table["arch"]]
    start = time.perf_counter()
    x, y = arch_features(space, archs), table["val_acc"].to_numpy(dtype=float)
    feature_us = (time.perf_counter() - start) / len(archs) * 1e6
    if len(y) < args.heldout + max(sizes):
        raise SystemExit(f"{args.sample} has {len(y)} subnets; need --heldout {args.heldout} + {max(sizes)}")
    order = np.random.default_rng(args.seed).permutation(len(y))
    test, pool = order[-args.heldout:], order[: -args.heldout]
    candidates = np.resize(x, (CANDIDATES, x.shape[1]))

    rows = []
    for size in sizes:
        for rep in range(args.repeats):
            train = np.random.default_rng([args.seed, size, rep]).choice(pool, size, replace=False)
            for family in families:
                model = make_predictor(family, seed=rep)
                t0 = time.perf_counter()
                model.fit(x[train], y[train])
                t1 = time.perf_counter()
                model.predict(candidates)
                t2 = time.perf_counter()
                chosen = model.selection.name if isinstance(model, AutoPredictor) and model.selection else ""
                rows.append({"family": family, "train_size": size, "repeat": rep,
                             "tau": kendall_tau(model.predict(x[test]), y[test]),
                             "fit_s": t1 - t0, "predict_s": t2 - t1, "selected": chosen})
    taus = pd.DataFrame(rows)
    summary = taus.groupby(["family", "train_size"]).agg(
        tau_mean=("tau", "mean"), tau_std=("tau", "std"), fit_ms=("fit_s", lambda v: 1e3 * v.mean()),
        predict_ms=("predict_s", lambda v: 1e3 * v.mean()),
        selected=("selected", lambda v: " ".join(f"{k}:{c}" for k, c in v.value_counts().items() if k)),
    ).reset_index()
    args.out.mkdir(parents=True, exist_ok=True)
    taus.to_csv(args.out / "taus.csv", index=False)
    summary.to_csv(args.out / "summary.csv", index=False)
    title = (f"{space.config.name}: {len(y)} subnets, {args.heldout} held out, {args.repeats} repeats; "
             f"val acc {y.min():.3f}-{y.max():.3f}, {len(np.unique(y))} distinct values")
    plot(args.out / "taus.png", summary, title)
    pd.set_option("display.width", 200)
    print(title + f"; features {feature_us:.0f} us/arch")
    if args.ceiling and args.supernet is not None:
        print(noise_ceiling(args.supernet, args.data, archs[: args.ceiling], y[: args.ceiling]))
    print(summary.pivot(index="family", columns="train_size", values="tau_mean").round(3).to_string())
    print(summary.round(3).to_string(index=False))


def noise_ceiling(supernet_path: Path, data_spec: str, archs: list, val: np.ndarray) -> str:
    """Kendall tau between validation and test accuracy of the same subnets. If both are a subnet's
    expected accuracy plus independent noise of equal size (Gaussian), the best tau any predictor
    of validation accuracy can reach is (2/pi) asin(sqrt(sin(pi/2 tau_val_test)))."""
    import torch

    from nas.data.datasets import load_data
    from nas.evaluation.accuracy import evaluate
    from nas.runs.files import load_supernet

    torch.set_num_threads(1)
    supernet = load_supernet(supernet_path)
    data = load_data(data_spec, dims=supernet.space.config.dims)
    tau = kendall_tau(val, np.array([evaluate(supernet, data.test, a) for a in archs]))
    best = 2 / np.pi * np.arcsin(np.sqrt(max(np.sin(np.pi / 2 * tau), 0.0)))
    return f"val-vs-test Kendall tau over {len(archs)} subnets: {tau:.3f}; implied ceiling for a predictor: {best:.2f}"


def supernet_space(path: Path) -> SearchSpace:
    from nas.runs.files import load_supernet

    return load_supernet(path).space


if __name__ == "__main__":
    main()
