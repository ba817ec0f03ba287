"""Uniform random subnets: the baseline every strategy must beat."""

from __future__ import annotations

from nas.search.strategies.base import UNBOUNDED, Strategy, register_strategy
from search_spaces import Arch


@register_strategy
class RandomSearch(Strategy):
    name = "random"

    def _propose(self) -> Arch:
        return self.space.sample(self.rng)

    def ready(self) -> int:
        return UNBOUNDED  # draws never depend on the tells
