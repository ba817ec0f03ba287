"""Do training-free proxies help the accuracy predictor as extra features? Held-out Kendall tau.

    python benchmarks/proxy_features.py --sample runs/benchmarks/search/accuracy_sample.csv \
        --space tiny --data digits --out runs/benchmarks/proxy_features

`--sample`: recorded (arch, val_acc) rows, e.g. the sample `accuracy_predictor.py` writes, or a
search's `evaluations.csv`. Every proxy of `predictors.proxies` is scored on every subnet at
initialisation, as the predictor-guided search scores them (`Evaluator.proxies`: one batch of the
training split, seed 0), and cached in `--out`/proxy_scores.csv. Then for each training size and
repeat, a training set is drawn from the rows outside a held-out set (the last `--heldout` rows of a
seeded shuffle), and each family is fitted on the architecture features alone, with each proxy
added, and with every data proxy added; Kendall tau of its predictions against the held-out
accuracies. NAS-Bench-Suite-Zero (Krishnakumar et al., 2022) found proxies help more this way than
alone. Writes taus.csv and summary.csv (mean and std over repeats; the gain over no proxy).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.data.datasets import load_data
from nas.evaluation.evaluator import PROXY_BATCH_SIZE, PROXY_BATCHES
from predictors.accuracy import arch_features, kendall_tau, make_predictor
from predictors.proxies import PROXIES, draw_batches, list_proxies, proxy_scores
from search_spaces import ModelSpec, get_space


def scores(sample: pd.DataFrame, space, data_spec: str, out: Path) -> pd.DataFrame:
    """Every proxy of every sampled subnet (cached in out/proxy_scores.csv)."""
    path = out / "proxy_scores.csv"
    if path.is_file():
        cached = pd.read_csv(path, dtype={"id": str})
        if list(cached["id"]) == list(sample["id"]) and set(list_proxies()) <= set(cached.columns):
            return cached
    data = load_data(data_spec, dims=space.config.dims)
    batches = draw_batches(data.train.x, data.train.y, batches=PROXY_BATCHES, batch_size=PROXY_BATCH_SIZE)
    archs = [space.parse(a) for a in sample["arch"]]
    t0 = time.perf_counter()
    table = proxy_scores(ModelSpec.from_config(space.config), archs, batches, list_proxies())
    print(f"proxies of {len(archs)} subnets in {time.perf_counter() - t0:.0f} s", flush=True)
    frame = pd.DataFrame(table, columns=list_proxies())
    frame.insert(0, "id", list(sample["id"]))
    frame.to_csv(path, index=False)
    return frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=Path, required=True, help="CSV with columns arch and val_acc")
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--sizes", default="40,100,200", help="training sizes")
    ap.add_argument("--heldout", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--families", default="ridge,gbt,mlp")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/proxy_features"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    space = get_space(args.space)
    sample = pd.read_csv(args.sample, dtype={"id": str}).drop_duplicates("arch").reset_index(drop=True)
    if "id" not in sample:
        sample["id"] = [space.parse(a).id for a in sample["arch"]]
    proxies = scores(sample, space, args.data, args.out)
    x = arch_features(space, [space.parse(a) for a in sample["arch"]])
    y = sample["val_acc"].to_numpy(dtype=float)
    data_proxies = [n for n in list_proxies() if PROXIES.get(n).uses_data]
    sets = {"none": []} | {n: [n] for n in list_proxies()} | {"all data proxies": data_proxies}
    order = np.random.default_rng(0).permutation(len(y))
    held, pool = order[-args.heldout:], order[:-args.heldout]
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for rep in range(args.repeats):
            train = np.random.default_rng(1000 + rep).choice(pool, size=min(size, len(pool)), replace=False)
            for family in args.families.split(","):
                for name, cols in sets.items():
                    feats = np.hstack([x, proxies[cols].to_numpy(dtype=float)]) if cols else x
                    model = make_predictor(family, seed=rep).fit(feats[train], y[train])
                    rows.append({"size": size, "repeat": rep, "family": family, "proxies": name,
                                 "tau": kendall_tau(model.predict(feats[held]), y[held])})
    taus = pd.DataFrame(rows)
    taus.to_csv(args.out / "taus.csv", index=False)
    summary = taus.groupby(["family", "proxies", "size"], sort=False)["tau"].agg(["mean", "std"]).reset_index()
    base = summary[summary["proxies"] == "none"].set_index(["family", "size"])["mean"]
    summary["gain"] = [m - base[(f, s)] for f, s, m in zip(summary["family"], summary["size"], summary["mean"])]
    summary.to_csv(args.out / "summary.csv", index=False)
    print(summary.pivot_table(index=["family", "proxies"], columns="size", values=["mean", "gain"], sort=False)
          .to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
