"""The run config of `nas train` and `nas search`, merged once: the defaults, a `--config` file and
the flags given (the parser sets no defaults, so a flag's presence is what was given); with
`--resume`, the config recorded in the run folder. Without `--space`, the built-in space for the
data's kind and size (`nas.data.kind`)."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

from nas.cli.checks import RECORDED_INVOCATION, without_effect
from nas.cli.config import RUN_CONFIGS, RunConfig, parse_option
from nas.cli.parser import flag
from nas.cli.spaces import picked_space
from nas.errors import FieldError, UserError, named
from nas.runs.files import SUPERNET_FILE, read_json
from nas.training.checkpoint import CHECKPOINT_FILE
from nas.training.config import SPACE_SAMPLING
from search_spaces.arch import show

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


def run_config(args: argparse.Namespace) -> RunConfig:
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
    recipe = _sampling_for_space({**data, **given, **picked})
    config = _merged(cls, given | picked, recipe | data, args.config_file)
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
    space = picked_space(spec)
    return {} if space is None else {"space": space}


def _sampling_for_space(settings: dict[str, Any]) -> dict[str, Any]:
    """The built-in space's own sampling rule (`SPACE_SAMPLING`), said in one line, when neither the
    rule nor the subnets per step are set and a supernet is to be trained; else {}."""
    recipe = SPACE_SAMPLING.get(settings.get("space", RunConfig.space), {})
    if not recipe or recipe.keys() & settings.keys() or settings.get("supernet") is not None or settings.get("zero_shot"):
        return {}
    print(f"sampling {recipe['sampling']}, {recipe['num_random']} subnets a step: the default for space "
          f"{settings.get('space', RunConfig.space)}, which it ranks better than the sandwich rule (--sampling to "
          "choose another)", flush=True)
    return dict(recipe)


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
