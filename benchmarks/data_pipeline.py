"""The streamed data pipeline's images/s at several worker counts against the supernet training step's.

    python benchmarks/data_pipeline.py --out runs/benchmarks/data_pipeline

Writes `--images` 32x32 RGB PNGs (the digits upscaled, tinted per class) as an image folder under
`--out`, loads it streamed (`nas.data.stream`), and measures (1) the pipeline alone: `--batches`
training batches (shuffle, decode, standardize, light augmentation) at each of `--workers`, and
(2) supernet training steps of the `--space` space fitted to the data (uniform sampling, one random
subnet per step, on the CPU) fed from in-memory batches. The slower of the two limits training.
Prints one line per measurement and writes them to `pipeline.json` under `--out`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nas.data.datasets import load_data
from nas.training.batches import train_batches
from nas.training.config import TrainConfig
from nas.training.sampling import make_sampler
from nas.training.train import _step_losses, _update, make_optimizer
from search_spaces import HybridSupernet, SearchSpace, get_family


def write_images(root: Path, n: int) -> Path:
    """`n` 32x32 RGB PNGs, one sub-folder per digit class."""
    from sklearn.datasets import load_digits

    d = load_digits()
    for i in range(n):
        label, gray = int(d.target[i % len(d.target)]), d.images[i % len(d.target)] / 16.0
        tint = np.array([1.0, 0.5 + label / 20, 1.0 - label / 20])
        rgb = np.round(255 * gray[..., None] * tint).astype(np.uint8)
        f = root / f"c{label}" / f"{i:05d}.png"
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).resize((32, 32), Image.Resampling.BILINEAR).save(f)
    return root


def pipeline_rate(folder: Path, workers: int, config: TrainConfig, batches: int) -> float:
    data = load_data(str(folder), stream=True, workers=workers)
    gen, seen, start = torch.Generator().manual_seed(0), 0, time.perf_counter()
    while seen < batches * config.batch_size:
        for _, y in train_batches(data, config, gen):
            seen += len(y)
            if seen >= batches * config.batch_size:
                break
    return seen / (time.perf_counter() - start)


def step_rate(folder: Path, space: str, config: TrainConfig, steps: int) -> float:
    data = load_data(str(folder))  # in memory: the step alone
    supernet = HybridSupernet(SearchSpace(get_family(space).fit(data.shape)))
    params = [p for p in supernet.parameters() if p.requires_grad]
    opt, sampler = make_optimizer(params, config), make_sampler("uniform", supernet.space, num_random=1, seed=0)
    gen, seen, start = torch.Generator().manual_seed(0), 0, 0.0
    for i, (x, y) in enumerate(train_batches(data, config, gen)):
        if i == 1:  # the first step warms up
            start, seen = time.perf_counter(), 0
        _step_losses(supernet, x, y, sampler.draws(), config)
        _update(opt, params, config)
        seen += len(y)
        if i >= steps:
            break
    return seen / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--space", default="cifar")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=20, help="pipeline batches timed per worker count")
    p.add_argument("--steps", type=int, default=5, help="training steps timed")
    args = p.parse_args()
    folder = write_images(args.out / "images", args.images)
    config = TrainConfig(batch_size=args.batch_size, num_random=1, sampling="uniform")
    results: dict[str, float] = {}
    for w in args.workers:
        results[f"pipeline_{w}_workers"] = pipeline_rate(folder, w, config, args.batches)
        print(f"pipeline, {w} workers: {results[f'pipeline_{w}_workers']:.0f} images/s", flush=True)
    results["training_step"] = step_rate(folder, args.space, config, args.steps)
    print(f"supernet step ({args.space}, 1 random subnet, batch {args.batch_size}): "
          f"{results['training_step']:.0f} images/s")
    (args.out / "pipeline.json").write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)},
                                                        "images_per_second": results}, indent=1))


if __name__ == "__main__":
    main()
