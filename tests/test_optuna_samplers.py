"""The Optuna adapter: the parameter codec, the ask/tell contract, constraints, and search behaviour."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from nas.errors import UserError
from nas.search.pareto import hypervolume_2d, pareto_indices
from nas.search.strategies import list_strategies, make_strategy
from nas.search.strategies.optuna_samplers import CONSTRAINT_KEY, ArchCodec, OptunaNSGA2, OptunaTPE
from search_spaces import SearchSpace, StageSpace, get_space, list_spaces
from search_spaces.presets import TINY
from tests.helpers import fake_objectives, run_strategy

NAMES = ["optuna-nsga2", "optuna-tpe"]


def _random_params(codec: ArchCodec, rng: np.random.Generator) -> dict:
    return {name: d.choices[int(rng.integers(len(d.choices)))] for name, d in codec.distributions.items()}


def _spaces() -> list[SearchSpace]:
    """Every registered space (all conv_first), a free layout, and a conv_first space whose attention-only
    stage forces the CNN-to-transformer switch into the earlier stages (the nearest-switch repair)."""
    stages = (TINY.stages[0], TINY.stages[1], StageSpace(depths=(1, 2), widths=(32,), block_types=("attn",)),
              TINY.stages[2])
    return [get_space(n) for n in list_spaces()] + [
        SearchSpace(replace(TINY, name="free", layout="free")),
        SearchSpace(replace(TINY, name="attn_stage", stages=stages, mixers=("pool", "window"))),
    ]


@pytest.mark.parametrize("space", _spaces(), ids=lambda s: s.config.name)
def test_encode_decode_round_trip(space):
    codec = ArchCodec(space)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(200)] + [space.smallest(), space.largest(), *space.smallest_variants()]
    for arch in archs:
        params = codec.encode(arch)
        assert params.keys() == codec.distributions.keys()
        assert all(params[n] in d.choices for n, d in codec.distributions.items())
        assert codec.decode(params) == arch


@pytest.mark.parametrize("space", _spaces(), ids=lambda s: s.config.name)
def test_any_parameters_decode_to_a_member_and_inactive_slots_do_not_matter(space):
    codec = ArchCodec(space)
    rng = np.random.default_rng(1)
    for _ in range(100):
        params = _random_params(codec, rng)
        arch = space.validate(codec.decode(params))  # conv_first layouts are repaired deterministically
        assert codec.decode(codec.encode(arch)) == arch
        noise = _random_params(codec, rng)
        inactive = {n for i, s in enumerate(arch.stages) for j in range(s.depth, max(space.config.stages[i].depths))
                    for n in params if n.startswith(f"s{i}.b{j}.")}
        assert codec.decode(params | {n: noise[n] for n in inactive}) == arch


@pytest.mark.parametrize("space", [s for s in _spaces() if s.config.layout == "conv_first"],
                         ids=lambda s: s.config.name)
def test_decode_repairs_the_layout_by_the_space_rule(space):
    """Decoding moves the switch as the space's own repair does (`SearchSpace.nearest_switch`)."""
    codec = ArchCodec(space)
    rng = np.random.default_rng(2)
    for _ in range(100):
        params = _random_params(codec, rng)
        arch = codec.decode(params)
        slots = [[codec._block(params, f"s{i}.b{j}.", codec._kind(params, i, j)) for j in range(s.depth)]
                 for i, s in enumerate(arch.stages)]  # each active slot with the type its parameters say
        repaired = space._repair(slots, rng)
        assert [type(b) for s in arch.stages for b in s.blocks] == [type(b) for row in repaired for b in row]


@pytest.mark.parametrize("name", NAMES)
def test_registered_and_asked_archs_are_members(name):
    assert name in list_strategies()
    space = get_space("cifar")  # conv_first, four stages
    strategy = make_strategy(name, space, seed=0)
    for _ in range(20):
        arch = strategy.ask()
        assert space.validate(arch) is arch
        strategy.tell(arch, *fake_objectives(space, arch))
    assert [t.state for t in strategy.study.trials] == [TrialState.COMPLETE] * 20


@pytest.mark.parametrize("cls", [OptunaNSGA2, OptunaTPE])
def test_tell_of_never_asked_archs(cls):
    space = get_space("tiny")
    strategy = cls(space, seed=0)
    rng = np.random.default_rng(2)
    replayed = [space.sample(rng) for _ in range(20)]
    for arch in replayed:
        strategy.tell(arch, *fake_objectives(space, arch))
    trials = strategy.study.trials
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert [strategy.codec.decode(t.params) for t in trials] == replayed
    assert [t.values for t in trials] == [list(fake_objectives(space, a)[0]) for a in replayed]
    if cls is OptunaNSGA2:  # the replayed trials fill NSGA-II's generations like asked ones
        sampler = strategy.study.sampler
        assert len(sampler.get_population(strategy.study, 0)) == 16
        assert len(sampler.get_population(strategy.study, 1)) == 4
    # a never-asked tell while a trial is pending leaves the pending trial to its own tell
    pending = strategy.ask()
    extra = next(a for a in (space.sample(rng) for _ in range(100)) if a != pending)
    strategy.tell(extra, *fake_objectives(space, extra))
    strategy.tell(pending, *fake_objectives(space, pending))
    last = strategy.study.trials[-2:]
    assert {strategy.codec.decode(t.params) for t in last} == {pending, extra}
    assert all(t.state == TrialState.COMPLETE for t in last)


@pytest.mark.parametrize("name", NAMES)
def test_prefilter_rejections_are_closed_as_failed(name):
    space = get_space("tiny")
    limit = 40000
    strategy = make_strategy(name, space, seed=0, prefilter=lambda a: space.count_params(a) <= limit)
    for _ in range(25):
        arch = strategy.ask()
        assert space.count_params(arch) <= limit
        strategy.tell(arch, *fake_objectives(space, arch))
    states = [t.state for t in strategy.study.trials]
    assert states.count(TrialState.COMPLETE) == 25 and TrialState.RUNNING not in states
    failed = [t for t in strategy.study.trials if t.state == TrialState.FAIL]
    assert failed and all(space.count_params(strategy.codec.decode(t.params)) > limit for t in failed)


def test_asking_again_without_a_tell_fails_the_first_trial():
    space = get_space("tiny")
    strategy = OptunaTPE(space, seed=0)
    first, second = strategy.ask(), strategy.ask()
    strategy.tell(second, *fake_objectives(space, second))
    assert [t.state for t in strategy.study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert strategy.codec.decode(strategy.study.trials[0].params) == first


@pytest.mark.parametrize("name", NAMES)
def test_violation_becomes_the_trial_constraint(name):
    space = get_space("tiny")
    strategy = make_strategy(name, space, seed=1)
    run_strategy(strategy, space, n=30)
    violations = [o.violation for o in strategy.history]
    assert [t.constraints for t in strategy.study.trials] == [{CONSTRAINT_KEY: v} for v in violations]
    assert 0 < sum(v > 0 for v in violations) < 30  # both feasible and infeasible subnets were told
    # Optuna's Pareto front (feasible trials only) is ours
    objs = np.array([o.objectives for o in strategy.history])[np.array(violations) <= 0]
    assert {tuple(t.values) for t in strategy.study.best_trials} == {tuple(objs[i]) for i in pareto_indices(objs)}


def test_nsga2_improves_over_its_first_population():
    space = get_space("tiny")
    strategy = OptunaNSGA2(space, seed=0, population_size=16)
    run_strategy(strategy, space, n=80)
    objs = np.array([o.objectives for o in strategy.history])
    viol = np.array([o.violation for o in strategy.history])
    ref = np.array([0.0, 6.0])
    first, later = slice(0, 16), slice(48, 80)
    assert hypervolume_2d(objs[later][viol[later] == 0], ref) > hypervolume_2d(objs[first][viol[first] == 0], ref)
    assert (viol[later] == 0).mean() > (viol[first] == 0).mean()  # constraint domination pushes to feasibility


def test_options_are_validated_and_optuna_stays_quiet():
    space = get_space("tiny")
    with pytest.raises(UserError, match="population_size"):
        OptunaNSGA2(space, population_size=1)
    with pytest.raises(UserError, match="n_startup_trials"):
        OptunaTPE(space, n_startup_trials=0)
    with pytest.raises(UserError, match="n_objectives"):
        OptunaTPE(space, n_objectives=0)
    verbosity = optuna.logging.get_verbosity()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        strategy = OptunaTPE(space, seed=0, n_startup_trials=2)
        run_strategy(strategy, space, n=4)  # multivariate TPE is experimental: its warning must not escape
    assert not caught and optuna.logging.get_verbosity() == verbosity
    with pytest.raises(ValueError, match="expected 2 objectives"):
        strategy.tell(strategy.ask(), (1.0,), 0.0)
