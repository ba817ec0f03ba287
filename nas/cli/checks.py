"""Checks of the `nas` command line: the device asked for, flags that would have no effect
together, requests beyond what the machine has, and the recorded config of a search run read
back by `nas extract` and `nas finetune` (a file, so checked like user input)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import torch

from nas.cli.config import RunConfig, SearchRunConfig
from nas.errors import FieldError, UserError, named
from nas.hardware.targets import TARGETS
from nas.runs.files import read_json
from nas.runs.resources import check_subnet_fits, check_threads
from search_spaces import SearchSpace
from search_spaces.arch import show

DEVICES = ("cpu", "cuda", "mps")
# invocation flags that runs recorded in config.json before the run config was typed: not settings
RECORDED_INVOCATION = ("command", "out", "resume", "force", "quiet")
# the settings of supernet training: without effect when a trained supernet is reused
TRAINING = ("space", "epochs", "batch_size", "lr", "optimizer", "weight_decay", "warmup_epochs", "sampling",
            "num_random", "best_of", "no_distill", "hflip")
# how latency is measured here: a profile brings its own
MEASURING = ("threads", "latency_batch")


def without_effect(config: RunConfig, given: Collection[str]) -> None:
    """`FieldError` naming a setting in `given` (set by a flag or a config file) that does nothing
    beside the others: training settings with a trained `supernet`, measuring settings with a
    profile as `target`, a `finish_budget` when the subnet is not fine-tuned, `qat` when nothing
    finished is handed over in int8."""
    if not isinstance(config, SearchRunConfig):
        return
    cases = [(TRAINING, config.supernet is not None, "supernet", "the supernet given is trained already"),
             (MEASURING, config.target not in TARGETS, "target", "the profile holds its own"),
             (("finish_budget",), config.finish != "finetune", "finish", f"--finish {config.finish} does not fine-tune"),
             (("qat",), config.finish == "inherit", "finish", "a subnet handed over as extracted is not trained"),
             (("qat",), config.precision == "fp32", "precision", "nothing is handed over in int8")]
    for names, applies, other, why in cases:
        for name in names:
            if applies and name in given:
                raise FieldError(name, f"has no effect with --{other.replace('_', '-')} ({why}); leave it out")


def check_measuring(space: SearchSpace, threads: int | None, batch: int) -> None:
    """Latency measured here with `threads` (None: not measured here) on `batch` samples: within the
    machine's CPUs and memory."""
    if threads is not None:
        check_threads(threads, "--threads")
    check_subnet_fits(space, batch=batch, what=f"measured at --latency-batch {batch}")


def recorded_search(run: Path) -> dict[str, Any]:
    """The config.json of the search run `run`, checked: the settings of a `nas search`, and where
    its supernet and data are."""
    path = run / "config.json"
    config = read_json(path, "run config")
    if not isinstance(config, dict) or config.get("command") != "search" or not isinstance(config.get("args"), dict):
        raise UserError(f"{path} is not the config of a `nas search` run")
    settings = {k: v for k, v in config["args"].items() if k not in RECORDED_INVOCATION}
    at: Callable[[str], str] = lambda field: f"{path}: args.{field}"  # noqa: E731
    with named(at):
        SearchRunConfig.from_dict(settings)
    for key in ("data_spec", "supernet"):
        if not isinstance(config.get(key), str):
            raise UserError(f"{path}: {key} must be a string (a path or a dataset's name), got {show(config.get(key))}")
    return config


def device_of(name: str) -> str:
    """--device checked against this machine; "auto": CUDA when available, else the CPU."""
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
