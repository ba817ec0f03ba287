"""Cost of weight sharing: forward+backward time of a subnet run through the supernet divided by
the time of its extracted static model, on this CPU, for random architectures of a preset.

    python benchmarks/weight_sharing_overhead.py --space tiny --archs 24 --batch 64

Both models run in the same process, interleaved round by round, so machine noise hits both
alike; the figure is the median over architectures of the per-architecture time ratio.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from search_spaces import HybridSupernet, get_space


def step_time(fn, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    fn(x).sum().backward()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="tiny")
    p.add_argument("--archs", type=int, default=24)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=5, help="timed steps per model per round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/benchmarks/weight_sharing.csv"))
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    space = get_space(args.space)
    supernet = HybridSupernet(space).train()
    x = torch.randn(supernet.spec.input_shape(args.batch))
    rng = np.random.default_rng(args.seed)
    rows = []
    for i in range(args.archs):
        arch = space.sample(rng)
        static = supernet.extract(arch).train()
        run_super, run_static = functools.partial(lambda t, a: supernet(t, a), a=arch), static
        for fn in (run_super, run_static):  # warm-up
            step_time(fn, x)
        times = {"supernet": [], "static": []}
        for _ in range(args.rounds):
            for name, fn in (("supernet", run_super), ("static", run_static)):
                times[name] += [step_time(fn, x) for _ in range(args.steps)]
            supernet.zero_grad(set_to_none=True)
            static.zero_grad(set_to_none=True)
        sup, sta = float(np.median(times["supernet"])), float(np.median(times["static"]))
        rows.append({"arch": arch.id, "supernet_ms": sup * 1e3, "static_ms": sta * 1e3, "ratio": sup / sta,
                     "params": space.count_params(arch)})
        print(f"{i + 1:3d}/{args.archs} {arch.id} supernet {sup * 1e3:7.2f} ms  static {sta * 1e3:7.2f} ms  "
              f"ratio {sup / sta:.3f}", flush=True)
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    q1, med, q3 = np.percentile(table["ratio"], [25, 50, 75])
    print(f"\nspace {args.space}, batch {args.batch}, {args.threads} thread(s), {len(table)} architectures: "
          f"median supernet/static forward+backward time ratio {med:.3f} (IQR {q1:.3f}-{q3:.3f}); table: {args.out}")


if __name__ == "__main__":
    main()
