"""The training batches of an epoch: shuffled, augmented, on the training device; or a data-parallel
worker's rows of them (`rows`, `nas.training.parallel.DataParallel.rows`).

Every random draw of a batch (its positions in the shuffle, its shifts and flips, the seeds of its
crops) is made for the whole batch, by every worker alike, and a worker keeps the draws of its rows:
its rows are those of the whole batch, bit for bit, and a streamed split (`nas.data.stream`) is read
only at those rows, in that worker's DataLoader processes. Light augmentation for small inputs:
random translation and an optional horizontal flip (time reversal for sequences); large streamed
images are cropped in the data workers (`nas.data.stream.random_resized_crop`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from nas.data.datasets import TaskData, iterate_batches
from nas.data.stream import LARGE_IMAGE, PipelineRate, StreamedSplit, stream_batches
from nas.training.config import TrainConfig

ALL = slice(None)  # every row of a batch: one process
Draws = tuple[Tensor | None, Tensor | None, Tensor | None]  # shifts down (B, 1, 1), right (B, 1, 1), flips (B,)


def augment(x: Tensor, max_shift: int, hflip: bool, gen: torch.Generator, *, batch: int | None = None,
            rows: slice = ALL) -> Tensor:
    """Per-sample random translation by up to `max_shift` pixels, or time steps for sequences
    (B, C, T), with zero padding; optional horizontal flip (time reversal for sequences). With
    `batch`, `x` holds rows `rows` of a batch of `batch` inputs: the draws are the whole batch's."""
    vertical = x.dim() == 4
    dy, dx, flip = _draw(len(x) if batch is None else batch, max_shift, hflip, gen, vertical=vertical)
    mine = (_of(dy, rows), _of(dx, rows), _of(flip, rows))
    grid = x if vertical else x.unsqueeze(2)  # a sequence is a grid of height 1, shifted in time only
    out = _apply(grid, max_shift, mine, vertical=vertical)
    return out if vertical else out.squeeze(2)


def _draw(b: int, max_shift: int, hflip: bool, gen: torch.Generator, *, vertical: bool) -> Draws:
    """The random draws of `augment` for a batch of `b` inputs, in the order they are made."""
    dy = dx = flip = None
    if max_shift > 0:
        p = max_shift
        dy = torch.randint(0, 2 * p + 1, (b, 1, 1), generator=gen) if vertical else torch.zeros(b, 1, 1, dtype=torch.long)
        dx = torch.randint(0, 2 * p + 1, (b, 1, 1), generator=gen)
    if hflip:
        flip = torch.rand(b, generator=gen) < 0.5
    return dy, dx, flip


def _of(draw: Tensor | None, rows: slice) -> Tensor | None:
    return None if draw is None else draw[rows]


def _apply(x: Tensor, max_shift: int, draws: Draws, *, vertical: bool) -> Tensor:
    """`x` (B, C, H, W) shifted and flipped as `draws` (one per row) say; not `vertical`: a sequence
    (H 1), padded in time only."""
    dy, dx, flip = draws
    b, _, h, w = x.shape
    if dy is not None and dx is not None:
        p = max_shift
        padded = F.pad(x, (p, p, p, p) if vertical else (p, p, 0, 0))
        rows = dy + torch.arange(h).view(1, h, 1)  # (B, H, 1)
        cols = dx + torch.arange(w).view(1, 1, w)  # (B, 1, W)
        x = padded.permute(0, 2, 3, 1)[torch.arange(b).view(b, 1, 1), rows, cols].permute(0, 3, 1, 2)
    if flip is not None:
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    # the layout of a shifted batch whatever was applied (gathered channels-last, then made contiguous:
    # NCHW, or for one channel strides that send convolutions to their channels-last kernels), so that
    # a recipe without augmentation trains at the same speed per step
    return x.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format).permute(0, 3, 1, 2).contiguous()


def train_batches(data: TaskData, config: TrainConfig, gen: torch.Generator, *, skip: int = 0,
                  rate: PipelineRate | None = None, rows: slice = ALL) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of shuffled, augmented batches on the training device, from batch `skip` on (the
    generator draws of the batches skipped are made all the same, so the batches after them do not
    change); of each batch, rows `rows` only (batch i has min(batch size, N - i * batch size) rows in
    all). A streamed training split is read by its workers (`_streamed_batches`)."""
    if isinstance(data.train, StreamedSplit):
        yield from _streamed_batches(data.train, data, config, gen, skip, rate, rows)
        return
    shift = shift_of(data, config)
    for i, (x, y) in enumerate(iterate_batches(data.train, config.batch_size, shuffle=True, generator=gen)):
        if i < skip:
            _draw(len(y), shift, config.hflip, gen, vertical=data.dims == 2)
            continue
        x = augment(x[rows], shift, config.hflip, gen, batch=len(y), rows=rows)
        yield x.to(config.device, non_blocking=True), y[rows].to(config.device, non_blocking=True)


def shift_of(data: TaskData, config: TrainConfig) -> int:
    """The largest translation of the light augmentation: `max_shift`, or an eighth of the input size."""
    return config.max_shift if config.max_shift >= 0 else max(1, data.input_size // 8)


def _streamed_batches(split: StreamedSplit, data: TaskData, config: TrainConfig, gen: torch.Generator, skip: int,
                      rate: PipelineRate | None, rows: slice) -> Iterator[tuple[Tensor, Tensor]]:
    """`train_batches` of a streamed split: the same shuffle as in memory; large images cropped in the
    workers with one seed per batch drawn here, smaller inputs augmented here as in memory."""
    order = torch.randperm(len(split), generator=gen)
    bs, n = config.batch_size, len(split)
    crops = data.dims == 2 and data.input_size >= LARGE_IMAGE
    seeds = torch.randint(0, 2**62, (math.ceil(n / bs),), generator=gen) if crops else None
    shift = shift_of(data, config)
    shape = (data.in_channels, data.input_size) if data.dims == 1 else (data.in_channels,) + (data.input_size,) * 2
    if not crops:
        for i in range(skip):
            _draw(min(bs, n - i * bs), shift, config.hflip, gen, vertical=data.dims == 2)
    batches = stream_batches(split, bs, order, seeds=seeds, hflip=config.hflip, skip=skip, rate=rate, rows=rows)
    for i, (x, y) in enumerate(batches, start=skip):
        if not len(y):  # a short last batch leaves some workers without rows
            x = torch.zeros(0, *shape)
        if not crops:
            x = augment(x, shift, config.hflip, gen, batch=min(bs, n - i * bs), rows=rows)
        yield x.to(config.device, non_blocking=True), y.to(config.device, non_blocking=True)
