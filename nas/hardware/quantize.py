"""Post-training static int8 quantization of extracted subnets with ONNX Runtime, and the int8 model
run as it will be deployed: accuracy, latency and size all measured on the quantized graph.

The quantization is ONNX Runtime's (`onnxruntime.quantization.quantize_static`; no kernel of ours):
the subnet is exported to ONNX (float32, opset `OPSET`; the batch fixed, as the search times it, or
free, as the file handed over), calibrated on a slice of the training split (`CALIBRATION_SAMPLES` rows, min-max ranges), and rewritten in QDQ format with int8
weights per output channel and uint8 activations (U8S8: the pairing ONNX Runtime's x86 kernels are fastest
at). ONNX Runtime's CPU provider then fuses the QDQ
pairs into integer kernels (QLinearConv, QLinearMatMul, ...). Why ONNX Runtime and not torch.ao or
NNCF: docs/quantization.md.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np
import torch
from torch import nn

from nas.errors import UserError
from nas.hardware.measure import Latency
from nas.hardware.targets import OPSET, TargetTimer, _cpu_float_copy, _export_bytes, _require, _session

__all__ = [
    "CALIBRATION_SAMPLES",
    "PRECISIONS",
    "PRECISION_MODES",
    "UNQUANTIZABLE",
    "Int8Model",
    "Precision",
    "PrecisionMode",
    "check_quantizable",
    "int8_stages",
    "is_int8",
    "mixed",
    "per_stage_proposal",
    "quantize_model",
    "recorded_precision",
    "stage_of",
    "stage_times",
]

# a subnet's precision: "fp32", "int8" (every layer with weights), or "int8[1,3]" (those of stages 1
# and 3 only; the stem, the head and the other stages in float): `mixed`, `int8_stages`
Precision = str
PrecisionMode = Literal["fp32", "int8", "search"]  # `search`: each candidate evaluated in several
PRECISIONS: tuple[str, ...] = ("fp32", "int8")  # the precisions a whole model (or a latency profile) is in
PRECISION_MODES: tuple[str, ...] = get_args(PrecisionMode)
_MIXED = re.compile(r"int8\[(\d+(?:,\d+)*)\]")
CALIBRATION_SAMPLES = 256  # rows of the training split the activation ranges are calibrated on
ACCURACY_BATCH = 256
# stage k's part of a model: its modules ("stages.k.blocks.0.qkv") and exported nodes (".../stages/stages.k/...")
_STAGE_NODE = re.compile(r"(?:^|[/.])stages\.(\d+)(?:[/.]|$)")
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")  # the layers with weights; the rest (norms, softmax, activations) stays float
# block types and token mixers ONNX Runtime cannot quantize, with why: refused before anything runs. Empty
# while every built-in one quantizes (tests/test_quantize.py runs each); an entry names one that does not.
UNQUANTIZABLE: dict[str, str] = {}


def mixed(stages: Iterable[int]) -> Precision:
    """The precision with the layers of `stages` in int8 and the rest in float ("int8[1,3]")."""
    chosen = sorted(set(stages))
    if not chosen:
        raise ValueError("a mixed precision needs at least one int8 stage")
    return f"int8[{','.join(map(str, chosen))}]"


def int8_stages(precision: Precision) -> frozenset[int] | None:
    """The stages quantized in `precision`: None for every layer ("int8"), the empty set for "fp32";
    ValueError for a value that is no precision."""
    if precision in PRECISIONS:
        return None if precision == "int8" else frozenset()
    found = _MIXED.fullmatch(precision)
    if found is None:
        raise ValueError(f"{precision!r} is no precision: fp32, int8, or int8[stage,...] (e.g. int8[1,3])")
    return frozenset(int(k) for k in found.group(1).split(","))


def recorded_precision(value: Any) -> Precision:
    """The precision a search's table records in a cell: fp32 for an empty one (tables written before
    precision was) or one that is no precision."""
    try:
        int8_stages(str(value))
    except ValueError:
        return "fp32"
    return str(value)


def float_bytes(params: float) -> float:
    """The bytes of `params` weights in float32, as a float model is saved and run: 4 each."""
    return 4.0 * params


def is_int8(precision: Precision) -> bool:
    """Whether `precision` quantizes anything (int8, in whole or in some stages)."""
    return int8_stages(precision) != frozenset()


def check_quantizable(kinds: Iterable[str]) -> None:
    """`UserError` naming the first block type or token mixer in `kinds` that ONNX Runtime cannot
    quantize (`UNQUANTIZABLE`)."""
    for kind in kinds:
        if kind in UNQUANTIZABLE:
            raise UserError(f"--precision int8: ONNX Runtime cannot quantize block type {kind!r} "
                            f"({UNQUANTIZABLE[kind]}); search a space without it, or use --precision fp32")


class _Calibration:
    """`onnxruntime.quantization.CalibrationDataReader`: the calibration rows, in batches."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 64):
        self._batches = iter([{name: x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


@contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantizer without its notes: its sessions log errors only (a process-wide
    setting; ours set it per session anyway), and it logs on the root logger, raised to errors here."""
    _require("onnxruntime").set_default_logger_severity(3)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def stage_of(name: str) -> int | None:
    """The stage a module (by its qualified name) or an exported node (by the module path in its
    name) belongs to; None: the stem, the head, or a node named without its module."""
    found = _STAGE_NODE.search(name)
    return int(found.group(1)) if found else None


def _left_float(onnx_bytes: bytes, stages: frozenset[int] | None, products: bool = False) -> list[str]:
    """Names of the `QUANTIZED_OPS` nodes of the graph left in float: those of a stage not in
    `stages` (with the stem and the head; None: every stage and both quantized), and those that
    multiply two activations (attention's scores and their weighted sum): quantized, ONNX Runtime
    wraps the softmax between them in int8 too (QLinearSoftmax), several times slower than the float
    one on CPU (`products`: quantize those too)."""
    onnx = _require("onnx")
    graph = onnx.load_from_string(onnx_bytes).graph
    weights = {t.name for t in graph.initializer}
    return [n.name for n in graph.node if n.op_type in QUANTIZED_OPS
            and ((not products and not weights.intersection(n.input))
                 or (stages is not None and stage_of(n.name) not in stages))]


def _quantize_bytes(fp32: bytes, calibration: np.ndarray, batch: int, stages: frozenset[int] | None = None,
                    products: bool = False, signed: bool = False) -> bytes:
    """The QDQ int8 rewrite of the ONNX model `fp32` (input "input"), calibrated on `calibration` in
    batches of `batch` rows; `stages`: only those stages' layers (None: all, `_left_float`)."""
    _require("onnxruntime")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = _Calibration("input", calibration.astype(np.float32, copy=False), batch)
    with _quiet(), tempfile.TemporaryDirectory(prefix="nas-int8-") as tmp:  # quantize_static works on files
        src, pre, dst = (Path(tmp) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(fp32)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # shapes and folding, as ORT advises
        quantize_static(str(pre), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QInt8 if signed else QuantType.QUInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(QUANTIZED_OPS),
                        nodes_to_exclude=_left_float(pre.read_bytes(), stages, products),
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        return dst.read_bytes()


class Int8Model:
    """A quantized ONNX model loaded in an ONNX Runtime CPU session (`threads` intra-op threads,
    sequential, as `TargetTimer` times ONNX Runtime): logits, accuracy, latency and its bytes."""

    def __init__(self, onnx_bytes: bytes, *, threads: int = 1, seconds: float = 0.0,
                 stages: frozenset[int] | None = None, float_bytes: bytes | None = None):
        self.onnx_bytes, self.threads, self.seconds = onnx_bytes, threads, seconds
        self.stages = stages  # the stages quantized (None: all)
        self.float_bytes = float_bytes  # the float graph it was quantized from, when known
        self.session = _session(onnx_bytes, threads)
        self.input_name = self.session.get_inputs()[0].name

    @classmethod
    def load(cls, path: str | Path, *, threads: int = 1, precision: Precision = "int8") -> Int8Model:
        return cls(Path(path).read_bytes(), threads=threads, stages=int8_stages(precision))

    @property
    def precision(self) -> Precision:
        return "int8" if self.stages is None else mixed(self.stages)

    @property
    def batch(self) -> int | None:
        """The batch size the graph is fixed to (None: free)."""
        size = self.session.get_inputs()[0].shape[0]
        return size if isinstance(size, int) else None

    def logits(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """(N, num_outputs) float32 logits of `x` (N, ...): in batches of `ACCURACY_BATCH`, or of the
        graph's fixed batch size (the last one padded with zeros, whose logits are dropped)."""
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        x = x.astype(np.float32, copy=False)
        step = self.batch or ACCURACY_BATCH
        out = []
        for i in range(0, len(x), step):
            chunk = x[i:i + step]
            if self.batch is not None and len(chunk) < step:
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), np.float32)])
            out.append(self.session.run(None, {self.input_name: chunk})[0][:len(x) - i])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def accuracy_and_loss(self, x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> tuple[float, float]:
        """Top-1 accuracy and mean cross-entropy of the quantized model on (x, y)."""
        labels = torch.as_tensor(np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y), dtype=torch.long)
        logits = torch.from_numpy(self.logits(x))
        acc = float((logits.argmax(1) == labels).float().mean()) if len(labels) else float("nan")
        return acc, float(nn.functional.cross_entropy(logits, labels)) if len(labels) else float("nan")

    def weight_bytes(self) -> int:
        """Bytes of the graph's initializers (int8 weights, their scales and zero points, int32 biases)."""
        onnx = _require("onnx")
        from onnx import numpy_helper

        model = onnx.load_from_string(self.onnx_bytes)
        return int(sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer))

    def timer(self, input_shape: tuple[int, ...]) -> TargetTimer:
        """This model's session prepared for timing on an input of `input_shape` (ONNX Runtime, CPU)."""
        return TargetTimer.for_session(self.session, input_shape, threads=self.threads)

    def measure(self, input_shape: tuple[int, ...], *, max_seconds: float = 2.0) -> Latency:
        return self.timer(input_shape).measure(max_seconds=max_seconds)


def quantize_model(model: nn.Module, sample_shape: tuple[int, ...], calibration: torch.Tensor | np.ndarray, *,
                   batch: int | None = None, threads: int = 1, stages: frozenset[int] | None = None,
                   products: bool = False, signed_activations: bool = False) -> Int8Model:
    """`model` (not changed) exported for inputs of one sample's shape `sample_shape`, with the batch
    size fixed to `batch` (as `TargetTimer` times ONNX Runtime: what the search measures) or free
    (None: the file handed over), quantized to int8 calibrated on `calibration` (N, *sample_shape),
    and loaded. Both calibrate on the same rows (min-max), so they hold the same int8 weights and scales.
    `stages`: only those stages' layers (None: all); `products`: attention's products of activations
    quantized too (`_left_float`); `signed_activations`: int8 activations instead of uint8 (S8S8, slower
    on x86; for comparison)."""
    start = time.perf_counter()
    net = _cpu_float_copy(model)
    fp32 = _export_bytes(net, (batch or 1, *sample_shape), opset=OPSET, dynamic_batch=batch is None)
    x = calibration.detach().cpu().numpy() if isinstance(calibration, torch.Tensor) else np.asarray(calibration)
    x = x[:CALIBRATION_SAMPLES]
    if batch is not None:
        x = x[:len(x) // batch * batch]  # whole batches only
    if not len(x):
        raise UserError(f"int8 quantization needs calibration data: at least {batch or 1} training rows")
    try:
        int8 = _quantize_bytes(fp32, x, batch or 64, stages, products, signed_activations)
    except Exception as e:  # ONNX Runtime's quantizer raises plain exceptions of many kinds
        raise UserError(f"ONNX Runtime could not quantize the subnet to int8: {type(e).__name__}: {e}") from None
    return Int8Model(int8, threads=threads, seconds=time.perf_counter() - start, stages=stages, float_bytes=fp32)


def per_stage_proposal(model: Int8Model, input_shape: tuple[int, ...], *, threads: int = 1) -> Precision | None:
    """The precision with int8 in only the stages where `model` (quantized in whole) runs faster than
    the float graph it was quantized from, per ONNX Runtime's per-node profile of both (`stage_times`)
    on inputs of `input_shape`; None when that is every stage or none (or the float graph is unknown)."""
    if model.float_bytes is None:
        return None
    fp32 = stage_times(model.float_bytes, input_shape, threads=threads)
    int8 = stage_times(model.onnx_bytes, input_shape, threads=threads)
    faster = {k for k in fp32 if k in int8 and int8[k] < fp32[k]}
    return mixed(faster) if faster and faster != set(fp32) else None


def stage_times(onnx_bytes: bytes, input_shape: tuple[int, ...], *, threads: int = 1, runs: int = 20) -> dict[int, float]:
    """Microseconds a run of the ONNX model spends in each stage's nodes (`stage_of`), on zeros of
    `input_shape`, from ONNX Runtime's own per-node profile: per node the median of `runs` runs, summed
    per stage (nodes of the stem, the head and those fused under other names left out)."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="nas-profile-") as tmp:  # ONNX Runtime writes its profile to a file
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "run")
        session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.zeros(input_shape, np.float32)}
        for _ in range(runs):
            session.run(None, feed)
        events: list[dict[str, Any]] = json.loads(Path(session.end_profiling()).read_text())
    durations: dict[str, list[float]] = {}
    for event in events:
        name = str(event.get("name", ""))
        if event.get("cat") == "Node" and name.endswith("_kernel_time") and stage_of(name) is not None:
            durations.setdefault(name, []).append(float(event.get("dur", 0)))
    times: dict[int, float] = {}
    for name, each in durations.items():
        stage = cast(int, stage_of(name))
        times[stage] = times.get(stage, 0.0) + float(np.median(each))
    return times
