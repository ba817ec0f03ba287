"""Top-1 accuracy (and mean cross-entropy) of a model, or of a supernet's subnet with its inherited
weights, on a data split."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nas.data.datasets import AnySplit, iterate_batches
from search_spaces import Arch


def evaluate(model: torch.nn.Module, split: AnySplit, arch: Arch | None = None, *, batch_size: int = 1024,
             device: str = "cpu") -> float:
    """Top-1 accuracy on a split; `arch` selects a subnet when `model` is a supernet (inherited weights)."""
    return accuracy_and_loss(model, split, arch, batch_size=batch_size, device=device)[0]


def accuracy_and_loss(model: torch.nn.Module, split: AnySplit, arch: Arch | None = None, *, batch_size: int = 1024,
                      device: str = "cpu") -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy on a split (`arch`: as in `evaluate`)."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    try:
        with torch.no_grad():
            for x, y in iterate_batches(split, batch_size, shuffle=False):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits = model(x, arch) if arch is not None else model(x)  # fp32, as the extracted model runs
                correct += int((logits.argmax(dim=1) == y).sum())
                loss += float(F.cross_entropy(logits.float(), y, reduction="sum"))
    finally:
        model.train(was_training)
    return correct / len(split), loss / len(split)
