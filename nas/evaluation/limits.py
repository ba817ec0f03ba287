"""Hard limits on a subnet's costs, and the cost objectives the Pareto front trades against accuracy."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from nas.errors import FieldError
from search_spaces.arch import is_finite_number, show

# objective name -> its column in evaluations.csv (all minimized, against maximized accuracy)
# size: the weights' bytes as deployed (4 a parameter in fp32; an int8 model's quantized graph)
OBJECTIVES: dict[str, str] = {"latency": "latency_ms", "flops": "flops", "params": "params", "memory": "memory_bytes",
                              "size": "model_bytes"}
OBJECTIVE_LABELS: dict[str, str] = {"latency": "latency (ms)", "flops": "multiply-adds", "params": "parameters",
                                    "memory": "peak memory (bytes)", "size": "weights (bytes)"}


@dataclass(frozen=True)
class Limits:
    """Upper limits on a subnet's costs; None: no limit."""

    max_latency_ms: float | None = None
    max_params: int | None = None
    max_flops: int | None = None
    max_memory_mb: float | None = None
    max_size_mb: float | None = None  # the weights' bytes as deployed (`model_bytes`), in MiB

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None and not is_finite_number(value):
                raise FieldError(name, f"must be a finite number, got {show(value)}")
            if value is not None and not value > 0:
                raise FieldError(name, f"must be > 0, got {show(value)}")

    def bounds(self) -> dict[str, float]:
        """Column of evaluations.csv -> its limit, for the limits that are set."""
        pairs = (("latency_ms", self.max_latency_ms), ("params", self.max_params), ("flops", self.max_flops),
                 ("memory_bytes", None if self.max_memory_mb is None else self.max_memory_mb * 2**20),
                 ("model_bytes", None if self.max_size_mb is None else self.max_size_mb * 2**20))
        return {k: float(v) for k, v in pairs if v is not None}

    def violation(self, costs: dict[str, float]) -> float:
        """Sum of relative excesses over the limits; 0 means feasible. A limit whose metric is
        missing from `costs` counts 0 (a model-based strategy's estimate without that metric)."""
        return sum(max(0.0, costs[key] / limit - 1.0) for key, limit in self.bounds().items() if key in costs)

    def params_ok(self, params: int) -> bool:
        return self.max_params is None or params <= self.max_params

    def limit_of(self, objective: str) -> float | None:
        return self.bounds().get(OBJECTIVES[objective])
