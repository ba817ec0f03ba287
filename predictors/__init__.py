"""Accuracy and latency predictors over architecture encodings (`SearchSpace.encode`).

Imports `search_spaces` only, never `nas`.
"""
