"""Data-parallel gradients (`nas.training.parallel`): N workers sum to one process's update."""

from __future__ import annotations

import threading

import torch

from nas.training.config import TrainConfig
from nas.training.parallel import DataParallel
from nas.training.train import train_supernet
from search_spaces import HybridSupernet, get_space
from tests.helpers import few_digits


def test_gradient_sum_makes_three_workers_one_process():
    """Batches of 7 and 2 rows: slices of 3, 2, 2 then 1, 1, 0 (a worker without rows)."""
    data = few_digits(9)
    config = TrainConfig(epochs=1, batch_size=7, optimizer="sgd", lr=0.05, warmup_epochs=0, num_random=1)
    torch.manual_seed(0)
    initial = HybridSupernet(get_space("tiny")).state_dict()
    models = [HybridSupernet(get_space("tiny")) for _ in range(4)]
    for model in models:
        model.load_state_dict(initial)
    train_supernet(models[0], data, config, show_progress=False)
    summed, summaries = ThreadSum(3), {}

    def worker(rank: int) -> None:
        parallel = DataParallel(rank=rank, world=3, all_reduce=summed.for_rank(rank), epoch_end=lambda entry: None)
        summaries[rank] = train_supernet(models[rank + 1], data, config, show_progress=False, parallel=parallel)

    threads = [threading.Thread(target=worker, args=(rank,)) for rank in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(summaries) == 3
    one = models[0].state_dict()
    for model in models[1:]:
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, one[key], rtol=1e-5, atol=1e-6)


class ThreadSum:
    """`all_reduce` for workers that are threads of this process: the same sum, in rank order, on all."""

    def __init__(self, world: int):
        self.barrier, self.slots = threading.Barrier(world), [None] * world

    def for_rank(self, rank: int):
        def all_reduce(tensor: torch.Tensor) -> None:
            self.slots[rank] = tensor.clone()
            self.barrier.wait()
            total = sum(self.slots[1:], self.slots[0].clone())
            self.barrier.wait()
            tensor.copy_(total)
        return all_reduce
