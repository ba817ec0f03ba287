"""Accuracy and latency predictors over architectures.

`latency.LatencyPredictor`: a device's latency from its profile (lookup-table sum + a fitted
correction). Imports `search_spaces` only, never `nas`.
"""

from predictors.latency import LatencyPredictor, MissingBlockError

__all__ = ["LatencyPredictor", "MissingBlockError"]
