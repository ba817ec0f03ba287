"""Hard limits (`nas.evaluation.limits`): bounds per metric and the violation."""

from __future__ import annotations

import pytest

from nas.errors import UserError
from nas.evaluation.limits import Limits


def test_limits_bounds_and_memory():
    limits = Limits(max_latency_ms=2.0, max_memory_mb=1.0)
    assert limits.bounds() == {"latency_ms": 2.0, "memory_bytes": 2.0**20}
    assert limits.violation({"latency_ms": 3.0, "memory_bytes": 2.0**19}) == pytest.approx(0.5)
    assert limits.violation({"memory_bytes": 2.0**21}) == pytest.approx(1.0)  # missing latency counts 0
    assert limits.limit_of("memory") == 2.0**20 and limits.limit_of("flops") is None
    with pytest.raises(UserError, match="max_memory_mb must be > 0, got 0"):
        Limits(max_memory_mb=0)


def test_size_limit_and_objective_are_the_weights_bytes():
    limits = Limits(max_size_mb=0.5)
    assert limits.bounds() == {"model_bytes": 2.0**19} and limits.limit_of("size") == 2.0**19
    assert limits.violation({"model_bytes": 2.0**20}) == pytest.approx(1.0)
    with pytest.raises(UserError, match="max_size_mb must be > 0, got -1"):
        Limits(max_size_mb=-1)
