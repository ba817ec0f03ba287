"""Zero-shot search: subnets ranked by a training-free proxy; no supernet is trained.

1. Draws `budget` distinct subnets (a count, or as many as a duration allows): the smallest, then
   uniform draws, each redrawn (boundedly) until it meets the limits that need no measurement:
   parameters, FLOPs, memory, and latency when it is predicted from a profile.
2. Scores each by the proxy (`predictors.proxies`) at its initialisation on a batch of the
   training split (`Evaluator.proxies`), the same batch and initialisation seed for all.
3. Walks them from the best score down, measuring latency where a limit or the objective needs
   it, until `finalists` of them meet every limit.
4. Trains those from scratch (`nas.finish`, `how="scratch"`: the default recipe and budget) and
   hands over the best by validation accuracy as a model folder.

As in the zero-cost NAS papers (Mellor et al., 2021; Abdelfattah et al., 2021), the proxies stand
in for the supernet; whether one ranks better than the parameter count is measured in
docs/benchmarks.md ("Training-free proxies"). Writes `candidates.csv` (every subnet scored, its
proxy, costs, and for the finalists their accuracy after training), `search.json` and `models/<id>/`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from nas.errors import UserError, draw_bounded, retries_exhausted
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import OBJECTIVES, Limits
from nas.finish.finetune import FinishConfig, choose_after_finishing, finish_subnet
from nas.finish.package import DeployedModel, evaluator_costs, save_model_folder
from nas.runs.files import write_json, write_text
from nas.runs.interrupt import finish_on_interrupt
from nas.runs.progress import progress_bar
from nas.search.loop import MAX_REPEATS, Budget, plain_value
from nas.search.strategies.base import MAX_REDRAWS
from search_spaces import Arch

COLUMNS = ["index", "id", "proxy", "rank", "latency_ms", "latency_iqr_ms", "latency_predicted_ms", "latency_measured_ms",
           "flops", "params", "memory_bytes", "model_bytes", "feasible", "violation", "val_acc_finished", "test_acc_finished",
           "finish_seconds", "seconds", "arch"]


def run_zero_shot(evaluator: Evaluator, out: Path, *, budget: Budget, limits: Limits, proxy: str, seed: int,
                  finish: FinishConfig, objective: str = "latency", finalists: int = 1,
                  show_progress: bool = True) -> dict:
    """The zero-shot search of the module docstring; returns `search.json`'s summary. `finish`
    must train from scratch (there are no trained weights to inherit)."""
    if finish.how != "scratch":
        raise UserError(f"a zero-shot search finishes its subnets from scratch, not with {finish.how!r}")
    start = time.perf_counter()
    rows = _score_candidates(evaluator, budget, limits, proxy, seed, show_progress)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["rank"] = table["proxy"].rank(ascending=False, method="first").astype(int)
    need_latency = OBJECTIVES[objective] == "latency_ms" or limits.max_latency_ms is not None
    chosen = _feasible_best(evaluator, table, limits, finalists, need_latency)
    scored_seconds = time.perf_counter() - start
    write_text(out / "candidates.csv", table.to_csv(index=False))
    summary = {"strategy": "zero-shot", "proxy": proxy, "budget": budget.describe(), "candidates": len(table),
               "feasible_checked": int((table["feasible"] == True).sum()),  # noqa: E712  (True, False or None)
               "limits": dict(vars(limits)), "scoring_seconds": scored_seconds, "chosen": None, "finalists": []}
    if not chosen:
        write_json(out / "search.json", summary)
        raise UserError(f"none of the {len(table)} subnets scored met the limits; they are in "
                        f"{out / 'candidates.csv'}: loosen a limit or raise --budget")
    config = replace(finish, device=evaluator.device)
    results = [finish_subnet(evaluator.supernet, Arch.from_json(table.at[i, "arch"]), evaluator.data, config,
                             show_progress=show_progress) for i in chosen]
    for i, result in zip(chosen, results):
        r = result.record
        table.loc[i, ["val_acc_finished", "test_acc_finished", "finish_seconds"]] = \
            [r.val_acc_after, r.test_acc_after, r.seconds]
    write_text(out / "candidates.csv", table.to_csv(index=False))
    best = choose_after_finishing(results)
    row, record = table.loc[chosen[best]], results[best].record
    info = {k: plain_value(row[k]) for k in ("latency_ms", "latency_predicted_ms", "latency_measured_ms", "flops",
                                             "params", "memory_bytes", "model_bytes")}
    info |= {"val_acc": record.val_acc_after, "test_acc": record.test_acc_after,
             "finishing": {k: v for k, v in record.to_dict().items() if not k.endswith(("_before", "_after"))},
             "cost_input_size": evaluator.cost_size or evaluator.supernet.spec.input_size}
    model = DeployedModel.for_data(results[best].model.cpu(), evaluator.data)
    arch = Arch.from_json(row["arch"])
    folder = save_model_folder(out / "models" / arch.id, model, metrics=info, costs=evaluator_costs(evaluator, row),
                               data=evaluator.data.describe(), space=evaluator.supernet.space.config.name)
    summary["finalists"] = [{"id": table.at[i, "id"], "proxy": float(table.at[i, "proxy"]),
                             "rank": int(table.at[i, "rank"]), "val_acc": r.record.val_acc_after,
                             "test_acc": r.record.test_acc_after} for i, r in zip(chosen, results)]
    summary["chosen"] = {"id": arch.id, "path": str(folder.relative_to(out)), "proxy": float(row["proxy"]),
                         "rank": int(row["rank"]), **info}
    summary["seconds"] = time.perf_counter() - start
    write_json(out / "search.json", summary)
    return summary


def _score_candidates(evaluator: Evaluator, budget: Budget, limits: Limits, proxy: str, seed: int,
                      show_progress: bool) -> list[dict]:
    """Step 1 and 2: the rows of candidates.csv, scored, in the order drawn."""
    space, rng = evaluator.supernet.space, np.random.default_rng(seed)

    def gap(arch: Arch) -> float:  # the limits that need no measurement
        costs = evaluator.analytic_costs(arch)
        if evaluator.predictor is not None:
            costs["latency_ms"] = evaluator.predict_latency(arch)
        return limits.violation(costs)

    def draw() -> Arch:
        arch, _ = draw_bounded(lambda: space.sample(rng), gap, tries=1 + MAX_REDRAWS, what="a zero-shot candidate",
                               constraint="met the limits computed without measuring",
                               fallback="it is scored anyway and will not be chosen")
        return arch

    rows: list[dict] = []
    seen: set[Arch] = set()
    start, repeats, total = time.perf_counter(), 0, budget.evaluations or budget.seconds
    with finish_on_interrupt("the subnet being scored") as interrupted, \
            progress_bar(total, f"scoring subnets ({proxy})", enabled=show_progress) as bar:
        while not interrupted() and repeats < MAX_REPEATS:
            elapsed = time.perf_counter() - start
            if len(rows) >= (budget.evaluations or np.inf) or (budget.seconds and elapsed >= budget.seconds):
                break
            arch = space.smallest() if not rows and not seen else draw()
            if arch in seen:
                repeats += 1
                continue
            seen.add(arch)
            repeats, t0 = 0, time.perf_counter()
            value = float(evaluator.proxies([arch], [proxy], seed=seed)[0, 0])
            costs = evaluator.analytic_costs(arch) | ({"latency_ms": evaluator.predict_latency(arch)}
                                                      if evaluator.predictor is not None else {})
            rows.append({"index": len(rows), "id": arch.id, "proxy": value, **costs,
                         "latency_predicted_ms": costs.get("latency_ms"), "violation": gap(arch),
                         "seconds": time.perf_counter() - t0, "arch": arch.to_json()})
            bar.update(f"best {proxy} {max(r['proxy'] for r in rows):.4g}",
                       advance=1 if budget.evaluations else time.perf_counter() - start - elapsed)
    if interrupted():
        raise KeyboardInterrupt
    if repeats >= MAX_REPEATS:
        retries_exhausted("a zero-shot candidate", MAX_REPEATS, "was a subnet not scored yet",
                          fallback=f"scoring stops after {len(rows)} subnets (the space may be exhausted)")
    return rows


def _feasible_best(evaluator: Evaluator, table: pd.DataFrame, limits: Limits, finalists: int,
                   need_latency: bool) -> list[int]:
    """Step 3: the rows of the `finalists` best-scored subnets that meet every limit, measuring
    latency (in `table`) on the way down when it is needed and not predicted."""
    table["feasible"] = None
    chosen: list[int] = []
    for i in table.sort_values("rank").index:
        if table.at[i, "violation"] > 0:
            table.at[i, "feasible"] = False
            continue
        if need_latency and evaluator.predictor is None:
            costs = evaluator.costs(Arch.from_json(table.at[i, "arch"]), latency=True)
            for key in ("latency_ms", "latency_iqr_ms", "latency_measured_ms"):
                table.at[i, key] = costs[key]
            table.at[i, "violation"] = limits.violation(costs)
        table.at[i, "feasible"] = bool(table.at[i, "violation"] == 0)
        if table.at[i, "feasible"]:
            chosen.append(i)
            if len(chosen) == finalists:
                break
    return chosen
