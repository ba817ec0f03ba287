"""`nas` command line: train a supernet, search it under hardware limits, extract subnets."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from nas import cluster
from nas.ablate.config import load_config
from nas.ablate.report import format_summary
from nas.ablate.run import run_ablation
from nas.cli.checks import RECORDED_INVOCATION, check_measuring, recorded_search, without_effect
from nas.cli.config import RUN_CONFIGS, RunConfig, SearchRunConfig, finish_field, parse_option
from nas.cli.failures import one_line, report_failure
from nas.cli.parser import build_parser, flag
from nas.cli.report import (
    Said,
    accuracy_text,
    final_line,
    record_in_search,
    recorded_health,
    say_problems,
    supernet_record,
)
from nas.cli.spaces import cmd_space, fitted_space
from nas.cluster.evaluate import RayPool
from nas.cluster.train import RAY_TRAIN_DIR, has_checkpoint, remove_checkpoints, train_distributed
from nas.data.datasets import DataError, TaskData, load_data
from nas.data.kind import data_kind
from nas.errors import FieldError, UserError, named
from nas.evaluation.accuracy import evaluate
from nas.evaluation.evaluator import Evaluator
from nas.finish.finetune import FinishConfig, choose_after_finishing, finish_subnet, finished_metrics
from nas.finish.package import DeployedModel, quantize_deployed, run_costs, save_model_folder
from nas.hardware.measure import describe_hardware
from nas.hardware.profile import ProfileSettings, build_profile
from nas.runs.files import (
    SUPERNET_FILE,
    load_supernet,
    package_versions,
    prepare_run_dir,
    read_json,
    save_supernet,
    write_json,
)
from nas.runs.interrupt import finish_on_interrupt
from nas.runs.lock import command_scope, hold
from nas.runs.resources import check_supernet_fits
from nas.search.loop import plain_value, read_evaluations, run_search
from nas.search.ranking import search_ranking
from nas.search.strategies import make_strategy
from nas.search.zero_shot import run_zero_shot
from nas.training.assess import assess_training
from nas.training.checkpoint import CHECKPOINT_FILE
from nas.training.config import TrainConfig
from nas.training.train import train_supernet
from predictors import LatencyPredictor
from search_spaces import ArchError, HybridSupernet, SearchSpace, SubnetModel, get_family, get_space
from search_spaces.arch import show
from search_spaces.presets import space_for

DEVICES = ("cpu", "cuda", "mps")


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(name).type
    except (RuntimeError, ValueError):
        kind = None
    if kind not in DEVICES:
        raise UserError(f"--device {name!r} is not a device nas runs on: auto, cpu, cuda, cuda:N or mps")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available on this machine")
    return name


DEFAULT_DATA = {2: "digits", 1: "mnist1d"}  # the built-in dataset of image and of sequence spaces


def _data_name(spec: str | None, dims: int) -> str:
    """--data, or the built-in dataset of the space's kind (dims 2: images, 1: sequences)."""
    return spec or DEFAULT_DATA[dims]


def _seq_len(value: int | None, space: SearchSpace) -> int | None:
    if value is not None and space.config.dims != 1:
        raise UserError(f"--seq-len applies to sequence spaces; space {space.config.name!r} takes images")
    if value is not None and value < 1:
        raise UserError(f"--seq-len must be a positive integer, got {value}")
    return value


def _out(args: argparse.Namespace) -> Path:
    return args.out or Path("runs") / f"{args.command}-{time.strftime('%Y%m%d-%H%M%S')}"


# ------------------------------------------------------------------------------------- the run config
PROFILE_FLAGS = {"batch": "--latency-batch", "input_size": "--seq-len"}  # ProfileSettings' fields named otherwise
RESUME_MAY_CHANGE = ("device", "ray", "ray_address", "workers", "data_workers", "stream_data")  # results do not depend on them


def _given(args: argparse.Namespace, cls: type[RunConfig]) -> dict[str, Any]:
    """The run-config fields set by flags given on this command line (the parser sets no defaults)."""
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    if "strategy_options" in given:
        pairs = [parse_option(text) for text in given["strategy_options"]]
        if len({key for key, _ in pairs}) != len(pairs):
            raise FieldError("strategy_options", f"gives an option twice: {given['strategy_options']}")
        given["strategy_options"] = dict(pairs)
    return given


def _merged(cls: type[RunConfig], given: dict[str, Any], base: dict[str, Any], source: Path | None) -> RunConfig:
    """The config of `base` (read from the file `source`) with the flags `given` over it. An error
    names a field as the flag that set it, or as the key of `source`."""
    values = {**base, **given}
    if values.get("zero_shot") is not None and "finish" not in values:
        values["finish"] = "scratch"  # a zero-shot search has no trained weights to fine-tune
    if "strategy_options" in base and "strategy_options" in given and isinstance(base["strategy_options"], dict):
        values["strategy_options"] = {**base["strategy_options"], **given["strategy_options"]}
    with named(lambda field: flag(field) if field.split(".")[0] in given or source is None else f"{source}: {field}"):
        return cls.from_dict(values)


def _run_config(args: argparse.Namespace) -> RunConfig:
    """The run config of `nas train` or `nas search`, merged once: the defaults, a --config file, the
    flags given; with --resume, the one recorded in --out, with the flags that may change."""
    cls = RUN_CONFIGS[args.command]
    with named(flag):
        given = _given(args, cls)
    if args.resume:
        return _resumed_config(args, cls, given)
    data = {} if args.config_file is None else read_json(args.config_file, "run config")
    if not isinstance(data, dict):
        raise UserError(f"--config {args.config_file} must hold a JSON object of settings, got {show(data)}")
    picked = _space_for_data(given, data)
    config = _merged(cls, given | picked, data, args.config_file)
    with named(lambda field: flag(field) if field in given else f"{args.config_file}: {field}"):
        without_effect(config, given.keys() | data.keys())
    return config


def _space_for_data(given: dict[str, Any], file: dict[str, Any]) -> dict[str, str]:
    """Without --space (or a supernet, which has one): {"space": the built-in space for the data's
    kind and size}, said in one line; {} when the data do not tell (loading them then says why)."""
    settings = {**file, **given}
    spec = settings.get("data")
    if "space" in settings or settings.get("supernet") is not None or not isinstance(spec, str):
        return {}
    kind = data_kind(spec)
    if kind is None:
        return {}
    space = space_for(kind.dims, kind.size)
    print(f"space {space}: the built-in space for {kind.describe()} (--space to choose another)", flush=True)
    return {"space": space}


def _resumed_config(args: argparse.Namespace, cls: type[RunConfig], given: dict[str, Any]) -> RunConfig:
    """The config recorded in --out; only --device, --quiet and the Ray flags may be given with it."""
    command = args.command
    if args.out is None:
        raise UserError(f"--resume needs --out RUN, the folder of the interrupted {command}")
    changed = [flag(k) for k in given if k not in RESUME_MAY_CHANGE]
    changed += [name for name, value in (("--config", args.config_file), ("--force", args.force)) if value]
    if changed:
        raise UserError(f"--resume continues with the settings recorded in {args.out / 'config.json'}; only --device, "
                        f"--quiet, --ray, --ray-address, --workers, --data-workers and --stream-data may be given with it (got {', '.join(sorted(changed))})")
    if command == "train" and (args.out / SUPERNET_FILE).is_file() and not (args.out / CHECKPOINT_FILE).is_file():
        raise UserError(f"{args.out} holds a finished supernet ({SUPERNET_FILE}); nothing to resume")
    if command == "search" and (args.out / "search.json").is_file():
        raise UserError(f"{args.out} holds a finished search (search.json); nothing to resume")
    path = args.out / "config.json"
    recorded = read_json(path, "run config")
    if not isinstance(recorded, dict) or recorded.get("command") != command or not isinstance(recorded.get("args"), dict):
        raise UserError(f"{path} is not the config of a `nas {command}` run")
    base = {k: v for k, v in recorded["args"].items() if k not in RECORDED_INVOCATION}
    base["device"] = "auto"  # this machine's, unless --device is given
    if "data_spec" in recorded:
        base["data"] = recorded["data_spec"]  # absolute when it is a path
    return _merged(cls, given, base, path)


# ------------------------------------------------------------------------------------- the commands
def _new_supernet(config: RunConfig, data: TaskData) -> HybridSupernet:
    """An untrained supernet of the config's space fitted to the data, seeded."""
    space = get_space(config.space, data.shape)
    check_supernet_fits(space, batch=config.batch_size, optimizer=config.optimizer,
                        what=f"in a training step at --batch-size {config.batch_size}")
    torch.manual_seed(config.seed)
    return HybridSupernet(space)


def _train(supernet: HybridSupernet, config: TrainConfig, out: Path, data, *, show_progress: bool,
           resume: bool = False, workers: int | None = None, standalone: bool = True) -> tuple[dict, bool]:
    """Train, check (`assess_training`: the summary's `health`; each problem said on stderr) and
    write the supernet; also says whether Ctrl-C came during the last step or the final evaluation
    (training was finished anyway: a search should stop before it starts)."""
    checkpoint = out / CHECKPOINT_FILE
    stopped, said = False, Said()  # says the problems found during training, and keeps them
    if workers:
        if show_progress:
            print(f"training the supernet on {workers} Ray Train workers (no progress display; a checkpoint after "
                  f"every epoch in {out / RAY_TRAIN_DIR})", file=sys.stderr)
        summary = train_distributed(supernet, data, config, workers=workers, run=out, resume=resume)
    else:
        with finish_on_interrupt("the training step under way") as stop:
            summary = train_supernet(supernet, data, config, checkpoint=checkpoint, resume=resume,
                                     show_progress=show_progress, stop=stop, on_problem=said)
        stopped = stop()
    summary["health"] = assess_training(supernet, data, config, summary, standalone=standalone,
                                        show_progress=show_progress)
    say_problems(summary["health"], said=said.problems)
    save_supernet(out, supernet, {"train": config.to_dict(), "data": data.describe(), "summary": summary})
    checkpoint.unlink(missing_ok=True)  # the finished supernet supersedes the checkpoints
    remove_checkpoints(out)
    return summary, stopped


def _set_threads(threads: int | None) -> None:
    """--train-threads: torch's CPU threads for training and accuracy evaluation (latency is measured
    with its own --threads)."""
    if threads is not None:
        torch.set_num_threads(threads)


def _can_resume_training(out: Path) -> bool:
    return (out / CHECKPOINT_FILE).is_file() or has_checkpoint(out)


def _ray_workers(config: RunConfig, device: str) -> int | None:
    """With --ray, --ray-address or --workers: connects to Ray and returns the number of workers
    (default: the cluster's CPUs, or its GPUs on CUDA); None when the command runs in this process
    alone (Ray is then never imported)."""
    if not (config.ray or config.ray_address or config.workers is not None):
        return None
    cluster.connect(config.ray_address)
    if config.workers is not None:
        return config.workers
    on_gpu = device.startswith("cuda")
    workers = cluster.cluster_gpus() if on_gpu else cluster.cluster_cpus()
    if workers < 1:
        raise UserError(f"the Ray cluster offers no {'GPU' if on_gpu else 'CPU'}")
    return workers


def _data_spec(spec: str) -> str:
    """A data path made absolute, so that `nas extract` works from any folder."""
    return str(Path(spec).resolve()) if Path(spec).exists() else spec


def _check_strategy(config: SearchRunConfig, space: SearchSpace) -> None:
    """The strategy's constructor checks its options and predictor family, before anything is trained."""
    with named(lambda field: flag(field if field == "predictor" else f"strategy_options.{field}")):
        make_strategy(config.strategy, space, seed=config.seed, predictor=config.predictor,
                      options=dict(config.strategy_options))


def cmd_train(args: argparse.Namespace, config: RunConfig) -> None:
    device = _device(config.device)
    _set_threads(config.train_threads)
    train = config.train_config(device)
    dims = get_family(config.space).dims
    data_name = _data_name(config.data, dims)
    config = replace(config, data=data_name)  # recorded in the run's config.json
    data = load_data(data_name, dims=dims, stream=config.stream_data or None, workers=config.data_workers)
    supernet = _new_supernet(config, data)  # fails early when the space's definition contradicts the data
    workers = _ray_workers(config, device)
    if args.resume:
        out = args.out
        if not _can_resume_training(out):
            raise UserError(f"{out} has no {CHECKPOINT_FILE}: training stopped before its first epoch ended; "
                            "start it again without --resume (pass --force)")
    else:
        out = args.out = prepare_run_dir(_out(args), force=args.force)  # args.out: for the resume hint on Ctrl-C
        write_json(out / "config.json", {"command": "train", "args": config.to_dict(), "data_spec": _data_spec(data_name),
                                         "space": supernet.space.config.to_dict(),  # as fitted to the data
                                         "data": data.describe(), "versions": package_versions(),
                                         "hardware": describe_hardware(device)})
    summary, _ = _train(supernet, train, out, data, show_progress=not args.quiet, resume=args.resume,
                        workers=workers, standalone=not config.no_standalone_check)  # finished
    health = summary["health"]
    print(f"supernet written to {out / SUPERNET_FILE}: "
          + accuracy_text(health, summary["val_acc_largest"], summary["val_acc_smallest"]))


def cmd_search(args: argparse.Namespace, config: SearchRunConfig) -> None:
    device = _device(config.device)
    _set_threads(config.train_threads)
    budget, limits = config.search_budget(), config.limits()
    source = config.latency_source()
    latency = source.settings
    trained_here = args.resume and (args.out / SUPERNET_FILE).is_file()  # the interrupted run trained it
    loaded = None  # zero-shot: a supernet never trained, only its spec, shapes and costs serve (nas.search.zero_shot)
    if config.zero_shot is None and (config.supernet or trained_here):
        loaded = load_supernet(config.supernet or args.out, device)
    dims = loaded.space.config.dims if loaded is not None else get_family(config.space).dims
    data_name = _data_name(config.data, dims)
    config = replace(config, data=data_name)  # recorded in the run's config.json
    data = load_data(data_name, dims=dims, stream=config.stream_data or None, workers=config.data_workers)
    supernet = loaded if loaded is not None else _new_supernet(config, data)
    check_measuring(supernet.space, config.threads if source.profile is None else None, latency.batch_size)
    train = None if loaded is not None or config.zero_shot is not None else config.train_config(device)
    evaluator = Evaluator(supernet, data, latency, device=device, predictor=source.predictor,
                          remeasure=source.mismatch is None, cost_size=_seq_len(config.seq_len, supernet.space),
                          precision=config.precision, limits=limits, objective=config.objective)
    with named(flag):
        evaluator.check_feasible(limits)  # weights play no part: fail before training
    if config.zero_shot is None:
        _check_strategy(config, supernet.space)
    workers = _ray_workers(config, device)
    if args.resume:
        out = args.out
    else:
        out = args.out = prepare_run_dir(_out(args), force=args.force)  # args.out: for the resume hint on Ctrl-C
        config = replace(config, target=source.profile or config.target,  # recorded absolute: a resume may
                         supernet=config.supernet and str(Path(config.supernet).resolve()))  # start elsewhere
        write_json(out / "config.json", {
            "command": "search", "args": config.to_dict(), "budget": budget.describe(), "limits": vars(limits),
            "latency": source.record(), "data_spec": _data_spec(data_name), "data": data.describe(),
            "versions": package_versions(), "hardware": describe_hardware(latency.device),
            "supernet": None if config.zero_shot else str(Path(config.supernet or out / SUPERNET_FILE).resolve()),
            "space": supernet.space.config.to_dict(),  # as fitted to the data
        })
    if config.zero_shot is not None:
        _zero_shot(evaluator, out, config, device, show_progress=not args.quiet)
        return
    if train is not None:
        trained, stopped = _train(supernet, train, out, data, show_progress=not args.quiet,
                                  resume=args.resume and _can_resume_training(out), workers=workers,
                                  standalone=not config.no_standalone_check)
        if stopped:  # the supernet is written: a resume goes straight to the search
            raise KeyboardInterrupt
        health = trained["health"]
    else:
        health = recorded_health(config.supernet or out)
        say_problems(health)
    record = supernet_record(supernet, data, Path(config.supernet or out / SUPERNET_FILE), health, device)
    print("supernet: " + accuracy_text(health, record["val_acc_largest"], record["val_acc_smallest"]))
    try:
        with RayPool(evaluator, workers=workers) if workers else nullcontext() as pool:
            summary = run_search(evaluator, out, budget=budget, limits=limits, strategy=config.strategy,
                                 seed=config.seed, objective=config.objective, show_progress=not args.quiet,
                                 check_limits=False, resume=args.resume, predictor=config.predictor,
                                 strategy_options=dict(config.strategy_options), pool=pool,
                                 finish=config.finish_config(device), finalists=config.finalists)
    finally:
        record_in_search(out, record)  # also when no subnet met the limits
    c = summary["chosen"]
    resolution = summary["latency"].get("rounds", {}).get("resolution")
    resolved = f"; latencies within {resolution:.1%} are ties" if resolution else ""
    print(f"{summary['evaluations']} subnets evaluated in {summary['seconds']:.0f} s, {summary['feasible']} within the "
          f"limits, {summary['pareto_size']} on the Pareto front (hypervolume {summary['hypervolume']:.4f}{resolved})")
    latency_text = "not measured" if c["latency_ms"] is None else f"{c['latency_ms']:.3f} ms"
    if source.predictor is not None and c["latency_ms"] is not None:
        measured = c["latency_measured_ms"]
        latency_text += " predicted" + (f", {measured:.3f} ms measured" if measured is not None else
                                        f" (not measured: {source.mismatch})")
    check = c["latency_handed_over"]
    if check is not None:
        latency_text += f" ({check['median_ms']:.3f} ms re-measured as handed over)"
    finished = ""
    if "finishing" in c:
        before, how = c["before_finishing"], c["finishing"]
        finished = (f" ({how['how']} in {how['seconds']:.0f} s; inherited weights: val acc {before['val_acc']:.4f}, "
                    f"test acc {before['test_acc']:.4f})")
    print(f"chosen subnet {c['id']}{finished}: val acc {c['val_acc']:.4f}, test acc {c['test_acc']:.4f}, latency "
          f"{latency_text}, {c['params']:,} params, {c['flops']:,} MACs, {c['memory_bytes'] / 2**20:.2f} MiB "
          f"-> {out / c['path']}")
    for kind, note in (("note", summary["latency"]["note"]), ("warning", check and check["note"])):
        if note:
            print(f"nas: {kind}: {note}", file=sys.stderr)

    if (line := final_line(health)) is not None:
        print(line)


def _zero_shot(evaluator: Evaluator, out: Path, config: SearchRunConfig, device: str, *, show_progress: bool) -> None:
    assert config.zero_shot is not None  # a zero-shot run's config
    summary = run_zero_shot(evaluator, out, budget=config.search_budget(), limits=config.limits(),
                            proxy=config.zero_shot, seed=config.seed, finish=config.finish_config(device),
                            objective=config.objective, finalists=config.finalists, show_progress=show_progress)
    c = summary["chosen"]
    latency = "not measured" if c["latency_ms"] is None else f"{c['latency_ms']:.3f} ms"
    print(f"{summary['candidates']} subnets scored by {summary['proxy']} in {summary['scoring_seconds']:.0f} s (no "
          f"supernet trained), {len(summary['finalists'])} trained from scratch")
    print(f"chosen subnet {c['id']} ({summary['proxy']} rank {c['rank']}; trained in {c['finishing']['seconds']:.0f} s): "
          f"val acc {c['val_acc']:.4f}, test acc {c['test_acc']:.4f}, latency {latency}, {c['params']:,} params, "
          f"{c['flops']:,} MACs, {c['memory_bytes'] / 2**20:.2f} MiB -> {out / c['path']}")


def cmd_profile(args: argparse.Namespace) -> None:
    space = fitted_space(args.space, args.data)
    with named(lambda field: PROFILE_FLAGS.get(field, flag(field))):
        settings = ProfileSettings(target=args.target, threads=args.threads, batch=args.latency_batch,
                                   subnets=args.subnets, seed=args.seed, passes=args.passes, max_units=args.max_units,
                                   max_seconds=args.max_seconds, input_size=_seq_len(args.seq_len, space) or 0,
                                   precision=args.precision)
    check_measuring(space, args.threads, args.latency_batch)
    out = args.out or Path("runs") / f"profile-{space.config.name}-{args.target}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    if out.exists() and not args.force:
        raise UserError(f"--out {out} already exists; pass --force to overwrite it or choose another --out")
    if out.parent.is_dir():
        hold(out)  # one `nas profile` writes the file
    profile = build_profile(space, settings, show_progress=not args.quiet)
    write_json(out, profile)
    predictor = LatencyPredictor.fit(profile)
    units = profile["units"]
    error = predictor.cv_error.get(predictor.model)
    print(f"profile written to {out}: {units['count']} units ({units['mode']} of the space's {units['space_units']}) "
          f"and {len(profile['subnets'])} subnets in {profile['seconds']:.0f} s; predictor {predictor.model}"
          + (f", cross-validated error {error:.1%}" if error is not None else ""))


def _searched_run(run: Path, device: str) -> tuple[dict, pd.DataFrame, HybridSupernet, TaskData]:
    """A search run's recorded config, its evaluations, its supernet and its data."""
    config = recorded_search(run)
    table_path = run / "evaluations.csv"
    if not table_path.is_file():
        raise UserError(f"{run} is not a search run: {table_path} does not exist")
    local = run / SUPERNET_FILE  # the run's own supernet, or the one it reused
    supernet = load_supernet(local if local.is_file() else config["supernet"], device)
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
          metrics: dict) -> None:
    metrics = {k: plain_value(row[k]) for k in ("latency_ms", "flops", "params", "memory_bytes", "model_bytes")
               if k in row} | metrics
    metrics["cost_input_size"] = config["args"].get("seq_len") or supernet.spec.input_size  # what the costs are for
    metrics["precision"] = precision = "int8" if row.get("precision") == "int8" else "fp32"
    deployed = DeployedModel.for_data(model, data)
    int8 = quantize_deployed(deployed, data) if precision == "int8" else None  # its costs are the int8 model's
    save_model_folder(folder, deployed, metrics=metrics, data=data.describe(), costs=run_costs(config, row, supernet.spec),
                      space=supernet.space.config.name, int8=int8, task=data)


def cmd_extract(args: argparse.Namespace) -> None:
    device = _device(args.device)
    hold(args.run)  # its model folders are written into it
    config, table, supernet, data = _searched_run(args.run, device)
    row = _row(table, args.arch, args.run)
    folder = _model_folder(args.out, args.run, args.arch, args.force)
    arch = supernet.space.parse(row["arch"])
    metrics = {"val_acc": plain_value(row["val_acc"]), "test_acc": evaluate(supernet, data.test, arch, device=device)}
    _save(folder, supernet.extract(arch), data, supernet, config, row, metrics)
    print(f"subnet {arch.id} written to {folder} (inherited weights; test acc {metrics['test_acc']:.4f})")


def cmd_finetune(args: argparse.Namespace) -> None:
    device = _device(args.device)
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
    with named(lambda field: flag(finish_field(field))):
        finish = FinishConfig(how=args.finish, budget=args.finish_budget, seed=config["args"].get("seed", 0),
                              device=device)
    rows = [_row(table, i, args.run) for i in ids]
    folders = [_model_folder(args.out / i if args.out else None, args.run, i, args.force) for i in ids]
    results = [finish_subnet(supernet, supernet.space.parse(row["arch"]), data, finish, show_progress=not args.quiet)
               for row in rows]
    best = choose_after_finishing(results, by=ranking.column)
    for k, (row, folder, result) in enumerate(zip(rows, folders, results)):
        r = result.record
        _save(folder, result.model.cpu(), data, supernet, config, row, finished_metrics(r))
        print(f"subnet {r.id} ({r.how} in {r.seconds:.0f} s, {r.steps} steps): val acc {r.val_acc_before:.4f} -> "
              f"{r.val_acc_after:.4f}, test acc {r.test_acc_before:.4f} -> {r.test_acc_after:.4f} -> {folder}"
              + ("  [best by validation]" if k == best and len(results) > 1 else ""))


def cmd_ablate(args: argparse.Namespace) -> None:
    config = load_config(args.config)
    out = args.out or Path("runs") / config.name
    args.out = out  # for the resume hint on Ctrl-C
    summary = run_ablation(config, out, resume=args.resume, address=args.ray_address, show_progress=not args.quiet)
    print(f"{int(summary['seeds'].sum())} search trials; results in {out / 'results.csv'}, mean and std over seeds in "
          f"{out / 'summary.csv'}, plots hypervolume.png and best_val_acc.png beside them")
    print(format_summary(summary))


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {"profile": cmd_profile, "extract": cmd_extract,
                                                             "export": cmd_extract, "finetune": cmd_finetune,
                                                             "ablate": cmd_ablate, "space": cmd_space}
RUNS: dict[str, Callable[[argparse.Namespace, Any], None]] = {"train": cmd_train, "search": cmd_search}


def _resume_hint(args: argparse.Namespace) -> str:
    """How to continue the run that stopped (Ctrl-C, a full disk ...), when it can be."""
    if args.command in ("train", "search") and args.out and (args.out / "config.json").is_file():
        return f"; resume with: nas {args.command} --out {args.out} --resume"
    if args.command == "ablate" and args.out:
        return f"; finished trials are kept; continue with: nas ablate {args.config} --out {args.out} --resume"
    return ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        with command_scope(" ".join(["nas", *argv])):  # the run folders it locks, until it ends
            if args.command in RUNS:
                if args.resume and args.out is not None:
                    hold(args.out)  # one writer: before anything in the run is read or written
                RUNS[args.command](args, _run_config(args))
            else:
                COMMANDS[args.command](args)
    except (UserError, DataError, ArchError) as e:
        print(f"nas: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nas: interrupted; files written so far are kept{_resume_hint(args)}", file=sys.stderr)
        return 130
    except Exception as e:  # the OS, memory, torch, a damaged file: one line (a bug: exit 1)
        hint = _resume_hint(args)
        return report_failure(e, debug=args.debug, hint=hint and f"; files written so far are kept{hint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
