"""Data-parallel supernet training: what one worker needs to know, and the gradient sum.

Every worker runs `nas.training.train.train_supernet` with the same seed, so all draw the same batches,
augmentation and subnets; each reads and computes only the rows `rank::world` of every batch, and
`sum_gradients` turns the slices' gradients into those of the whole batch. The losses are means
over a slice and every layer is per sample (GroupNorm, LayerNorm: no batch statistics), so the
whole batch's gradient is the sum of the slices' gradients weighted by their share of the batch:
the update equals one process's, up to float rounding. `nas.cluster.train` runs it on Ray Train.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nas.errors import FieldError, UserError
from nas.training.config import TrainConfig


@dataclass(frozen=True)
class DataParallel:
    """This worker's part: rank and number of workers; `all_reduce` sums a tensor over the workers
    in place (torch.distributed). Only rank 0 writes the checkpoint; `epoch_end` runs on every worker
    after each epoch (after rank 0's checkpoint is written), with that epoch's history entry."""

    rank: int
    world: int
    all_reduce: Callable[[Tensor], None]
    epoch_end: Callable[[dict[str, Any]], None]

    @property
    def rows(self) -> slice:
        """This worker's rows of every batch (`nas.training.batches.train_batches` reads only those)."""
        return slice(self.rank, None, self.world)


def check_parallel(config: TrainConfig) -> None:
    """What data-parallel training refuses: best-of-k sampling, whose workers would each judge the
    candidates on their own rows and train different subnets."""
    if config.best_of > 1:
        raise FieldError("best_of", f"must be 1 in data-parallel training (got {config.best_of}): each worker "
                                    "would choose among the candidates on its own rows; train in one process")


def sum_gradients(params: list[torch.nn.Parameter], parallel: DataParallel, *, share: float, loss: float, hits: int,
                  error: str = "") -> tuple[float, int]:
    """Replaces each worker's gradients (of its slice's mean loss; `share`: the slice's part of the
    batch) by the whole batch's, on every worker; returns the whole batch's loss and hits. A parameter
    that no worker's subnets used keeps no gradient, as in one process (the optimizer skips it); a
    worker without rows contributes zeros. `error`: this worker's loss diverged; every worker then
    raises it (no worker is left waiting in a collective)."""
    device = params[0].device
    used = torch.tensor([p.grad is not None for p in params] + [bool(error)], dtype=torch.float32, device=device)
    parallel.all_reduce(used)  # per parameter: how many workers have its gradient; last: how many diverged
    if used[-1] > 0:
        raise UserError(error or "training diverged on another worker; lower --lr (the last good checkpoint is kept)")
    active = [p for p, n in zip(params, used[:-1].tolist()) if n > 0]
    flat = torch.cat([(p.grad * share if p.grad is not None else torch.zeros_like(p)).flatten() for p in active]
                     + [torch.tensor([loss * share, hits], dtype=torch.float32, device=device)])
    parallel.all_reduce(flat)  # one collective for every gradient
    offset = 0
    for p in active:
        p.grad = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    return float(flat[-2]), round(float(flat[-1]))
