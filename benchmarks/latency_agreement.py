"""Do two runs of the same search agree on the front when latency is measured on this machine?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latency_agreement.py --supernet RUN --out runs/benchmarks/latency_agreement

One trained supernet (`--supernet`, a `nas train` or `nas search` run folder; without it one is
trained here for `--epochs` epochs), one set of subnets: those a search evaluates (`--budget`
evaluations of the default strategy and `--seed`, latency limit `--max-latency-ms`), or those of an
existing search (`--from-run RUN`). Then `--runs` times, side by side on this machine, the search's
latency measurement is repeated on that set, each time in another order (the search's own order
first, then shuffled), and each pass is summarized twice:

- without re-measurement: the front and the choice from that pass's single readings;
- with it: after `nas.search.remeasure.remeasure_latency` (the front and the subnets near it and the
  limit measured again as deployed in interleaved rounds, orders drawn from the pass's own seed), as
  `nas search` does before its choice: the resolved front (latencies closer than the machine's
  resolution are ties) and, beside it, the plain front of the same re-measured latencies; the chosen
  subnet is then re-measured as handed over.

Accuracies are the same in every pass (the supernet's, measured once), so the fronts differ only by
latency. Reported per pair of passes: the share of front members they agree on (|A and B| / |A or
B|) and whether they choose the same subnet, with and without re-measurement; per pass: the front,
the seconds the re-measurement took, and whether the chosen subnet met the limit when re-measured
as handed over. `--searches` also runs `--runs` whole searches with the same seed (the strategy then
hears each run's own readings, so the evaluated sets can differ too) and compares their fronts, from
the search's readings and from the re-measured ones. With `--profile PROFILE.json` (written by
`nas profile` on this machine) the whole searches take latency from the profile instead, as
`nas search --target PROFILE.json` does: nothing measured steers them, and their fronts' latency is
measured here at the end. With several profiles (of the same machine, each built anew), search k
reads profile k: how much a profile's own measurement noise moves a whole search. Writes `summary.json` (and the runs) to `--out`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nas.data.datasets import load_data
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import Limits
from nas.finish.package import DeployedModel
from nas.hardware.measure import LatencySettings
from nas.hardware.profile import search_latency
from nas.runs.files import load_supernet, save_supernet
from nas.search.loop import Budget, run_search
from nas.search.pareto import resolved_front_indices
from nas.search.remeasure import COLUMNS as REMEASURE_COLUMNS
from nas.search.remeasure import REMEASURE, Remeasure, check_handed_over, feasible_front, remeasure_latency
from nas.training.config import TrainConfig
from nas.training.train import train_supernet
from search_spaces import Arch, HybridSupernet, get_space


def agreement(a: list[str], b: list[str]) -> float:
    """|A and B| / |A or B| of two fronts (ids); 1 when both are empty."""
    union = set(a) | set(b)
    return len(set(a) & set(b)) / len(union) if union else 1.0


def chosen_id(table: pd.DataFrame) -> str | None:
    ok = table[table["feasible"].astype(bool)]
    return None if ok.empty else str(ok.sort_values(["val_acc", "latency_ms"], ascending=[False, True]).iloc[0]["id"])


def with_readings(table: pd.DataFrame, readings: list[float], limits: Limits) -> pd.DataFrame:
    """`table` as a search that read `readings` would have recorded it."""
    out = table.copy()
    out["latency_ms"] = out["latency_measured_ms"] = readings
    out["latency_iqr_ms"] = np.nan
    out["violation"] = [limits.violation({k: float(out.at[i, k]) for k in limits.bounds()}) for i in out.index]
    out["feasible"] = out["violation"] == 0
    return out


def one_pass(evaluator: Evaluator, table: pd.DataFrame, order: np.ndarray, limits: Limits, seed: int,
             remeasure: Remeasure) -> dict:
    """One measurement pass over the set in `order`, summarized without and with re-measurement."""
    start = time.perf_counter()
    readings = [0.0] * len(table)
    for i in order:
        readings[i] = evaluator.measure(Arch.from_json(table.at[i, "arch"])).median_ms
    measured = time.perf_counter() - start
    plain = with_readings(table, readings, limits)
    again = plain.copy()
    rng = np.random.default_rng(seed)
    done = remeasure_latency(evaluator, again, limits=limits, column="latency_ms", settings=remeasure, rng=rng)
    resolution = 0.0 if done is None else done.resolution
    raw = again.copy()  # the same rounds without the drift correction: does the reference help?
    if done is not None:
        for i, r in done.session.models.items():
            raw.at[i, "latency_ms"] = float(np.median([x * d for x, d in zip(r.readings_ms, done.session.drift)]))
        raw = with_readings(raw, raw["latency_ms"].tolist(), limits)

    def ids(t: pd.DataFrame, resolution: float = 0.0) -> list[str]:
        return [str(t.at[i, "id"]) for i in feasible_front(t, "latency_ms", resolution=resolution)]

    result = {"pass_seconds": measured, "resolution": resolution, "front_without": ids(plain),
              "front_with": ids(again, resolution), "front_with_plain": ids(again),
              "front_with_uncorrected": ids(raw, resolution),
              "chosen_without": chosen_id(plain), "chosen_with": chosen_id(again),
              "feasible_without": int(plain["feasible"].sum()), "feasible_with": int(again["feasible"].sum()),
              "remeasured": None if done is None else done.record(remeasure)}
    if result["chosen_with"] is not None:
        row = again.index[again["id"] == result["chosen_with"]][0]
        model = DeployedModel.for_data(evaluator.supernet.extract(Arch.from_json(again.at[row, "arch"])), evaluator.data)
        check = check_handed_over(evaluator, model, limit=limits.max_latency_ms, settings=remeasure, rng=rng,
                                  baseline_ms=None if done is None else done.session.baseline_ms)
        result["handed_over"] = {k: check[k] for k in ("median_ms", "low_ms", "high_ms", "meets_limit", "seconds")}
    return result


def consistency(a: pd.DataFrame, b: pd.DataFrame, resolution: float) -> float:
    """Whole searches evaluate different subnets, so their fronts can share few members and still
    trace the same trade-off: the share of `a`'s front (rows with `val_acc`, `latency_ms`) that
    would stay on the resolved front if added to `b`'s, averaged with the same the other way."""
    def kept(x: pd.DataFrame, y: pd.DataFrame) -> float:
        if x.empty:
            return 1.0
        both = pd.concat([y, x], ignore_index=True)
        front = set(resolved_front_indices(both["val_acc"].to_numpy(float), both["latency_ms"].to_numpy(float), resolution))
        return float(np.mean([len(y) + k in front for k in range(len(x))]))
    return (kept(a, b) + kept(b, a)) / 2


def pairs(runs: list[dict], key: str) -> list[float]:
    return [agreement(a[key], b[key]) for a, b in itertools.combinations(runs, 2)]


def supernet_for(args: argparse.Namespace, data) -> HybridSupernet:
    if args.supernet:
        return load_supernet(args.supernet)
    torch.manual_seed(args.seed)
    supernet = HybridSupernet(get_space("tiny"))
    config = TrainConfig(epochs=args.epochs, num_random=0, seed=args.seed)
    summary = train_supernet(supernet, data, config, show_progress=False)
    save_supernet(args.out / "supernet", supernet, {"train": config.to_dict(), "data": data.describe(), "summary": summary})
    return supernet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--supernet", type=Path, help="a trained supernet's run folder (default: train one here)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the supernet trained here without --supernet")
    p.add_argument("--from-run", type=Path, help="take the set of subnets from this search's evaluations.csv")
    p.add_argument("--budget", type=int, default=200)
    p.add_argument("--max-latency-ms", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=2, help="passes (and with --searches, whole searches) to compare")
    p.add_argument("--rounds", type=int, default=REMEASURE.rounds, help="rounds of the re-measurement")
    p.add_argument("--searches", action="store_true", help="also compare --runs whole searches with the same seed")
    p.add_argument("--profile", type=Path, nargs="+", default=[],
                   help="with --searches: latency of the whole searches from this profile (several: search k from profile k)")
    p.add_argument("--out", type=Path, default=Path("runs/benchmarks/latency_agreement"))
    args = p.parse_args()
    if args.profile and not (args.searches and len(args.profile) in (1, args.runs)):
        p.error("--profile takes whole searches (--searches) and one profile, or one for each of --runs")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    data, limits = load_data("digits"), Limits(max_latency_ms=args.max_latency_ms)
    evaluator = Evaluator(supernet_for(args, data), data, LatencySettings())
    remeasure = Remeasure(rounds=args.rounds)
    if args.from_run:
        table = pd.read_csv(args.from_run / "evaluations.csv", dtype={"id": str})
    else:  # the set a search evaluates (its own re-measurement off: the passes below do it)
        start = time.perf_counter()
        (args.out / "set").mkdir(parents=True, exist_ok=True)
        run_search(evaluator, args.out / "set", budget=Budget(evaluations=args.budget), limits=limits,
                   strategy="predictor", seed=args.seed, show_progress=False, remeasure=Remeasure(rounds=0))
        print(f"set: {args.budget} subnets searched in {time.perf_counter() - start:.0f} s", flush=True)
        table = pd.read_csv(args.out / "set" / "evaluations.csv", dtype={"id": str})
    table = table.drop(columns=[c for c in REMEASURE_COLUMNS if c in table])  # the search's own re-measurement
    passes = []
    for k in range(args.runs):
        order = np.arange(len(table)) if k == 0 else np.random.default_rng(1000 + k).permutation(len(table))
        passes.append(one_pass(evaluator, table, order, limits, seed=args.seed + k, remeasure=remeasure))
        r = passes[-1]
        print(f"pass {k}: measured in {r['pass_seconds']:.1f} s; resolution {r['resolution']:.3f}; front without "
              f"{len(r['front_without'])}, with "
              f"{len(r['front_with'])}; re-measured {r['remeasured'] and r['remeasured']['subnets']} subnets in "
              f"{r['remeasured'] and r['remeasured']['seconds']:.1f} s; handed over {r.get('handed_over')}", flush=True)
    summary = {"subnets": len(table), "limit_ms": args.max_latency_ms, "rounds": args.rounds, "passes": passes,
               "front_agreement_without": pairs(passes, "front_without"),
               "front_agreement_with": pairs(passes, "front_with"),
               "front_agreement_with_plain": pairs(passes, "front_with_plain"),
               "front_agreement_with_uncorrected": pairs(passes, "front_with_uncorrected"),
               "same_choice_without": [a["chosen_without"] == b["chosen_without"] for a, b in itertools.combinations(passes, 2)],
               "same_choice_with": [a["chosen_with"] == b["chosen_with"] for a, b in itertools.combinations(passes, 2)]}
    if args.searches:
        searchers = [evaluator] * args.runs
        if args.profile:  # predicted latency, re-measured at the end when the profile is this machine's
            profiles = args.profile * args.runs if len(args.profile) == 1 else args.profile
            latencies = [search_latency(str(path), threads=1, batch=1) for path in profiles]
            searchers = [Evaluator(evaluator.supernet, data, x.settings, predictor=x.predictor,
                                   remeasure=x.mismatch is None) for x in latencies]
            summary["profiles"] = [x.record() | {"path": str(path)} for x, path in zip(latencies, profiles)]
        summary["searches"] = whole_searches(searchers, args, limits, remeasure)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    for key in ("front_agreement_without", "front_agreement_with", "front_agreement_with_plain",
                "front_agreement_with_uncorrected",
                "same_choice_without", "same_choice_with"):
        print(f"{key}: {summary[key]}")
    if args.searches:
        print("whole searches:", {k: v for k, v in summary["searches"].items() if k != "runs"})
        print("  (fronts of different evaluated sets share few members; front_consistency: the share of one search's "
              "front that stays on the other's resolved front)")


def whole_searches(evaluators: list[Evaluator], args: argparse.Namespace, limits: Limits, remeasure: Remeasure) -> dict:
    """One search with the same seed per evaluator; their fronts from the search's readings and re-measured."""
    runs, fronts = [], []
    for k, evaluator in enumerate(evaluators):
        out = args.out / f"search_{k}"
        out.mkdir(parents=True, exist_ok=True)
        summary = run_search(evaluator, out, budget=Budget(evaluations=args.budget), limits=limits, strategy="predictor",
                             seed=args.seed, show_progress=False, remeasure=remeasure)
        table = pd.read_csv(out / "evaluations.csv", dtype={"id": str})
        predicted = "latency_search_ms" not in table  # from a profile: no reading of the search's own
        search_only = table if predicted else with_readings(table, table["latency_search_ms"].tolist(), limits)
        resolution = summary["latency"].get("rounds", {}).get("resolution", 0.0)
        handed_over = summary["chosen"]["latency_handed_over"] or {}
        runs.append({"front_without": [str(search_only.at[i, "id"]) for i in feasible_front(search_only, "latency_ms")],
                     "front_with": [str(table.at[i, "id"]) for i in feasible_front(table, "latency_ms", resolution=resolution)],
                     "resolution": resolution, "evaluated": table["id"].tolist(),
                     "chosen_val_acc": summary["chosen"]["val_acc"],
                     "chosen": summary["chosen"]["id"], "search_seconds": summary["seconds"],
                     "remeasure_seconds": summary["latency"].get("rounds", {}).get("seconds"),
                     "handed_over_ms": handed_over.get("median_ms"), "meets_limit": handed_over.get("meets_limit")})
        rows = feasible_front(table, "latency_ms", resolution=resolution)
        if predicted and "latency_measured_ms" in table:  # the front measured here: how far off the profile is
            error = table.loc[rows, "latency_predicted_ms"] / table.loc[rows, "latency_measured_ms"] - 1
            runs[-1]["front_prediction_error"] = [float(e) for e in error]
        fronts.append((table.loc[rows, ["val_acc", "latency_ms"]], resolution))
    return {"runs": runs, "front_agreement_without": pairs(runs, "front_without"),
            "front_agreement_with": pairs(runs, "front_with"),
            "evaluated_overlap": pairs(runs, "evaluated"),
            "front_consistency": [consistency(a, b, max(ra, rb)) for (a, ra), (b, rb) in itertools.combinations(fronts, 2)],
            "chosen_val_acc": [r["chosen_val_acc"] for r in runs],
            "same_choice": [a["chosen"] == b["chosen"] for a, b in itertools.combinations(runs, 2)]}


if __name__ == "__main__":
    main()
