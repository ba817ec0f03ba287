"""Where int8 pays on this CPU: ONNX Runtime latency of random subnets in fp32 and in int8, side by side.

For `--subnets` random subnets of a built-in space fitted to an input size (the largest first; random
weights, calibrated on random inputs: quantization's ranges do not change which kernels run), each is
timed on ONNX Runtime (batch 1, `--threads` threads, the subnets and precisions interleaved in
`--rounds` rounds, the median kept) in:
- fp32;
- int8 with int8 activations (S8S8) and attention's products of activations quantized too (what
  `nas` did before), then with those products left float;
- int8 as `nas` quantizes: uint8 activations (U8S8), the layers with weights only;
- int8 in the stages `--precision search` proposes from ONNX Runtime's per-node profile
  (`Evaluator.per_stage_precision`'s rule: the stages whose int8 nodes run faster), when that is
  some stages but not all.
Prints the geometric means of fp32 latency over each int8 latency (above 1: int8 is faster) and of
fp32 over the best of the four per subnet; writes OUT/latency.csv and OUT/int8_latency.png.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/int8_latency.py --space tiny --size 8 --out runs/benchmarks/int8_latency/tiny
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/int8_latency.py --space cifar --size 28 --out runs/benchmarks/int8_latency/cifar28
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nas.hardware.quantize import int8_stages, per_stage_proposal, quantize_model
from nas.hardware.targets import TargetTimer
from search_spaces import HybridSupernet, get_family, get_space
from search_spaces.fit import DataShape

VARIANTS = ("fp32", "int8 (s8 activations, products too)", "int8 (s8 activations)", "int8", "int8 per stage")


def timers(net: torch.nn.Module, shape: tuple[int, ...], threads: int) -> dict[str, TargetTimer]:
    """The subnet prepared for timing in each variant (per stage only where the profile proposes it)."""
    calibration = torch.randn(64, *shape[1:], generator=torch.Generator().manual_seed(0))
    whole = quantize_model(net, shape[1:], calibration, batch=shape[0], threads=threads)
    signed = {"int8 (s8 activations, products too)": True, "int8 (s8 activations)": False}
    out = {"fp32": TargetTimer(net, shape, target="onnxruntime", threads=threads),
           **{name: quantize_model(net, shape[1:], calibration, batch=shape[0], threads=threads, products=products,
                                   signed_activations=True).timer(shape) for name, products in signed.items()},
           "int8": whole.timer(shape)}
    proposal = per_stage_proposal(whole, shape, threads=threads)
    if proposal is not None:
        out["int8 per stage"] = quantize_model(net, shape[1:], calibration, batch=shape[0], threads=threads,
                                               stages=int8_stages(proposal)).timer(shape)
        out["stages"] = proposal  # type: ignore[assignment]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="tiny", help="a built-in space or a space .json file")
    ap.add_argument("--size", type=int, default=None, help="input size (default: the space's)")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--subnets", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/benchmarks/int8_latency"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    written = get_family(args.space).example
    size = args.size or written.input_size
    space = get_space(args.space, DataShape(written.dims, args.channels, size, written.num_classes))  # as nas fits it
    config = space.config
    supernet = HybridSupernet(space).eval()
    rng = np.random.default_rng(args.seed)
    archs = [space.largest()] + [space.sample(rng) for _ in range(args.subnets - 1)]
    shape = (1, args.channels, *([size] * config.dims))
    start = time.perf_counter()
    prepared = []
    for i, arch in enumerate(archs):
        prepared.append(timers(supernet.extract(arch).eval(), shape, args.threads))
        print(f"prepared {i + 1}/{len(archs)}", flush=True)
    readings: dict[tuple[int, str], list[float]] = {}
    for r in range(args.rounds):  # interleaved: a drift of the machine falls on every variant alike
        for i in rng.permutation(len(archs)):
            for variant in VARIANTS:
                timer = prepared[i].get(variant)
                if isinstance(timer, TargetTimer):
                    readings.setdefault((int(i), variant), []).append(timer.measure(max_seconds=0.3).median_ms)
        print(f"round {r + 1}/{args.rounds}", flush=True)
    rows = []
    for i, arch in enumerate(archs):
        row = {"id": arch.id, "params": space.count_params(arch), "flops": space.count_flops(arch),
               "stages": prepared[i].get("stages", "")}
        for variant in VARIANTS:
            values = readings.get((i, variant))
            row[variant] = float(np.median(values)) if values else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows)
    table["best"] = table[list(VARIANTS)].min(axis=1)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "latency.csv", index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"{config.name} at {size}: {len(archs)} subnets, {args.rounds} rounds, {time.perf_counter() - start:.0f} s, "
          f"load average {os.getloadavg()[0]:.1f}")
    for variant in (*VARIANTS[1:], "best"):
        ratios = (table["fp32"] / table[variant]).dropna()
        where = f" ({len(ratios)} subnets with a per-stage proposal)" if variant == "int8 per stage" else ""
        if len(ratios):
            print(f"  fp32 / {variant}{where}: geometric mean {np.exp(np.log(ratios).mean()):.3f}, "
                  f"range {ratios.min():.2f}-{ratios.max():.2f}")
    _plot(table, args.out / "int8_latency.png", f"{config.name} at {size}x{size}" if config.dims == 2 else config.name)


def _plot(table: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for variant, marker in zip(VARIANTS[1:], "xs^o"):
        ax.scatter(table["fp32"], table[variant], marker=marker, label=variant)
    low, high = table[list(VARIANTS)].min().min(), table[list(VARIANTS)].max().max()
    ax.plot([low, high], [low, high], "k--", lw=0.8, label="as fast as fp32")
    ax.set(xscale="log", yscale="log", xlabel="fp32 latency (ms, ONNX Runtime)", ylabel="int8 latency (ms)", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
