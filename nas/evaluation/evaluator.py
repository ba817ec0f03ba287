"""Evaluating a subnet: accuracy with inherited weights, and its hardware costs under hard limits.

Parameters and FLOPs (multiply-adds) come from the space's exact analytic counts (equal to fvcore
on the extracted model; `search_spaces.blocks`), peak memory from its analytic estimate. Latency
is either measured on the extracted model on the target device (median of repeated runs at a
fixed thread count and batch size) or, with a latency profile of another device, predicted
(`predictors.LatencyPredictor`) without running anything.
"""

from __future__ import annotations

import copy
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
from torch import nn

from nas.data.datasets import AnySplit, TaskData, held_in_memory, in_memory
from nas.errors import FieldError, UserError
from nas.evaluation.accuracy import accuracy_and_loss, evaluate
from nas.evaluation.limits import OBJECTIVES, Limits
from nas.hardware.measure import Latency, LatencySettings
from nas.hardware.quantize import (
    CALIBRATION_SAMPLES,
    PRECISION_MODES,
    Int8Model,
    Precision,
    PrecisionMode,
    check_quantizable,
    float_bytes,
    int8_stages,
    is_int8,
    per_stage_proposal,
    quantize_model,
)
from nas.hardware.targets import Target, TargetTimer
from predictors import LatencyPredictor, MissingBlockError
from predictors.proxies import draw_batches, proxy_scores
from search_spaces import Arch, HybridSupernet

PROXY_BATCHES, PROXY_BATCH_SIZE = 1, 64  # what training-free proxies see of the training split
INT8_CACHE = 64  # quantized subnets kept (export + quantization + session: the int8 work of one subnet)
# --precision search: int8 stands for a subnet when it meets the limits and loses at most this much
# validation accuracy against fp32 (a few validation samples: quantization noise, not a loss)
INT8_TOLERANCE = 0.005


class Evaluator:
    """Accuracy and costs of subnets of one supernet on one dataset.

    With a `predictor`, latency is predicted for the predictor's device; `remeasure` says whether
    that device is this machine, so that chosen subnets can also be measured (`measure`).
    `cost_size`: the input size the hardware costs are for, when it is not the data's (a sequence
    length at deployment: attention, linear attention, windows and convolutions grow differently
    with it); accuracy is always measured on the data.

    `precision` (docs/quantization.md): "fp32" evaluates the float model; "int8" the subnet quantized
    by ONNX Runtime (`nas.hardware.quantize`), its accuracy, latency and bytes measured on the
    quantized model; "search" both, and in int8 only the stages where int8 runs faster
    (`per_stage_precision`), each row standing at the precision `choose_precision` picks under
    `limits` and the search's `objective`. Int8 needs latency measured here on ONNX Runtime, so fp32 and int8 share a runtime.
    """

    def __init__(self, supernet: HybridSupernet, data: TaskData, latency: LatencySettings, *, device: str = "cpu",
                 predictor: LatencyPredictor | None = None, remeasure: bool = True, cost_size: int | None = None,
                 precision: PrecisionMode = "fp32", limits: Limits | None = None, objective: str = "latency"):
        self.supernet, self.data, self.latency, self.device = supernet, data, latency, device
        self.predictor, self.remeasure, self.cost_size = predictor, remeasure, cost_size
        self.precision, self.limits, self.objective = precision, limits or Limits(), OBJECTIVES[objective]
        self._warmed_up = False  # `measure`
        self._int8: OrderedDict[tuple[Arch, Precision], Int8Model] = OrderedDict()  # the last INT8_CACHE quantized
        self._val: AnySplit | None = None  # `validation`
        if precision not in PRECISION_MODES:
            raise FieldError("precision", f"must be one of {', '.join(PRECISION_MODES)}, got {precision!r}")
        _check_precision(precision, supernet, latency, predictor, cost_size)
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

    @property
    def precisions(self) -> tuple[Precision, ...]:
        """The precisions each subnet is evaluated in."""
        return ("fp32", "int8") if self.precision == "search" else (self.precision,)

    def accuracy(self, arch: Arch, split: str = "val", precision: Precision = "fp32") -> float:
        part = self.validation() if split == "val" else getattr(self.data, split)
        if is_int8(precision):
            rows = in_memory(part, len(part))
            return self.int8_model(arch, precision).accuracy_and_loss(rows.x, rows.y)[0]
        return evaluate(self.supernet, part, arch, device=self.device)

    def int8_model(self, arch: Arch, precision: Precision = "int8") -> Int8Model:
        """The subnet quantized to int8, in whole or in the stages `precision` names (calibrated on the
        training split's first `CALIBRATION_SAMPLES` rows), its batch fixed to the latency settings' as it is timed, in an ONNX Runtime session
        with their threads (accuracy runs it batch by batch); the last `INT8_CACHE`
        are kept, so re-measuring or scoring a subnet again does not quantize it again. The cache
        holds while the supernet's weights do not change: `check_feasible`, run before training,
        leaves it empty."""
        key = (arch, precision)
        if key in self._int8:
            self._int8.move_to_end(key)
            return self._int8[key]
        model = quantize_model(self.supernet.extract(arch), self.input_shape(1)[1:],
                               in_memory(self.data.train, CALIBRATION_SAMPLES).x[:CALIBRATION_SAMPLES],
                               batch=self.latency.batch_size, threads=self.latency.threads,
                               stages=int8_stages(precision))
        self._int8[key] = model
        if len(self._int8) > INT8_CACHE:
            self._int8.popitem(last=False)
        return model

    def validation(self) -> AnySplit:
        """The validation split every subnet is evaluated on, read once: a streamed one is held in
        memory when it fits (`held_in_memory`), so that an evaluation neither starts DataLoader workers
        nor decodes anything; one too large to hold is read again by each evaluation, whose reading
        then outweighs the workers' start-up."""
        if self._val is None:
            self._val = held_in_memory(self.data.val)
        return self._val

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

    def subnet_timer(self, arch: Arch, precision: Precision = "fp32") -> TargetTimer:
        """The extracted subnet (at the input size the costs are for) prepared for timing."""
        if is_int8(precision):
            return self.int8_model(arch, precision).timer(self.input_shape(self.latency.batch_size))
        return self.timer(self.supernet.extract(arch, input_size=self.cost_size))

    def measure(self, arch: Arch, precision: Precision = "fp32") -> Latency:
        """Latency of the extracted subnet, measured on this machine's target. The first measurement
        of a process is taken twice and the first reading dropped: it pays for cold caches and lazy
        set-up, and would read high (the first subnet of a search is often the smallest)."""
        timer = self.subnet_timer(arch, precision)
        if not self._warmed_up:
            timer.measure(max_seconds=self.latency.max_seconds)
            self._warmed_up = True
        return timer.measure(max_seconds=self.latency.max_seconds)

    def analytic_cost_functions(self) -> dict[str, Callable[[Arch], float]]:
        """Column of evaluations.csv -> its cost computed from the architecture alone, at the
        deployment input size (`cost_size`): parameters and FLOPs; in fp32 also the weights' bytes and
        the peak memory at the latency batch (an int8 model's count its quantized graph's weights:
        known once quantized)."""
        space, size = self.supernet.space, self.cost_size
        costs: dict[str, Callable[[Arch], float]] = {
            "params": space.count_params, "flops": lambda a: space.count_flops(a, input_size=size)}
        return costs | self._fp32_bytes() if self.precision == "fp32" else costs

    def _fp32_bytes(self) -> dict[str, Callable[[Arch], float]]:
        """The weights' bytes and the peak memory of the float model (4 bytes a weight and activation)."""
        space, size = self.supernet.space, self.cost_size
        return {"model_bytes": lambda a: float_bytes(space.count_params(a)),
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

    def costs(self, arch: Arch, *, latency: bool = True, precision: Precision = "fp32") -> dict[str, float]:
        """Analytic costs and latency: `latency_ms` is the measured or the predicted value (the
        one limits and the search use), also recorded as `latency_measured_ms` or `latency_predicted_ms`.
        `latency=False` skips latency (NaN) when neither the objective nor a limit needs it.
        `model_bytes`: the weights' bytes (4 per parameter in fp32; in int8 the quantized graph's
        initializers, scales and int32 biases included); int8's `memory_bytes` counts those weight
        bytes instead of the float ones (activations stay counted in float32: an upper bound)."""
        costs = {column: cost(arch) for column, cost in (self.analytic_cost_functions() | self._fp32_bytes()).items()}
        if is_int8(precision):
            weights = float(self.int8_model(arch, precision).weight_bytes())
            costs |= {"model_bytes": weights, "memory_bytes": costs["memory_bytes"] - float_bytes(costs["params"]) + weights}
            if latency and self.predictor is not None:  # an int8 profile's prediction
                predicted = self.predict_latency(arch)
                return costs | {"latency_ms": predicted, "latency_iqr_ms": float("nan"),
                                "latency_predicted_ms": predicted}
            if latency:
                lat = self.measure(arch, precision)
                return costs | {"latency_ms": lat.median_ms, "latency_iqr_ms": lat.iqr_ms,
                                "latency_measured_ms": lat.median_ms}
        if not latency:
            return costs | {"latency_ms": float("nan"), "latency_iqr_ms": float("nan")}
        if self.predictor is not None:
            predicted = self.predict_latency(arch)
            return costs | {"latency_ms": predicted, "latency_iqr_ms": float("nan"), "latency_predicted_ms": predicted}
        lat = self.measure(arch)
        return costs | {"latency_ms": lat.median_ms, "latency_iqr_ms": lat.iqr_ms, "latency_measured_ms": lat.median_ms}

    def evaluate(self, arch: Arch, *, latency: bool) -> dict[str, Any]:
        """Validation accuracy and loss (mean cross-entropy), costs (`costs`), the precision and the
        seconds they took: one row of a search. With precision "search", the row of the precision
        `choose_precision` picks (the other's accuracy and latency beside it)."""
        start = time.perf_counter()
        rows = {p: self._evaluate_at(arch, p, latency=latency) for p in self.precisions}
        if self.precision == "search" and latency and (stages := self.per_stage_precision(arch)) is not None:
            rows[stages] = self._evaluate_at(arch, stages, latency=latency)
        row = rows[choose_precision(rows, self.limits, self.objective)]
        if self.precision == "search":
            other = rows["int8" if row["precision"] == "fp32" else "fp32"]
            row |= {"other_val_acc": other["val_acc"], "other_latency_ms": other["latency_ms"]}
        return row | {"seconds": time.perf_counter() - start}

    def per_stage_precision(self, arch: Arch) -> Precision | None:
        """The precision with int8 in only the stages where the subnet's int8 graph runs faster than
        its float graph (`per_stage_proposal`); None when that is every stage or none (int8 or fp32,
        evaluated anyway)."""
        return per_stage_proposal(self.int8_model(arch), self.input_shape(self.latency.batch_size),
                                  threads=self.latency.threads)

    def _evaluate_at(self, arch: Arch, precision: Precision, *, latency: bool) -> dict[str, Any]:
        if is_int8(precision):
            val = in_memory(self.validation(), len(self.data.val))
            acc, loss = self.int8_model(arch, precision).accuracy_and_loss(val.x, val.y)
        else:
            acc, loss = accuracy_and_loss(self.supernet, self.validation(), arch, device=self.device)
        return {"val_acc": acc, "val_loss": loss, "precision": precision,
                **self.costs(arch, latency=latency, precision=precision)}

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

        def costs(arch: Arch) -> dict[str, float]:  # the cheapest precision's, of each cost
            if arch not in cache:
                each = [self.costs(arch, precision=p) if measure else self.costs(arch, latency=False, precision=p)
                        for p in self.precisions]
                cache[arch] = {k: min(c[k] for c in each) for k in each[0]}
            return cache[arch]

        where = "predicted" if self.predictor is not None else "on " + self.latency.device
        checks = (  # field, limit, column, limit's unit in the column's, how to show, slack (latency is noisy)
            ("max_params", limits.max_params, "params", 1, "{:,.0f} parameters", 1.0),
            ("max_flops", limits.max_flops, "flops", 1, "{:,.0f} multiply-adds", 1.0),
            ("max_latency_ms", limits.max_latency_ms, "latency_ms", 1, "{:.3f} ms " + where, 1.05),
            ("max_memory_mb", limits.max_memory_mb, "memory_bytes", 2**20, "{:.3f} MiB (estimated)", 1.0),
            ("max_size_mb", limits.max_size_mb, "model_bytes", 2**20, "{:.3f} MiB of weights", 1.0),
        )
        try:
            for field, limit, key, unit, fmt, slack in checks:
                if limit is None or any(costs(a)[key] <= limit * unit * slack for a in variants):
                    continue
                best = min(costs(a)[key] for a in variants)
                raise FieldError(field, f"{limit:g} cannot be met by any subnet of space {space.config.name!r}: "
                                        f"the smallest achievable is {fmt.format(best / unit)}")
        finally:
            self._int8.clear()  # quantized with the weights of now: training comes after

def choose_precision(rows: Mapping[Precision, Mapping[str, Any]], limits: Limits, column: str = "latency_ms") -> Precision:
    """The precision a subnet stands at, of its evaluated `rows`: of those that meet `limits` (or miss
    them least), the ones within `INT8_TOLERANCE` of the most accurate; of these, the one that costs
    least on the objective `column`, a latency within the spread of the readings (the larger of the
    two inter-quartile ranges) counting as a tie; of tied ones, the smallest (`model_bytes`: int8).
    Int8 can be slower than fp32 (small layers: the quantize/dequantize steps cost more than the
    integer arithmetic saves); then fp32 stands for the subnet when latency is the objective."""
    if len(rows) == 1:
        return next(iter(rows))
    miss = {p: limits.violation(dict(r)) for p, r in rows.items()}
    fits = [p for p in rows if miss[p] == min(miss.values())]
    best = max(rows[p]["val_acc"] for p in fits)
    level = [p for p in fits if rows[p]["val_acc"] >= best - INT8_TOLERANCE]
    cheapest = min(level, key=lambda p: rows[p][column])

    def spread(p: Precision) -> float:
        iqr = rows[p].get("latency_iqr_ms", float("nan")) if column == "latency_ms" else float("nan")
        return 0.0 if iqr is None or math.isnan(iqr) else float(iqr)

    ties = [p for p in level if rows[p][column] <= rows[cheapest][column] + max(spread(p), spread(cheapest))]
    return min(ties, key=lambda p: (rows[p]["model_bytes"], rows[p][column]))


def profile_precision(predictor: LatencyPredictor) -> str:
    """The precision a latency profile was timed in (fp32 for profiles written before precision was)."""
    return str(predictor.meta.get("settings", {}).get("precision", "fp32"))


def _check_precision(precision: PrecisionMode, supernet: HybridSupernet, latency: LatencySettings,
                     predictor: LatencyPredictor | None, cost_size: int | None) -> None:
    """Int8 is run and timed on ONNX Runtime (here, or predicted from an int8 profile), at the data's
    input size: refuse what is not."""
    timed = "fp32" if predictor is None else profile_precision(predictor)
    if predictor is not None and timed != ("fp32" if precision == "fp32" else "int8"):
        raise FieldError("precision", f"{precision} cannot be predicted from a latency profile timed in {timed}: "
                                      + ("profile with --precision int8 --target onnxruntime" if precision == "int8"
                                         else "use --precision " + timed))
    if precision == "search" and predictor is not None:
        raise FieldError("precision", "search compares fp32 and int8 measured here: give --target onnxruntime")
    if precision == "fp32":
        return
    if predictor is None and latency.device != "onnxruntime":
        raise FieldError("precision", f"int8 runs on ONNX Runtime: measure latency there too, --target onnxruntime "
                                      f"(not {latency.device!r}), so fp32 and int8 are timed on the same runtime")
    if cost_size is not None and cost_size != supernet.spec.input_size:
        raise FieldError("precision", "int8 is measured at the data's input size: drop --seq-len")
    config = supernet.space.config
    kinds = {kind for stage in config.stages for kind in stage.block_types}
    check_quantizable(sorted(kinds) + (list(config.mixers) if "attn" in kinds else []))


def _shape(channels: int, size: int, dims: int) -> str:
    return f"{channels}x{size}x{size}" if dims == 2 else f"{channels} channels x {size} steps"
