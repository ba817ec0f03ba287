"""`nas extract` and `nas finetune`: a searched subnet as a model folder, with its inherited
weights or finished (fine-tuned or trained from scratch), its costs and its preprocessing."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from nas.cli.checks import device_of, recorded_search
from nas.cli.config import finish_field
from nas.cli.parser import flag
from nas.cli.report import check_baselines, finishing_for, recorded_health
from nas.data.datasets import TaskData, load_data
from nas.errors import UserError, named
from nas.evaluation.accuracy import evaluate
from nas.finish.finetune import FinishConfig, choose_after_finishing, finish_subnet, finished_metrics
from nas.finish.package import DeployedModel, run_costs, save_model_folder
from nas.finish.qat import int8_handover
from nas.hardware.quantize import is_int8, recorded_precision
from nas.runs.files import SUPERNET_FILE, load_supernet, read_json
from nas.runs.lock import hold
from nas.search.loop import plain_value
from nas.search.ranking import search_ranking
from nas.search.records import read_evaluations
from search_spaces import HybridSupernet, SubnetModel


def _supernet_path(run: Path, config: dict) -> Path:
    """The search run's own supernet, or the one it reused."""
    local = run / SUPERNET_FILE
    return local if local.is_file() else Path(config["supernet"])


def _searched_run(run: Path, device: str) -> tuple[dict, pd.DataFrame, HybridSupernet, TaskData]:
    """A search run's recorded config, its evaluations, its supernet and its data."""
    config = recorded_search(run)
    table_path = run / "evaluations.csv"
    if not table_path.is_file():
        raise UserError(f"{run} is not a search run: {table_path} does not exist")
    supernet = load_supernet(_supernet_path(run, config), device)
    read_evaluations(table_path, supernet.space)  # checked like user input
    table = pd.read_csv(table_path, dtype={"id": str})
    data = load_data(config["data_spec"], dims=supernet.space.config.dims)
    return config, table, supernet, data


def _row(table: pd.DataFrame, arch_id: str, run: Path) -> pd.Series:
    rows = table[table["id"] == arch_id]
    if rows.empty:
        raise UserError(f"no subnet with id {arch_id!r} in {run / 'evaluations.csv'} ({len(table)} subnets evaluated)")
    return rows.iloc[0]


def _model_folder(out: Path | None, run: Path, arch_id: str, force: bool) -> Path:
    folder = out or run / "models" / arch_id
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise UserError(f"{'--out ' if out else ''}{folder} exists and is not a folder (nas never writes through links)")
    if folder.exists() and any(folder.iterdir()) and not force:
        raise UserError(f"{folder} already exists; pass --force to overwrite it")
    return folder


def _save(folder: Path, model: SubnetModel, data: TaskData, supernet: HybridSupernet, config: dict, row: pd.Series,
          metrics: dict, finish: FinishConfig | None = None, show_progress: bool = False) -> None:
    """Write `model` as a model folder; an int8 one quantized, after QAT as `finish` says when it was
    finished (`nas.finish.qat.int8_handover`)."""
    metrics = {k: plain_value(row[k]) for k in ("latency_ms", "flops", "params", "memory_bytes", "model_bytes")
               if k in row} | metrics
    metrics["cost_input_size"] = config["args"].get("seq_len") or supernet.spec.input_size  # what the costs are for
    metrics["precision"] = precision = recorded_precision(row.get("precision", "fp32"))
    deployed, int8, qat = DeployedModel.for_data(model, data), None, None
    if is_int8(precision):  # its costs are the int8 model's
        handover = int8_handover(deployed, data, finish, precision=precision, show_progress=show_progress)
        deployed, int8, qat = handover.model, handover.int8, handover.record
        metrics |= handover.metrics  # the QAT weights' float accuracy, when they are kept
    save_model_folder(folder, deployed, metrics=metrics, data=data.describe(), costs=run_costs(config, row, supernet.spec),
                      space=supernet.space.config.name, int8=int8, task=data, qat=qat)


def cmd_extract(args: argparse.Namespace) -> None:
    device = device_of(args.device)
    hold(args.run)  # its model folders are written into it
    config, table, supernet, data = _searched_run(args.run, device)
    row = _row(table, args.arch, args.run)
    folder = _model_folder(args.out, args.run, args.arch, args.force)
    arch = supernet.space.parse(row["arch"])
    metrics = {"val_acc": plain_value(row["val_acc"]), "test_acc": evaluate(supernet, data.test, arch, device=device)}
    _save(folder, supernet.extract(arch), data, supernet, config, row, metrics)
    print(f"subnet {arch.id} written to {folder} (inherited weights; test acc {metrics['test_acc']:.4f})")


def cmd_finetune(args: argparse.Namespace) -> None:
    device = device_of(args.device)
    if args.finalists < 1:
        raise UserError(f"--finalists must be >= 1, got {args.finalists}")
    hold(args.run)  # its model folders are written into it
    config, table, supernet, data = _searched_run(args.run, device)
    ranking = search_ranking(len(data.val), loss_recorded="val_loss" in table.columns)  # the search's
    if args.arch:
        ids = list(dict.fromkeys(args.arch))
    else:  # the search's choice, then the best others of the front
        pareto = pd.read_csv(args.run / "pareto.csv", dtype={"id": str}) if (args.run / "pareto.csv").is_file() else None
        if pareto is None or pareto.empty:
            raise UserError(f"{args.run} has no Pareto front (pareto.csv): name the subnets with --arch ID")
        chosen = read_json(args.run / "search.json", "search summary").get("chosen") or {}
        ranked = pareto.assign(rank=ranking.scores(pareto)).sort_values("rank", kind="stable")["id"].tolist()
        ids = list(dict.fromkeys([chosen["id"]] * ("id" in chosen) + ranked))[:args.finalists]
    if args.qat is not None and args.finish == "inherit":
        raise UserError("--qat has no effect with --finish inherit: a subnet handed over as extracted is not trained")
    with named(lambda field: flag(finish_field(field))):
        finish = FinishConfig(how=args.finish or FinishConfig().how, budget=args.finish_budget,
                              qat=args.qat or FinishConfig().qat, seed=config["args"].get("seed", 0), device=device)
    finish = finishing_for(finish, recorded_health(_supernet_path(args.run, config)), asked=args.finish is not None)
    rows = [_row(table, i, args.run) for i in ids]
    folders = [_model_folder(args.out / i if args.out else None, args.run, i, args.force) for i in ids]
    results = [finish_subnet(supernet, supernet.space.parse(row["arch"]), data, finish, show_progress=not args.quiet)
               for row in rows]
    best = choose_after_finishing(results, by=ranking.column)
    for k, (row, folder, result) in enumerate(zip(rows, folders, results)):
        r = result.record
        _save(folder, result.model.cpu(), data, supernet, config, row, finished_metrics(r),
              finish if r.how != "inherit" else None, show_progress=not args.quiet)
        print(f"subnet {r.id} ({r.how} in {r.seconds:.0f} s, {r.steps} steps): val acc {r.val_acc_before:.4f} -> "
              f"{r.val_acc_after:.4f}, test acc {r.test_acc_before:.4f} -> {r.test_acc_after:.4f} -> {folder}"
              + ("  [best by validation]" if k == best and len(results) > 1 else ""))
    check_baselines(data, results[best].record.test_acc_after, model=folders[best], search=None)  # the best by validation
