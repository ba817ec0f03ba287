"""Training-free proxies in the ranking-fidelity benchmark (`ranking_fidelity.py --proxies ...`).

Each proxy of `predictors.proxies` (the parameter count and FLOPs among them, the baselines a proxy
must beat) is scored on every chosen subnet at initialisation (the same seeded initialisation as
`nas search --zero-shot`, averaged over `--proxy-seeds` seeds, on the batch of the training split
the search uses) and, for every supernet trained, on its inherited weights. Kendall tau of each
against the from-scratch held-out accuracy and loss (a lower loss is better: tau against -loss),
and against each rule's inherited accuracy. `proxies.csv` holds one row per proxy and weights.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.stats import kendalltau
from torch import nn

from nas.data.datasets import TaskData
from nas.evaluation.evaluator import PROXY_BATCH_SIZE, PROXY_BATCHES
from predictors.proxies import Batch, draw_batches, proxy_scores, score
from search_spaces import Arch, ModelSpec


def proxy_batches(data: TaskData) -> list[Batch]:
    """The training rows the search's proxies see (`Evaluator.proxies`)."""
    return draw_batches(data.train.x, data.train.y, batches=PROXY_BATCHES, batch_size=PROXY_BATCH_SIZE)


def at_init(spec: ModelSpec, subnets: list[Arch], batches: list[Batch], names: list[str],
            seeds: list[int]) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each proxy of each subnet at initialisation, the mean over `seeds`; and each proxy's mean
    Kendall tau between two seeds (how much of its ranking is the initialisation's luck)."""
    tables = [proxy_scores(spec, subnets, batches, names, seed=s) for s in seeds]  # each (subnets, names)
    agree = {}
    for j, n in enumerate(names):
        pairs = itertools.combinations(range(len(seeds)), 2)
        taus = [_tau(tables[a][:, j], tables[b][:, j]) for a, b in pairs]
        agree[n] = float(np.mean(taus)) if taus else float("nan")
    mean = np.mean(tables, axis=0)
    return {n: mean[:, j].tolist() for j, n in enumerate(names)}, agree


def of_models(models: list[nn.Module], batches: list[Batch], names: list[str]) -> dict[str, list[float]]:
    """Each proxy of each model as it is (inherited weights)."""
    return {n: [score(n, m, batches) for m in models] for n in names}


def _tau(a, b) -> float:
    tau = kendalltau(a, b).statistic
    return float(tau) if np.isfinite(tau) else 0.0


def proxy_table(rows: list[dict], names: list[str], rules: list[str], seed_tau: dict[str, float]) -> pd.DataFrame:
    """One row per proxy and weights ("init", or the rule whose supernet's weights were scored):
    Kendall tau against from-scratch accuracy and loss and each rule's inherited accuracy, and
    whether it ranks better than the parameter count at initialisation on each."""
    scratch_acc = [r["standalone_acc"] for r in rows]
    scratch_loss = [-r["standalone_loss"] for r in rows]
    table = []
    for weights in ["init", *rules]:
        suffix = "" if weights == "init" else f"@{weights}"
        for n in names:
            key = f"proxy_{n}{suffix}"
            if key not in rows[0]:
                continue
            values = [r[key] for r in rows]
            entry = {"proxy": n, "weights": weights, "tau_scratch_acc": _tau(values, scratch_acc),
                     "tau_scratch_loss": _tau(values, scratch_loss),
                     "init_seed_to_seed_tau": seed_tau.get(n, float("nan")) if weights == "init" else float("nan")}
            for rule in rules:
                if f"inherited_{rule}" in rows[0]:
                    entry[f"tau_inherited_{rule}"] = _tau(values, [r[f"inherited_{rule}"] for r in rows])
            table.append(entry)
    frame = pd.DataFrame(table)
    if len(frame) and "params" in names:
        base = frame[(frame["proxy"] == "params") & (frame["weights"] == "init")].iloc[0]
        taus = [c for c in frame.columns if c.startswith("tau_")]
        frame["beats_params_on"] = [", ".join(c[4:] for c in taus if row[c] > base[c]) for _, row in frame.iterrows()]
    return frame
