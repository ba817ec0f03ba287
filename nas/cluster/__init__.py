"""Ray: the only package of `nas` that imports `ray` (style: "one module is the only place that imports ray").

Everything else in `nas` calls the functions here and never sees a Ray object. `ray` is imported
inside functions, so commands that do not use a cluster never pay for it.

- `connect(address)`: a local Ray (address None) or an existing cluster ("auto", "ray://host:10001",
  "host:6379"); idempotent, offline (no dashboard, no usage stats, auth disabled).
- `nas.cluster.evaluate`: subnet evaluations on Ray actors that each hold the supernet once.
- `nas.cluster.train`: data-parallel supernet training with Ray Train (gloo on CPU, NCCL on GPU).
- `nas.cluster.tune`: ablation sweeps as Ray Tune trials, resumable.
"""

from __future__ import annotations

import os

from nas.errors import UserError

MIN_OBJECT_STORE_MB = 80  # Ray refuses less than 75 MiB


def connect(address: str | None = None, *, num_cpus: int | None = None, object_store_mb: int | None = None) -> None:
    """Start a local Ray (`address` None) or join a running cluster; a no-op when already connected."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return
    options: dict = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address is None:
        if num_cpus is not None:
            options["num_cpus"] = num_cpus
        if object_store_mb is not None:
            options["object_store_memory"] = max(object_store_mb, MIN_OBJECT_STORE_MB) * 1024 ** 2
    else:
        options["address"] = address
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = "a local Ray" if address is None else f"the Ray cluster at {address}"
        raise UserError(f"could not start or reach {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def cluster_cpus() -> int:
    """CPUs the connected cluster offers (after `connect`)."""
    import ray

    return int(ray.cluster_resources().get("CPU", 0))
