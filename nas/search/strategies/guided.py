"""Predictor-guided search: accuracy predictor trained online, large inner evolution on it.

In the spirit of LINAS (DyNAS-T; Cummings et al., 2022). After `initial` random subnets (the
smallest first) are evaluated on the supernet, every round:

1. refits an accuracy predictor on all the supernet evaluations so far; the family is chosen by
   cross-validated Kendall tau at 40, 160, 640... evaluations (`predictors.accuracy`); a cost
   predictor too when the cost objective is measured rather than computable;
2. runs a constrained NSGA-II on the predictors only. Its population lives on from round to round
   (re-scored by the refitted predictors, joined by the best evaluated subnets), so the search on
   the predictor grows with every round while each round stays cheap;
3. breeds offspring of the best *evaluated* subnets too (ranked by their real values): with a weak
   predictor the search still stays near what is known to be good;
4. proposes `batch` unevaluated candidates, a share `local` of them from those offspring, chosen
   greedily by predicted hypervolume improvement over the evaluated front, each candidate's
   accuracy taken one residual standard deviation above its prediction (optimism where the
   predictor is unsure); candidates that improve nothing are ranked by predicted front and
   crowding distance. Only these are evaluated on the supernet; then repeat.

Costs that can be computed exactly (analytic FLOPs, parameters, memory; latency predicted from a
profile) come from the `Surrogate` the search passes in and are never learned. The strategy never
looks at the clock, so a seed reproduces a search.

Training-free proxies (`predictors.proxies`, scored by the `Surrogate`) can serve twice, both off
by default (docs/benchmarks.md, "Training-free proxies"):

- `warm_start=PROXY`: the initial sample is the smallest subnet, then from `WARM_POOL` x `initial`
  random subnets cut into `initial - 1` equal-count bins by cost, the best of each bin by PROXY:
  it still spans the cost axis the front needs, but picks the likeliest subnet at each cost.
- `proxy_features=NAME,NAME`: those proxies as extra features of the accuracy predictor, used only
  while cross-validation on the evaluations so far says they help (a Kendall tau gain of at least
  `MIN_TAU_GAIN`, checked at 40 evaluations and whenever the sample has quadrupled). Once used,
  every candidate the inner search scores is scored by the proxies too, which costs more than the
  predictor itself.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from nas.errors import FieldError, UserError, draw_bounded
from nas.search.pareto import environmental_selection, hypervolume_improvement, non_dominated_sort
from nas.search.strategies.base import PREFILTER, Observation, Prefilter, Strategy, Surrogate, register_strategy
from predictors.accuracy import (
    arch_features,
    kendall_tau,
    list_predictors,
    load_backends,
    make_predictor,
    out_of_fold,
    select_predictor,
)
from predictors.proxies import list_proxies
from search_spaces import Arch, SearchSpace
from search_spaces.arch import is_finite_number

# families compared by cross-validation when `predictor="auto"`: the cheapest to fit. On supernet
# accuracies the Gaussian process, gradient-boosted trees and the ensemble rank no better and cost
# more (docs/benchmarks.md, "Accuracy predictors"); `predictor="gp"` (or any family) forces one.
SELECTED_FAMILIES = ("ridge", "mlp")
Acquisition = Literal["hvi", "front"]
SELECTION_FOLDS = 3  # each selection fits every family this many times
MIN_SELECTION_SAMPLES = 40  # below, ridge regression (the family that needs the least data)
MIN_TAU_GAIN = 0.02  # cross-validated Kendall tau a family must gain over ridge to be chosen
POPULATION_DRAWS = 50  # random draws for a member of the inner population that passes the prefilter
WARM_POOL = 10  # random subnets scored by the warm start's proxy per subnet of the initial sample


@register_strategy
class PredictorGuidedSearch(Strategy):
    name = "predictor"
    predicts_accuracy = True

    def __init__(self, space: SearchSpace, *, seed: int = 0, prefilter: Prefilter | None = None,
                 surrogate: Surrogate | None = None, initial: int = 20, batch: int = 20, population: int = 48,
                 generations: int = 2, mutation_prob: float = 0.2, local: float = 0.5,
                 acquisition: Acquisition = "hvi", predictor: str = "auto", warm_start: str = "",
                 proxy_features: str = ""):
        super().__init__(space, seed=seed, prefilter=prefilter, surrogate=surrogate)
        for name, value, low in (("initial", initial, 2), ("batch", batch, 1), ("population", population, 4),
                                 ("generations", generations, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise FieldError(name, f"must be an integer >= {low}, got {value!r}")
        if predictor != "auto" and predictor not in list_predictors():
            raise FieldError("predictor", f"must be one of {list_predictors()}, got {predictor!r}")
        if acquisition not in get_args(Acquisition):
            raise FieldError("acquisition", f"must be 'hvi' or 'front', got {acquisition!r}")
        if not (is_finite_number(local) and 0 <= local <= 1):
            raise FieldError("local", f"must be a number in [0, 1], got {local!r}")
        if not (is_finite_number(mutation_prob) and 0 < mutation_prob <= 1):
            raise FieldError("mutation_prob", f"must be a number in (0, 1], got {mutation_prob!r}")
        self.initial, self.batch, self.population, self.generations = initial, batch, population, generations
        self.mutation_prob, self.local, self.predictor = mutation_prob, local, predictor
        self.acquisition = acquisition
        self.warm_start = _proxy_names("warm_start", warm_start)
        if len(self.warm_start) > 1:
            raise FieldError("warm_start", f"must name one proxy of {list_proxies()} (or none), got {warm_start!r}")
        self.proxy_features = _proxy_names("proxy_features", proxy_features)
        load_backends()  # library import at construction, not inside the first round
        self.seed = seed
        self._queue: list[Arch] = []
        self._population: list[Arch] = []  # the inner search's population, carried across rounds
        self._observed: dict[Arch, Observation] = {}
        self._features: dict[Arch, np.ndarray] = {}
        self._exact: dict[Arch, tuple[float, float]] = {}  # arch -> (cost, violation) from the surrogate
        self._families: dict[str, str] = {}  # target ("accuracy", "cost", "violation") -> chosen family
        self._selected_at = MIN_SELECTION_SAMPLES // 4  # the first selection at MIN_SELECTION_SAMPLES
        self.selection_scores: dict[str, dict[str, float]] = {}  # last cross-validated tau per family
        self._warm: list[Arch] | None = None  # the warm start's initial sample, planned on the first ask
        self._proxy_values: dict[Arch, np.ndarray] = {}
        self._use_proxies = False  # the proxy features help the accuracy predictor (cross-validated)
        self._proxies_checked_at = MIN_SELECTION_SAMPLES // 4

    # ---- ask/tell -----------------------------------------------------------------------------
    def _propose(self) -> Arch:
        if len(self._observed) < self.initial:
            if not self.warm_start:
                return self._initial_sample()
            if self._warm is None:
                self._warm = self._warm_sample()
            return self._warm.pop(0) if self._warm else self.space.sample(self.rng)
        while not self._queue:
            self._queue = self._plan()
        return self._queue.pop(0)

    def ready(self) -> int:
        """A round's proposals are planned from every tell before it, then handed out one by one:
        while subnets of the initial sample or of the planned round are left, asking does not wait
        for the tells still pending; the next round does."""
        if not self.pending:
            return 1
        if not self._queue:  # random sample: go on while the distinct subnets told or pending stay below `initial`
            return int(len(self._observed.keys() | set(self.pending)) < self.initial)
        # asking pops the queue, skipping proposals the prefilter rejects: it must not run dry (a new round)
        return sum(1 for a in self._queue if self.prefilter is None or self.prefilter(a))

    def tell(self, arch: Arch, objectives: tuple[float, ...], violation: float) -> None:
        super().tell(arch, objectives, violation)
        self._observed[arch] = self.history[-1]
        self._queue = [a for a in self._queue if a not in self._observed]

    # ---- one round ----------------------------------------------------------------------------
    def _plan(self) -> list[Arch]:
        obs = list(self._observed.values())
        x = self._featurize([o.arch for o in obs])
        objs = np.array([o.objectives for o in obs], dtype=float)
        viol = np.array([o.violation for o in obs], dtype=float)
        targets = {"accuracy": objs[:, 0]}
        if self.surrogate is None or self.surrogate.cost is None:
            targets["cost"] = objs[:, 1]
        if self.surrogate is None or not self.surrogate.complete:
            targets["violation"] = viol  # a limit on a measured metric: learn how far candidates break it
        if self.predictor != "auto":
            self._families = dict.fromkeys(targets, self.predictor)
        elif len(obs) < MIN_SELECTION_SAMPLES:  # too few for cross-validation to tell families apart
            self._families = dict.fromkeys(targets, "ridge")
        elif len(obs) >= 4 * self._selected_at:  # the sample has quadrupled: choose the families again
            self._selected_at = len(obs)
            for key, y in targets.items():
                choice = (select_predictor(x, y, candidates=SELECTED_FAMILIES, folds=SELECTION_FOLDS, seed=self.seed)
                          if np.ptp(y) > 0 else None)
                taus = dict(choice.taus) if choice else {}
                # a costlier family must rank clearly better than ridge regression to be refitted every round
                better = choice is not None and taus.get(choice.name, 0.0) > taus.get("ridge", -1.0) + MIN_TAU_GAIN
                self._families[key] = choice.name if better and choice is not None else "ridge"
                self.selection_scores[key] = taus
        archs = [o.arch for o in obs]
        if self.proxy_features and len(obs) >= 4 * self._proxies_checked_at:
            self._proxies_checked_at = len(obs)
            self._check_proxies(x, archs, targets["accuracy"])
        inputs = {key: self._with_proxies(x, archs) if key == "accuracy" else x for key in targets}
        models = {key: make_predictor(self._families[key], seed=self.seed).fit(inputs[key], y)
                  for key, y in targets.items()}
        # the accuracy predictor's typical error, for an optimistic acquisition: on supernet
        # accuracies it is mostly the evaluation split's noise
        sigma = float(np.sqrt(np.mean((models["accuracy"].predict(inputs["accuracy"]) - targets["accuracy"]) ** 2)))

        scored: dict[Arch, np.ndarray] = {}  # arch -> (-accuracy, cost, violation), all predicted or exact

        def score(archs: list[Arch]) -> None:
            new = [a for a in dict.fromkeys(archs) if a not in scored]
            if not new:
                return
            feats = self._featurize(new)
            pred = {key: m.predict(self._with_proxies(feats, new) if key == "accuracy" else feats)
                    for key, m in models.items()}
            for i, a in enumerate(new):
                cost = float(pred["cost"][i]) if "cost" in pred else self._exact_cost(a)
                v = self._exact_violation(a, cost) if self.surrogate is not None else 0.0
                if "violation" in pred:
                    v = max(v, float(pred["violation"][i]))
                scored[a] = np.array([float(pred["accuracy"][i]), cost, v])

        # inner NSGA-II on the predictors; its population lives on from round to round (re-scored by
        # the refitted predictors), so the search on the predictor grows with every round while each
        # round stays cheap; the best evaluated subnets join it as elites
        ranks = non_dominated_sort(objs, viol)
        elites = [obs[i].arch for front in ranks for i in front][: self.population // 2]
        pop = list(dict.fromkeys(elites + self._population))
        pop += [self._draw() for _ in range(self.population - len(pop))]
        score(pop)
        pop = self._select(pop, scored, self.population)
        for _ in range(self.generations):
            children = [self._child(pop, scored) for _ in range(self.population)]
            score(children)
            pop = self._select(list(dict.fromkeys(pop + children)), scored, self.population)
        self._population = pop

        # offspring of the best evaluated subnets (ranked by their real values), as NSGA-II would
        # breed them: with a weak predictor the search stays near what is known to be good
        real = {o.arch: np.array([o.objectives[0], o.objectives[1], o.violation]) for o in obs}
        local = [self._child(elites, real) for _ in range(self.population)]
        score(local)

        # the proposals: unevaluated candidates, a share `local` of them from the offspring of
        # evaluated subnets, the rest from everything scored this round
        fresh_local = [a for a in dict.fromkeys(local) if a not in self._observed]
        front = np.array([o.objectives[:2] for o in obs if o.violation <= 0]).reshape(-1, 2)
        chosen = self._propose_batch(fresh_local, scored, round(self.batch * self.local), front, sigma)
        taken = set(chosen)
        fresh = [a for a in scored if a not in self._observed and a not in taken]
        chosen += self._propose_batch(fresh, scored, self.batch - len(chosen),
                                      np.vstack([front, np.array([scored[a][:2] - [sigma, 0] for a in chosen]).reshape(-1, 2)]),
                                      sigma)
        for a in chosen:
            acc, cost, v = scored[a]
            self.predictions[a] = {"accuracy": -acc, "cost": cost, "violation": v}
        return chosen or [self.space.sample(self.rng)]

    def _propose_batch(self, archs: list[Arch], scored: dict[Arch, np.ndarray], k: int, front: np.ndarray,
                       sigma: float) -> list[Arch]:
        """`k` candidates: with `acquisition="hvi"`, greedily the largest hypervolume improvement over
        the evaluated feasible points `front` (minimized objectives), taking each candidate's accuracy
        one `sigma` above its prediction ("optimistic believer": each pick joins the front before the
        next); the rest, and with `acquisition="front"` all, by predicted rank and crowding distance."""
        if k <= 0 or not archs:
            return []
        chosen: list[Arch] = []
        if self.acquisition == "hvi" and len(front):
            feasible = [a for a in archs if scored[a][2] <= 0]
            pts = np.array([scored[a][:2] for a in feasible]).reshape(-1, 2) - [sigma, 0.0]
            ref = np.array([front[:, 0].max(), max(front[:, 1].max(), pts[:, 1].max(initial=0.0)) * 1.01])
            left = np.ones(len(feasible), dtype=bool)
            while len(chosen) < k and left.any():
                gain = np.where(left, hypervolume_improvement(front, pts, ref), 0.0)
                best = int(np.argmax(gain))
                if gain[best] <= 0:
                    break
                chosen.append(feasible[best])
                left[best] = False
                front = np.vstack([front, pts[best]])
        rest = [a for a in archs if a not in set(chosen)]
        return chosen + self._select(rest, scored, k - len(chosen))

    def _draw(self) -> Arch:
        """A random member of the inner population that passes the prefilter (bounded draws)."""
        arch, _ = draw_bounded(lambda: self.space.sample(self.rng), self._prefilter_gap, tries=POPULATION_DRAWS,
                               what="a random subnet for the predictor search's population", constraint=PREFILTER,
                               fallback="the population takes the last one anyway")
        return arch

    def _child(self, pop: list[Arch], scored: dict[Arch, np.ndarray]) -> Arch:
        a, b = self._tournament(pop, scored), self._tournament(pop, scored)
        child = self.space.mutate(self.space.crossover(a, b, self.rng), self.rng, self.mutation_prob)
        if self.prefilter is not None and not self.prefilter(child):
            return a  # already scored: costs nothing
        return child

    def _tournament(self, pop: list[Arch], scored: dict[Arch, np.ndarray]) -> Arch:
        i, j = self.rng.integers(len(pop), size=2)
        a, b = scored[pop[i]], scored[pop[j]]
        # constraint domination first, then predicted accuracy
        key_a, key_b = (a[2] > 0, a[2], a[0]), (b[2] > 0, b[2], b[0])
        return pop[i] if key_a <= key_b else pop[j]

    @staticmethod
    def _select(archs: list[Arch], scored: dict[Arch, np.ndarray], k: int) -> list[Arch]:
        """Best `k` by constraint-domination rank, then crowding distance (NSGA-II environmental selection)."""
        if not archs:
            return []
        vals = np.array([scored[a] for a in archs])
        return [archs[i] for i in environmental_selection(vals[:, :2], vals[:, 2], k).indices]

    # ---- training-free proxies ------------------------------------------------------------------
    def _scores(self, archs: list[Arch], names: tuple[str, ...]) -> np.ndarray:
        """(len(archs), len(names)) proxies from the surrogate, cached per arch for `proxy_features`."""
        if self.surrogate is None or self.surrogate.proxies is None:
            raise UserError(f"strategy {self.name!r}: warm_start and proxy_features need training data to score "
                            "training-free proxies, which this search does not pass")
        if names != self.proxy_features:
            return self.surrogate.proxies(archs, names)
        missing = [a for a in dict.fromkeys(archs) if a not in self._proxy_values]
        if missing:
            self._proxy_values.update(zip(missing, self.surrogate.proxies(missing, names)))
        return np.stack([self._proxy_values[a] for a in archs])

    def _warm_sample(self) -> list[Arch]:
        """The smallest subnet, then the best by the warm start's proxy in each of `initial - 1`
        equal-count cost bins of `WARM_POOL` x `initial` random subnets (module docstring)."""
        pool = list(dict.fromkeys(self._draw() for _ in range(WARM_POOL * self.initial)))
        exact = self.surrogate is not None and self.surrogate.cost is not None
        cost = np.array([self._exact_cost(a) if exact else self.space.count_params(a) for a in pool])
        value = self._scores(pool, self.warm_start)[:, 0]
        chosen = [self.space.smallest()]
        for part in np.array_split(np.argsort(cost, kind="stable"), self.initial - 1):
            if len(part):
                chosen.append(pool[int(part[np.argmax(value[part])])])
        return list(dict.fromkeys(chosen))

    def _check_proxies(self, x: np.ndarray, archs: list[Arch], y: np.ndarray) -> None:
        """Use the proxy features from now on only if they raise the accuracy predictor's
        cross-validated Kendall tau by `MIN_TAU_GAIN` (the same folds with and without)."""
        if np.ptp(y) == 0:
            return
        family = self._families.get("accuracy", "ridge")
        taus = {f"{key} proxies": kendall_tau(out_of_fold(inputs, y, family, folds=SELECTION_FOLDS, seed=self.seed), y)
                for key, inputs in (("without", x), ("with", np.hstack([x, self._scores(archs, self.proxy_features)])))}
        self._use_proxies = taus["with proxies"] > taus["without proxies"] + MIN_TAU_GAIN
        self.selection_scores["proxy_features"] = taus

    def _with_proxies(self, x: np.ndarray, archs: list[Arch]) -> np.ndarray:
        return np.hstack([x, self._scores(archs, self.proxy_features)]) if self._use_proxies else x

    # ---- cached per-arch values ---------------------------------------------------------------
    def _featurize(self, archs: list[Arch]) -> np.ndarray:
        missing = [a for a in archs if a not in self._features]
        if missing:
            for a, row in zip(missing, arch_features(self.space, missing)):
                self._features[a] = row
        return np.stack([self._features[a] for a in archs])

    def _exact_cost(self, arch: Arch) -> float:
        assert self.surrogate is not None and self.surrogate.cost is not None  # only called when the cost is exact
        if arch not in self._exact:
            cost = float(self.surrogate.cost(arch))
            self._exact[arch] = (cost, float(self.surrogate.violation(arch, cost)))
        return self._exact[arch][0]

    def _exact_violation(self, arch: Arch, cost: float) -> float:
        assert self.surrogate is not None  # only called with a surrogate
        if self.surrogate.cost is not None:
            self._exact_cost(arch)
            return self._exact[arch][1]
        return float(self.surrogate.violation(arch, cost))



def _proxy_names(field: str, text: str) -> tuple[str, ...]:
    """A comma-separated list of proxy names (`predictors.proxies`); empty: none."""
    if not isinstance(text, str):
        raise FieldError(field, f"must be a comma-separated list of proxies {list_proxies()}, got {text!r}")
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if unknown := [n for n in names if n not in list_proxies()]:
        raise FieldError(field, f"names unknown proxies {unknown}; choose from {list_proxies()}")
    if len(set(names)) != len(names):
        raise FieldError(field, f"names a proxy twice: {text!r}")
    return names
