"""Data-parallel gradients (`nas.training.parallel`): N workers sum to one process's update, also on a
streamed split, of which each worker reads only its rows."""

from __future__ import annotations

import threading

import torch

from nas.data.datasets import StreamedSplit, load_data
from nas.training.config import TrainConfig
from nas.training.parallel import DataParallel
from nas.training.train import train_supernet
from search_spaces import HybridSupernet, get_space
from tests.helpers import few_digits, npy_digits


def test_gradient_sum_makes_three_workers_one_process():
    """Batches of 7 and 2 rows: slices of 3, 2, 2 then 1, 1, 0 (a worker without rows)."""
    _assert_three_workers_make_one_process(few_digits(9))


def test_three_workers_read_only_their_rows_of_a_streamed_split_and_make_one_process(tmp_path, monkeypatch):
    """A .npy folder of 16 training rows: batches of 7, 7 and 2 rows, every input read once, by its worker."""
    data = load_data(str(npy_digits(tmp_path, 16)), workers=0)
    reads: dict[str, list[int]] = {}
    item = StreamedSplit.item

    def counted(split: StreamedSplit, k: int, *args, **kwargs):
        if split is data.train:
            reads.setdefault(threading.current_thread().name, []).append(k)
        return item(split, k, *args, **kwargs)

    monkeypatch.setattr(StreamedSplit, "item", counted)
    _assert_three_workers_make_one_process(data)
    one, workers = reads["MainThread"], [reads[f"rank{rank}"] for rank in range(3)]
    assert sorted(one) == list(range(16)) and [len(r) for r in workers] == [3 + 3 + 1, 2 + 2 + 1, 2 + 2]
    assert sorted(k for r in workers for k in r) == sorted(one)


def _assert_three_workers_make_one_process(data) -> None:
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

    threads = [threading.Thread(target=worker, args=(rank,), name=f"rank{rank}") for rank in range(3)]
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
