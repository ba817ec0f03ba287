"""Accuracy predictors: a scalar regressor over the architectures of a search space.

A predictor-guided search refits one on every (arch, accuracy) pair seen so far (20 to a few
hundred) after each batch of evaluations, then ranks thousands of candidates with it, as LINAS
(Cummings et al., "A Hardware-Aware Framework for Accelerating Neural Architecture Search Across
Modalities", 2022; Intel's DyNAS-T) does. The same regressors fit a measured latency.

- `arch_features(space, archs)`: one-hot global choices plus summary features (log parameters
  and multiply-adds per block kind, block counts per type and mixer, tokens seen by attention).
- Families behind `fit(X, y) -> self` / `predict(X)`: "ridge", "gbt", "gp", "mlp" and their mean
  "ensemble", registered (`register_predictor`, `list_predictors`, `make_predictor(name, seed=)`).
- `select_predictor` picks a family by cross-validated Kendall tau (ranking is what a search
  needs); "auto" (`AutoPredictor`) selects, then refits the winner on all the data.

How well they rank: docs/benchmarks.md ("Accuracy predictors").
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from search_spaces import Arch, AttnBlock, ConvBlock, ModelSpec, SearchSpace, block_macs, block_params, block_specs
from search_spaces.mixers import TOKEN_MIXERS
from search_spaces.registry import Registry

__all__ = [
    "AutoPredictor",
    "EnsemblePredictor",
    "Predictor",
    "Selection",
    "arch_features",
    "kendall_tau",
    "list_predictors",
    "load_backends",
    "make_predictor",
    "out_of_fold",
    "register_predictor",
    "select_predictor",
]


# ---- features ------------------------------------------------------------------------------
def _choice_features(space: SearchSpace, arch: Arch) -> list[float]:
    """One-hot of every global choice that has alternatives: resolution, stem width, and per stage
    width, stride and depth (their effect need not be monotone: the best input resolution of a
    supernet is often a middle one)."""
    c = space.config
    pairs = [(arch.resolution, c.resolutions), (arch.stem_width, c.stem_widths)]
    for s, choices in zip(arch.stages, c.stages):
        pairs += [(s.width, choices.widths), (s.stride, choices.strides), (s.depth, choices.depths)]
    return [float(value == option) for value, options in pairs if len(options) > 1 for option in options]


def _summary_features(spec: ModelSpec, arch: Arch) -> list[float]:
    """Log parameters and multiply-adds (total, conv blocks, transformer blocks), block counts per
    type and mixer, sums of kernels, expansions, MLP ratios and heads, tokens mixed by attention,
    final resolution and width."""
    macs, params, tokens = {"conv": 0, "attn": 0, "other": 0}, {"conv": 0, "attn": 0, "other": 0}, 0
    units = block_specs(spec, arch)
    for u in units:
        kind = u.kind if u.kind in ("conv", "attn") else "other"
        macs[kind] += block_macs(u)
        params[kind] += block_params(u)
        tokens += u.in_resolution**u.dims if u.kind == "attn" else 0
    conv = [b for b in arch.blocks if isinstance(b, ConvBlock)]
    attn = [b for b in arch.blocks if isinstance(b, AttnBlock)]
    return [
        math.log(sum(params.values())), math.log(sum(macs.values())),
        *(math.log1p(params[k]) for k in ("conv", "attn")), *(math.log1p(macs[k]) for k in ("conv", "attn")),
        len(conv) + len(attn), len(conv), len(attn), *(sum(b.mixer == m for b in attn) for m in TOKEN_MIXERS),
        sum(b.kernel for b in conv), sum(b.expand for b in conv), sum(b.mlp_ratio for b in attn),
        sum(b.heads for b in attn), math.log1p(tokens), units[-1].in_resolution, arch.stages[-1].width,
    ]


def arch_features(space: SearchSpace, archs: Sequence[Arch]) -> np.ndarray:
    """(n, d) float64 rows: one-hot global choices, then summary features. Validates every arch.

    Block-by-block detail (`space.encode`) is left out on purpose: on a trained supernet's
    accuracies it lowered the held-out Kendall tau of ridge and GP fitted on 50-200 subnets (too
    many noisy columns for so few samples), and left boosted trees unchanged."""
    spec = ModelSpec.from_config(space.config)
    rows = [_choice_features(space, a) + _summary_features(spec, a) for a in map(space.validate, archs)]
    if not rows:
        return np.empty((0, len(arch_features(space, [space.smallest()])[0])))
    return np.asarray(rows, dtype=np.float64)


# ---- shared helpers ------------------------------------------------------------------------
def _check_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"X must be a 2-D array (samples, features), got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"y must be a 1-D array with one value per row of X ({len(x)}), got shape {y.shape}")
    if len(y) < 2:
        raise ValueError(f"need at least 2 samples to fit, got {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("X and y must be finite (no NaN or inf)")
    return x, y


class _Scaler:
    """Standardizes columns with the statistics of `x`; a constant column is only centred."""

    def __init__(self, x: np.ndarray) -> None:
        std = x.std(axis=0)
        self.mean, self.scale = x.mean(axis=0), np.where(std > 1e-12, std, 1.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale


def load_backends() -> None:
    """Import scipy now (it loads on first use, not when this module is imported),
    so that a caller timing its own work does not count a one-time library import in it."""
    import scipy.optimize
    import scipy.stats  # noqa: F401  Kendall tau (scikit-learn, for "gbt" and "gp", still loads on first use)


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall tau-b; 0.0 where undefined (a constant input carries no ranking)."""
    from scipy.stats import kendalltau  # scipy and scikit-learn load on first use, not on import

    tau = kendalltau(a, b).statistic
    return 0.0 if not np.isfinite(tau) else float(tau)


# ---- the interface and the registry ---------------------------------------------------------
class Predictor(ABC):
    """A scalar regressor over feature rows. Deterministic given `seed` and the data."""

    name: ClassVar[str]

    def __init__(self, *, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        self._n_features: int | None = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> Predictor:
        x, y = _check_xy(x, y)
        with warnings.catch_warnings():  # small data: convergence notes (UserWarning) are expected
            warnings.simplefilter("ignore", UserWarning)
            self._fit(x, y)
        self._n_features = x.shape[1]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self._n_features is None:
            raise ValueError(f"predictor {self.name!r} is not fitted: call fit(X, y) first")
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self._n_features:
            raise ValueError(f"X must have shape (n, {self._n_features}), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("X must be finite (no NaN or inf)")
        return np.asarray(self._predict(x), dtype=np.float64).reshape(len(x))

    @abstractmethod
    def _fit(self, x: np.ndarray, y: np.ndarray) -> None: ...

    @abstractmethod
    def _predict(self, x: np.ndarray) -> np.ndarray: ...


PREDICTORS: Registry[type[Predictor]] = Registry("predictor")
register_predictor = PREDICTORS.register  # class decorator; the class's `name` is its key


def list_predictors() -> list[str]:
    return PREDICTORS.names()


def make_predictor(name: str, *, seed: int) -> Predictor:
    return PREDICTORS.get(name)(seed=seed)


# ---- families ------------------------------------------------------------------------------
@register_predictor
class RidgePredictor(Predictor):
    """Standardized features, ridge in closed form; the penalty minimises the exact leave-one-out
    error over a grid (one SVD serves every penalty)."""

    name = "ridge"
    ALPHAS = np.logspace(-3, 4, 15)  # relative to the number of samples

    def _fit(self, x: np.ndarray, y: np.ndarray) -> None:
        self._scaler = _Scaler(x)
        z, self._offset = self._scaler(x), y.mean()
        u, s, vt = np.linalg.svd(z, full_matrices=False)
        uty, best = u.T @ (y - self._offset), (np.inf, None)
        for alpha in self.ALPHAS * len(y):
            shrink = s**2 / (s**2 + alpha)
            resid = y - self._offset - u @ (shrink * uty)
            hat = (u**2) @ shrink + 1.0 / len(y)  # leverage, the intercept included
            loo = float(np.mean((resid / np.maximum(1.0 - hat, 1e-9)) ** 2))
            if loo < best[0]:
                best = (loo, vt.T @ (s / (s**2 + alpha) * uty))
        self._coef = best[1]

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return self._scaler(x) @ self._coef + self._offset


@register_predictor
class GBTPredictor(Predictor):
    """Gradient-boosted depth-3 trees with row subsampling (scikit-learn)."""

    name = "gbt"

    def _fit(self, x: np.ndarray, y: np.ndarray) -> None:
        from sklearn.ensemble import GradientBoostingRegressor

        self._model = GradientBoostingRegressor(
            n_estimators=150, max_depth=3, learning_rate=0.05, subsample=0.8, min_samples_leaf=3,
            max_features=0.5, random_state=self.seed,
        ).fit(x, y)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return self._model.predict(x)


@register_predictor
class GPPredictor(Predictor):
    """Gaussian process: constant * Matern(5/2) + white noise on standardized features, y normalised."""

    name = "gp"

    def _fit(self, x: np.ndarray, y: np.ndarray) -> None:
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        self._scaler = _Scaler(x)
        d = x.shape[1]
        kernel = ConstantKernel(1.0, (1e-2, 1e2)) * Matern(math.sqrt(d), (1e-1, 1e3), nu=2.5) \
            + WhiteKernel(0.1, (1e-4, 1.0))
        self._model = GaussianProcessRegressor(kernel, normalize_y=True, random_state=self.seed)
        self._model.fit(self._scaler(x), y)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return self._model.predict(self._scaler(x))


@register_predictor
class MLPPredictor(Predictor):
    """Mean of 5 one-hidden-layer tanh MLPs with weight decay, each from its own initialisation,
    trained together by full-batch L-BFGS (numpy + scipy: their losses are independent sums)."""

    name = "mlp"
    MEMBERS, HIDDEN, ALPHA, MAX_ITER = 5, 16, 10.0, 100  # ALPHA: L2 weight, scikit-learn's convention

    def _fit(self, x: np.ndarray, y: np.ndarray) -> None:
        from scipy.optimize import minimize

        self._scaler, self._y = _Scaler(x), (float(y.mean()), float(y.std()) or 1.0)
        z, t = self._scaler(x), (y - self._y[0]) / self._y[1]
        m, (n, d), h = self.MEMBERS, z.shape, self.HIDDEN
        rng = np.random.default_rng(self.seed)
        init = [rng.normal(0, d**-0.5, (m, d, h)), np.zeros((m, h)), rng.normal(0, h**-0.5, (m, h)), np.zeros(m)]
        decay = self.ALPHA / n

        def unpack(theta: np.ndarray) -> list[np.ndarray]:  # w1 (M, d, H), b1 (M, H), w2 (M, H), b2 (M,)
            parts = np.split(theta, np.cumsum([a.size for a in init])[:-1])
            return [p.reshape(a.shape) for p, a in zip(parts, init)]

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w1, b1, w2, b2 = unpack(theta)
            a = np.tanh(z @ w1 + b1[:, None])  # (M, n, H)
            r = (a @ w2[:, :, None])[..., 0] + b2[:, None] - t  # (M, n)
            da = r[:, :, None] * w2[:, None, :] * (1 - a**2) / n  # (M, n, H)
            grads = [z.T @ da + decay * w1, da.sum(1), (r[:, None, :] @ a)[:, 0] / n + decay * w2, r.sum(1) / n]
            value = 0.5 * (r**2).sum() / n + 0.5 * decay * ((w1**2).sum() + (w2**2).sum())
            return value, np.concatenate([g.ravel() for g in grads])

        theta = np.concatenate([a.ravel() for a in init])
        result = minimize(loss, theta, jac=True, method="L-BFGS-B", options={"maxiter": self.MAX_ITER})
        self._params = unpack(result.x)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        w1, b1, w2, b2 = self._params
        a = np.tanh(self._scaler(x) @ w1 + b1[:, None])  # (M, n, H)
        return ((a @ w2[:, :, None])[..., 0] + b2[:, None]).mean(0) * self._y[1] + self._y[0]


@register_predictor
class EnsemblePredictor(Predictor):
    """Mean prediction of ridge, gbt, gp and mlp fitted on the same data. Their errors differ, so
    on noisy supernet accuracies the mean tends to rank better than each of them."""

    name = "ensemble"
    MEMBERS = ("ridge", "gbt", "gp", "mlp")

    def _fit(self, x: np.ndarray, y: np.ndarray) -> None:
        self._models = [make_predictor(n, seed=self.seed).fit(x, y) for n in self.MEMBERS]

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return np.mean([m.predict(x) for m in self._models], axis=0)


# ---- selection -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """The chosen family and each candidate's cross-validated Kendall tau (empty, folds 0: chosen
    without cross-validation, too few samples)."""

    name: str
    taus: Mapping[str, float]
    folds: int


def _check_selection(candidates: Sequence[str] | None, folds: int, fallback: str) -> tuple[str, ...]:
    allowed = [n for n in list_predictors() if n != AutoPredictor.name]
    names = tuple(allowed if candidates is None else candidates)
    if not names:
        raise ValueError("candidates must name at least one predictor")
    for n in (*names, fallback):
        if n not in allowed:
            raise ValueError(f"unknown candidate predictor {n!r}; choose from {allowed}")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    return names


def out_of_fold(x: np.ndarray, y: np.ndarray, name: str, *, folds: int, seed: int) -> np.ndarray:
    """Predictions of family `name` for each row of `x`, fitted on the other folds (`folds` random
    folds of the rows, seeded: the same rows fall together for the same `seed` and length)."""
    x, y = _check_xy(x, y)
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    oof = np.empty_like(y)
    for k in range(folds):
        test = fold == k
        oof[test] = make_predictor(name, seed=seed).fit(x[~test], y[~test]).predict(x[test])
    return oof


def select_predictor(x: np.ndarray, y: np.ndarray, *, candidates: Sequence[str] | None = None, folds: int = 5,
                     seed: int = 0, fallback: str = "ridge") -> Selection:
    """The candidate (default: every registered family but "auto") whose out-of-fold predictions
    over `folds` random folds have the best Kendall tau with `y`; the first listed wins a tie.
    Below 2 * `folds` samples, `fallback` without cross-validation."""
    names = _check_selection(candidates, folds, fallback)
    x, y = _check_xy(x, y)
    if len(y) < 2 * folds:
        return Selection(fallback, {}, 0)
    oof: dict[str, np.ndarray] = {}
    for n in sorted(names, key=lambda n: n == EnsemblePredictor.name):  # the ensemble's members first
        if n == EnsemblePredictor.name and set(EnsemblePredictor.MEMBERS) <= oof.keys():
            oof[n] = np.mean([oof[m] for m in EnsemblePredictor.MEMBERS], axis=0)  # what it would predict
            continue
        oof[n] = out_of_fold(x, y, n, folds=folds, seed=seed)
    taus = {n: kendall_tau(oof[n], y) for n in names}
    return Selection(max(names, key=lambda n: (taus[n], -names.index(n))), taus, folds)


@register_predictor
class AutoPredictor(Predictor):
    """`select_predictor` on every fit, then the winner refitted on all the data. It costs `folds`
    fits of every candidate: a search refitting after each batch may rather select every few
    batches and refit `make_predictor(selection.name, seed=...)` in between."""

    name = "auto"

    def __init__(self, *, seed: int, candidates: Sequence[str] | None = None, folds: int = 5) -> None:
        super().__init__(seed=seed)
        self.candidates, self.folds = _check_selection(candidates, folds, "ridge"), folds
        self.selection: Selection | None = None

    def _fit(self, x: np.ndarray, y: np.ndarray) -> None:
        self.selection = select_predictor(x, y, candidates=self.candidates, folds=self.folds, seed=self.seed)
        self._model = make_predictor(self.selection.name, seed=self.seed).fit(x, y)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return self._model.predict(x)
