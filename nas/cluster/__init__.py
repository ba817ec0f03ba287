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
import socket

from nas.errors import UserError

MIN_OBJECT_STORE_MB = 80  # Ray refuses less than 75 MiB
PROBE_SECONDS = 5.0


def connect(address: str | None = None, *, num_cpus: int | None = None, object_store_mb: int | None = None) -> None:
    """Start a local Ray (`address` None) or join a running cluster; a no-op when already connected."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is not None:
        _check_reachable(address)
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


def _check_reachable(address: str) -> None:
    """Ray retries an address it cannot reach for many minutes: a HOST:PORT (or ray://HOST:PORT)
    that refuses the connection or does not answer within PROBE_SECONDS is reported at once."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if "://" in host:  # another scheme: Ray's business
        return
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_SECONDS).close()
    except OSError as e:
        raise UserError(f"could not reach the Ray cluster at {address}: {e.strerror or e}") from None


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def cluster_cpus() -> int:
    """CPUs the connected cluster offers (after `connect`)."""
    import ray

    return int(ray.cluster_resources().get("CPU", 0))


def cluster_gpus() -> int:
    """GPUs the connected cluster offers (after `connect`)."""
    import ray

    return int(ray.cluster_resources().get("GPU", 0))
