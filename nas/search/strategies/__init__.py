"""Search strategies: one ask/tell interface (`base`), one module per strategy, each registered by name.

Importing this package registers every built-in strategy; `make_strategy(name, space, ...)` builds one.
"""

from __future__ import annotations

from nas.search.strategies import evolution, guided, optuna_samplers, random_search  # noqa: F401  (they register)
from nas.search.strategies.base import (
    Observation,
    Prefilter,
    Strategy,
    Surrogate,
    check_options,
    list_strategies,
    make_strategy,
    register_strategy,
    strategies_with_predictor,
    strategy_options,
)

__all__ = ["Observation", "Prefilter", "Strategy", "Surrogate", "check_options", "list_strategies", "make_strategy",
           "register_strategy", "strategies_with_predictor", "strategy_options"]
