"""Accuracy predictors: features, every registered family, selection, and input checks."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from predictors import (
    AutoPredictor,
    Predictor,
    arch_features,
    kendall_tau,
    list_predictors,
    make_predictor,
    register_predictor,
    select_predictor,
)
from search_spaces import ArchError, AttnBlock, get_space

FAMILIES = list_predictors()
# "auto" cross-validates every other family: its fits are the slow ones
SLOW_AUTO = [pytest.param(n, marks=pytest.mark.slow) if n == "auto" else n for n in FAMILIES]


def synthetic_accuracy(space, archs, rng: np.random.Generator) -> np.ndarray:
    """A saturating function of log parameters, a bonus per softmax block, a penalty for the
    largest resolution, and a little noise: what a supernet's accuracies roughly look like."""
    log_params = np.array([math.log(space.count_params(a)) for a in archs])
    softmax = np.array([sum(isinstance(b, AttnBlock) and b.mixer == "softmax" for b in a.blocks) for a in archs])
    big = np.array([a.resolution == max(space.config.resolutions) for a in archs])
    clean = 0.8 + 0.06 * np.tanh(log_params - np.median(log_params)) + 0.01 * softmax - 0.02 * big
    return clean + rng.normal(0.0, 0.004, len(archs))


@pytest.fixture(scope="module")
def data():
    space = get_space("tiny")
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(450)]
    return space, arch_features(space, archs), synthetic_accuracy(space, archs, rng)


# ---- features ------------------------------------------------------------------------------
def test_features_are_fixed_length_finite_and_pure(data):
    space, x, _ = data
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(5)] + [space.smallest(), space.largest()]
    feats = arch_features(space, archs)
    assert feats.dtype == np.float64 and feats.shape == (7, x.shape[1])
    assert np.isfinite(feats).all()
    assert np.array_equal(feats, arch_features(space, archs))
    assert np.array_equal(feats[2], arch_features(space, [archs[2]])[0])
    assert arch_features(space, []).shape == (0, x.shape[1])
    assert not np.array_equal(feats[-2], feats[-1])
    assert (x.std(axis=0) > 0).all()  # every column is informative


def test_features_rank_cost(data):
    space, _, _ = data
    small, large = arch_features(space, [space.smallest(), space.largest()])
    assert large[-20] > small[-20] and large[-19] > small[-19]  # log params, log multiply-adds


def test_features_reject_an_arch_of_another_space():
    with pytest.raises(ArchError):
        arch_features(get_space("tiny"), [get_space("cifar").smallest()])


# ---- every family --------------------------------------------------------------------------
@pytest.mark.parametrize("name", SLOW_AUTO)
def test_fit_predict_shapes_and_determinism(name, data):
    _, x, y = data
    model = make_predictor(name, seed=3)
    assert isinstance(model, Predictor) and model.name == name
    assert model.fit(x[:60], y[:60]) is model
    pred = model.predict(x[60:80])
    assert pred.shape == (20,) and pred.dtype == np.float64 and np.isfinite(pred).all()
    again = make_predictor(name, seed=3).fit(x[:60], y[:60]).predict(x[60:80])
    assert np.array_equal(pred, again)
    with pytest.raises(ValueError, match="shape"):
        model.predict(x[:5, :-1])


@pytest.mark.parametrize("name", SLOW_AUTO)
def test_learns_an_architecture_based_target(name, data):
    _, x, y = data
    model = make_predictor(name, seed=0).fit(x[:150], y[:150])
    tau = kendall_tau(model.predict(x[150:]), y[150:])
    assert tau > 0.75, f"{name}: held-out Kendall tau {tau:.3f}"  # 0.82-0.88 measured over 3 data seeds


@pytest.mark.slow
def test_same_predictions_in_another_process(data):
    """Seeded, with no hidden global state: a fresh interpreter with the same BLAS settings
    reproduces the predictions bit for bit (another BLAS kernel may change the last bits)."""
    _, x, y = data
    code = (
        "import sys, numpy as np; from predictors import make_predictor\n"
        "x, y = (np.frombuffer(bytes.fromhex(a)).copy() for a in sys.argv[1:]); x = x.reshape(40, -1)\n"
        "fits = (make_predictor(n, seed=5).fit(x[:30], y[:30]) for n in ('gbt', 'mlp'))\n"
        "print(' '.join(m.predict(x[30:]).tobytes().hex() for m in fits))"
    )
    fits = (make_predictor(n, seed=5).fit(x[:30], y[:30]) for n in ("gbt", "mlp"))
    here = " ".join(m.predict(x[30:40]).tobytes().hex() for m in fits)
    out = subprocess.run([sys.executable, "-c", code, x[:40].tobytes().hex(), y[:40].tobytes().hex()], check=True,
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": "."})
    assert out.stdout.strip() == here


@pytest.mark.parametrize("name", FAMILIES)
def test_predict_before_fit_is_an_error(name, data):
    with pytest.raises(ValueError, match="not fitted"):
        make_predictor(name, seed=0).predict(data[1][:3])


# ---- selection -----------------------------------------------------------------------------
def test_select_reports_every_candidate(data):
    _, x, y = data
    sel = select_predictor(x[:80], y[:80], candidates=["ridge", "gbt", "mlp"], folds=4, seed=1)
    assert sel.name in ("ridge", "gbt", "mlp") and sel.folds == 4
    assert set(sel.taus) == {"ridge", "gbt", "mlp"}
    assert all(-1.0 <= t <= 1.0 for t in sel.taus.values())
    assert sel.taus[sel.name] == max(sel.taus.values()) and sel.taus[sel.name] > 0.4
    assert select_predictor(x[:80], y[:80], candidates=["ridge", "gbt", "mlp"], folds=4, seed=1) == sel


def test_select_defaults_to_every_family_but_auto(data):
    _, x, y = data
    sel = select_predictor(x[:40], y[:40])
    assert set(sel.taus) == set(FAMILIES) - {"auto"}


@pytest.mark.slow
def test_select_scores_the_ensemble_from_its_members_exactly(data):
    _, x, y = data
    alone = select_predictor(x[:40], y[:40], candidates=["ensemble"], seed=4)
    shared = select_predictor(x[:40], y[:40], candidates=["ensemble", "ridge", "gbt", "gp", "mlp"], seed=4)
    assert alone.taus["ensemble"] == shared.taus["ensemble"]


def test_select_falls_back_without_cross_validation_on_few_samples(data):
    _, x, y = data
    sel = select_predictor(x[:9], y[:9], folds=5, fallback="gbt")
    assert (sel.name, dict(sel.taus), sel.folds) == ("gbt", {}, 0)
    assert AutoPredictor(seed=0).fit(x[:6], y[:6]).selection.name == "ridge"


def test_auto_refits_the_selected_family(data):
    _, x, y = data
    auto = AutoPredictor(seed=2, candidates=("ridge", "gp"), folds=3).fit(x[:60], y[:60])
    chosen = make_predictor(auto.selection.name, seed=2).fit(x[:60], y[:60])
    assert set(auto.selection.taus) == {"ridge", "gp"}
    assert np.array_equal(auto.predict(x[60:90]), chosen.predict(x[60:90]))


def test_constant_predictions_have_zero_tau():
    assert kendall_tau(np.ones(5), np.arange(5.0)) == 0.0
    assert kendall_tau(np.arange(5.0), np.arange(5.0)) == pytest.approx(1.0)


# ---- errors --------------------------------------------------------------------------------
def test_registry_errors():
    with pytest.raises(ValueError, match=r"unknown predictor 'xgb'.*ridge"):
        make_predictor("xgb", seed=0)

    class Duplicate(Predictor):
        name = "ridge"

        def _fit(self, x, y):  # pragma: no cover - never fitted
            raise AssertionError

        def _predict(self, x):  # pragma: no cover
            raise AssertionError

    with pytest.raises(ValueError, match="already registered"):
        register_predictor(Duplicate)
    with pytest.raises(ValueError, match="seed"):
        make_predictor("ridge", seed="0")


@pytest.mark.parametrize(
    "rows, targets, message",
    [
        (slice(0, 10), slice(0, 9), "one value per row"),
        (slice(0, 1), slice(0, 1), "at least 2 samples"),
    ],
)
def test_fit_rejects_mismatched_or_too_few_samples(rows, targets, message, data):
    _, x, y = data
    with pytest.raises(ValueError, match=message):
        make_predictor("gbt", seed=0).fit(x[rows], y[targets])


def test_fit_rejects_nan_and_bad_shapes(data):
    _, x, y = data
    bad = y[:10].copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        make_predictor("ridge", seed=0).fit(x[:10], bad)
    with pytest.raises(ValueError, match="2-D"):
        make_predictor("ridge", seed=0).fit(x[0], y[:1])
    with pytest.raises(ValueError, match="finite"):
        select_predictor(x[:20], bad.repeat(2))


def test_selection_rejects_bad_candidates_and_folds(data):
    _, x, y = data
    with pytest.raises(ValueError, match=r"unknown candidate predictor 'auto'"):
        select_predictor(x[:20], y[:20], candidates=["auto"])
    with pytest.raises(ValueError, match=r"unknown candidate predictor 'svm'"):
        AutoPredictor(seed=0, candidates=("ridge", "svm"))
    with pytest.raises(ValueError, match="folds"):
        select_predictor(x[:20], y[:20], folds=1)
    with pytest.raises(ValueError, match="at least one"):
        select_predictor(x[:20], y[:20], candidates=[])
