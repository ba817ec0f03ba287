"""Search strategies behind one ask/tell interface; the caller owns the loop and the budget.

Objectives are minimized (pass -accuracy). `violation` > 0 marks a subnet that breaks a hard
limit; constrained strategies rank by Deb's constraint domination. Each strategy owns its own
`np.random.Generator`; `prefilter` is an optional cheap feasibility test (for example the exact
parameter count) applied before a candidate is proposed, with a bounded number of redraws: when
none passes, the last draw is proposed anyway (evaluated, it is recorded as infeasible), a
`RetryWarning` says so and `exhausted_redraws` counts it.

Tells answer asks in order. `ready()` says how many candidates may be asked now, while tells are
still pending, that a sequential ask-tell run would have asked too: a parallel search (several
evaluations in flight, `nas.cluster.evaluate`) that asks only that many and tells in ask order
proposes exactly what the sequential run proposes, whatever the number of workers.
"""

from __future__ import annotations

import inspect
import sys
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.errors import FieldError, UserError, draw_bounded
from search_spaces import Arch, SearchSpace
from search_spaces.arch import show
from search_spaces.registry import Registry

Prefilter = Callable[[Arch], bool]
PREFILTER = "passed the prefilter (a feasibility test such as the max_params limit)"  # for RetryWarning
MAX_REDRAWS = 200  # draws after the first before a proposal that fails the prefilter is taken anyway
UNBOUNDED = sys.maxsize  # `ready()` of a strategy whose proposals never depend on the tells


@dataclass(frozen=True)
class Surrogate:
    """What a model-based strategy may compute about a candidate without evaluating it on the supernet.

    `cost`: the exact value of the second objective (analytic FLOPs/params/memory, or latency
    predicted from a profile) when it is cheap; None when it is measured, and must be learned from
    the told values. `violation(arch, cost)`: the limits' violation of `arch` given its (exact or
    estimated) cost objective; limits on metrics that are neither cheap nor the objective count 0
    there, and `complete=False` says so (a model-based strategy then learns the violation too).
    `proxies(archs, names)`: training-free proxies (`predictors.proxies`) of each architecture at
    its initialisation on a few training batches, (len(archs), len(names)); None without data.
    """

    cost: Callable[[Arch], float] | None
    violation: Callable[[Arch, float], float]
    complete: bool = True  # False: some limit's metric is measured (neither cheap nor the objective)
    proxies: Callable[[Sequence[Arch], Sequence[str]], np.ndarray] | None = None


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
        self.exhausted_redraws = 0  # proposals that failed the prefilter in every draw
        self._smallest_tried = False

    @abstractmethod
    def _propose(self) -> Arch: ...

    def ready(self) -> int:
        """How many candidates may be asked now without changing what a sequential run (each ask
        after the tells of all earlier asks) would have asked. At least 1 when no tell is pending.
        This default suits any strategy: one at a time."""
        return 0 if self.pending else 1

    def _initial_sample(self) -> Arch:
        """A subnet of a strategy's initial random sample: the smallest subnet first (the most
        likely to meet every limit), then uniform draws."""
        if not self._smallest_tried:
            self._smallest_tried = True
            return self.space.smallest()
        return self.space.sample(self.rng)

    def ask(self) -> Arch:
        """A candidate that passes the prefilter, when one does within 1 + MAX_REDRAWS draws; else
        the last one drawn (see the module's docstring)."""
        arch, passed = draw_bounded(self._propose, self._prefilter_gap, tries=1 + MAX_REDRAWS,
                                    what=f"a proposal of strategy {self.name!r}", constraint=PREFILTER,
                                    fallback="proposing the last one anyway: it is infeasible")
        if not passed:
            self.exhausted_redraws += 1
        self.pending.append(arch)
        return arch

    def _prefilter_gap(self, arch: Arch) -> float:
        """0 when `arch` passes the prefilter (or there is none), else 1: a `draw_bounded` gap."""
        return 0.0 if self.prefilter is None or self.prefilter(arch) else 1.0

    def tell(self, arch: Arch, objectives: tuple[float, ...], violation: float) -> None:
        """The result of the oldest pending ask (or of a subnet never asked, when none is pending)."""
        if self.pending:
            self.pending.popleft()
        self.history.append(Observation(arch, tuple(float(o) for o in objectives), float(violation)))


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", UserError)
register_strategy = STRATEGIES.register  # class decorator; the class's `name` is its key


def list_strategies() -> list[str]:
    return STRATEGIES.names()


def strategies_with_predictor() -> list[str]:
    """The strategies that learn an accuracy predictor, whose family `make_strategy(..., predictor=)` picks."""
    return [name for name, cls in STRATEGIES.items() if cls.predicts_accuracy]


# keyword arguments the search itself passes (or, for n_objectives, fixes): not options a user sets
SET_BY_SEARCH = frozenset({"space", "seed", "prefilter", "surrogate", "predictor", "n_objectives"})


def strategy_options(name: str) -> list[str]:
    """The options of strategy `name` (`make_strategy(..., options=)`): the keyword-only arguments
    of its constructor, beyond those the search passes."""
    signature = inspect.signature(STRATEGIES.get(name).__init__)
    return sorted(p.name for p in signature.parameters.values()
                  if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in SET_BY_SEARCH)


def check_options(name: str, options: Iterable[str]) -> None:
    """Every name in `options` is an option of strategy `name` (their values are the constructor's to check)."""
    accepted = strategy_options(name)
    if unknown := sorted(set(options) - set(accepted), key=str):
        key = unknown[0] if isinstance(unknown[0], str) and unknown[0].isidentifier() else show(unknown[0])
        raise FieldError(key, f"is not an option of strategy {name!r} (its options: {', '.join(accepted) or 'none'})")


def make_strategy(name: str, space: SearchSpace, *, seed: int, prefilter: Prefilter | None = None,
                  surrogate: Surrogate | None = None, predictor: str | None = None,
                  options: Mapping[str, Any] | None = None) -> Strategy:
    """`predictor`: the accuracy predictor family of a strategy that learns one (None: its default);
    `options`: more keyword arguments of its constructor (`strategy_options(name)`), which checks them."""
    cls = STRATEGIES.get(name)
    options = dict(options or {})
    check_options(name, options)
    if predictor is not None:
        if not cls.predicts_accuracy:
            raise UserError(f"strategy {name!r} learns no accuracy predictor; predictor={predictor!r} does not apply to it")
        options["predictor"] = predictor
    return cls(space, seed=seed, prefilter=prefilter, surrogate=surrogate, **options)
