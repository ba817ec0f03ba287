"""Ranking fidelity of supernet training: inherited vs from-scratch accuracy, per sampling rule.

1. Choose `--subnets` architectures spread over the FLOPs range of the space: the smallest, the
   largest, and one random subnet from each equal-count FLOPs bin of 4,000 random subnets.
2. Train each from scratch with the default recipe and budget (`nas.train.train_standalone`:
   same epochs, batch size, optimizer, schedule, augmentation), `--standalone-seeds` seeds each.
3. For each sampling rule, train one supernet with the default recipe and take every chosen
   subnet's accuracy with inherited weights. A rule may carry recipe changes for an ablation:
   `uniform:num_random=4`, `sandwich:distill=false:lr=0.003` (any `TrainConfig` field). The rule
   `fewshot` trains a few-shot supernet (`nas.training.fewshot`: the uniform rule for a fraction of
   the budget, then one copy per choice of one decision, each subnet evaluated on its copy), with
   `FewShotConfig` fields too: `fewshot:split=0.5:by=mixer0:compute=equal:num_random=4:lr=0.003`.
4. Kendall tau and Spearman rho between inherited and from-scratch accuracy (both on the held-out
   images: validation + test split, never used for training or selection); the gap of the largest
   and smallest subnets; supernet training throughput against the same subnet steps run standalone.
5. With `--standalone-seeds` >= 2, the noise ceiling: the Kendall tau of one from-scratch seed
   against another, on accuracy and on held-out loss. No supernet can rank the subnets more
   faithfully than the reference agrees with itself. With `--supernet-seeds` >= 2, the same for
   the supernets of each rule: how much of their ranking survives another training seed.
   Each rule's tau over the ceiling: `tau_over_ceiling`, `tau_loss_over_ceiling` (1: all the noise allows).
   `kendall_tau_loss_size_prior`: the tau on loss of the inherited loss ranked together with the
   parameter count (`with_size_prior`), a diagnosis of how much of a supernet's error is capacity.
6. `--proxies` (default: all of `predictors.proxies`, the parameter count and FLOPs included):
   Kendall tau of each training-free proxy, at initialisation and on each supernet's inherited
   weights, against the from-scratch accuracy and loss and each rule's inherited accuracy
   (`proxy_ranking.py`). `--proxies-only` trains nothing: it reads the from-scratch runs from
   `standalone.csv` and the inherited accuracies from `subnets.csv` of an earlier run in `--out`.
7. `--tune-steps K [K ...]`: the same taus after K fine-tune steps from each subnet's inherited
   weights (`nas.finish`'s recipe, `ranking_tuned.py`), with the seconds per subnet: summary.json's
   `tuned`, the scores in tuned.csv. The supernets are saved under supernets/ in --out for it.

    .venv/bin/python benchmarks/ranking_fidelity.py --out runs/benchmarks/ranking

The budget is `--epochs` epochs each way; without it, the default budget on this training set
(`training_budget`: 40 epochs, at least `MIN_STEPS` steps), as the epochs it comes to. `--subset N`
ranks on N samples drawn from the data's training and validation samples as
`benchmarks/training_health.py` draws its MNIST-1D subsets (`mnist1d_subset`, seed `--seed`; the
test set as it is): the rules on a small training set.

Writes subnets.csv (one row per subnet), rules.csv (one row per rule and supernet seed, with its
subnet steps and the spread of its inherited accuracies), summary.json (the subnets' FLOPs range,
from-scratch spread and noise ceiling), ranking.png; proxies.csv (one row per proxy and weights)
and proxies.json. From-scratch runs are kept in standalone.csv, supernets in supernets.csv (the
inherited accuracy and loss of each subnet): a rerun in the same --out skips both.
`--supernets-only` trains the supernets of --rules alone (while the reference trains elsewhere).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import kendalltau, rankdata, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import proxy_ranking
from benchmarks.ranking_supernets import held_out_loss, supernet_results, throughput
from benchmarks.ranking_tuned import tuned_results, tuned_summaries
from benchmarks.training_health import mnist1d_subset
from nas.data.datasets import DataError, Split, TaskData, load_data
from nas.errors import UserError
from nas.evaluation.accuracy import evaluate
from nas.training.config import TrainConfig, training_budget
from nas.training.fewshot import FewShotConfig
from nas.training.sampling import make_sampler
from nas.training.train import train_standalone
from predictors.proxies import list_proxies
from search_spaces import ArchError, HybridSupernet, ModelSpec, get_family, get_space


def choose_subnets(space, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    pool = [space.sample(rng) for _ in range(4000)]
    flops = np.array([space.count_flops(a) for a in pool], dtype=float)
    order = np.argsort(flops, kind="stable")
    chosen = [space.smallest(), space.largest()]
    for part in np.array_split(order, n - 2):  # equal-count FLOPs bins
        chosen.append(pool[int(rng.choice(part))])
    unique = list(dict.fromkeys(chosen))
    return sorted(unique, key=space.count_flops)


def parse_rule(item: str, base: TrainConfig, uniform_random: int) -> tuple[TrainConfig, FewShotConfig | None]:
    """`rule[:field=value]...` -> the recipe of that supernet (values read as JSON, else as text), and
    for the rule `fewshot` (a few-shot supernet on the uniform rule) its `FewShotConfig` fields too."""
    rule, *changes = item.split(":")
    known = {f.name for f in fields(TrainConfig)} - {"sampling"}
    split = {f.name for f in fields(FewShotConfig)} if rule == "fewshot" else set()
    sampling = "uniform" if rule == "fewshot" else rule
    try:
        config = replace(base, sampling=sampling, num_random=uniform_random if sampling == "uniform" else base.num_random)
        fewshot: dict = {}
        for change in changes:
            key, sep, text = change.partition("=")
            if not sep or key not in known | split:
                raise UserError(f"{change!r} is not FIELD=VALUE with a TrainConfig field ({', '.join(sorted(known))})"
                                + (f" or a FewShotConfig field ({', '.join(sorted(split))})" if split else ""))
            if key == "seed":
                raise UserError("the seeds are --seed and --supernet-seeds, not a rule's")
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = text
            if key in split:
                fewshot[key] = value
                continue
            if isinstance(getattr(base, key), float) and type(value) is int:
                value = float(value)
            config = replace(config, **{key: value})
        return config, FewShotConfig(**fewshot) if rule == "fewshot" else None
    except UserError as e:
        sys.exit(f"--rules {item}: {e}")


def ranked_task(spec: str, space: str, subset: int | None, epochs: int | None, seed: int) -> tuple[TaskData, int]:
    """The data to rank on (`subset` samples of them as `training_health.mnist1d_subset` draws them,
    seed `seed`; None: all) and the epochs each way (`epochs`; None: the default budget on that
    training set, `training_budget`, its step floor included)."""
    data = load_data(spec, dims=get_family(space).dims)
    if subset is not None:
        data = mnist1d_subset(data, subset, seed)
    return data, epochs if epochs is not None else training_budget(TrainConfig(), len(data.train)).epochs


def seed_agreement(per_seed: np.ndarray) -> float:
    """Mean Kendall tau over every pair of seeds (columns): how well the reference agrees with itself."""
    pairs = itertools.combinations(range(per_seed.shape[1]), 2)
    return float(np.mean([kendalltau(per_seed[:, i], per_seed[:, j]).statistic for i, j in pairs]))


def with_size_prior(losses: list[float], params: list[float]) -> np.ndarray:
    """Inherited loss ranked together with a size prior: the mean of its rank and the parameter
    count's (more parameters: a lower loss expected), equal weights, nothing fitted."""
    return (rankdata(losses) + rankdata(-np.asarray(params, dtype=float))) / 2


def over_ceiling(tau: float, ceiling: float) -> float:
    """A rule's Kendall tau as a fraction of the noise ceiling (the from-scratch seed-to-seed tau):
    1 ranks the subnets as well as the reference agrees with itself. NaN where the ceiling is not
    positive (the reference does not rank the subnets at all) or either value is NaN."""
    return tau / ceiling if ceiling > 0 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--subnets", type=int, default=24)
    ap.add_argument("--rules", nargs="+", default=["sandwich", "complexity", "uniform"],
                    help="sampling rules, each with optional recipe changes: uniform:num_random=4 sandwich:distill=false")
    ap.add_argument("--uniform-random", type=int, default=1, help="subnets per step of the uniform rule (1: single path)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="the budget each way (default: the default budget on this training set, in epochs)")
    ap.add_argument("--subset", type=int, default=None, metavar="N",
                    help="rank on N samples of the data's training and validation samples (as training_health.py)")
    ap.add_argument("--standalone-seeds", type=int, default=1)
    ap.add_argument("--supernet-seeds", type=int, default=1,
                    help="supernets per rule (seeds --seed, +1000, ...): how reproducible the supernet's ranking is")
    ap.add_argument("--proxies", nargs="*", default=list_proxies(), choices=list_proxies(),
                    help="training-free proxies to rank by (default: all; none: leave them out)")
    ap.add_argument("--proxy-seeds", type=int, default=3, help="initialisations each proxy is averaged over")
    ap.add_argument("--proxies-only", action="store_true",
                    help="train nothing: the proxies against standalone.csv and subnets.csv of an earlier run in --out")
    ap.add_argument("--supernets-only", action="store_true",
                    help="train the supernets of --rules into supernets.csv in --out, without the from-scratch "
                         "reference: a later run without it reads them (and finished reference runs) from there")
    ap.add_argument("--tune-steps", type=int, nargs="+", default=[], metavar="K",
                    help="also rank after K fine-tune steps from the inherited weights, per K (0: as inherited); "
                         "ranking_tuned.py")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/ranking"))
    args = ap.parse_args()
    if any(k < 0 for k in args.tune_steps):
        sys.exit(f"--tune-steps: must be >= 0, got {args.tune_steps}")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data, args.epochs = ranked_task(args.data, args.space, args.subset, args.epochs, args.seed)
    space = get_space(args.space, data.shape)  # fitted to the data
    held_out = Split(torch.cat([data.val.x, data.test.x]), torch.cat([data.val.y, data.test.y]))
    base = TrainConfig(epochs=args.epochs, seed=args.seed)
    subnets = choose_subnets(space, args.subnets, seed=1234)
    rows = [{"id": a.id, "flops": space.count_flops(a), "params": space.count_params(a), "arch": a.to_json()} for a in subnets]
    print(f"{len(subnets)} subnets, {rows[0]['flops']:,} to {rows[-1]['flops']:,} MACs; {len(data.train)} training "
          f"samples, {args.epochs} epochs ({training_budget(base, len(data.train)).steps} steps)", flush=True)

    rules = [r.strip() for item in args.rules for r in item.split(",") if r.strip()]
    parsed = {rule: parse_rule(rule, base, args.uniform_random) for rule in rules}  # every error before any training
    configs, fewshots = {r: c for r, (c, _) in parsed.items()}, {r: f for r, (_, f) in parsed.items()}
    per_step = {r: len(make_sampler(c.sampling, space, num_random=c.num_random, seed=0, total_steps=1).draws())
                for r, c in configs.items()}
    if args.supernets_only:  # the supernets now, into supernets.csv; a later run reads them with the reference
        for rule, config in configs.items():
            for k in range(args.supernet_seeds):
                supernet_results(args, rule, config, fewshots[rule], args.seed + 1000 * k, data, held_out, subnets,
                                 per_step[rule])
        return
    cache_path = args.out / "standalone.csv"  # finished from-scratch runs are kept: a rerun skips them
    cache = pd.read_csv(cache_path, dtype={"id": str}) if cache_path.is_file() else pd.DataFrame()
    if args.proxies_only:
        check_cached(cache, subnets, args)
    t0 = time.perf_counter()
    for i, (row, arch) in enumerate(zip(rows, subnets)):
        accs, losses = [], []  # one per seed
        for s in range(args.standalone_seeds):
            seed = args.seed + 1000 * s
            hit = cache[(cache["id"] == arch.id) & (cache["seed"] == seed) & (cache["epochs"] == args.epochs)] if len(cache) else []
            if len(hit):
                accs.append(float(hit["acc"].iloc[0]))
                losses.append(float(hit["loss"].iloc[0]))
                continue
            torch.manual_seed(seed)
            model = HybridSupernet(space).extract(arch)  # fresh init, the same layers as extraction
            train_standalone(model, data, replace(base, seed=seed))
            accs.append(evaluate(model, held_out))
            losses.append(held_out_loss(model, held_out))
            new = pd.DataFrame([{"id": arch.id, "seed": seed, "epochs": args.epochs, "acc": accs[-1], "loss": losses[-1]}])
            cache = pd.concat([cache, new], ignore_index=True)
            cache.to_csv(cache_path, index=False)
        row["standalone_acc"], row["standalone_loss"] = float(np.mean(accs)), float(np.mean(losses))
        row["standalone_seed_std"] = float(np.std(accs))
        row["standalone_accs"], row["standalone_losses"] = json.dumps(accs), json.dumps(losses)
        print(f"standalone {i + 1}/{len(subnets)} {row['id']} {row['flops']:,} MACs acc {row['standalone_acc']:.4f} "
              f"loss {row['standalone_loss']:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    standalone_seconds = time.perf_counter() - t0

    batches = proxy_ranking.proxy_batches(data)
    scores, seed_tau = proxy_ranking.at_init(ModelSpec.from_config(space.config), subnets,
                                             batches, args.proxies, [args.seed + s for s in range(args.proxy_seeds)])
    for i, row in enumerate(rows):
        row.update({f"proxy_{n}": v[i] for n, v in scores.items()})
    if args.proxies_only:
        rules = inherited_from(args.out / "subnets.csv", rows)
        write_proxies(args, rows, rules, seed_tau)
        return

    summaries, tuned = [], []  # tuned: one row per rule, supernet seed and --tune-steps K
    scratch_steps = training_budget(base, len(data.train)).steps
    for rule, config in configs.items():
        per_seed = []  # (inherited accuracies, inherited losses) of each supernet seed
        speed = throughput(space, data, config)  # timed once per rule
        for k in range(args.supernet_seeds):
            seed = args.seed + 1000 * k
            result, supernet = supernet_results(args, rule, config, fewshots[rule], seed, data, held_out, subnets,
                                                per_step[rule])
            inherited, inherited_loss, seconds, subnet_steps = result
            per_seed.append((inherited, inherited_loss))
            name = rule if k == 0 else f"{rule}@{seed}"
            for row, acc, loss in zip(rows, inherited, inherited_loss):
                row[f"inherited_{name}"], row[f"inherited_loss_{name}"] = acc, loss
            if args.tune_steps:
                tuned += tuned_summaries(tuned_results(args, rule, seed, supernet, data, held_out, subnets), rows,
                                         name, scratch_steps)
            if supernet is not None:  # a supernet read from supernets.csv has no weights to score
                inherited_scores = proxy_ranking.of_models([supernet.extract(a) for a in subnets], batches, args.proxies)
                for i, row in enumerate(rows):
                    row.update({f"proxy_{n}@{name}": v[i] for n, v in inherited_scores.items()})
            scratch = [r["standalone_acc"] for r in rows]
            tau, rho = kendalltau(inherited, scratch).statistic, spearmanr(inherited, scratch).statistic
            tau_loss = kendalltau(inherited_loss, [r["standalone_loss"] for r in rows]).statistic
            tau_prior = kendalltau(with_size_prior(inherited_loss, [r["params"] for r in rows]),
                                   [r["standalone_loss"] for r in rows]).statistic
            summaries.append({
                "rule": name, "supernet_seed": seed, "subnets_per_step": speed["subnets_per_step"],
                "kendall_tau": tau, "spearman_rho": rho, "kendall_tau_loss": tau_loss,
                "kendall_tau_loss_size_prior": tau_prior,
                "largest_inherited": inherited[-1], "largest_scratch": scratch[-1], "largest_gap": inherited[-1] - scratch[-1],
                "smallest_inherited": inherited[0], "smallest_scratch": scratch[0], "smallest_gap": inherited[0] - scratch[0],
                "inherited_min": min(inherited), "inherited_median": float(np.median(inherited)),
                "inherited_max": max(inherited), "train_seconds": seconds, "subnet_steps": subnet_steps,
                **{key: v for key, v in speed.items() if key != "subnets_per_step"},
            })
            print(json.dumps(summaries[-1]), flush=True)
            pd.DataFrame(rows).to_csv(args.out / "subnets.csv", index=False)
            pd.DataFrame(summaries).to_csv(args.out / "rules.csv", index=False)
        if len(per_seed) >= 2:  # how well the supernet's own ranking survives another training seed
            agree = {"supernet_seed_to_seed_tau": seed_agreement(np.array([p[0] for p in per_seed]).T),
                     "supernet_seed_to_seed_tau_loss": seed_agreement(np.array([p[1] for p in per_seed]).T)}
            for row in summaries[-len(per_seed):]:
                row.update(agree)
            print(f"{rule}: supernet seed-to-seed Kendall tau {agree['supernet_seed_to_seed_tau']:.3f} "
                  f"(held-out loss {agree['supernet_seed_to_seed_tau_loss']:.3f})", flush=True)
            pd.DataFrame(summaries).to_csv(args.out / "rules.csv", index=False)

    scratch = [r["standalone_acc"] for r in rows]
    summary = {"space": args.space, "data": args.data, "subset": args.subset, "train_size": len(data.train),
               "epochs": args.epochs, "subnets": len(subnets),
               "held_out": len(held_out), "flops_min": rows[0]["flops"], "flops_max": rows[-1]["flops"],
               "standalone_seeds": args.standalone_seeds, "standalone_seconds": standalone_seconds,
               "scratch_acc_min": min(scratch), "scratch_acc_max": max(scratch)}
    print(f"\nstandalone training of {len(subnets)} subnets x {args.standalone_seeds} seeds: {standalone_seconds:.0f} s")
    print(f"from-scratch accuracy: {min(scratch):.4f} to {max(scratch):.4f} on {len(held_out)} held-out examples")
    if args.standalone_seeds >= 2:  # the noise ceiling: how well one from-scratch seed ranks another
        summary["seed_to_seed_tau"] = seed_agreement(np.array([json.loads(r["standalone_accs"]) for r in rows]))
        summary["seed_to_seed_tau_loss"] = seed_agreement(np.array([json.loads(r["standalone_losses"]) for r in rows]))
        print(f"noise ceiling: seed-to-seed Kendall tau of from-scratch accuracy {summary['seed_to_seed_tau']:.3f}, "
              f"of held-out loss {summary['seed_to_seed_tau_loss']:.3f}")
        for row in summaries:  # each rule's tau as a fraction of what the noise allows
            row["tau_over_ceiling"] = over_ceiling(row["kendall_tau"], summary["seed_to_seed_tau"])
            row["tau_loss_over_ceiling"] = over_ceiling(row["kendall_tau_loss"], summary["seed_to_seed_tau_loss"])
            row["tau_loss_size_prior_over_ceiling"] = over_ceiling(row["kendall_tau_loss_size_prior"],
                                                                   summary["seed_to_seed_tau_loss"])
        for row in tuned:
            row["tau_over_ceiling"] = over_ceiling(row["kendall_tau"], summary["seed_to_seed_tau"])
            row["tau_loss_over_ceiling"] = over_ceiling(row["kendall_tau_loss"], summary["seed_to_seed_tau_loss"])
        summary["over_ceiling"] = {row["rule"]: {"kendall_tau": row["tau_over_ceiling"],
                                                 "kendall_tau_loss": row["tau_loss_over_ceiling"]} for row in summaries}
        if summaries:
            pd.DataFrame(summaries).to_csv(args.out / "rules.csv", index=False)
    if tuned:
        summary["tuned"] = tuned
        print("\nranking after a short fine-tune:\n" + pd.DataFrame(tuned).to_string(index=False))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_proxies(args, rows, [s["rule"] for s in summaries], seed_tau)
    if summaries:
        ratios = (["tau_over_ceiling", "tau_loss_over_ceiling", "tau_loss_size_prior_over_ceiling"]
                  if "seed_to_seed_tau" in summary else [])
        print(pd.DataFrame(summaries)[[
            "rule", "subnets_per_step", "kendall_tau", "spearman_rho", "kendall_tau_loss", "kendall_tau_loss_size_prior",
            *ratios, "largest_gap",
            "smallest_gap", "train_seconds", "subnet_steps", "supernet_samples_per_s", "supernet_over_standalone_time"]].to_string(index=False))
        plot(rows, summaries, args.out / "ranking.png")


def check_cached(cache: pd.DataFrame, subnets: list, args: argparse.Namespace) -> None:
    """--proxies-only: every from-scratch run must be in standalone.csv already."""
    seeds = [args.seed + 1000 * s for s in range(args.standalone_seeds)]
    have = set() if cache.empty else set(zip(cache["id"], cache["seed"], cache["epochs"]))
    missing = [(a.id, s) for a in subnets for s in seeds if (a.id, s, args.epochs) not in have]
    if missing:
        sys.exit(f"--proxies-only: {len(missing)} of {len(subnets) * len(seeds)} from-scratch runs ({args.epochs} "
                 f"epochs) are not in {args.out / 'standalone.csv'}: run once without --proxies-only")


def inherited_from(path: Path, rows: list[dict]) -> list[str]:
    """--proxies-only: the inherited accuracies of an earlier run's subnets.csv, copied into `rows`; the rules."""
    if not path.is_file():
        return []
    earlier = pd.read_csv(path, dtype={"id": str}).set_index("id")
    rules = [c[len("inherited_"):] for c in earlier.columns if c.startswith("inherited_") and "loss" not in c]
    if not {r["id"] for r in rows} <= set(earlier.index):
        return []
    for row in rows:
        row.update({f"inherited_{rule}": float(earlier.at[row["id"], f"inherited_{rule}"]) for rule in rules})
    return rules


def write_proxies(args: argparse.Namespace, rows: list[dict], rules: list[str], seed_tau: dict[str, float]) -> None:
    """proxies.csv, proxies.json (with the noise ceiling) and the table on the console."""
    if not args.proxies:
        return
    table = proxy_ranking.proxy_table(rows, args.proxies, rules, seed_tau)
    table.to_csv(args.out / "proxies.csv", index=False)
    ceiling = {}
    if args.standalone_seeds >= 2:
        ceiling = {"seed_to_seed_tau": seed_agreement(np.array([json.loads(r["standalone_accs"]) for r in rows])),
                   "seed_to_seed_tau_loss": seed_agreement(np.array([json.loads(r["standalone_losses"]) for r in rows]))}
    (args.out / "proxies.json").write_text(json.dumps({
        "space": args.space, "data": args.data, "epochs": args.epochs, "subnets": len(rows), "proxies": args.proxies,
        "proxy_seeds": args.proxy_seeds, "rules": rules, "noise_ceiling": ceiling}, indent=2) + "\n")
    pd.DataFrame(rows).drop(columns=["arch"]).to_csv(args.out / "proxy_scores.csv", index=False)
    print(f"\ntraining-free proxies against {len(rows)} subnets (noise ceiling {ceiling or 'not measured'}):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def plot(rows: list[dict], summaries: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summaries), figsize=(4.5 * len(summaries), 4), squeeze=False)
    scratch = [r["standalone_acc"] for r in rows]
    for ax, s in zip(axes[0], summaries):
        inherited = [r[f"inherited_{s['rule']}"] for r in rows]
        ax.scatter(scratch, inherited, c=np.log10([r["flops"] for r in rows]), cmap="viridis")
        ax.set_title(f"{s['rule']}: tau {s['kendall_tau']:.2f}, rho {s['spearman_rho']:.2f}")
        ax.set_xlabel("from-scratch accuracy (held out)")
        ax.set_ylabel("inherited accuracy (held out)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    try:
        main()
    except (UserError, DataError, ArchError) as e:  # a bad --data or --space: one line, no traceback
        sys.exit(f"ranking_fidelity: {e}")
