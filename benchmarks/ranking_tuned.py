"""Ranking after a short fine-tune (`ranking_fidelity.py --tune-steps K [K ...]`): each chosen
subnet's inherited weights trained for K optimizer steps with the project's fine-tune recipe
(`nas.finish.finish_subnet`, `how="finetune"`, the last weights kept; K = 0: the inherited weights
as they are), then scored on the held-out split exactly as the inherited weights are.

The supernets are saved under --out (`supernets/<rule>-seed<seed>-e<epochs>/`, safetensors via
`nas.runs.files.save_supernet`), so that tuning can be rerun or extended to another K without
training them again; the tuned scores are kept in tuned.csv (one row per rule, seed, K and subnet)
and a rerun skips what is there."""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch
from scipy.stats import kendalltau

from benchmarks.ranking_supernets import held_out_loss, supernet_folder
from nas.data.datasets import Split, TaskData
from nas.evaluation.accuracy import evaluate
from nas.finish.finetune import FinishConfig, finish_subnet
from nas.runs.files import SUPERNET_FILE, load_supernet
from search_spaces import HybridSupernet

KEY = ["rule", "seed", "epochs", "steps", "id"]


def tune_one(supernet: HybridSupernet, arch, data: TaskData, held_out: Split, steps: int, seed: int) -> dict:
    """Held-out accuracy and loss of `arch` after `steps` fine-tune steps from its inherited weights."""
    config = FinishConfig(how="finetune", steps=steps, select="last", seed=seed) if steps else FinishConfig(how="inherit")
    t0 = time.perf_counter()
    result = finish_subnet(supernet, arch, data, config, show_progress=False)
    return {"acc": evaluate(result.model, held_out), "loss": held_out_loss(result.model, held_out),
            "train_seconds": result.record.seconds, "seconds": time.perf_counter() - t0}


def tuned_results(args: argparse.Namespace, rule: str, seed: int, supernet: torch.nn.Module | None, data: TaskData,
                  held_out: Split, subnets: list) -> pd.DataFrame:
    """tuned.csv's rows of `rule` and `seed` for every K of --tune-steps and every subnet: read from
    there when an earlier run tuned them, else tuned now (on `supernet`, or the one saved under --out)."""
    path = args.out / "tuned.csv"
    cache = pd.read_csv(path, dtype={"id": str}) if path.is_file() else pd.DataFrame(columns=KEY)
    done = set(zip(*(ours(cache, rule, seed, args.epochs)[c] for c in ("steps", "id"))))
    todo = [(k, a) for k in args.tune_steps for a in subnets if (k, a.id) not in done]
    if todo and not isinstance(supernet, HybridSupernet):
        folder = supernet_folder(args.out, rule, seed, args.epochs)
        if not (folder / SUPERNET_FILE).is_file():
            print(f"{rule} seed {seed}: no supernet in {folder} to tune (a few-shot one, or trained before it was "
                  "kept): tuning skipped", flush=True)
            return cache.iloc[:0]
        supernet = load_supernet(folder)
    t0 = time.perf_counter()
    for i, (k, arch) in enumerate(todo):
        new = pd.DataFrame([{"rule": rule, "seed": seed, "epochs": args.epochs, "steps": k, "id": arch.id,
                             **tune_one(supernet, arch, data, held_out, k, seed)}])
        cache = pd.concat([cache, new], ignore_index=True) if len(cache) else new
        cache.to_csv(path, index=False)
        if (i + 1) % len(subnets) == 0:
            print(f"{rule} seed {seed}: {k} tune steps, {len(subnets)} subnets ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    mine = ours(cache, rule, seed, args.epochs)
    return mine[mine["steps"].isin(args.tune_steps)]


def ours(cache: pd.DataFrame, rule: str, seed: int, epochs: int) -> pd.DataFrame:
    """The rows of tuned.csv of one supernet."""
    return cache[(cache["rule"] == rule) & (cache["seed"] == seed) & (cache["epochs"] == epochs)]


def tuned_summaries(tuned: pd.DataFrame, rows: list[dict], name: str, scratch_steps: int) -> list[dict]:
    """Per K: Kendall tau of the tuned accuracy and loss against the from-scratch ones (`rows`), the
    seconds per subnet and the steps as a share of one from-scratch training (`scratch_steps`)."""
    out = []
    for k, group in tuned.groupby("steps", sort=True):
        by_id = group.set_index("id")
        acc, loss = [float(by_id.at[r["id"], "acc"]) for r in rows], [float(by_id.at[r["id"], "loss"]) for r in rows]
        out.append({"rule": name, "seed": int(group["seed"].iloc[0]), "tune_steps": int(k),
                    "kendall_tau": kendalltau(acc, [r["standalone_acc"] for r in rows]).statistic,
                    "kendall_tau_loss": kendalltau(loss, [r["standalone_loss"] for r in rows]).statistic,
                    "seconds_per_subnet": float(group["seconds"].mean()),
                    "train_seconds_per_subnet": float(group["train_seconds"].mean()),
                    "steps_over_scratch": int(k) / scratch_steps,
                    "acc_median": float(np.median(acc)), "loss_median": float(np.median(loss))})
    return out

