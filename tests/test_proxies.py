"""Training-free proxies: finite, deterministic, side-effect free, sensible on a big-vs-tiny pair;
as features of an accuracy predictor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from predictors.accuracy import arch_features, make_predictor, out_of_fold
from predictors.proxies import PROXIES, draw_batches, list_proxies, proxy_scores, score
from search_spaces import HybridSupernet, ModelSpec, get_space
from search_spaces.static import initialised_subnet

# proxies that grow with the size of a subnet at initialisation, as their papers intend
GROW_WITH_SIZE = ("params", "flops", "naswot", "synflow")


def _batches(spec: ModelSpec, n: int = 16, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n, *spec.input_shape(1)[1:], generator=g)
    return draw_batches(x, torch.randint(0, spec.num_classes, (2 * n,), generator=g), batches=2, batch_size=n)


@pytest.fixture(scope="module")
def tiny():
    space = get_space("tiny")
    return space, ModelSpec.from_config(space.config)


def test_the_registry_holds_the_baselines_and_the_four_proxies():
    assert list_proxies() == ["flops", "grad_norm", "jacob_cov", "naswot", "params", "synflow"]


@pytest.mark.parametrize("name", list_proxies())
def test_a_proxy_is_finite_deterministic_and_leaves_the_model_as_it_was(tiny, name):
    space, spec = tiny
    model = initialised_subnet(spec, space.smallest(), seed=0).train()
    batches = _batches(spec)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(batches[0][0])
    first, second = score(name, model, batches), score(name, model, batches)
    assert math.isfinite(first) and first == second
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert model.training and all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(batches[0][0]), before)


@pytest.mark.parametrize("name", list_proxies())
def test_a_proxy_scores_sequence_subnets_and_inherited_weights(name):
    space = get_space("seq")
    torch.manual_seed(0)
    model = HybridSupernet(space).extract(space.smallest())  # a supernet's (here untrained) weights
    assert math.isfinite(score(name, model, _batches(model.spec)))


@pytest.mark.parametrize("name", GROW_WITH_SIZE)
def test_a_clearly_bigger_subnet_scores_higher(tiny, name):
    space, spec = tiny
    small, big = space.smallest(), space.sample(np.random.default_rng(3))
    assert space.count_params(big) > 2 * space.count_params(small)
    batches = _batches(spec)
    scores = [score(name, initialised_subnet(spec, a, seed=0), batches) for a in (small, big)]
    assert scores[1] > scores[0]


def test_proxy_scores_are_a_table_reproduced_by_the_seed(tiny):
    space, spec = tiny
    archs = [space.smallest(), space.sample(np.random.default_rng(1))]
    batches = _batches(spec, n=8)
    names = ["params", "naswot", "grad_norm"]
    table = proxy_scores(spec, archs, batches, names, seed=0)
    assert table.shape == (2, 3) and np.isfinite(table).all()
    assert np.array_equal(table, proxy_scores(spec, archs, batches, names, seed=0))
    other = proxy_scores(spec, archs, batches, names, seed=1)
    assert np.array_equal(other[:, 0], table[:, 0]) and not np.array_equal(other[:, 2], table[:, 2])


def test_bad_input_is_refused(tiny):
    space, spec = tiny
    model = initialised_subnet(spec, space.smallest(), seed=0)
    with pytest.raises(ValueError, match="unknown proxy 'snip'"):
        score("snip", model, _batches(spec))
    with pytest.raises(ValueError, match="at least one"):
        score("naswot", model, [])
    with pytest.raises(TypeError, match="SubnetModel"):
        score("flops", nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), _batches(spec))
    with pytest.raises(ValueError, match="unknown proxy"):
        proxy_scores(spec, [space.smallest()], _batches(spec), ["params", "nope"])


def test_draw_batches_are_disjoint_and_seeded():
    x, y = torch.arange(50.0).view(50, 1), torch.arange(50)
    a = draw_batches(x, y, batches=3, batch_size=10, seed=4)
    assert [len(b[1]) for b in a] == [10, 10, 10] and len(set(torch.cat([b[1] for b in a]).tolist())) == 30
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, draw_batches(x, y, batches=3, batch_size=10, seed=4)))
    assert [len(b[1]) for b in draw_batches(x, y, batches=2, batch_size=40)] == [25, 25]  # too few rows: smaller


def test_proxy_features_extend_the_predictor_features(tiny):
    """Arch features plus proxy columns fit, predict and cross-validate like any feature rows."""
    space, spec = tiny
    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(12)))
    proxies = proxy_scores(spec, archs, _batches(spec, n=8), ["synflow", "params"])
    x = np.hstack([arch_features(space, archs), proxies])
    y = np.log(proxies[:, 1])  # a target the proxy columns explain
    model = make_predictor("ridge", seed=0).fit(x, y)
    assert model.predict(x).shape == (len(archs),)
    oof = out_of_fold(x, y, "ridge", folds=3, seed=0)
    assert np.array_equal(oof, out_of_fold(x, y, "ridge", folds=3, seed=0))
    assert PROXIES.get("synflow").uses_data is False
