"""Supernet training with the sandwich rule and in-place distillation.

Each step runs the largest subnet (cross-entropy with label smoothing), the smallest and
`num_random` random subnets (distilled from the largest subnet's detached soft predictions), and
accumulates their gradients into one optimizer update (Yu et al., BigNAS / "Universally Slimmable
Networks"; AttentiveNAS). AdamW or SGD, cosine schedule with linear warm-up, light augmentation
for small images (random translation, optional horizontal flip), mixed precision on CUDA.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nas.data import ImageData, Split, iterate_batches
from nas.errors import UserError
from nas.progress import progress_bar
from search_spaces import Arch, HybridSupernet


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 64
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    num_random: int = 2
    distill: bool = True
    max_shift: int = -1  # random translation in pixels; -1: image_size // 8 (at least 1)
    hflip: bool = False
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"train: {name} must be >= 1, got {getattr(self, name)}")
        if self.optimizer not in ("adamw", "sgd"):
            raise UserError(f"train: optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if not self.lr > 0:
            raise UserError(f"train: lr must be > 0, got {self.lr}")
        if self.num_random < 0 or self.warmup_epochs < 0:
            raise UserError("train: num_random and warmup_epochs must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


def augment(x: Tensor, max_shift: int, hflip: bool, gen: torch.Generator) -> Tensor:
    """Per-sample random translation by up to `max_shift` pixels (zero padding), optional flip."""
    b, _, h, w = x.shape
    if max_shift > 0:
        p = max_shift
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b, 1, 1), generator=gen)
        dx = torch.randint(0, 2 * p + 1, (b, 1, 1), generator=gen)
        rows = dy + torch.arange(h).view(1, h, 1)  # (B, H, 1)
        cols = dx + torch.arange(w).view(1, 1, w)  # (B, 1, W)
        x = padded.permute(0, 2, 3, 1)[torch.arange(b).view(b, 1, 1), rows, cols].permute(0, 3, 1, 2)
    if hflip:
        flip = torch.rand(b, generator=gen) < 0.5
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    return x.contiguous()


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def _autocast(device: str):
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.inference_mode()
def evaluate(model: torch.nn.Module, split: Split, arch: Arch | None = None, *, batch_size: int = 512,
             device: str = "cpu") -> float:
    """Top-1 accuracy on a split; `arch` selects a subnet when `model` is a supernet."""
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for x, y in iterate_batches(split, batch_size, shuffle=False):
            x, y = x.to(device), y.to(device)
            logits = model(x, arch) if arch is not None else model(x)  # fp32, as the extracted model runs
            correct += int((logits.argmax(dim=1) == y).sum())
    finally:
        model.train(was_training)
    return correct / len(split)


def train_supernet(supernet: HybridSupernet, data: ImageData, config: TrainConfig, *, show_progress: bool = True) -> dict:
    """Train in place; returns a JSON-able summary (losses, validation accuracy of the extremes)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    device, space = config.device, supernet.space
    supernet.to(device).train()
    params = [p for p in supernet.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay, nesterov=True)
    steps_per_epoch = math.ceil(len(data.train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = steps_per_epoch * config.warmup_epochs
    shift = config.max_shift if config.max_shift >= 0 else max(1, data.image_size // 8)
    largest, smallest = space.largest(), space.smallest()
    history, step, start, seen = [], 0, time.perf_counter(), 0
    with progress_bar(total, "training supernet", enabled=show_progress) as bar:
        for epoch in range(config.epochs):
            losses, correct, count = [], 0, 0
            for x, y in iterate_batches(data.train, config.batch_size, shuffle=True, generator=gen, drop_last=False):
                x = augment(x, shift, config.hflip, gen).to(device)
                y = y.to(device)
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, total, warmup, config.lr)
                opt.zero_grad(set_to_none=True)
                with _autocast(device):
                    logits = supernet(x, largest)
                    loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                loss.backward()
                teacher = F.softmax(logits.detach().float(), dim=1)
                for arch in [smallest] + [space.sample(rng) for _ in range(config.num_random)]:
                    with _autocast(device):
                        out = supernet(x, arch)
                        if config.distill:
                            sub_loss = F.kl_div(F.log_softmax(out.float(), dim=1), teacher, reduction="batchmean")
                        else:
                            sub_loss = F.cross_entropy(out, y, label_smoothing=config.label_smoothing)
                    sub_loss.backward()
                if not torch.isfinite(loss):
                    raise UserError(f"training diverged at epoch {epoch + 1}, step {step}: loss is {loss.item()}")
                torch.nn.utils.clip_grad_norm_(params, 5.0)
                opt.step()
                step += 1
                seen += len(y)
                losses.append(loss.item())
                correct += int((logits.argmax(1) == y).sum())
                count += len(y)
                rate = seen / (time.perf_counter() - start)
                bar.update(f"epoch {epoch + 1}/{config.epochs} loss {np.mean(losses):.3f} "
                           f"acc {correct / count:.3f} {rate:.0f} samples/s")
            history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "train_acc": correct / count})
    return {
        "epochs": history,
        "seconds": time.perf_counter() - start,
        "val_acc_largest": evaluate(supernet, data.val, largest, device=device),
        "val_acc_smallest": evaluate(supernet, data.val, smallest, device=device),
    }
