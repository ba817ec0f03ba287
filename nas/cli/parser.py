"""The `nas` command line's arguments: one parser with a sub-command each (see `nas.cli` for what they run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nas.cli.config import SearchRunConfig
from nas.data.datasets import list_datasets
from nas.evaluation.limits import OBJECTIVES
from nas.finish.finetune import HOW, QAT, FinishConfig
from nas.hardware.profile import ProfileSettings
from nas.hardware.quantize import PRECISION_MODES
from nas.hardware.targets import TARGETS
from nas.search.strategies import list_strategies, strategies_with_predictor, strategy_options
from nas.training.config import DEFAULT_EPOCHS, MIN_STEPS
from nas.training.sampling import SAMPLING_RULES
from predictors.accuracy import list_predictors
from predictors.proxies import list_proxies
from search_spaces import list_spaces

DEFAULT = SearchRunConfig()
DEFAULT_PROFILE = ProfileSettings()
FLAG_NAMES = {"strategy_options": "--strategy-option"}  # run-config fields whose flag is not their name with dashes


def flag(field: str) -> str:
    """The flag that sets run-config field `field` (`--max-flops` sets max_flops), or a part of it
    (`strategy_options.initial`: `--strategy-option initial`); the CLI names the fields of the
    errors it prints by it."""
    field, dot, part = field.partition(".")
    return FLAG_NAMES.get(field, "--" + field.replace("_", "-")) + (f" {part}" if dot else "")


def _setting(p: argparse.ArgumentParser | argparse._ArgumentGroup, field: str, **kwargs) -> None:
    """A flag that sets a field of the run config; given or not is what counts (no default here:
    the defaults are the config's, and a --config file's values yield only to flags given)."""
    p.add_argument(flag(field), dest=field, default=argparse.SUPPRESS, **kwargs)


def _add_common(p: argparse.ArgumentParser) -> None:
    _setting(p, "data",
             help=f"dataset: a built-in name {list_datasets()}, a .npz file (arrays x, y; images [N, H, W(, C)] or "
                  "sequences [N, T(, C)] as the space takes), a folder of .npy files (x.npy, y.npy, ...; memory-mapped), "
                  "an image folder (a sub-folder per class) or a CIFAR-10 python batches folder (default: digits "
                  "for image spaces, mnist1d for sequence spaces)")
    _setting(p, "seed", type=int, help="seed for training and search (default 0)")
    _setting(p, "device", help="training/evaluation device: auto, cpu, cuda (default auto)")
    p.add_argument("--config", dest="config_file", type=Path, default=None, metavar="FILE.json",
                   help="settings from a JSON object whose keys are the settings' names (the flags' without the "
                        "leading dashes, '_' for '-': {\"epochs\": 10, \"max_flops\": 1500000}); flags given override it")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<command>-<time>)")
    p.add_argument("--force", action="store_true", help="overwrite a run folder that already holds files")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def _add_train(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("supernet training")
    _setting(g, "space", help=f"search space: {list_spaces()} or a space .json file, fitted to --data (its channels, "
                              "classes and input size; `nas space show`) (default: the built-in space for the data's kind and "
                              "size: seq for sequences, tiny/cifar/imagenet by the image side; tiny without --data)")
    _setting(g, "epochs", type=int,
             help=f"training length in epochs (default: {DEFAULT_EPOCHS} epochs, but at least {MIN_STEPS} optimizer "
                  "steps on a small training set); or give --steps")
    _setting(g, "steps", type=int, help="training length in optimizer steps, instead of --epochs")
    _setting(g, "batch_size", type=int, help=f"default {DEFAULT.batch_size}")
    _setting(g, "lr", type=float, help=f"peak learning rate (default {DEFAULT.lr})")
    _setting(g, "optimizer", choices=["adamw", "sgd"], help=f"default {DEFAULT.optimizer}")
    _setting(g, "weight_decay", type=float, help=f"default {DEFAULT.weight_decay}")
    _setting(g, "warmup_epochs", type=int,
             help=f"linear warm-up before the cosine schedule (default {DEFAULT.warmup_epochs})")
    _setting(g, "sampling", choices=SAMPLING_RULES,
             help="subnets per step: uniform (random only), sandwich (largest + smallest + random, distilled), "
                  "complexity (largest + random from a moving FLOPs band), progressive (random from a sub-space that "
                  f"grows by phases, OFA's progressive shrinking); default {DEFAULT.sampling} (uniform with 4 a "
                  "step on the built-in seq space, which it ranks better)")
    _setting(g, "num_random", type=int, help=f"random subnets per step (default {DEFAULT.num_random}; 4 on seq)")
    _setting(g, "best_of", type=int, metavar="K",
             help="candidates per random subnet: each is judged on the step's batch without gradients and the one "
                  f"with the lowest loss is trained (AttentiveNAS's BestUp; default {DEFAULT.best_of}: off)")
    _setting(g, "no_distill", action="store_true",
             help="train every subnet on the labels, not on the largest's predictions")
    _setting(g, "hflip", action="store_true", help="random horizontal flips (natural images, not digits)")
    _setting(g, "train_threads", type=int, metavar="N",
             help="CPU threads of torch for training and accuracy evaluation (default: torch's, one per core)")
    _setting(g, "data_workers", type=int, metavar="N",
             help="worker processes reading streamed data (image folders too large for memory or of large images, "
                  ".npy folders): decoding, resizing, augmenting (default: the CPUs less one, at most 4; 0: in process)")
    _setting(g, "stream_data", action="store_true",
             help="read an image folder lazily, image by image, even when it would fit in memory")
    _setting(g, "no_standalone_check", action="store_true",
             help="skip the health check that trains the smallest subnet alone for a quarter of the budget")


def _add_ray(p: argparse.ArgumentParser, workers: str) -> None:
    g = p.add_argument_group("Ray (the same command on several processes or machines)")
    _setting(g, "ray", action="store_true", help="run on a Ray instance started on this machine")
    _setting(g, "ray_address", metavar="ADDR", help="run on the Ray cluster at ADDR (auto, HOST:6379, ray://HOST:10001)")
    _setting(g, "workers", type=int,
             help=f"{workers} (default with --ray or --ray-address: the cluster's CPUs, or GPUs with "
                  "--device cuda); implies --ray")


def _strategies_help() -> str:
    return "; ".join(f"{name}: {', '.join(strategy_options(name)) or '(none)'}" for name in list_strategies())


QAT_HELP = ("a subnet handed over in int8: fine-tune its float weights with quantization in the loop after finishing, "
            "kept only if int8 then scores better on validation; auto (default): when int8 loses more than 0.5 points "
            "of validation accuracy; always; off")


def _add_finish(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("finishing the chosen subnet (nas.finish)")
    _setting(g, "finish", choices=list(HOW),
             help="finetune (default): its inherited weights trained further, at half the cost of training it "
                  "from scratch; scratch: trained from its initialisation with the default recipe, as the reference "
                  "it must match (the default of a zero-shot search); inherit: as extracted")
    _setting(g, "finish_budget", type=float, metavar="FRACTION",
             help=f"fine-tuning steps as a fraction of training from scratch (default {FinishConfig().budget})")
    _setting(g, "qat", choices=list(QAT),
             help=QAT_HELP)
    _setting(g, "finalists", type=int, metavar="K",
             help="finish the K most accurate subnets of the Pareto front and hand over the best by validation "
                  "after finishing (default 1: the search's choice)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas", description="Hardware-aware neural architecture search with one weight-sharing supernet.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a weight-sharing supernet and write it to a run folder",
                       description="Train a supernet with the sandwich rule; writes supernet.safetensors + space.json.")
    _add_common(p)
    _add_train(p)
    _add_ray(p, "Ray Train workers training the supernet data-parallel")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted training in --out from its last epoch checkpoint (same settings)")

    p = sub.add_parser("search", help="search subnets under hardware limits (trains a supernet first unless --supernet)",
                       description="Search the supernet's subnets for the best accuracy under hardware limits; "
                                   "records every evaluation, the Pareto front, and extracts the best subnet.")
    _add_common(p)
    _setting(p, "budget", help="subnet evaluations (200) or wall-clock time (90s, 10m, 1h); default 200")
    _setting(p, "max_latency_ms", type=float, help="latency limit in ms on --target")
    _setting(p, "max_params", type=int, help="parameter limit")
    _setting(p, "max_flops", type=int, help="limit on multiply-adds of one forward pass")
    _setting(p, "max_memory_mb", type=float,
             help="limit on estimated peak inference memory (weights + live activations) in MiB at --latency-batch")
    _setting(p, "max_size_mb", type=float,
             help="limit on the weights' size as deployed in MiB (4 bytes a parameter in fp32; the quantized graph's "
                  "in int8)")
    _setting(p, "seq_len", type=int,
             help="sequence spaces: the sequence length the hardware costs (latency, FLOPs, memory) are for, "
                  "when deployment sequences are longer or shorter than the data's (default: the data's)")
    _setting(p, "objective", choices=sorted(OBJECTIVES),
             help="what is traded against accuracy on the Pareto front (default latency)")
    _setting(p, "target",
             help=f"where latency comes from: measured here on {', '.join(TARGETS)}, or predicted from a latency "
                  "profile PROFILE.json written by `nas profile` on any device (default cpu)")
    _setting(p, "precision", metavar="{" + ",".join(PRECISION_MODES) + "}",
             help="precision of the candidates: fp32, int8 (quantized by ONNX Runtime, calibrated on the training "
                  "split; accuracy, latency and bytes measured on the int8 model) or search (each subnet in both, "
                  "standing at the one that serves it best); int8 and search need --target onnxruntime (default fp32)")
    _setting(p, "threads", type=int, help="CPU threads while measuring latency (default 1; a profile has its own)")
    _setting(p, "latency_batch", type=int,
             help="batch size while measuring latency (default 1; a profile has its own)")
    _setting(p, "strategy", choices=list_strategies(),
             help="search strategy (default predictor: predictor-guided evolution)")
    _setting(p, "predictor", metavar="FAMILY",
             help=f"accuracy predictor family of a strategy that learns one ({', '.join(strategies_with_predictor())}): "
                  f"{', '.join(list_predictors())} (default auto: chosen by cross-validation)")
    _setting(p, "strategy_options", action="append", metavar="KEY=VALUE",
             help=f"an option of the strategy (repeatable), e.g. population_size=32 with --strategy evolution; options: {_strategies_help()}")
    _setting(p, "supernet", help="a trained supernet (.safetensors or run folder) to reuse")
    _setting(p, "zero_shot", metavar="PROXY",
             help=f"train no supernet: score --budget random subnets under the limits by a training-free proxy "
                  f"({', '.join(list_proxies())}) at initialisation, train the best --finalists from scratch and "
                  "hand over the best by validation (implies --finish scratch)")
    _add_finish(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted search (or its supernet training) in --out with its recorded settings; "
                        "recorded evaluations are kept and not repeated")
    _add_train(p)
    _add_ray(p, "Ray actors evaluating subnets, and Ray Train workers when a supernet is trained first")

    p = sub.add_parser("profile", help="measure this machine's latency profile, for `nas search --target PROFILE.json`",
                       description="Time every unit the space's subnets are made of, alone, and whole random subnets on "
                                   "a target; writes a latency profile (JSON) from which `nas search` predicts latency.")
    p.add_argument("--target", default="cpu", choices=TARGETS, help="where to measure (default cpu)")
    p.add_argument("--threads", type=int, default=DEFAULT_PROFILE.threads, help="CPU threads (default 1)")
    p.add_argument("--latency-batch", type=int, default=DEFAULT_PROFILE.batch, help="batch size (default 1)")
    p.add_argument("--precision", default=DEFAULT_PROFILE.precision, metavar="{fp32,int8}",
                   help="time the units and subnets in float32, or quantized to int8 by ONNX Runtime (needs --target "
                        "onnxruntime), for `nas search --precision int8 --target PROFILE.json` (default fp32)")
    p.add_argument("--space", default=None, help=f"search space: {list_spaces()} or a space .json file (default: the "
                                                 "built-in space for --data's kind and size, as `nas search`; else tiny)")
    p.add_argument("--data", default=None,
                   help="the space fitted to this dataset, as `nas search --data` fits it (default: the space as written)")
    p.add_argument("--subnets", type=int, default=DEFAULT_PROFILE.subnets,
                   help=f"whole random subnets to measure, to fit the predictor (default {DEFAULT_PROFILE.subnets})")
    p.add_argument("--passes", type=int, default=DEFAULT_PROFILE.passes,
                   help=f"timing passes; each measurement keeps its fastest median (default {DEFAULT_PROFILE.passes})")
    p.add_argument("--max-seconds", type=float, default=DEFAULT_PROFILE.max_seconds,
                   help=f"timing budget of one measurement (default {DEFAULT_PROFILE.max_seconds})")
    p.add_argument("--max-units", type=int, default=DEFAULT_PROFILE.max_units,
                   help=f"time every unit of the space up to this many, else those of {DEFAULT_PROFILE.sample_subnets} "
                        f"random subnets and the extremes (default {DEFAULT_PROFILE.max_units})")
    p.add_argument("--seq-len", type=int, default=None,
                   help="sequence spaces: time at this sequence length (as `nas search --seq-len`; default the space's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random subnets (default 0)")
    p.add_argument("--out", type=Path, default=None, help="profile file (default runs/profile-<space>-<target>-<time>.json)")
    p.add_argument("--force", action="store_true", help="overwrite an existing profile file")
    p.add_argument("--quiet", action="store_true", help="no progress display")

    p = sub.add_parser("space", help="show a search space fitted to your data, as a space file",
                       description="Print a search space as JSON: fitted to --data (channels, classes and input size "
                                   "from the data, as `nas train` and `nas search` fit it), or as written; a space "
                                   "file to start your own from.")
    show = p.add_subparsers(dest="action", required=True, metavar="ACTION").add_parser(
        "show", help="print the space as JSON", description="Print the space as JSON, loadable as a space file.")
    show.add_argument("space", help=f"a built-in space {list_spaces()} or a space .json file")
    show.add_argument("--data", default=None,
                      help="fit the space to this dataset (a built-in name, a .npz file or a CIFAR-10 folder); "
                           "default: the space as written")

    p = sub.add_parser("extract", aliases=["export"], help="write a searched subnet as a standalone model folder",
                       description="Write subnet ID of a search run, with its inherited weights, as a model folder "
                                   "models/<ID>/: model.safetensors, model.json, model.onnx (checked with ONNX "
                                   "Runtime) and a model card README.md.")
    p.add_argument("run", type=Path, help="search run folder")
    p.add_argument("--arch", required=True, help="subnet id (column 'id' of evaluations.csv)")
    p.add_argument("--out", type=Path, default=None, help="model folder (default RUN/models/<ID>)")
    p.add_argument("--force", action="store_true", help="overwrite an existing model folder")
    p.add_argument("--device", default="auto", help="evaluation device (default auto)")

    p = sub.add_parser("finetune", help="finish searched subnets: train them further from their inherited weights",
                       description="Finish subnets of a search run (by default the search's choice; --finalists K: "
                                   "the K most accurate of its Pareto front) and write each as a model folder with "
                                   "its accuracy before and after; the best by validation is marked.")
    p.add_argument("run", type=Path, help="search run folder")
    p.add_argument("--arch", action="append", metavar="ID", help="a subnet id of evaluations.csv (repeatable)")
    p.add_argument("--finalists", type=int, default=1, metavar="K",
                   help="without --arch: the search's choice and the next most accurate of the front, K in all")
    p.add_argument("--finish", choices=list(HOW), default=None,  # None: finetune, from scratch if the supernet failed
                   help="how (default finetune, as nas search finishes; scratch when the supernet's training failed)")
    p.add_argument("--finish-budget", type=float, default=FinishConfig().budget, metavar="FRACTION",
                   help=f"fine-tuning steps as a fraction of training from scratch (default {FinishConfig().budget})")
    p.add_argument("--qat", choices=list(QAT), default=None,  # None: not given (FinishConfig's default)
                   help=QAT_HELP)
    p.add_argument("--out", type=Path, default=None, help="folder of the model folders (default RUN/models)")
    p.add_argument("--force", action="store_true", help="overwrite existing model folders")
    p.add_argument("--device", default="auto", help="training device (default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress display")

    p = sub.add_parser("ablate", help="sweep training and search settings as Ray Tune trials, with tables and plots",
                       description="Train one supernet per training setting and run one search per grid point "
                                   "(sampling rule x strategy x predictor x budget x seed) as Ray Tune trials; "
                                   "writes results.csv, summary.csv and plots to the sweep folder.")
    p.add_argument("config", type=Path, help="sweep config (JSON), e.g. examples/ablation.json")
    p.add_argument("--out", type=Path, default=None, help="sweep folder (default runs/<the config's name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted sweep in the folder: finished trials are kept, the others run "
                        "(failed ones again, interrupted ones from where they stopped)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to run on (auto, HOST:6379, ray://HOST:10001); default: a local Ray on this machine")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    _add_debug(parser, sub)
    return parser


def _add_debug(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction) -> None:
    """--debug, before or after the command: the traceback of an internal error (else one line)."""
    text = "on an internal error, print its traceback (else one line)"
    parser.add_argument("--debug", action="store_true", help=text)
    for p in dict.fromkeys(sub.choices.values()):  # an alias maps to its command's parser
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=text)
