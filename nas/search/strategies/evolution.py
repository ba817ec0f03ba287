"""NSGA-II (Deb et al., 2002) with constraint domination over the search space's mutation and crossover."""

from __future__ import annotations

import numpy as np

from nas.errors import FieldError
from nas.search.pareto import environmental_selection
from nas.search.strategies.base import Observation, Prefilter, Strategy, Surrogate, register_strategy
from search_spaces import Arch, SearchSpace
from search_spaces.arch import is_finite_number


@register_strategy
class EvolutionSearch(Strategy):
    """NSGA-II with constraint domination; mutation and crossover come from the search space."""

    name = "evolution"

    def __init__(self, space: SearchSpace, *, seed: int = 0, prefilter: Prefilter | None = None,
                 surrogate: Surrogate | None = None, population_size: int = 16, mutation_prob: float = 0.2,
                 crossover_prob: float = 0.5):
        super().__init__(space, seed=seed, prefilter=prefilter, surrogate=surrogate)
        if isinstance(population_size, bool) or not isinstance(population_size, int) or population_size < 2:
            raise FieldError("population_size", f"must be an integer >= 2, got {population_size!r}")
        if not (is_finite_number(mutation_prob) and 0 < mutation_prob <= 1):
            raise FieldError("mutation_prob", f"must be a number in (0, 1], got {mutation_prob!r}")
        if not (is_finite_number(crossover_prob) and 0 <= crossover_prob <= 1):
            raise FieldError("crossover_prob", f"must be a number in [0, 1], got {crossover_prob!r}")
        self.population_size, self.mutation_prob, self.crossover_prob = population_size, mutation_prob, crossover_prob
        self.population: list[Observation] = []
        self._offspring: list[Observation] = []
        self._rank: dict[int, tuple[int, float]] = {}  # position in the population -> (front, -crowding)

    def _propose(self) -> Arch:
        if len(self.population) < self.population_size:
            return self._initial_sample()
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
        """Environmental selection (`nas.search.pareto.environmental_selection`) of the distinct subnets."""
        unique = list({o.arch: o for o in pool}.values())
        chosen = environmental_selection(np.array([o.objectives for o in unique]),
                                         np.array([o.violation for o in unique]), self.population_size)
        self.population = [unique[i] for i in chosen.indices]
        self._rank = {pos: (rank, -crowd) for pos, (rank, crowd) in enumerate(zip(chosen.rank, chosen.crowding))}
