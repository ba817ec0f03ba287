"""Seconds per subnet evaluated on a streamed validation split: read again by every evaluation (a new
DataLoader each time, as before) against held in memory once (`Evaluator.validation`).

    python -m benchmarks.streamed_evaluation --out runs/benchmarks/streamed_evaluation

Writes `--images` 32x32 RGB PNGs as an image folder under `--out` (`benchmarks.data_pipeline`), loads it
streamed with `--workers` DataLoader workers, and evaluates `--subnets` random subnets of the `--space`
space fitted to the data (untrained: the time, not the accuracy, is measured) both ways, with the same
results. Prints the median seconds per subnet of each and writes them to `evaluation.json` under `--out`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` from the repository root

from benchmarks.data_pipeline import write_images
from nas.data.datasets import load_data
from nas.evaluation.accuracy import accuracy_and_loss
from nas.evaluation.evaluator import Evaluator
from nas.hardware.measure import LatencySettings
from search_spaces import HybridSupernet, SearchSpace, get_family


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--subnets", type=int, default=8)
    p.add_argument("--space", default="cifar")
    args = p.parse_args()
    torch.set_num_threads(1)
    folder = args.out / "images"
    if not folder.is_dir():
        write_images(folder, args.images)
    data = load_data(str(folder), stream=True, workers=args.workers)
    torch.manual_seed(0)
    supernet = HybridSupernet(SearchSpace(get_family(args.space).fit(data.shape)))
    rng = np.random.default_rng(0)
    archs = [supernet.space.sample(rng) for _ in range(args.subnets)]
    evaluator = Evaluator(supernet, data, LatencySettings())
    start = time.perf_counter()
    evaluator.validation()  # read once, into memory
    read_once = time.perf_counter() - start
    before, after = [], []
    for i, arch in enumerate(archs):  # both ways on each subnet, in turn first: the load drifts alike, warmth evens out
        for way in (0, 1) if i % 2 == 0 else (1, 0):
            start = time.perf_counter()
            if way == 0:
                result = accuracy_and_loss(supernet, data.val, arch)
            else:
                row = evaluator.evaluate(arch, latency=False)
            (before if way == 0 else after).append(time.perf_counter() - start)
        assert (row["val_acc"], row["val_loss"]) == result, "held in memory, the results must not change"
    saved = statistics.median(b - a for b, a in zip(before, after, strict=True))
    summary = {"images_val": len(data.val), "workers": args.workers, "space": args.space, "subnets": args.subnets,
               "streamed_median_s": statistics.median(before), "held_median_s": statistics.median(after),
               "saved_median_s": saved, "read_once_s": read_once}
    print(f"{len(data.val)} validation images, {args.workers} workers, space {args.space}, {args.subnets} subnets: "
          f"read again each time {summary['streamed_median_s']:.3f} s/subnet, held in memory "
          f"{summary['held_median_s']:.3f} s/subnet (medians; saved {saved:.3f} s/subnet, median of the pairs), "
          f"after reading it once in {read_once:.3f} s")
    (args.out / "evaluation.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
