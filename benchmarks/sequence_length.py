"""Which token mixers a search picks as the deployment sequence length grows, under one latency limit.

One supernet of the `seq` space trained on mnist1d (40 steps) is searched several times, each time
with the hardware costs at another sequence length (`nas search --seq-len L`): latency is measured
on this machine on the extracted subnet running on L tokens, under the same `--max-latency-ms`.
Accuracy comes from the data, so it is the same for a subnet at every L; only the costs move.

1. Probe: the measured latency and the FLOPs of the largest subnet with every layer one mixer
   (softmax, linear, window attention, or the depthwise convolution block) at each length.
2. Search at each length (`--budget` evaluations, `--seeds` seeds). Reported per length: the mixer
   shares among the layers of the Pareto-front subnets and of the chosen subnet (best validation
   accuracy within the limit), its accuracy and latency.

    .venv/bin/nas train --space seq --out runs/benchmarks/sequence/supernet
    .venv/bin/python benchmarks/sequence_length.py --supernet runs/benchmarks/sequence/supernet \
        --out runs/benchmarks/sequence

Writes probe.csv, runs.csv, mixers.csv (shares per length), mixers.png and each run's folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.data.datasets import load_data
from nas.evaluation.evaluator import Evaluator
from nas.evaluation.limits import Limits
from nas.hardware.measure import (
    LatencySettings,
    measure_latency,
)
from nas.runs.files import load_supernet, write_json
from nas.search.loop import Budget, run_search
from search_spaces import Arch, AttnBlock, ConvBlock, SearchSpace, Stage

MIXERS = ("softmax", "linear", "window", "conv")


def mixer_of(block) -> str:
    return "conv" if isinstance(block, ConvBlock) else block.mixer


def uniform(space: SearchSpace, mixer: str) -> Arch:
    """The largest subnet with every layer `mixer` (the largest conv block for "conv")."""
    big, c = space.largest(), space.config
    block = ConvBlock(max(c.kernels), max(c.expand_ratios)) if mixer == "conv" else \
        AttnBlock(mixer, max(c.heads), max(c.mlp_ratios))
    return space.validate(Arch(resolution=big.resolution, stem_width=big.stem_width, stages=tuple(
        Stage(width=s.width, stride=s.stride, blocks=(block,) * s.depth) for s in big.stages)))


def shares(archs: list[Arch]) -> dict[str, float]:
    layers = [mixer_of(b) for a in archs for b in a.blocks]
    return {m: layers.count(m) / max(1, len(layers)) for m in MIXERS}


def probe(supernet, lengths: list[int], threads: int) -> pd.DataFrame:
    space, rows = supernet.space, []
    for length in lengths:
        conv = all("conv" in st.block_types for st in space.config.stages)
        for mixer in MIXERS:
            if (mixer == "conv" and not conv) or (mixer != "conv" and mixer not in space.config.mixers):
                continue
            arch = uniform(space, mixer)
            model = supernet.extract(arch, input_size=length).cpu().eval()
            lat = measure_latency(model, supernet.spec.input_shape(1, length), threads=threads, max_seconds=0.5)
            rows.append({"length": length, "mixer": mixer, "latency_ms": lat.median_ms,
                         "flops": space.count_flops(arch, input_size=length)})
            print(f"probe L={length:5d} {mixer:8s} {lat.median_ms:9.2f} ms  {rows[-1]['flops'] / 1e6:9.1f} M MACs")
    return pd.DataFrame(rows)


def plot(mixers: pd.DataFrame, path: Path, limit: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, what in zip(axes, ("front", "chosen")):
        part = mixers[mixers["of"] == what].set_index("length")[list(MIXERS)]
        bottom = np.zeros(len(part))
        for mixer in MIXERS:
            ax.bar([str(v) for v in part.index], part[mixer], bottom=bottom, label=mixer)
            bottom += part[mixer].to_numpy()
        ax.set_title(f"layers of the {'Pareto front' if what == 'front' else 'chosen subnets'}")
        ax.set_xlabel(f"sequence length (limit {limit:g} ms)")
    axes[0].set_ylabel("share of layers")
    axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--supernet", type=Path, required=True, help="a trained `seq` supernet (nas train --space seq)")
    p.add_argument("--data", default="mnist1d")
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 4096])
    p.add_argument("--max-latency-ms", type=float, default=20.0)
    p.add_argument("--budget", default="100")
    p.add_argument("--strategy", default="predictor")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/benchmarks/sequence"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    supernet = load_supernet(args.supernet, "cpu")
    data = load_data(args.data, dims=supernet.space.config.dims)
    probe_table = probe(supernet, args.lengths, args.threads)
    probe_table.to_csv(args.out / "probe.csv", index=False)

    runs, mixer_rows = [], []
    limits = Limits(max_latency_ms=args.max_latency_ms)
    for length in args.lengths:
        fronts, chosen = [], []
        for seed in range(args.seeds):
            evaluator = Evaluator(supernet, data, LatencySettings(threads=args.threads), cost_size=length)
            out = args.out / "runs" / f"L{length}-seed{seed}"
            out.mkdir(parents=True, exist_ok=True)
            summary = run_search(evaluator, out, budget=Budget.parse(args.budget), limits=limits,
                                 strategy=args.strategy, seed=seed, show_progress=False)
            front = [Arch.from_json(a) for a in pd.read_csv(out / "pareto.csv")["arch"]]
            best = summary["chosen"]
            arch = Arch.from_json(pd.read_csv(out / "evaluations.csv", dtype={"id": str})
                                  .set_index("id").at[best["id"], "arch"])
            fronts += front
            chosen.append(arch)
            runs.append({"length": length, "seed": seed, "evaluations": summary["evaluations"],
                         "feasible": summary["feasible"], "chosen": best["id"], "val_acc": best["val_acc"],
                         "test_acc": best["test_acc"], "latency_ms": best["latency_ms"], "flops": best["flops"],
                         "chosen_mixers": " ".join(mixer_of(b) for b in arch.blocks),
                         **{f"front_{m}": v for m, v in shares(front).items()}})
            print(f"L={length:5d} seed {seed}: chosen {best['id']} val {best['val_acc']:.3f} test {best['test_acc']:.3f} "
                  f"{best['latency_ms']:.2f} ms, layers {runs[-1]['chosen_mixers']}")
        mixer_rows.append({"length": length, "of": "front", **shares(fronts)})
        mixer_rows.append({"length": length, "of": "chosen", **shares(chosen)})
    pd.DataFrame(runs).to_csv(args.out / "runs.csv", index=False)
    mixers = pd.DataFrame(mixer_rows)
    mixers.to_csv(args.out / "mixers.csv", index=False)
    plot(mixers, args.out / "mixers.png", args.max_latency_ms)
    write_json(args.out / "settings.json", {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    print(mixers.round(3).to_string(index=False))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
