"""Streamed splits: data larger than memory, read item by item through a torch `DataLoader`.

A `StreamedSplit` holds its labels and a reader (`ImageFiles`: an image folder decoded per item with
Pillow; `NpyRows`: a memory-mapped `.npy` array); the inputs are read, resized to the split's size,
augmented and standardized in `DataLoader` worker processes (`workers`; 0: in this process).

Every batch is one job, (positions, seeds), drawn in the main process from the training generator,
so the batches depend on the seed alone, never on the number of workers or on their timing, and a
resumed epoch restarts at its first untrained batch without reading the batches before it. Input j
of a batch with seed s is cropped with seed s + j: a data-parallel worker (`rows`) reads only its
rows of every batch and gets the crops they have in the whole batch. The
augmentation of large images (side >= `LARGE_IMAGE`) is the ImageNet recipe, done in the workers
from the original image: a random resized crop (area `CROP_SCALE` of the image, aspect ratio
`CROP_RATIO`) resized to S x S, and a horizontal flip when the recipe has one (`--hflip`). Smaller
inputs get the light augmentation of in-memory data, on the batch in the main process
(`nas.training.train.augment`). Evaluation reads every input at S x S with no augmentation.

A worker that meets an unreadable file returns its one-line `DataError` message, which the main
process raises: the user sees the file named, not a worker traceback. Each job also returns the
seconds it took, from which `PipelineRate` estimates the images per second the pipeline can deliver.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from nas.data.errors import DataError
from nas.data.images import read_pixels
from nas.runs.resources import cpus, within_half_memory

LARGE_IMAGE = 64  # images with at least this side are augmented by random resized crops in the workers
CROP_SCALE = (0.08, 1.0)  # the area of a random resized crop, as a fraction of the image's (Inception / ImageNet)
CROP_RATIO = (3 / 4, 4 / 3)  # its aspect ratio
STATS_SAMPLE = 2048  # training inputs the normalization statistics of a streamed split are computed on
MAX_DEFAULT_WORKERS = 4


def default_workers() -> int:
    """Data workers when none are asked for: one CPU left to training, at most `MAX_DEFAULT_WORKERS`."""
    return min(MAX_DEFAULT_WORKERS, max(0, cpus() - 1))


class ItemReader(Protocol):
    """Reads input `row` as float32 (C, H, W) images in [0, 1] (or the data's own scale) or (C, T)
    sequences, resized to `side` x `side` when `side` is given (images)."""

    def __len__(self) -> int: ...

    def read(self, row: int, side: int | None) -> np.ndarray: ...


@dataclass(frozen=True)
class ImageFiles:
    """An image folder's files, decoded one at a time (`nas.data.images.read_pixels`)."""

    files: tuple[Path, ...]
    channels: int

    def __len__(self) -> int:
        return len(self.files)

    def read(self, row: int, side: int | None) -> np.ndarray:
        return read_pixels(self.files[row], self.channels, side)


@dataclass(frozen=True)
class NpyRows:
    """Rows of an `.npy` array opened memory-mapped (never loaded whole, never unpickled); `layout`
    says how a row becomes (C, H, W) or (C, T): "hw" (H, W), "chw", "hwc", "t" (T), "tc" (T, C).
    Worker processes reopen the file (the mapping is not pickled)."""

    path: Path
    rows: int
    layout: str
    scale: float  # 255 for uint8 images, else 1
    _array: list[np.ndarray] = field(default_factory=list, compare=False, repr=False)  # the mapping, opened once

    def __len__(self) -> int:
        return self.rows

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": []}

    def array(self) -> np.ndarray:
        if not self._array:
            self._array.append(np.load(self.path, mmap_mode="r", allow_pickle=False))
        return self._array[0]

    def read(self, row: int, side: int | None) -> np.ndarray:
        raw = np.asarray(self.array()[row], dtype=np.float32)
        item = {"hw": lambda a: a[None], "chw": lambda a: a, "hwc": lambda a: a.transpose(2, 0, 1),
                "t": lambda a: a[None], "tc": lambda a: a.T}[self.layout](raw)
        if not np.isfinite(item).all():
            raise DataError(f"{self.path}: row {row} contains NaN or inf values")
        out = np.ascontiguousarray(item, dtype=np.float32)
        if self.scale != 1:
            out /= np.float32(self.scale)
        return out


@dataclass(frozen=True, eq=False)
class StreamedSplit:
    """A split read from `reader` as it is needed: rows `rows` of the reader, labels `y` (int64, (N,)),
    inputs resized to `side` (images; None for sequences) and standardized by `mean`/`std` (float32, per
    channel), read by `workers` DataLoader processes."""

    reader: ItemReader
    rows: np.ndarray  # (N,) int64
    y: Tensor
    side: int | None
    mean: np.ndarray
    std: np.ndarray
    workers: int = 0

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def item(self, k: int, gen: torch.Generator | None = None, hflip: bool = False) -> np.ndarray:
        """Input `k` of the split, standardized; with `gen`, a random resized crop (and flip) of it."""
        row = int(self.rows[k])
        if gen is None or self.side is None:
            x = self.reader.read(row, self.side)
        else:
            x = random_resized_crop(self.reader.read(row, None), self.side, gen, hflip)
        per_channel = (-1,) + (1,) * (x.ndim - 1)
        out = x - self.mean.reshape(per_channel)  # the in-memory path's arithmetic (`nas.data.datasets._build`)
        out /= self.std.reshape(per_channel)
        return out

    def rows_in_memory(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """(x, y) of the inputs at `positions`, read here, without augmentation."""
        return torch.from_numpy(np.stack([self.item(int(k)) for k in positions])), self.y[positions]


def random_resized_crop(x: np.ndarray, side: int, gen: torch.Generator, hflip: bool) -> np.ndarray:
    """A crop of `x` (C, H, W) of random area (`CROP_SCALE`) and aspect ratio (`CROP_RATIO`, log-uniform)
    resized to (C, side, side), bilinear with antialiasing; the whole image when ten draws miss; then a
    horizontal flip with probability 1/2 when `hflip`."""
    _, h, w = x.shape
    u = torch.rand(30, generator=gen).view(10, 3).tolist()
    top, left, ch, cw = 0, 0, h, w
    for area_u, ratio_u, pos_u in u:
        area = h * w * (CROP_SCALE[0] + area_u * (CROP_SCALE[1] - CROP_SCALE[0]))
        ratio = float(np.exp(np.log(CROP_RATIO[0]) + ratio_u * (np.log(CROP_RATIO[1]) - np.log(CROP_RATIO[0]))))
        cw_, ch_ = round(float(np.sqrt(area * ratio))), round(float(np.sqrt(area / ratio)))
        if 0 < cw_ <= w and 0 < ch_ <= h:
            ch, cw = ch_, cw_
            top, left = int(pos_u * (h - ch + 1)), int((1 - pos_u) * (w - cw + 1))  # one draw, both offsets
            top, left = min(top, h - ch), min(left, w - cw)
            break
    crop = torch.from_numpy(np.ascontiguousarray(x[:, top:top + ch, left:left + cw]))[None]  # (1, C, ch, cw)
    out = F.interpolate(crop, size=(side, side), mode="bilinear", align_corners=False, antialias=True)[0]
    if hflip and float(torch.rand(1, generator=gen)) < 0.5:
        out = out.flip(-1)
    return out.contiguous().numpy()


Job = tuple[Tensor, Tensor | None]  # positions in the split, and the seed of each one's crop (None: no crops)


class _Jobs(Dataset):
    """Batch `i` is job `i`, read as a whole (the DataLoader batches nothing itself)."""

    def __init__(self, split: StreamedSplit, jobs: list[Job], hflip: bool) -> None:
        self.split, self.jobs, self.hflip = split, jobs, hflip

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, float] | str:
        start = time.perf_counter()
        positions, seeds = self.jobs[i]
        gens = [None] * len(positions) if seeds is None else [torch.Generator().manual_seed(int(s)) for s in seeds]
        try:
            items = [self.split.item(int(k), gen, self.hflip) for k, gen in zip(positions, gens, strict=True)]
        except DataError as e:  # its message, raised by the main process: one line naming the file
            return str(e)
        x = torch.from_numpy(np.stack(items)) if items else torch.zeros(0)  # no rows: the caller knows the shape
        return x, self.split.y[positions], time.perf_counter() - start


@dataclass
class PipelineRate:
    """The inputs the data pipeline delivered and the seconds its workers spent on them."""

    items: int = 0
    seconds: float = 0.0
    workers: int = 0

    def images_per_second(self) -> float | None:
        """What the pipeline can deliver: each worker's rate times the workers (one when in process)."""
        return self.items / self.seconds * max(1, self.workers) if self.seconds > 0 else None


def stream_batches(split: StreamedSplit, batch_size: int, order: Tensor, *, seeds: Tensor | None = None,
                   hflip: bool = False, skip: int = 0, rate: PipelineRate | None = None,
                   rows: slice = slice(None)) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of `split` in `order` (positions), from batch `skip` on, of each only rows `rows`
    (read and yielded; none: an empty x); `seeds` (one per batch): random resized crops
    (`random_resized_crop`, flipped when `hflip`), input j of a batch seeded by its seed + j. Raises
    the `DataError` a worker met."""
    starts = range(0, len(order), batch_size)
    jobs = [(order[s:s + batch_size][rows],
             None if seeds is None else (int(seeds[i]) + torch.arange(len(order[s:s + batch_size])))[rows])
            for i, s in enumerate(starts)][skip:]
    if not jobs:
        return
    workers = min(split.workers, len(jobs))
    loader = DataLoader(_Jobs(split, jobs, hflip), batch_size=None, shuffle=False, num_workers=workers,
                        generator=torch.Generator(),  # not the global generator: a run's random state stays its own
                        prefetch_factor=2 if workers else None)
    if rate is not None:
        rate.workers = workers
    for out in loader:
        if isinstance(out, str):
            raise DataError(out)
        x, y, seconds = out
        if rate is not None:
            rate.items, rate.seconds = rate.items + len(y), rate.seconds + seconds
        yield x, y


def read_whole(split: StreamedSplit, batch_size: int = 1024) -> tuple[Tensor, Tensor] | None:
    """All of `split`'s inputs (standardized, not augmented; read by its workers) and its labels, when
    the inputs take at most half the memory available now (`within_half_memory`); else None."""
    if not len(split) or not within_half_memory(len(split) * split.item(0).nbytes):
        return None
    xs, ys = zip(*stream_batches(split, batch_size, torch.arange(len(split))), strict=True)
    return torch.cat(xs), torch.cat(ys)


def sample_stats(reader: ItemReader, rows: np.ndarray, side: int | None, seed: int) -> tuple[np.ndarray, int]:
    """The inputs a streamed training split's statistics are computed on: `STATS_SAMPLE` of `rows`
    drawn with `seed` (all of them when fewer), in row order, read at `side`; and how many."""
    chosen = rows if len(rows) <= STATS_SAMPLE else np.sort(
        np.random.default_rng(seed).choice(rows, STATS_SAMPLE, replace=False))
    return np.stack([reader.read(int(r), side) for r in chosen]), len(chosen)
