"""Optuna samplers behind our ask/tell `Strategy`, so they run in the same loop, budget and cache.

`optuna-nsga2`: NSGA-II (Deb et al., 2002) with constraint domination; `optuna-tpe`: multivariate,
multi-objective TPE (Ozaki et al., 2020) that ranks infeasible trials behind feasible ones.

Parametrization: a fixed set of categorical parameters, the same for every trial, so NSGA-II's
crossover and multivariate TPE see one search space. Globals (resolution, stem width); per stage
its depth, width and stride; per block slot (up to the stage's largest depth) its type when the
stage allows both, and every field of each allowed type (conv: kernel, expand; attn: mixer, heads,
mlp_ratio). Fields rather than one categorical over `space.block_options(kind)`: TPE's product
kernel then learns a field's effect (say, expand 2 is cheap) from every block that uses it, and
NSGA-II's uniform crossover mixes fields as the space's own operators do; a categorical with 30+
options would see a few observations per option. Only the first `depth` slots are decoded; with
`layout="conv_first"` the number of conv blocks comes from the slots' types, moved to the nearest
feasible switch by the space's own repair rule, and each position is decoded from its own slot's
fields of the type it gets, so decoding is deterministic. `encode` is the inverse for active slots
(inactive ones take the first choice), used to tell evaluations that were never asked.
"""

from __future__ import annotations

import contextlib
import warnings
from abc import abstractmethod
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import Trial, TrialState

from nas.errors import FieldError
from nas.search.strategies.base import Prefilter, Strategy, Surrogate, register_strategy
from search_spaces import Arch, AttnBlock, ConvBlock, SearchSpace, Stage
from search_spaces.mixers import has_qkv

Params = dict[str, Any]
CONSTRAINT_KEY = "violation"  # Optuna's convention: a value <= 0 is feasible, like ours


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Optuna's per-trial INFO lines and ExperimentalWarnings stay inside the calls of this module."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _int_at_least(option: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FieldError(option, f"must be an integer >= {minimum}, got {value!r}")
    return value


class ArchCodec:
    """An `Arch` of `space` <-> the values of a fixed set of Optuna categorical parameters."""

    def __init__(self, space: SearchSpace):
        self.space = space
        c = space.config
        choices: dict[str, tuple] = {"resolution": c.resolutions, "stem_width": c.stem_widths}
        for i, s in enumerate(c.stages):
            choices |= {f"s{i}.depth": s.depths, f"s{i}.width": s.widths, f"s{i}.stride": s.strides}
            for j in range(max(s.depths)):
                slot = f"s{i}.b{j}."
                if len(s.block_types) > 1:
                    choices[slot + "type"] = s.block_types
                if "conv" in s.block_types:
                    choices |= {slot + "kernel": c.kernels, slot + "expand": c.expand_ratios}
                if "attn" in s.block_types:
                    choices |= {slot + "mixer": c.mixers, slot + "heads": c.heads, slot + "mlp_ratio": c.mlp_ratios}
        self.distributions = {name: CategoricalDistribution(v) for name, v in choices.items()}

    def decode(self, params: Params) -> Arch:
        stages = self.space.config.stages
        depths = [params[f"s{i}.depth"] for i in range(len(stages))]
        kinds = [[self._kind(params, i, j) for j in range(d)] for i, d in enumerate(depths)]
        if self.space.config.layout == "conv_first":
            # the space's repair rule: the feasible switch nearest the conv count
            n_conv = self.space.nearest_switch(depths, sum(k == "conv" for row in kinds for k in row))
            offsets = [sum(depths[:i]) for i in range(len(depths))]
            kinds = [["conv" if o + j < n_conv else "attn" for j in range(d)] for o, d in zip(offsets, depths)]
        arch = Arch(
            resolution=params["resolution"],
            stem_width=params["stem_width"],
            stages=tuple(
                Stage(params[f"s{i}.width"], params[f"s{i}.stride"],
                      tuple(self._block(params, f"s{i}.b{j}.", k) for j, k in enumerate(row)))
                for i, row in enumerate(kinds)
            ),
        )
        return self.space.validate(arch)

    def _kind(self, params: Params, i: int, j: int) -> str:
        types = self.space.config.stages[i].block_types
        return params[f"s{i}.b{j}.type"] if len(types) > 1 else types[0]

    @staticmethod
    def _block(params: Params, slot: str, kind: str) -> ConvBlock | AttnBlock:
        if kind == "conv":
            return ConvBlock(params[slot + "kernel"], params[slot + "expand"])
        mixer = params[slot + "mixer"]
        return AttnBlock(mixer, params[slot + "heads"] if has_qkv(mixer) else 0, params[slot + "mlp_ratio"])

    def trial_distributions(self) -> dict[str, BaseDistribution]:
        """The distributions as Optuna's `ask` types them."""
        return {**self.distributions}

    def encode(self, arch: Arch) -> Params:
        """Parameters that decode to `arch`; inactive slots and unused fields take the first choice."""
        self.space.validate(arch)
        params = {name: d.choices[0] for name, d in self.distributions.items()}
        params |= {"resolution": arch.resolution, "stem_width": arch.stem_width}
        for i, s in enumerate(arch.stages):
            params |= {f"s{i}.depth": s.depth, f"s{i}.width": s.width, f"s{i}.stride": s.stride}
            for j, b in enumerate(s.blocks):
                slot = f"s{i}.b{j}."
                if slot + "type" in params:
                    params[slot + "type"] = "conv" if isinstance(b, ConvBlock) else "attn"
                if isinstance(b, ConvBlock):
                    params |= {slot + "kernel": b.kernel, slot + "expand": b.expand}
                    continue
                params |= {slot + "mixer": b.mixer, slot + "mlp_ratio": b.mlp_ratio}
                if has_qkv(b.mixer):
                    params[slot + "heads"] = b.heads
        return params


class OptunaStrategy(Strategy):
    """An Optuna sampler driven by `study.ask()`/`study.tell()` on an in-memory study.

    A trial that was asked but not told when the next trial is asked is closed as FAIL: this is how
    a candidate rejected by the prefilter ends (the base class's bounded redraws call `_propose`
    again). FAIL rather than a completed infeasible trial, because it has no objective values: made-up
    values would enter TPE's density split and NSGA-II's crowding, and would take a slot of NSGA-II's
    generation; both samplers skip FAIL trials. The prefilter is cheap, so redraws cost little.

    One trial at a time (`ready()` keeps the base class's default): TPE reads every completed trial,
    and NSGA-II places a trial in a generation by counting the trials completed when it is asked,
    so asking ahead of pending tells would change what either proposes.
    """

    def __init__(self, space: SearchSpace, *, seed: int = 0, prefilter: Prefilter | None = None,
                 surrogate: Surrogate | None = None, n_objectives: int = 2):
        super().__init__(space, seed=seed, prefilter=prefilter, surrogate=surrogate)  # surrogate: unused
        self.n_objectives = _int_at_least("n_objectives", n_objectives, minimum=1)
        self.codec = ArchCodec(space)
        with _quiet():
            self.study = optuna.create_study(directions=["minimize"] * n_objectives, sampler=self._sampler(seed))
        self._pending: tuple[Trial, Arch] | None = None

    @abstractmethod
    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler: ...

    def _propose(self) -> Arch:
        """Opens a trial and decodes it; the previous trial, if still untold, is closed as FAIL."""
        with _quiet():
            if self._pending is not None:
                self.study.tell(self._pending[0], state=TrialState.FAIL)
            trial = self.study.ask(self.codec.trial_distributions())
        self._pending = (trial, self.codec.decode(trial.params))
        return self._pending[1]

    def tell(self, arch: Arch, objectives: tuple[float, ...], violation: float) -> None:
        if len(objectives) != self.n_objectives:
            raise ValueError(f"{self.name}: expected {self.n_objectives} objectives, got {len(objectives)}")
        super().tell(arch, objectives, violation)
        told = self.history[-1]
        with _quiet():
            if self._pending is not None and self._pending[1] == arch:
                trial, self._pending = self._pending[0], None
            else:
                trial = self._replay(arch)
            trial.set_constraint(CONSTRAINT_KEY, told.violation)
            self.study.tell(trial, told.objectives)

    def _replay(self, arch: Arch) -> Trial:
        """A running trial with the parameters of `arch`, which was never asked (say, a previous run's
        evaluation told again on resume). Not `study.add_trial(create_trial(...))`: a trial added
        complete has no NSGA-II generation (set only while a trial runs), so NSGA-II would leave it
        out of every population. Enqueued and asked instead, it is placed like any asked trial."""
        self.study.enqueue_trial(self.codec.encode(arch))
        trial = self.study.ask(self.codec.trial_distributions())
        sampler = self.study.sampler
        if isinstance(sampler, optuna.samplers.BaseGASampler):  # fixed params skip sample_relative
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            sampler.get_trial_generation(self.study, next(t for t in running if t.number == trial.number))
        return trial


@register_strategy
class OptunaNSGA2(OptunaStrategy):
    name = "optuna-nsga2"

    def __init__(self, space: SearchSpace, *, seed: int = 0, prefilter: Prefilter | None = None,
                 surrogate: Surrogate | None = None, n_objectives: int = 2, population_size: int = 16):
        self.population_size = _int_at_least("population_size", population_size, minimum=2)
        super().__init__(space, seed=seed, prefilter=prefilter, surrogate=surrogate, n_objectives=n_objectives)

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=self.population_size)


@register_strategy
class OptunaTPE(OptunaStrategy):
    name = "optuna-tpe"

    def __init__(self, space: SearchSpace, *, seed: int = 0, prefilter: Prefilter | None = None,
                 surrogate: Surrogate | None = None, n_objectives: int = 2, n_startup_trials: int = 12):
        self.n_startup_trials = _int_at_least("n_startup_trials", n_startup_trials, minimum=1)
        super().__init__(space, seed=seed, prefilter=prefilter, surrogate=surrogate, n_objectives=n_objectives)

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=self.n_startup_trials)

