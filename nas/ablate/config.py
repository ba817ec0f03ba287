"""The config of an ablation sweep (`nas ablate CONFIG`): a JSON file parsed once into frozen dataclasses.

Every key is checked; an error is one line naming the key and, for a choice, the allowed values
(the registries of sampling rules, search strategies and accuracy predictors). Paths that exist
(`data`, `space`, `search.target`) are made absolute, taken from the working folder, because the
trials run elsewhere. `search.strategy_options` holds keyword arguments of the strategies'
constructors (`{"evolution": {"population_size": 8}}`); the limits and the options are checked by
the types that own them (`Limits`, the strategies), whose errors name the field, here as its key.
See `examples/ablation.json` and docs/ablations.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nas.data.kind import space_for_data
from nas.errors import UserError, named
from nas.evaluation.limits import OBJECTIVES, Limits
from nas.runs.files import read_json
from nas.search.loop import Budget
from nas.search.strategies import check_options, list_strategies, make_strategy, strategies_with_predictor
from nas.training.config import TrainConfig
from nas.training.sampling import SAMPLING_RULES
from predictors.accuracy import list_predictors
from search_spaces import ArchError, SearchSpace, get_family
from search_spaces.arch import is_finite_number, show

SWEPT = {"sampling": "grid.sampling", "seed": "grid.seed", "device": "resources.gpu"}  # train keys the sweep sets
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
Options = tuple[tuple[str, Any], ...]  # (option, value) pairs of a strategy, sorted


def _check_list(key: str, values: tuple) -> None:
    if not values or len(set(values)) != len(values):
        raise UserError(f"grid.{key} must be a non-empty list without repeats, got {show(list(values))}")


def _canonical_budget(value: Any) -> str | None:
    """A count of evaluations as its canonical text ("200"); None for anything else. Durations are
    refused: concurrent trials share the machine, so a time budget buys different numbers of
    evaluations in different trials (and a retried one loses the time before its kill)."""
    if type(value) is int:
        value = str(value)
    if not isinstance(value, str) or not value.isascii() or not value.strip().isdigit():
        return None
    try:
        budget = Budget.parse(value.strip())
    except UserError:
        return None
    return str(budget.evaluations) if budget.evaluations else None


@dataclass(frozen=True)
class Grid:
    """The settings crossed by the sweep; every combination is a search trial."""

    sampling: tuple[str, ...] = ("sandwich",)
    strategy: tuple[str, ...] = ("predictor",)
    predictor: tuple[str, ...] = ("auto",)  # accuracy predictor families, for the strategies that learn one
    budget: tuple[str, ...] = ("200",)
    seed: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        for key, allowed in (("sampling", list(SAMPLING_RULES)), ("strategy", list_strategies()),
                             ("predictor", list_predictors())):
            _check_list(key, getattr(self, key))
            if unknown := [v for v in getattr(self, key) if v not in allowed]:
                raise UserError(f"grid.{key}: {show(unknown[0])} is not one of {allowed}")
        canonical = tuple(_canonical_budget(b) for b in self.budget)
        if None in canonical:
            raise UserError(f"grid.budget: each budget is a positive count of evaluations (200; durations are not "
                            f"comparable across concurrent trials), got {show(list(self.budget))}")
        object.__setattr__(self, "budget", canonical)
        _check_list("budget", self.budget)
        _check_list("seed", self.seed)
        if not all(type(s) is int and 0 <= s < 2**63 for s in self.seed):
            raise UserError(f"grid.seed: seeds are integers in [0, 2**63), got {show(list(self.seed))}")
        learners = strategies_with_predictor()
        if self.predictor != ("auto",) and not set(learners) & set(self.strategy):
            raise UserError(f"grid.predictor applies only to the strategies {learners}, and grid.strategy has none")


@dataclass(frozen=True)
class SearchSettings:
    """What every search trial shares: the objective traded against accuracy, hard limits, the
    latency profile (latency must be predicted: timings of concurrent trials are not comparable),
    and the options of the strategies (their constructors' keyword arguments, by strategy)."""

    objective: str = "flops"
    max_latency_ms: float | None = None
    max_params: int | None = None
    max_flops: int | None = None
    max_memory_mb: float | None = None
    max_size_mb: float | None = None
    target: str | None = None  # a latency profile .json written by `nas profile`
    reference_accuracy: float = 0.0  # the hypervolume's reference accuracy
    strategy_options: tuple[tuple[str, Options], ...] = ()  # (strategy, its options), sorted; JSON: an object

    def __post_init__(self) -> None:
        if not isinstance(self.objective, str) or self.objective not in OBJECTIVES:
            raise UserError(f"search.objective: {show(self.objective)} is not one of {sorted(OBJECTIVES)}")
        with named(lambda field: f"search.{field}"):
            self.limits()
        if not (is_finite_number(self.reference_accuracy) and 0 <= self.reference_accuracy < 1):
            raise UserError(f"search.reference_accuracy must be in [0, 1), got {show(self.reference_accuracy)}")
        if self.target is not None and not (isinstance(self.target, str) and self.target.endswith(".json")):
            raise UserError(f"search.target must be a latency profile .json written by `nas profile`, got {show(self.target)}")
        if self.target is None and (self.objective == "latency" or self.max_latency_ms is not None):
            raise UserError("search.target: latency needs a profile .json written by `nas profile` (predicted latency); "
                            "measured latency would differ between concurrent trials")
        for strategy, options in self.strategy_options:
            if strategy not in list_strategies():
                raise UserError(f"search.strategy_options: {show(strategy)} is not one of {list_strategies()}")
            with named(_option_key(strategy)):
                check_options(strategy, dict(options))

    def limits(self) -> Limits:
        return Limits(self.max_latency_ms, self.max_params, self.max_flops, self.max_memory_mb, self.max_size_mb)

    def options_of(self, strategy: str) -> dict[str, Any]:
        """The options of `strategy` (its constructor's keyword arguments); {} when none are set."""
        return dict(dict(self.strategy_options).get(strategy, ()))


@dataclass(frozen=True)
class Resources:
    """Ray resources of one trial (a trial runs torch on `floor(cpu)` threads, at least 1), and at
    most how many trials run at once (None: as many as the cluster's resources allow)."""

    cpu: float = 1
    gpu: float = 0
    max_concurrent: int | None = None

    def __post_init__(self) -> None:
        if not (is_finite_number(self.cpu) and self.cpu > 0):
            raise UserError(f"resources.cpu must be a number > 0, got {show(self.cpu)}")
        if not (is_finite_number(self.gpu) and self.gpu >= 0):
            raise UserError(f"resources.gpu must be a number >= 0, got {show(self.gpu)}")
        if self.max_concurrent is not None and not (type(self.max_concurrent) is int and self.max_concurrent >= 1):
            raise UserError(f"resources.max_concurrent must be an integer >= 1 or null, got {show(self.max_concurrent)}")

    @property
    def device(self) -> str:
        return "cuda" if self.gpu > 0 else "cpu"


@dataclass(frozen=True)
class AblationConfig:
    name: str
    space: str = "tiny"  # absent from a config with `data`: the built-in space for the data (`space_for_data`)
    data: str = "digits"
    train: TrainConfig = field(default_factory=TrainConfig)  # the recipe; sampling and seed come from the grid
    search: SearchSettings = field(default_factory=SearchSettings)
    grid: Grid = field(default_factory=Grid)
    resources: Resources = field(default_factory=Resources)
    max_failures: int = 2  # retries of a failed trial (a worker that died or raised)

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and NAME.fullmatch(self.name)):
            raise UserError(f"name must be letters, digits, '.', '_' or '-' (it names the folder), got {show(self.name)}")
        for key in ("space", "data"):
            if not isinstance(getattr(self, key), str):
                raise UserError(f"{key} must be a string, got {show(getattr(self, key))}")
        if type(self.max_failures) is not int or self.max_failures < 0:
            raise UserError(f"max_failures must be an integer >= 0, got {show(self.max_failures)}")

    @classmethod
    def from_dict(cls, data: Any) -> AblationConfig:
        data = _object(data, "the config", _names(cls))
        if "name" not in data:
            raise UserError("name is missing: the sweep's name (its folder is runs/<name>)")
        sections = {"train": _train(data.get("train", {})), "search": _search(data.get("search", {})),
                    "grid": _grid(data.get("grid", {})),
                    "resources": Resources(**_object(data.get("resources", {}), "resources", _names(Resources)))}
        top = {k: _local_path(v) if k in ("space", "data") else v for k, v in data.items() if k not in sections}
        picked = space_for_data(top["data"]) if "space" not in top and isinstance(top.get("data"), str) else None
        if picked is not None:
            top["space"] = picked[0]
        config = cls(**top, **sections)  # type: ignore[arg-type]  # the keys are checked by _object, the types by __post_init__
        try:
            space = SearchSpace(get_family(config.space).example)  # the options do not depend on the data
        except ArchError as e:
            raise UserError(f"space: {e}") from None
        for strategy, _ in config.search.strategy_options:  # the values are the strategy's to check
            if strategy not in config.grid.strategy:
                raise UserError(f"search.strategy_options.{strategy}: grid.strategy has no {strategy!r}")
            with named(_option_key(strategy)):
                make_strategy(strategy, space, seed=0, options=config.search.options_of(strategy))
        return config

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists, options objects), as recorded in the sweep's config.json."""
        record = json.loads(json.dumps(asdict(self)))
        del record["search"]["strategy_options"]
        if self.search.strategy_options:  # absent when empty: sweeps recorded before it existed resume
            record["search"]["strategy_options"] = {s: dict(o) for s, o in self.search.strategy_options}
        return record

    def train_config(self, sampling: str, seed: int) -> TrainConfig:
        # through from_dict: the grid's rule is checked as the recipe's field
        return TrainConfig.from_dict({**self.train.to_dict(), "sampling": sampling, "seed": seed,
                                      "device": self.resources.device})


def _option_key(strategy: str) -> Callable[[str], str]:
    """How the config names an option of `strategy`: its key."""
    return lambda option: f"search.strategy_options.{strategy}.{option}"


def _object(value: Any, where: str, allowed: set[str] | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a JSON object, got {show(value)}")
    unknown = sorted(set(value) - allowed, key=str) if allowed is not None else []
    if unknown and allowed is not None:
        prefix = "" if where == "the config" else f"{where}."
        raise UserError(f"{prefix}{unknown[0]} is not a key of {where}; allowed: {sorted(allowed)}")
    return dict(value)


def _names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def _train(value: Any) -> TrainConfig:
    train = _object(value, "train", None)  # TrainConfig.from_dict names unknown keys
    for key, where in SWEPT.items():
        if key in train:
            raise UserError(f"train.{key}: the sweep sets it from {where}; remove it from train")
    return TrainConfig.from_dict(train)


def _search(value: Any) -> SearchSettings:
    search = _object(value, "search", _names(SearchSettings))
    if "target" in search:
        search["target"] = _local_path(search["target"])
    if "strategy_options" in search:
        by_strategy = _object(search["strategy_options"], "search.strategy_options", None)
        search["strategy_options"] = tuple(sorted(
            (strategy, tuple(sorted(_object(options, f"search.strategy_options.{strategy}", None).items())))
            for strategy, options in by_strategy.items()))
    return SearchSettings(**search)


def _grid(value: Any) -> Grid:
    grid = _object(value, "grid", _names(Grid))
    for key, values in grid.items():
        if not isinstance(values, list):
            raise UserError(f"grid.{key} must be a list, got {show(values)}")
        if odd := [v for v in values if isinstance(v, bool) or not isinstance(v, (str, int, float))]:
            raise UserError(f"grid.{key}: {show(odd[0])} is not a string or a number")
    return Grid(**{key: tuple(values) for key, values in grid.items()})


def _local_path(spec: Any) -> Any:
    """A path that exists made absolute (trials run in other folders); names stay as they are."""
    try:
        return str(Path(spec).resolve()) if isinstance(spec, str) and Path(spec).exists() else spec
    except (OSError, ValueError):  # not a possible path (a null byte, too long): left for the loader to refuse
        return spec


def load_config(path: Path) -> AblationConfig:
    data = read_json(path, "ablation config")
    try:
        return AblationConfig.from_dict(data)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
