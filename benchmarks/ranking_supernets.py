"""The supernets of the ranking-fidelity benchmark (`ranking_fidelity.py`): one per rule and seed,
a few-shot one for the rule `fewshot`, kept in supernets.csv so that a rerun skips it (and the
weights under supernets/, for `ranking_tuned.py`); and the throughput of supernet steps against
the same subnets trained as static models."""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from nas.data.datasets import Split
from nas.evaluation.accuracy import evaluate
from nas.runs.files import save_supernet
from nas.training.config import TrainConfig
from nas.training.fewshot import FewShotConfig, train_fewshot
from nas.training.sampling import make_sampler
from nas.training.train import make_optimizer, train_supernet
from search_spaces import HybridSupernet, get_space


def supernet_folder(out: Path, rule: str, seed: int, epochs: int) -> Path:
    """Where the supernet of `rule` and `seed` trained for `epochs` epochs is kept under --out."""
    return out / "supernets" / f"{re.sub(r'[^A-Za-z0-9.=_-]', '_', rule)}-seed{seed}-e{epochs}"


@torch.inference_mode()
def held_out_loss(model, split: Split, arch=None) -> float:
    """Mean cross-entropy on a split: a finer ranking signal than accuracy when accuracies saturate."""
    model.eval()
    logits = model(split.x, arch) if arch is not None else model(split.x)
    return float(F.cross_entropy(logits, split.y))


def throughput(space, data, config: TrainConfig, steps: int = 20) -> dict:
    """Samples/s of supernet steps (every drawn subnet, one update) against the same subnets trained
    as static models (one update each); every model is warmed up before it is timed."""
    supernet = HybridSupernet(space)
    sampler = make_sampler(config.sampling, space, num_random=config.num_random, seed=config.seed,
                           total_steps=steps + 1)  # a progressive schedule over the timed steps: every phase
    draws = [sampler.draws() for _ in range(steps + 1)]
    x, y = data.train.x[: config.batch_size], data.train.y[: config.batch_size]

    def step(models_and_archs, opt) -> float:
        t0 = time.perf_counter()
        for model, arch in models_and_archs:
            F.cross_entropy(model(x, arch) if arch is not None else model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    opt = make_optimizer(list(supernet.parameters()), config)
    step([(supernet, d.arch) for d in draws[0]], opt)  # warm-up
    t_super = sum(step([(supernet, d.arch) for d in sd], opt) for sd in draws[1:])
    t_static = 0.0
    for sd in draws[1:]:
        for d in sd:
            model = supernet.extract(d.arch)
            mopt = make_optimizer(list(model.parameters()), config)
            step([(model, None)], mopt)  # warm-up
            t_static += step([(model, None)], mopt)
    n = steps * config.batch_size
    return {"supernet_samples_per_s": n / t_super, "standalone_samples_per_s": n / t_static,
            "supernet_over_standalone_time": t_super / t_static, "subnets_per_step": len(draws[0])}


def train_rule(space, data, config: TrainConfig, fewshot: FewShotConfig | None, subnets_per_step: int,
               workdir: Path) -> tuple:
    """One supernet of a rule (`fewshot`: a few-shot one, its checkpoints in `workdir`), its
    training seconds and subnet steps."""
    supernet = HybridSupernet(space)
    if fewshot is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        model, summary = train_fewshot(supernet, data, config, fewshot, workdir=workdir)
        print(f"few-shot: {summary['base_steps']} steps, then {summary['copy_steps']} (shares {summary['shares']})",
              flush=True)
    else:
        model, summary = supernet, train_supernet(supernet, data, config, show_progress=False)
    return model, summary["seconds"], summary["steps"] * subnets_per_step


def supernet_results(args: argparse.Namespace, rule: str, config: TrainConfig, fewshot: FewShotConfig | None, seed: int,
                     data, held_out: Split, subnets: list, subnets_per_step: int) -> tuple[tuple, torch.nn.Module | None]:
    """((inherited accuracies, inherited losses, training seconds, subnet steps), supernet) of the
    supernet of `rule` with `seed`: read from supernets.csv in --out when an earlier run trained it
    (the supernet: None), else trained now and added there."""
    path = args.out / "supernets.csv"
    cache = pd.read_csv(path, dtype={"id": str}) if path.is_file() else pd.DataFrame()
    if len(cache):
        hit = cache[(cache["rule"] == rule) & (cache["seed"] == seed) & (cache["epochs"] == args.epochs)].set_index("id")
        if {a.id for a in subnets} <= set(hit.index):
            print(f"{rule} seed {seed}: read from {path}", flush=True)
            return ([float(hit.at[a.id, "acc"]) for a in subnets], [float(hit.at[a.id, "loss"]) for a in subnets],
                    float(hit["train_seconds"].iloc[0]), int(hit["subnet_steps"].iloc[0])), None
    torch.manual_seed(seed)
    space = get_space(args.space, data.shape)
    supernet, seconds, steps = train_rule(space, data, replace(config, seed=seed), fewshot, subnets_per_step,
                                        args.out / "fewshot")
    acc, loss = [evaluate(supernet, held_out, a) for a in subnets], [held_out_loss(supernet, held_out, a) for a in subnets]
    new = pd.DataFrame([{"rule": rule, "seed": seed, "epochs": args.epochs, "id": a.id, "acc": x, "loss": y,
                         "train_seconds": seconds, "subnet_steps": steps} for a, x, y in zip(subnets, acc, loss)])
    if isinstance(supernet, HybridSupernet):  # kept for `ranking_tuned.py` (a few-shot one, several copies, is not)
        save_supernet(supernet_folder(args.out, rule, seed, args.epochs), supernet,
                      {"rule": rule, "seed": seed, "epochs": args.epochs})
    pd.concat([cache, new], ignore_index=True).to_csv(path, index=False)
    print(f"{rule} seed {seed}: trained in {seconds:.0f} s, {steps:,} subnet steps", flush=True)
    return (acc, loss, seconds, steps), supernet
