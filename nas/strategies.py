"""Search strategies behind one ask/tell interface; the caller owns the loop and the budget.

Objectives are minimized (pass -accuracy). `violation` > 0 marks a subnet that breaks a hard
limit; constrained strategies rank by Deb's constraint domination. Each strategy owns its own
`np.random.Generator`; `prefilter` is an optional cheap feasibility test (for example the exact
parameter count) applied before a candidate is proposed, with a bounded number of redraws.

Tells answer asks in order. `ready()` says how many candidates may be asked now, while tells are
still pending, that a sequential ask-tell run would have asked too: a parallel search (several
evaluations in flight, `nas.cluster.evaluate`) that asks only that many and tells in ask order
proposes exactly what the sequential run proposes, whatever the number of workers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import sys
from collections import deque

import numpy as np

from nas.errors import UserError
from nas.pareto import crowding_distance, non_dominated_sort
from search_spaces import Arch, SearchSpace

Prefilter = Callable[[Arch], bool]
MAX_REDRAWS = 200
UNBOUNDED = sys.maxsize  # `ready()` of a strategy whose proposals never depend on the tells


@dataclass(frozen=True)
class Surrogate:
    """What a model-based strategy may compute about a candidate without evaluating it on the supernet.

    `cost`: the exact value of the second objective (analytic FLOPs/params/memory, or latency
    predicted from a profile) when it is cheap; None when it is measured, and must be learned from
    the told values. `violation(arch, cost)`: the limits' violation of `arch` given its (exact or
    estimated) cost objective; limits on metrics that are neither cheap nor the objective count 0
    there, and `complete=False` says so (a model-based strategy then learns the violation too).
    """

    cost: Callable[[Arch], float] | None
    violation: Callable[[Arch, float], float]
    complete: bool = True  # False: some limit's metric is measured (neither cheap nor the objective)


@dataclass(frozen=True)
class Observation:
    arch: Arch
    objectives: tuple[float, ...]
    violation: float


class Strategy(ABC):
    name: str = ""
    predicts_accuracy: bool = False  # True: the constructor takes `predictor=`, an accuracy predictor family

    def __init__(self, space: SearchSpace, *, seed: int = 0, prefilter: Prefilter | None = None,
                 surrogate: Surrogate | None = None):
        self.space = space
        self.rng = np.random.default_rng(seed)
        self.prefilter = prefilter
        self.surrogate = surrogate  # only model-based strategies use it
        self.predictions: dict[Arch, dict[str, float]] = {}  # what a model-based strategy predicted of a proposal
        self.history: list[Observation] = []
        self.pending: deque[Arch] = deque()  # asked, not told yet (oldest first)

    @abstractmethod
    def _propose(self) -> Arch: ...

    def ready(self) -> int:
        """How many candidates may be asked now without changing what a sequential run (each ask
        after the tells of all earlier asks) would have asked. At least 1 when no tell is pending.
        This default suits any strategy: one at a time."""
        return 0 if self.pending else 1

    def ask(self) -> Arch:
        """A candidate that passes the prefilter when one is found within MAX_REDRAWS draws."""
        arch = self._propose()
        for _ in range(MAX_REDRAWS):
            if self.prefilter is None or self.prefilter(arch):
                break
            arch = self._propose()
        self.pending.append(arch)
        return arch

    def tell(self, arch: Arch, objectives: tuple[float, ...], violation: float) -> None:
        """The result of the oldest pending ask (or of a subnet never asked, when none is pending)."""
        if self.pending:
            self.pending.popleft()
        self.history.append(Observation(arch, tuple(float(o) for o in objectives), float(violation)))


class RandomSearch(Strategy):
    name = "random"

    def _propose(self) -> Arch:
        return self.space.sample(self.rng)

    def ready(self) -> int:
        return UNBOUNDED  # draws never depend on the tells


class EvolutionSearch(Strategy):
    """NSGA-II with constraint domination; mutation and crossover come from the search space."""

    name = "evolution"

    def __init__(self, space: SearchSpace, *, seed: int = 0, prefilter: Prefilter | None = None,
                 surrogate: Surrogate | None = None, population_size: int = 16, mutation_prob: float = 0.2,
                 crossover_prob: float = 0.5):
        super().__init__(space, seed=seed, prefilter=prefilter, surrogate=surrogate)
        if population_size < 2:
            raise UserError(f"evolution: population_size must be >= 2, got {population_size}")
        if not 0 < mutation_prob <= 1 or not 0 <= crossover_prob <= 1:
            raise UserError("evolution: mutation_prob must be in (0, 1] and crossover_prob in [0, 1]")
        self.population_size, self.mutation_prob, self.crossover_prob = population_size, mutation_prob, crossover_prob
        self.population: list[Observation] = []
        self._offspring: list[Observation] = []
        self._rank: dict[int, tuple[int, float]] = {}
        self._smallest_tried = False

    def _propose(self) -> Arch:
        if len(self.population) < self.population_size:
            # the smallest subnet first: the most likely to meet every limit
            if not self._smallest_tried:
                self._smallest_tried = True
                return self.space.smallest()
            return self.space.sample(self.rng)
        a, b = self._tournament(), self._tournament()
        child = self.space.crossover(a.arch, b.arch, self.rng) if self.rng.random() < self.crossover_prob else a.arch
        return self.space.mutate(child, self.rng, self.mutation_prob)

    def ready(self) -> int:
        """The rest of the current generation: what is proposed changes only when the population
        fills up or a generation of offspring is complete (when the tells reach that count)."""
        filling = len(self.population) < self.population_size
        told_in_round = len(self.population) if filling else len(self._offspring)
        return max(0, self.population_size - told_in_round - len(self.pending))

    def _tournament(self) -> Observation:
        i, j = self.rng.integers(len(self.population), size=2)
        return self.population[min(i, j, key=lambda k: self._rank[k])]

    def tell(self, arch: Arch, objectives: tuple[float, ...], violation: float) -> None:
        super().tell(arch, objectives, violation)
        if len(self.population) < self.population_size:
            self.population.append(self.history[-1])
            if len(self.population) == self.population_size:
                self._select(self.population)
            return
        self._offspring.append(self.history[-1])
        if len(self._offspring) >= self.population_size:
            self._select(self.population + self._offspring)
            self._offspring = []

    def _select(self, pool: list[Observation]) -> None:
        """Environmental selection: best fronts first, then by crowding distance."""
        unique = list({o.arch: o for o in pool}.values())
        objs = np.array([o.objectives for o in unique])
        fronts = non_dominated_sort(objs, np.array([o.violation for o in unique]))
        chosen: list[tuple[int, int, float]] = []
        for rank, front in enumerate(fronts):
            crowd = crowding_distance(objs[front])
            order = sorted(range(len(front)), key=lambda k: -crowd[k])
            for k in order:
                if len(chosen) < self.population_size:
                    chosen.append((front[k], rank, -crowd[k]))
        self.population = [unique[i] for i, _, _ in chosen]
        self._rank = {pos: (rank, crowd) for pos, (_, rank, crowd) in enumerate(chosen)}


_STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    if cls.name in _STRATEGIES:
        raise ValueError(f"a strategy named {cls.name!r} is already registered")
    _STRATEGIES[cls.name] = cls
    return cls


def list_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def strategies_with_predictor() -> list[str]:
    """The strategies that learn an accuracy predictor, whose family `make_strategy(..., predictor=)` picks."""
    return sorted(name for name, cls in _STRATEGIES.items() if cls.predicts_accuracy)


def make_strategy(name: str, space: SearchSpace, *, seed: int, prefilter: Prefilter | None = None,
                  surrogate: Surrogate | None = None, predictor: str | None = None) -> Strategy:
    """`predictor`: the accuracy predictor family of a strategy that learns one (None: its default)."""
    if name not in _STRATEGIES:
        raise UserError(f"unknown strategy {name!r}; choose from {list_strategies()}")
    cls = _STRATEGIES[name]
    if predictor is None:
        return cls(space, seed=seed, prefilter=prefilter, surrogate=surrogate)
    if not cls.predicts_accuracy:
        raise UserError(f"strategy {name!r} learns no accuracy predictor; predictor={predictor!r} does not apply to it")
    return cls(space, seed=seed, prefilter=prefilter, surrogate=surrogate, predictor=predictor)


for _cls in (RandomSearch, EvolutionSearch):
    register_strategy(_cls)

# strategies defined in their own modules register themselves on import (they import this module)
import nas.guided  # noqa: E402,F401  predictor-guided search
import nas.optuna_adapter  # noqa: E402,F401  Optuna's NSGA-II and TPE behind the same interface
