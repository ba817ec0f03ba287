"""Evaluating a subnet: accuracy with inherited weights, and its hardware costs under hard limits.

Parameters and FLOPs (multiply-adds) come from the space's exact analytic counts (equal to fvcore
on the extracted model; `search_spaces.blocks`), peak memory from its analytic estimate. Latency
is either measured on the extracted model on the target device (median of repeated runs at a
fixed thread count and batch size) or, with a latency profile of another device, predicted
(`predictors.LatencyPredictor`) without running anything.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
from torch import nn

from nas.data.datasets import AnySplit, TaskData, held_in_memory, in_memory
from nas.errors import FieldError, UserError
from nas.evaluation.accuracy import accuracy_and_loss, evaluate
from nas.evaluation.limits import Limits
from nas.hardware.measure import Latency, LatencySettings
from nas.hardware.targets import Target, TargetTimer
from predictors import LatencyPredictor, MissingBlockError
from predictors.proxies import draw_batches, proxy_scores
from search_spaces import Arch, HybridSupernet

PROXY_BATCHES, PROXY_BATCH_SIZE = 1, 64  # what training-free proxies see of the training split


class Evaluator:
    """Accuracy and costs of subnets of one supernet on one dataset.

    With a `predictor`, latency is predicted for the predictor's device; `remeasure` says whether
    that device is this machine, so that chosen subnets can also be measured (`measure`).
    `cost_size`: the input size the hardware costs are for, when it is not the data's (a sequence
    length at deployment: attention, linear attention, windows and convolutions grow differently
    with it); accuracy is always measured on the data.
    """

    def __init__(self, supernet: HybridSupernet, data: TaskData, latency: LatencySettings, *, device: str = "cpu",
                 predictor: LatencyPredictor | None = None, remeasure: bool = True, cost_size: int | None = None):
        self.supernet, self.data, self.latency, self.device = supernet, data, latency, device
        self.predictor, self.remeasure, self.cost_size = predictor, remeasure, cost_size
        self._warmed_up = False  # `measure`
        self._val: AnySplit | None = None  # `validation`
        spec = supernet.spec
        if ((data.dims, data.in_channels, data.input_size) != (spec.dims, spec.in_channels, spec.input_size)
                or data.num_classes > spec.num_classes):
            raise UserError(f"data {data.name!r} ({_shape(data.in_channels, data.input_size, data.dims)}, "
                            f"{data.num_classes} classes) does not fit space {supernet.space.config.name!r} "
                            f"({_shape(spec.in_channels, spec.input_size, spec.dims)}, {spec.num_classes} classes)")
        if cost_size is not None and (isinstance(cost_size, bool) or not isinstance(cost_size, int) or cost_size < 1):
            raise UserError(f"--seq-len must be a positive integer, got {cost_size!r}")
        if predictor is not None and predictor.space != supernet.space.config:
            raise UserError(f"the latency profile was measured for space {predictor.space.name!r}, not for the "
                            f"supernet's space {supernet.space.config.name!r} (or the two definitions differ, or "
                            "were fitted to other data: profile with the search's --space and --data)")
        if predictor is not None and predictor.input_size != (cost_size or spec.input_size):
            raise UserError(f"the latency profile was measured at input size {predictor.input_size}, but costs are "
                            f"wanted at {cost_size or spec.input_size}; profile again with that --seq-len")

    def input_shape(self, batch: int) -> tuple[int, ...]:
        return self.supernet.spec.input_shape(batch, self.cost_size)

    def validation(self) -> AnySplit:
        """The validation split every subnet is evaluated on, read once: a streamed one is held in
        memory when it fits (`held_in_memory`), so that an evaluation neither starts DataLoader workers
        nor decodes anything; one too large to hold is read again by each evaluation, whose reading
        then outweighs the workers' start-up."""
        if self._val is None:
            self._val = held_in_memory(self.data.val)
        return self._val

    def accuracy(self, arch: Arch, split: str = "val") -> float:
        return evaluate(self.supernet, self.validation() if split == "val" else getattr(self.data, split), arch,
                        device=self.device)

    def timer(self, model: nn.Module) -> TargetTimer:
        """`model` prepared for timing on this machine's target, at the latency settings' threads and
        batch and the input size the costs are for. The caller's model is not changed: a copy is
        timed when it lives on another device than the target's."""
        device = "cuda" if self.latency.device == "cuda" else "cpu"
        weight = next(model.parameters(), None)
        if weight is not None and weight.device.type != device:
            model = copy.deepcopy(model).to(device)
        return TargetTimer(model, self.input_shape(self.latency.batch_size), target=cast(Target, self.latency.device),
                           threads=self.latency.threads)

    def subnet_timer(self, arch: Arch) -> TargetTimer:
        """The extracted subnet (at the input size the costs are for) prepared for timing."""
        return self.timer(self.supernet.extract(arch, input_size=self.cost_size))

    def measure(self, arch: Arch) -> Latency:
        """Latency of the extracted subnet, measured on this machine's target. The first measurement
        of a process is taken twice and the first reading dropped: it pays for cold caches and lazy
        set-up, and would read high (the first subnet of a search is often the smallest)."""
        timer = self.subnet_timer(arch)
        if not self._warmed_up:
            timer.measure(max_seconds=self.latency.max_seconds)
            self._warmed_up = True
        return timer.measure(max_seconds=self.latency.max_seconds)

    def analytic_cost_functions(self) -> dict[str, Callable[[Arch], float]]:
        """Column of evaluations.csv -> its cost computed from the architecture alone, at the
        deployment input size (`cost_size`): parameters, FLOPs, and peak memory at the latency batch."""
        space, size = self.supernet.space, self.cost_size
        return {"params": space.count_params, "flops": lambda a: space.count_flops(a, input_size=size),
                "memory_bytes": lambda a: space.peak_memory_bytes(a, self.latency.batch_size, input_size=size)}

    def analytic_costs(self, arch: Arch) -> dict[str, float]:
        return {column: cost(arch) for column, cost in self.analytic_cost_functions().items()}

    def predict_latency(self, arch: Arch) -> float:
        if self.predictor is None:
            raise ValueError("latency is predicted only with a latency profile's predictor")
        try:
            return self.predictor.predict(arch)
        except MissingBlockError as e:
            raise UserError(str(e)) from None

    def costs(self, arch: Arch, *, latency: bool = True) -> dict[str, float]:
        """Analytic costs and latency: `latency_ms` is the measured or the predicted value (the
        one limits and the search use), also recorded as `latency_measured_ms` or `latency_predicted_ms`.
        `latency=False` skips latency (NaN) when neither the objective nor a limit needs it."""
        costs = self.analytic_costs(arch)
        if not latency:
            return costs | {"latency_ms": float("nan"), "latency_iqr_ms": float("nan")}
        if self.predictor is not None:
            predicted = self.predict_latency(arch)
            return costs | {"latency_ms": predicted, "latency_iqr_ms": float("nan"), "latency_predicted_ms": predicted}
        lat = self.measure(arch)
        return costs | {"latency_ms": lat.median_ms, "latency_iqr_ms": lat.iqr_ms, "latency_measured_ms": lat.median_ms}

    def evaluate(self, arch: Arch, *, latency: bool) -> dict[str, float]:
        """Validation accuracy and loss (mean cross-entropy), costs (`costs`) and the seconds they
        took: one row of a search."""
        start = time.perf_counter()
        acc, loss = accuracy_and_loss(self.supernet, self.validation(), arch, device=self.device)
        row = {"val_acc": acc, "val_loss": loss, **self.costs(arch, latency=latency)}
        return row | {"seconds": time.perf_counter() - start}

    def proxies(self, archs: Sequence[Arch], names: Sequence[str], *, seed: int = 0) -> np.ndarray:
        """Training-free proxies (`predictors.proxies`) of each subnet at its initialisation (seeded),
        on `PROXY_BATCHES` batches of the training split, the same rows for every subnet:
        (len(archs), len(names)). Runs on the CPU; no supernet weight plays a part."""
        train = in_memory(self.data.train, PROXY_BATCHES * PROXY_BATCH_SIZE, seed)
        batches = draw_batches(train.x.cpu(), train.y.cpu(), batches=PROXY_BATCHES, batch_size=PROXY_BATCH_SIZE)
        return proxy_scores(self.supernet.spec, archs, batches, names, seed=seed)

    def check_feasible(self, limits: Limits) -> None:
        """Fail early, naming the smallest achievable value, when no subnet can meet a limit.

        The space's smallest variants are tried cheapest (analytic FLOPs) first; a limit stops at
        the first variant that meets it, so latency is measured on all of them only when none does."""
        space = self.supernet.space
        variants = sorted(space.smallest_variants(), key=lambda a: self.analytic_costs(a)["flops"])
        measure = limits.max_latency_ms is not None  # else analytic only: nothing to measure
        cache: dict[Arch, dict[str, float]] = {}

        def costs(arch: Arch) -> dict[str, float]:
            if arch not in cache:
                cache[arch] = self.costs(arch) if measure else self.analytic_costs(arch)
            return cache[arch]

        where = "predicted" if self.predictor is not None else "on " + self.latency.device
        checks = (  # field, limit, column, limit's unit in the column's, how to show, slack (latency is noisy)
            ("max_params", limits.max_params, "params", 1, "{:,.0f} parameters", 1.0),
            ("max_flops", limits.max_flops, "flops", 1, "{:,.0f} multiply-adds", 1.0),
            ("max_latency_ms", limits.max_latency_ms, "latency_ms", 1, "{:.3f} ms " + where, 1.05),
            ("max_memory_mb", limits.max_memory_mb, "memory_bytes", 2**20, "{:.3f} MiB (estimated)", 1.0),
        )
        for field, limit, key, unit, fmt, slack in checks:
            if limit is None or any(costs(a)[key] <= limit * unit * slack for a in variants):
                continue
            best = min(costs(a)[key] for a in variants)
            if best > limit * unit * slack:
                raise FieldError(field, f"{limit:g} cannot be met by any subnet of space {space.config.name!r}: "
                                        f"the smallest achievable is {fmt.format(best / unit)}")


def _shape(channels: int, size: int, dims: int) -> str:
    return f"{channels}x{size}x{size}" if dims == 2 else f"{channels} channels x {size} steps"
