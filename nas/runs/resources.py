"""What the machine has, checked before a command allocates: memory for a supernet and its steps,
CPUs for measuring threads. A request beyond it is refused with the numbers (`UserError`), rather
than ending in the allocator's traceback, or in swapping for minutes first.

The memory estimates are lower bounds (weights, gradients and optimizer state, and the activations
alive at the peak of an inference pass; not the framework, workspaces or the data), so a refusal
is certain and a request that passes may still be too large.
"""

from __future__ import annotations

import os

from nas.errors import UserError
from search_spaces import HybridSupernet, SearchSpace
from search_spaces.blocks import activation_peak_elements
from search_spaces.static import ModelSpec

FLOAT_BYTES = 4
OPTIMIZER_STATE = {"adamw": 2, "sgd": 1}  # tensors the size of the weights that each optimizer keeps


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux: MemAvailable), None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:,.1f} MiB"


def within_half_memory(need: int) -> bool:
    """Whether `need` bytes take at most half the memory available now (yes when unknown): the rule
    for holding data decoded in memory rather than reading it again when it is needed."""
    have = available_memory()
    return have is None or need <= have // 2


def check_memory(need: int, what: str) -> None:
    """`UserError` when `need` bytes exceed the memory available now; `what` says what needs them."""
    have = available_memory()
    if have is not None and need > have:
        raise UserError(f"{what} needs at least {gib(need)} of memory; this machine has {gib(have)} available")


def supernet_memory(space: SearchSpace, *, batch: int, optimizer: str | None) -> tuple[int, int]:
    """(parameters of the supernet of `space`, a lower bound of the bytes one step on `batch` samples
    needs): its weights, with `optimizer` also their gradients and the optimizer's state, and the
    activations of the largest subnet at the peak of a forward pass."""
    params = HybridSupernet.count_params(space)
    copies = 1 if optimizer is None else 2 + OPTIMIZER_STATE[optimizer]
    activations = activation_peak_elements(ModelSpec.from_config(space.config), space.largest())
    return params, FLOAT_BYTES * (copies * params + batch * activations)


def check_supernet_fits(space: SearchSpace, *, batch: int, optimizer: str | None, what: str) -> None:
    """`check_memory` of `supernet_memory`, before the supernet is built; `what`: the step, for the
    message (e.g. "in a training step at --batch-size 256")."""
    params, need = supernet_memory(space, batch=batch, optimizer=optimizer)
    check_memory(need, f"the supernet of space {space.config.name!r} ({params:,} parameters, {gib(FLOAT_BYTES * params)} "
                       f"of weights) {what}")


def check_subnet_fits(space: SearchSpace, *, batch: int, what: str) -> None:
    """`check_memory` of the largest subnet of `space` on `batch` samples (weights and peak activations)."""
    check_memory(space.peak_memory_bytes(space.largest(), batch), f"the largest subnet of space {space.config.name!r} "
                                                                 f"{what}")


def check_threads(threads: int, flag: str) -> None:
    """Measuring with more threads than this machine's CPUs times their contention, not the model."""
    if threads > cpus():
        raise UserError(f"{flag} {threads}: this machine offers {cpus()} CPUs to nas; give at most {cpus()}")
