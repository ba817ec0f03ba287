"""The run config of `nas train` and `nas search`: one frozen, typed value per run.

It is merged once (`nas.cli.main`): the defaults here, then a `--config FILE.json` whose keys are
the field names, then the flags given (each field is set by the flag of the same name, `flag` in
`nas.cli.parser`). It is recorded in the run folder's `config.json` (under "args") and read back
from there by `--resume`; a field a recorded run lacks takes its default, the value that means
the behaviour before the field existed.

Each component gets only its own part: `train_config` -> `TrainConfig`, `limits` -> `Limits`,
`search_budget` -> `Budget`, `latency_source` -> where latency comes from, and the strategy
with its options. The validation is the components' own: their errors name their fields, which
are this config's fields (`named` renames the two that differ), and the CLI names them as flags
or as the keys of the file they came from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, TypeVar

from nas.errors import FieldError, check_field_types, named
from nas.evaluation.limits import OBJECTIVES, Limits
from nas.finish.finetune import FinishConfig
from nas.hardware.measure import LatencySettings
from nas.hardware.profile import SearchLatency, search_latency
from nas.hardware.quantize import PRECISION_MODES, PrecisionMode
from nas.search.loop import Budget
from nas.search.strategies import check_options, list_strategies, strategies_with_predictor
from nas.training.config import TrainConfig
from nas.training.parallel import check_parallel
from predictors.proxies import list_proxies
from search_spaces.arch import is_finite_number, show

Scalar = str | int | float | bool | None  # the value of a strategy option
_TRAIN = TrainConfig()
_KINDS = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}
C = TypeVar("C", bound="RunConfig")


@dataclass(frozen=True)
class RunConfig:
    """`nas train`: the space, its data, the training recipe and where it runs."""

    command: ClassVar[str] = "train"  # the command whose config this is
    space: str = "tiny"  # a built-in space or a space .json file
    data: str | None = None  # None: the built-in dataset of the space's kind
    seed: int = 0
    device: str = "auto"
    # the training recipe (TrainConfig); the budget: epochs or steps (both None: the default)
    epochs: int | None = _TRAIN.epochs
    steps: int | None = _TRAIN.steps
    batch_size: int = _TRAIN.batch_size
    lr: float = _TRAIN.lr
    optimizer: Literal["adamw", "sgd"] = _TRAIN.optimizer
    weight_decay: float = _TRAIN.weight_decay
    warmup_epochs: int = _TRAIN.warmup_epochs
    sampling: Literal["uniform", "sandwich", "complexity", "progressive"] = _TRAIN.sampling
    num_random: int = _TRAIN.num_random
    best_of: int = _TRAIN.best_of
    no_distill: bool = not _TRAIN.distill
    hflip: bool = _TRAIN.hflip
    train_threads: int | None = None  # torch's CPU threads for training and evaluation (None: torch's default)
    no_standalone_check: bool = False  # skip the health check that trains the smallest subnet alone
    # how streamed data are read (`nas.data.stream`): results do not depend on these
    data_workers: int | None = None  # DataLoader worker processes (None: `default_workers()`; 0: in process)
    stream_data: bool = False  # read an image folder lazily even when it fits in memory
    # Ray: results do not depend on these (a resumed run may change them)
    ray: bool = False
    ray_address: str | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        check_field_types(self, skip=("strategy_options",))  # `_check_options`
        train = self.train_config("cpu")
        if self.ray or self.ray_address is not None or self.workers is not None:  # data-parallel training
            check_parallel(train)
        for name in ("workers", "train_threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.data_workers is not None and self.data_workers < 0:
            raise FieldError("data_workers", f"must be >= 0, got {self.data_workers}")

    def train_config(self, device: str) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, steps=self.steps, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer,
                           weight_decay=self.weight_decay, warmup_epochs=self.warmup_epochs, sampling=self.sampling,
                           num_random=self.num_random, best_of=self.best_of, distill=not self.no_distill, hflip=self.hflip,
                           seed=self.seed, device=device)

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """The config whose fields `data` names (a missing field takes its default); an unknown key is an error."""
        known = [f.name for f in fields(cls)]
        if unknown := sorted(set(data) - set(known), key=str):
            key = unknown[0]
            raise FieldError(key if isinstance(key, str) and key.isidentifier() else show(key),
                             f"is not a setting of `nas {cls.command}` (its settings: {', '.join(known)})")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as recorded in the run's config.json; `from_dict` reads it back."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class SearchRunConfig(RunConfig):
    """`nas search`: a training config (for when it trains its supernet first) and the search's own."""

    command: ClassVar[str] = "search"
    budget: str = "200"  # evaluations (200) or a duration (90s, 10m, 1h)
    # the hard limits (Limits)
    max_latency_ms: float | None = None
    max_params: int | None = None
    max_flops: int | None = None
    max_memory_mb: float | None = None
    max_size_mb: float | None = None
    seq_len: int | None = None  # sequence spaces: the length the costs are for (None: the data's)
    objective: str = "latency"
    # where latency comes from: a target measured here with these settings, or a profile .json
    target: str = "cpu"
    threads: int = 1
    latency_batch: int = 1
    # the strategy, the accuracy predictor family of one that learns one, and its constructor's options
    strategy: str = "predictor"
    predictor: str | None = None  # None: the strategy's default
    strategy_options: tuple[tuple[str, Scalar], ...] = ()  # (option, value), sorted; JSON: an object
    supernet: str | None = None  # a trained supernet to reuse (None: train one first)
    zero_shot: str | None = None  # a training-free proxy: rank subnets by it, train no supernet (nas.search.zero_shot)
    # how the chosen subnet is finished before it is handed over (FinishConfig; resumed runs recorded
    # before these existed are finished too), and how many of the front's best are finished
    finish: Literal["inherit", "finetune", "scratch"] = FinishConfig().how
    finish_budget: float = FinishConfig().budget
    qat: Literal["auto", "always", "off"] = FinishConfig().qat  # int8 handed over: quantization-aware fine-tuning
    finalists: int = 1
    # the precision candidates are evaluated in: fp32, int8 (ONNX Runtime) or both (docs/quantization.md)
    precision: PrecisionMode = "fp32"

    def __post_init__(self) -> None:
        if type(self.budget) is int:  # a count in a JSON file
            object.__setattr__(self, "budget", str(self.budget))
        if isinstance(self.strategy_options, Mapping):
            object.__setattr__(self, "strategy_options", tuple(sorted(self.strategy_options.items(), key=lambda item: str(item[0]))))
        super().__post_init__()
        _check_options(self.strategy_options)
        self.search_budget()
        self.limits()
        with named(lambda field: {"batch_size": "latency_batch"}.get(field, field)):
            LatencySettings(threads=self.threads, batch_size=self.latency_batch)
        if self.seq_len is not None and self.seq_len < 1:
            raise FieldError("seq_len", f"must be a positive integer, got {self.seq_len}")
        for name, allowed in (("objective", sorted(OBJECTIVES)), ("strategy", list_strategies())):
            if getattr(self, name) not in allowed:
                raise FieldError(name, f"must be one of {allowed}, got {getattr(self, name)!r}")
        learners = strategies_with_predictor()
        if self.predictor is not None and self.strategy not in learners:
            raise FieldError("predictor", f"applies only to the strategies that learn one {learners}, "
                                          f"not to {self.strategy!r}")
        with named(lambda option: f"strategy_options.{option}"):
            check_options(self.strategy, dict(self.strategy_options))
        self.finish_config("cpu")
        if self.finalists < 1:
            raise FieldError("finalists", f"must be >= 1, got {self.finalists}")
        if self.zero_shot is not None:
            self._check_zero_shot()
        self._check_precision()

    def _check_precision(self) -> None:
        """Int8 is quantized, run and timed in this process on ONNX Runtime (`nas.hardware.quantize`)."""
        if self.precision not in PRECISION_MODES:
            raise FieldError("precision", f"must be one of {', '.join(PRECISION_MODES)}, got {self.precision!r}")
        if self.precision == "fp32":
            return
        if self.target != "onnxruntime" and not (self.precision == "int8" and self.target.endswith(".json")):
            raise FieldError("precision", f"{self.precision} needs latency measured on ONNX Runtime, where int8 runs: "
                                          f"give --target onnxruntime (not {self.target!r}), so fp32 and int8 are timed "
                                          "on the same runtime" + (", or an int8 latency profile .json"
                                                                   if self.precision == "int8" else ""))
        unused = (("zero_shot", self.zero_shot is not None), ("ray", self.ray),
                  ("ray_address", self.ray_address is not None), ("workers", self.workers is not None),
                  ("seq_len", self.seq_len is not None), ("stream_data", self.stream_data))
        for name, given in unused:
            if given:
                raise FieldError(name, f"is not supported with --precision {self.precision} (int8 is quantized and "
                                       "measured in this process, at the data's input size)")

    def _check_zero_shot(self) -> None:
        """A zero-shot search trains no supernet and runs no strategy: what needs either is refused."""
        if self.zero_shot not in list_proxies():
            raise FieldError("zero_shot", f"must be a training-free proxy {list_proxies()}, got {self.zero_shot!r}")
        unused = (("supernet", self.supernet is not None), ("predictor", self.predictor is not None),
                  ("strategy_options", bool(self.strategy_options)), ("ray", self.ray),
                  ("ray_address", self.ray_address is not None), ("workers", self.workers is not None))
        for name, given in unused:
            if given:
                raise FieldError(name, "does not apply to a zero-shot search (no supernet, no strategy, in this process)")
        if self.finish != "scratch":
            raise FieldError("finish", f"must be scratch in a zero-shot search (no trained weights), got {self.finish!r}")

    def finish_config(self, device: str) -> FinishConfig:
        with named(finish_field):
            return FinishConfig(how=self.finish, budget=self.finish_budget, qat=self.qat, seed=self.seed, device=device)

    def search_budget(self) -> Budget:
        return Budget.parse(self.budget)

    def limits(self) -> Limits:
        return Limits(self.max_latency_ms, self.max_params, self.max_flops, self.max_memory_mb, self.max_size_mb)

    def latency_source(self) -> SearchLatency:
        return search_latency(self.target, threads=self.threads, batch=self.latency_batch)

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"strategy_options": dict(self.strategy_options)}


def finish_field(field: str) -> str:
    """The run config's name of a `FinishConfig` field (`how` is `finish`, `budget` is `finish_budget`)."""
    return {"how": "finish", "budget": "finish_budget"}.get(field, field)


RUN_CONFIGS: dict[str, type[RunConfig]] = {"train": RunConfig, "search": SearchRunConfig}


def parse_option(text: str) -> tuple[str, Scalar]:
    """`KEY=VALUE` of a strategy option; VALUE as JSON when it is a JSON scalar (32, 0.5, true,
    null, "x"), else as text (hvi)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise FieldError("strategy_options", f"takes KEY=VALUE, got {show(text)}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value if isinstance(value, Scalar) else raw


def _check_options(options: Any) -> None:
    """(name, scalar) pairs, each name once; the names and values are the strategy's to check."""
    fine = isinstance(options, tuple) and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)
                                              for p in options)
    if not fine:
        raise FieldError("strategy_options", f"must be an object of option: value, got {show(options)}")
    for key, value in options:
        if not (value is None or isinstance(value, (str, bool)) or is_finite_number(value)):
            raise FieldError(f"strategy_options.{key}", f"must be a string, a finite number, true, false or null, "
                                                        f"got {show(value)}")
    if len({k for k, _ in options}) != len(options):
        raise FieldError("strategy_options", "gives an option twice")
