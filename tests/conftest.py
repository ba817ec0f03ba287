"""Shared test settings and fixtures (shared helper functions are in helpers.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from tests.helpers import TRAIN_ARGS

_THREADS_BEFORE = torch.get_num_threads()


def pytest_configure(config: pytest.Config) -> None:
    """Torch runs on one thread for the whole session (collection and fixtures of every scope
    included): the models are tiny, and two threads on a busy 2-core machine make forward passes
    wait on each other (tens of times slower)."""
    torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`scripts/test.sh` runs two workers), the tests that start a local Ray
    share one worker, one after the other: two Ray clusters at once would fight for the 2 CPUs each
    one claims."""
    for item in items:
        if item.get_closest_marker("ray") is not None:
            item.add_marker(pytest.mark.xdist_group("ray"))


def pytest_unconfigure(config: pytest.Config) -> None:
    torch.set_num_threads(_THREADS_BEFORE)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """A test may set another thread count (so may the code it calls): the next one starts on one again."""
    yield
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run folder of `nas train` with `tests.helpers.TRAIN_ARGS` (digits, space tiny), shared by
    the whole session: read it, never write into it (copy it with `shutil.copytree` first). A test
    that changed it is reported when the session ends."""
    from nas.cli.main import main

    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *TRAIN_ARGS, "--out", str(out)]) == 0
    before = _digests(out)
    yield out
    assert _digests(out) == before, f"a test wrote into the shared run folder {out}"


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for a test module: 2 CPUs and the smallest object store Ray accepts."""
    from nas import cluster

    cluster.connect(num_cpus=2, object_store_mb=80)
    yield
    cluster.shutdown()
