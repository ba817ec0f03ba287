"""The checks that need an NVIDIA GPU, run by scripts/gpu_check.sh (never by the tests or CI).

1. image_folder: the digits, upscaled to 32x32 RGB PNGs, written as an image folder with
   train/val/test folders (a few hundred images each) and read back by `load_data`;
2. train: `nas train --space cifar` on it for two epochs on CUDA (bfloat16 autocast: nas.training.train);
3. latency: a few subnets timed with CUDA events (`measure_latency`) against their FLOPs (rank correlation);
4. memory: CUDA peak memory of inference against `SearchSpace.peak_memory_bytes`, and of one training
   step of the supernet against the lower bound `nas.runs.resources.supernet_memory`.

One line per check: `gpu_check: <name>: ok|FAIL ...`; the exit status is the number of FAILs.
`--cpu-dry-run`: the same steps, small (16x16, 120 images, one epoch without random subnets), on the
CPU; the training-step memory check is CUDA only, and timings on a busy CPU may fail the latency check.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's nas, also when it is not installed

from nas.cli.main import main as nas_main  # noqa: E402
from nas.data.datasets import load_data  # noqa: E402
from nas.hardware.measure import (  # noqa: E402
    count_flops,
    measure_latency,
    measure_peak_memory_cpu,
    measure_peak_memory_cuda,
)
from nas.runs.files import load_supernet  # noqa: E402
from nas.runs.resources import gib, supernet_memory  # noqa: E402

FAILS: list[str] = []


def report(name: str, ok: bool, detail: str) -> None:
    print(f"gpu_check: {name}: {'ok' if ok else 'FAIL'} {detail}", flush=True)
    if not ok:
        FAILS.append(name)


def write_digits(root: Path, side: int, count: int) -> None:
    """The first `count` digits as side x side RGB PNGs: train/val/test folders (4:1:1), one sub-folder per class."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for i in range(count):
        split = ("train", "train", "train", "train", "val", "test")[i % 6]
        gray = Image.fromarray(np.round(d.images[i] * 255 / 16).astype(np.uint8))
        f = root / split / f"digit{d.target[i]}" / f"{i:04d}.png"
        f.parent.mkdir(parents=True, exist_ok=True)
        gray.resize((side, side), Image.Resampling.BILINEAR).convert("RGB").save(f)


def check_training_step(run: Path, batch: int) -> None:
    """CUDA peak of one AdamW step of the supernet on its largest subnet (bf16 autocast) >= the lower bound."""
    supernet = load_supernet(run, device="cuda")
    space = supernet.space
    optimizer = torch.optim.AdamW(supernet.parameters())
    shape = (batch, space.config.in_channels, space.config.input_size, space.config.input_size)
    x, y = torch.randn(shape, device="cuda"), torch.randint(0, space.config.num_classes, (batch,), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(supernet(x, space.largest()), y)
    loss.backward()
    optimizer.step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    _, bound = supernet_memory(space, batch=batch, optimizer="adamw")
    report("train_step_memory", peak >= bound, f"peak {gib(peak)} vs lower bound {gib(bound)} "
           f"(ratio {peak / bound:.2f}, batch {batch})")


def check_subnets(run: Path, device: str, batch: int) -> None:
    supernet = load_supernet(run)
    space = supernet.space
    rng = np.random.default_rng(0)
    archs = [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(4))]
    flops, latency = [], []
    for arch in archs:
        subnet = supernet.extract(arch)
        shape = subnet.spec.input_shape(batch)
        flops.append(count_flops(subnet, subnet.spec.input_shape(1)))
        latency.append(measure_latency(subnet, shape, device=device, threads=None if device == "cuda" else 1,
                                       max_seconds=2.0).median_ms)
        measured = (measure_peak_memory_cuda(subnet, shape) if device == "cuda"
                    else measure_peak_memory_cpu(subnet, shape))
        estimate = space.peak_memory_bytes(arch, batch)
        report(f"memory[{arch.id}]", 0.5 <= measured / estimate <= 2.0,
               f"inference peak {gib(measured)} vs estimate {gib(estimate)} (ratio {measured / estimate:.2f}, batch {batch})")
    rho = float(np.corrcoef(np.argsort(np.argsort(flops)), np.argsort(np.argsort(latency)))[0, 1])
    pairs = ", ".join(f"{f / 1e6:.1f}M FLOPs {t:.3f} ms" for f, t in zip(flops, latency, strict=True))
    report("latency_vs_flops", rho >= 0.5, f"Spearman {rho:.2f} over {len(archs)} subnets at batch {batch} on "
                                           f"{device} (CUDA events on cuda): {pairs}")


def run_checks(tmp: Path, device: str, side: int, count: int, batch: int, epochs: int) -> None:
    start = time.perf_counter()
    write_digits(tmp / "digits", side, count)
    data = load_data(str(tmp / "digits"))
    read = data.describe()["read"]
    report("image_folder", (data.in_channels, data.input_size, data.num_classes) == (3, side, 10) and data.given == ("val", "test"),
           f"{read['images']} PNGs as {data.in_channels}x{data.input_size}x{data.input_size}, {data.num_classes} "
           f"classes, sizes {data.describe()['sizes']} ({time.perf_counter() - start:.1f} s)")
    start = time.perf_counter()
    quick = ["--num-random", "0"] if device == "cpu" else []  # the dry run: only the sandwich's ends
    code = nas_main(["train", "--data", str(tmp / "digits"), "--space", "cifar", "--epochs", str(epochs), "--device",
                     device, "--batch-size", str(batch), *quick, "--out", str(tmp / "run"), "--quiet"])
    report("train", code == 0 and (tmp / "run" / "supernet.safetensors").is_file(),
           f"nas train --space cifar, {epochs} epoch(s) on {device}{' (bf16 autocast)' if device == 'cuda' else ''}: "
           f"exit {code}, {time.perf_counter() - start:.1f} s")
    if code != 0:
        return
    check_subnets(tmp / "run", device, batch)
    if device == "cuda":
        check_training_step(tmp / "run", batch)
    else:
        print("gpu_check: train_step_memory: skipped (CUDA only)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="the same steps, small, on the CPU")
    args = parser.parse_args()
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("gpu_check: cuda: FAIL torch sees no CUDA device (use --cpu-dry-run to check the script here)")
        return 1
    device, side, count, batch, epochs = ("cpu", 16, 120, 16, 1) if args.cpu_dry_run else ("cuda", 32, 1797, 256, 2)
    if device == "cuda":
        print(f"gpu_check: device: {torch.cuda.get_device_name()} torch {torch.__version__} cuda {torch.version.cuda}")
    with tempfile.TemporaryDirectory(prefix="nas-gpu-check-") as tmp:
        run_checks(Path(tmp), device, side, count, batch, epochs)
    print(f"gpu_check: done: {len(FAILS)} FAIL(s){': ' + ', '.join(FAILS) if FAILS else ''}")
    return len(FAILS)


if __name__ == "__main__":
    sys.exit(main())
