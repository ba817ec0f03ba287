"""`nas` command line: `nas train`, `nas search`, `nas profile` and `nas ablate`, and the dispatch of every
command (`nas extract` and `nas finetune`: `nas.cli.models`; the run config: `nas.cli.run_config`)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from nas import cluster
from nas.ablate.config import load_config
from nas.ablate.report import format_summary
from nas.ablate.run import run_ablation
from nas.cli.checks import check_measuring, device_of
from nas.cli.config import RunConfig, SearchRunConfig
from nas.cli.failures import one_line, report_failure
from nas.cli.models import cmd_extract, cmd_finetune
from nas.cli.parser import build_parser, flag
from nas.cli.report import (
    Said,
    accuracy_text,
    check_baselines,
    final_line,
    finishing_for,
    record_in_search,
    recorded_health,
    say_problems,
    supernet_record,
    weights_text,
)
from nas.cli.run_config import run_config
from nas.cli.spaces import cmd_space, fitted_space
from nas.cluster.evaluate import RayPool
from nas.cluster.train import RAY_TRAIN_DIR, has_checkpoint, remove_checkpoints, train_distributed
from nas.data.datasets import DataError, TaskData, load_data
from nas.errors import UserError, named
from nas.evaluation.evaluator import Evaluator
from nas.hardware.measure import describe_hardware
from nas.hardware.profile import ProfileSettings, build_profile
from nas.runs.files import (
    SUPERNET_FILE,
    load_supernet,
    package_versions,
    prepare_run_dir,
    save_supernet,
    write_json,
)
from nas.runs.interrupt import finish_on_interrupt
from nas.runs.lock import command_scope, hold
from nas.runs.resources import check_supernet_fits
from nas.search.loop import run_search
from nas.search.strategies import make_strategy
from nas.search.zero_shot import run_zero_shot
from nas.training.assess import assess_training
from nas.training.checkpoint import CHECKPOINT_FILE
from nas.training.config import TrainConfig
from nas.training.train import train_supernet
from predictors import LatencyPredictor
from search_spaces import ArchError, HybridSupernet, SearchSpace, get_family, get_space

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


PROFILE_FLAGS = {"batch": "--latency-batch", "input_size": "--seq-len"}  # ProfileSettings' fields named otherwise


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
    device = device_of(config.device)
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
    device = device_of(config.device)
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
    finish = finishing_for(config.finish_config(device), health)
    try:
        with RayPool(evaluator, workers=workers) if workers else nullcontext() as pool:
            summary = run_search(evaluator, out, budget=budget, limits=limits, strategy=config.strategy,
                                 seed=config.seed, objective=config.objective, show_progress=not args.quiet,
                                 check_limits=False, resume=args.resume, predictor=config.predictor,
                                 strategy_options=dict(config.strategy_options), pool=pool,
                                 finish=finish, finalists=config.finalists)
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
          f"{latency_text}, {c['params']:,} params, {c['flops']:,} MACs, {c['memory_bytes'] / 2**20:.2f} MiB peak"
          f"{weights_text(c)} -> {out / c['path']}")
    for kind, note in (("note", summary["latency"]["note"]), ("warning", check and check["note"])):
        if note:
            print(f"nas: {kind}: {note}", file=sys.stderr)
    check_baselines(data, c["test_acc"], model=out / c["path"], search=out)

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
          f"{c['flops']:,} MACs, {c['memory_bytes'] / 2**20:.2f} MiB peak{weights_text(c)} -> {out / c['path']}")
    check_baselines(evaluator.data, c["test_acc"], model=out / c["path"], search=out)


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
                RUNS[args.command](args, run_config(args))
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
