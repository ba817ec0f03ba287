"""Accuracy and latency predictors over architectures.

`latency.LatencyPredictor`: a device's latency from its profile (lookup-table sum + a fitted
correction). `accuracy`: scalar regressors over architectures (ridge, boosted trees, Gaussian
process, MLP ensemble; a registry and cross-validated selection), for accuracy or latency.
Imports `search_spaces` only, never `nas`.
"""

from predictors.accuracy import (
    AutoPredictor,
    Predictor,
    Selection,
    arch_features,
    kendall_tau,
    list_predictors,
    make_predictor,
    register_predictor,
    select_predictor,
)
from predictors.latency import LatencyPredictor, MissingBlockError

__all__ = [
    "AutoPredictor",
    "LatencyPredictor",
    "MissingBlockError",
    "Predictor",
    "Selection",
    "arch_features",
    "kendall_tau",
    "list_predictors",
    "make_predictor",
    "register_predictor",
    "select_predictor",
]
