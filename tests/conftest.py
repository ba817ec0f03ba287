"""Shared test settings."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test runs torch on one thread: the models are tiny, and two threads on a busy 2-core
    machine make forward passes wait on each other (tens of times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for a test module: 2 CPUs and the smallest object store Ray accepts."""
    from nas import cluster

    cluster.connect(num_cpus=2, object_store_mb=80)
    yield
    cluster.shutdown()
