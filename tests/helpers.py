"""Helpers shared by the test modules (the shared fixtures are in conftest.py).

Import them as `from tests.helpers import ...`; a subprocess started with `subprocess_env()` can
import them too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# `nas train` / `nas search` flags for the quickest training: one epoch, no random subnets, no progress
FAST = ("--epochs", "1", "--num-random", "0", "--quiet")
# the shared run folder (conftest's `trained_run`): `nas train` on digits, space tiny, with these
# TrainConfig fields (the others default), given as the flags TRAIN_ARGS
TRAIN_SETTINGS = {"epochs": 2, "num_random": 0, "batch_size": 256}
# `nas search` flags for a short finishing stage (a fine-tune of a twentieth of the from-scratch steps),
# for the tests whose subject is not the finished model's accuracy
QUICK_FINISH = ("--finish", "finetune", "--finish-budget", "0.05")
TRAIN_ARGS = (*(a for k, v in TRAIN_SETTINGS.items() for a in ("--" + k.replace("_", "-"), str(v))), "--quiet")

# a search space of 27 units (`SpaceConfig.from_dict(MICRO_SPACE)`): profiles in about a second
MICRO_SPACE = {
    "name": "micro", "in_channels": 1, "num_classes": 10, "input_size": 8, "resolutions": [8, 10],
    "stem_widths": [8], "stages": [
        {"depths": [1], "widths": [8], "strides": [1], "block_types": ["conv"]},
        {"depths": [1, 2], "widths": [16], "strides": [2], "block_types": ["conv", "attn"]},
    ],
    "kernels": [3], "expand_ratios": [2], "heads": [1, 2], "mlp_ratios": [2], "head_dim": 4, "window": 2,
}


# ---------------------------------------------------------------------------------- subprocesses
def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment with the worktree importable and torch on one thread."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def nas_process(args: Sequence[str], **popen) -> subprocess.Popen:
    """`python -m nas ARGS` started in a subprocess from the repository root (`popen`: Popen's options)."""
    return subprocess.Popen([sys.executable, "-m", "nas", *args], cwd=ROOT, env=subprocess_env(), **popen)


def kill_when(args: Sequence[str], ready: Callable[[], bool], timeout: float = 180) -> None:
    """Run `python -m nas ARGS` in a subprocess and SIGKILL it as soon as `ready()` holds."""
    proc = nas_process(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


# ---------------------------------------------------------------------------------- run folders
def evaluations(run: Path) -> pd.DataFrame:
    """A search's evaluations.csv without its timing columns: the rest is deterministic."""
    return pd.read_csv(run / "evaluations.csv", dtype={"id": str}).drop(columns=["seconds", "time"])


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Two state dicts with the same keys and bit-identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------- search strategies
def fake_objectives(space, arch) -> tuple[tuple[float, float], float]:
    """A deterministic stand-in for (-accuracy, latency): bigger nets are more accurate and slower;
    the violation of a 60,000-parameter limit."""
    p = space.count_params(arch)
    return (-np.log(p) + 0.01 * (int(arch.id, 16) % 7), p / 1e4), max(0.0, p / 60000 - 1)


def run_strategy(strategy, space, n: int = 60) -> list:
    """Ask and tell `strategy` `n` times on `fake_objectives`; the architectures in the order told."""
    for _ in range(n):
        arch = strategy.ask()
        strategy.tell(arch, *fake_objectives(space, arch))
    return [o.arch for o in strategy.history]


# ---------------------------------------------------------------------------------- training
def few_digits(n: int):
    """The digits task with only its first `n` training rows (validation and test unchanged)."""
    from nas.data.datasets import Split, load_data

    data = load_data("digits")
    return dataclasses.replace(data, train=Split(data.train.x[:n], data.train.y[:n]))


def npy_digits(folder: Path, n: int) -> Path:
    """A `.npy` folder (`nas.data.npy`) of the digits as uint8 8x8 images: `n` training rows, then 40
    validation and 40 test rows given; streamed by `load_data`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = (digits.images * 15).astype(np.uint8), digits.target.astype(np.int64)
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("", slice(0, n)), ("_val", slice(n, n + 40)), ("_test", slice(n + 40, n + 80))):
        np.save(folder / f"x{name}.npy", x[part])
        np.save(folder / f"y{name}.npy", y[part])
    return folder


def stored_digits(data, split: str):
    """A split of the digits task (`load_data("digits")`, or `few_digits`) as scikit-learn stores the
    images (pixels / 16, not standardised): load_data's standardisation undone exactly, since every
    pixel is a multiple of 1/16."""
    from nas.data.datasets import Split

    part = getattr(data, split)
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in (data.mean, data.std))
    return Split(torch.round((part.x * std + mean) * 16) / 16, part.y)


def tiny_supernet(seed: int = 0):
    """A freshly initialized supernet of the tiny space (`seed`: torch's)."""
    from search_spaces import HybridSupernet, get_space

    torch.manual_seed(seed)
    return HybridSupernet(get_space("tiny"))


def max_weight_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def stop_training_after(polls: int, data, config, checkpoint: Path) -> None:
    """Train a fresh tiny supernet until `stop` has been polled `polls` times (after each step and at
    each epoch's end): the interrupted training leaves its checkpoint."""
    from nas.training.train import train_supernet

    calls = []
    with pytest.raises(KeyboardInterrupt):
        train_supernet(tiny_supernet(), data, config, checkpoint=checkpoint, show_progress=False,
                       stop=lambda: calls.append(1) or len(calls) >= polls)


def rewrite_checkpoint_metadata(checkpoint: Path, edit: Callable[[dict], object]) -> None:
    """Rewrite a checkpoint with `edit(meta)` applied to its JSON metadata (tensors unchanged)."""
    from safetensors.torch import save_file

    from nas.training.checkpoint import CHECKPOINT_FORMAT, read_checkpoint

    tensors, meta = read_checkpoint(checkpoint)
    edit(meta)
    raw = {k: json.dumps(v) for k, v in meta.items()} | {"format": "nas-checkpoint", "format_version": CHECKPOINT_FORMAT}
    save_file(tensors, str(checkpoint), metadata=raw)


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray, fmt: str = "png") -> Path:
    """An image folder of `images` (uint8, (N, H, W) or (N, H, W, C)): one sub-folder per label."""
    from PIL import Image

    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        f = root / f"c{label}" / f"{i:04d}.{fmt}"
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(f)
    return root
