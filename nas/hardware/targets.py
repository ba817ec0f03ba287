"""Latency on a deployment target (cpu, cuda, onnxruntime) and ONNX export of extracted subnets, checked against
torch. Why the TorchScript exporter and opset 17: docs/design.md ("Latency: targets and the ONNX exporter")."""

from __future__ import annotations

import copy
import importlib
import inspect
import io
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, TypedDict, get_args

import numpy as np
import torch
import torch.nn as nn
from torch.utils._pytree import tree_leaves

from nas.errors import UserError
from nas.hardware.measure import Latency, _model_device, _num_threads, _preserved, measure_latency, time_until_stable

__all__ = ["OPSET", "TARGETS", "Target", "TargetTimer", "export_onnx", "measure_on_target"]

Target = Literal["cpu", "cuda", "onnxruntime"]
TARGETS: tuple[str, ...] = get_args(Target)
OPSET = 17
ATOL, RTOL = 1e-4, 1e-3  # ONNX Runtime vs torch: room for float32 rounding
# torch >= 2.5 takes `dynamo=`, and from 2.9 on defaults to the exporter we do not use.
_TORCHSCRIPT_EXPORTER: dict[str, Any] = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def _require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{module!r} is not installed; ONNX export needs it: pip install onnx onnxruntime") from None


def _cpu_float_copy(model: nn.Module) -> nn.Module:
    """The model itself when it is on the CPU in float32, else a CPU float32 copy (never the caller's)."""
    tensors = [*model.parameters(), *model.buffers()]
    if _model_device(model).type == "cpu" and all(t.dtype == torch.float32 for t in tensors if t.is_floating_point()):
        return model
    return copy.deepcopy(model).to("cpu", torch.float32)


def _export_bytes(net: nn.Module, input_shape: tuple[int, ...], *, opset: int, dynamic_batch: bool) -> bytes:
    """ONNX bytes of ``net`` (CPU, float32) traced in eval mode on zeros of ``input_shape``."""
    _require("onnx")  # the TorchScript exporter serializes through it
    buffer = io.BytesIO()
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    with _preserved(net), _num_threads(1), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        net.eval()
        torch.onnx.export(
            # torch annotates `f` as a path, but the TorchScript exporter also writes to a file object
            net, (torch.zeros(input_shape),), buffer,  # type: ignore[arg-type]
            opset_version=opset, input_names=["input"], output_names=["output"], dynamic_axes=axes,
            **_TORCHSCRIPT_EXPORTER,
        )
    return buffer.getvalue()


def _session(onnx_bytes: bytes, threads: int) -> Any:
    """An ONNX Runtime CPU session: ``threads`` intra-op threads, one inter-op thread, sequential."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: no notes on unused initializers
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def _check_against_torch(session: Any, net: nn.Module, input_shape: tuple[int, ...], atol: float, rtol: float) -> float:
    """Max abs difference between ONNX Runtime and torch on a seeded random input; raises if too large."""
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(0))
    with _preserved(net), _num_threads(1), torch.no_grad():
        net.eval()
        expected = [t.numpy() for t in tree_leaves(net(x)) if isinstance(t, torch.Tensor)]
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected)):
        raise UserError(f"ONNX Runtime returns shapes {[g.shape for g in got]}, torch {[e.shape for e in expected]}")
    pairs = [(g, e) for g, e in zip(got, expected) if e.size]
    diff = float(np.max([np.max(np.abs(g - e)) for g, e in pairs])) if pairs else 0.0  # np.max keeps NaN
    scale = float(np.max([np.max(np.abs(e)) for _, e in pairs])) if pairs else 0.0
    tolerance = atol + rtol * scale
    if not diff <= tolerance:  # also catches NaN
        raise UserError(
            f"the ONNX export does not match torch: max abs difference {diff:.3g} > tolerance {tolerance:.3g} "
            f"(atol {atol:g} + rtol {rtol:g} x max |output| {scale:.3g}) on a random input of shape {input_shape}"
        )
    return diff


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: str | Path,
    *,
    opset: int = OPSET,
    dynamic_batch: bool = False,
    check: bool = True,
    atol: float = ATOL,
    rtol: float = RTOL,
) -> Path:
    """Write ``model`` as ONNX (float32, eval mode) to ``path``; returns the path.

    The graph is traced on an input of ``input_shape`` (batch included), so every shape is fixed
    except the batch dimension when ``dynamic_batch`` (ONNX input ``"input"``, output ``"output"``).
    With ``check``, ONNX Runtime's output on a random input must match torch's within
    ``atol + rtol * max|torch output|`` (else :class:`UserError` naming the difference).
    The caller's model is not changed (parameters, device, training flags, hooks).
    """
    net = _cpu_float_copy(model)
    onnx_bytes = _export_bytes(net, tuple(input_shape), opset=opset, dynamic_batch=dynamic_batch)
    if check:
        _check_against_torch(_session(onnx_bytes, threads=1), net, tuple(input_shape), atol, rtol)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onnx_bytes)
    return path


class _Stopping(TypedDict):
    min_repeats: int
    max_repeats: int
    max_seconds: float
    rel_tol: float


class TargetTimer:
    """`model` prepared once for timing on `target`; each `measure` times it again.

    ``"cpu"``/``"cuda"``: torch eager via :func:`nas.hardware.measure.measure_latency` with ``threads`` torch
    threads. ``"onnxruntime"``: the model is exported (fixed shapes, opset :data:`OPSET`), checked
    against torch on a random input and loaded into a session here, once; `measure` times
    ``session.run`` on a fixed zero input on the CPU provider with ``threads`` intra-op threads, one
    inter-op thread, sequential execution. Preparing once lets interleaved rounds
    (`nas.hardware.rounds`) time many models again and again without exporting each every time.
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], *, target: Target, threads: int = 1):
        if target not in TARGETS:
            raise UserError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
        if target == "cuda" and not torch.cuda.is_available():
            raise UserError("target 'cuda' requested but CUDA is not available (torch.cuda.is_available() is False)")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        self.model: nn.Module | None = model
        self.input_shape, self.target, self.threads = tuple(input_shape), target, threads
        self._session: Any = None
        if target == "onnxruntime":
            net = _cpu_float_copy(model)
            self._session = _session(_export_bytes(net, self.input_shape, opset=OPSET, dynamic_batch=False), threads)
            _check_against_torch(self._session, net, self.input_shape, ATOL, RTOL)

    @classmethod
    def for_session(cls, session: Any, input_shape: tuple[int, ...], *, threads: int) -> TargetTimer:
        """A timer of an ONNX Runtime CPU session already loaded (an int8 model: `nas.hardware.quantize`),
        timed as the ``"onnxruntime"`` target times an export."""
        timer = cls.__new__(cls)
        timer.model, timer.input_shape, timer.target, timer.threads = None, tuple(input_shape), "onnxruntime", threads
        timer._session = session
        return timer

    def measure(self, *, warmup: int = 5, min_repeats: int = 10, max_repeats: int = 200, max_seconds: float = 2.0,
                rel_tol: float = 0.02) -> Latency:
        """Median/IQR latency (ms) of one forward pass, after `warmup` passes, with the stopping rule of
        :func:`nas.hardware.measure.time_until_stable`; the caller's model is not changed."""
        if not 1 <= min_repeats <= max_repeats:
            raise ValueError("need 1 <= min_repeats <= max_repeats")
        stopping: _Stopping = {"min_repeats": min_repeats, "max_repeats": max_repeats, "max_seconds": max_seconds,
                               "rel_tol": rel_tol}
        if self._session is None:
            assert self.model is not None, "a timer without a session times its model"
            return measure_latency(self.model, self.input_shape, device=self.target, threads=self.threads,
                                   warmup=warmup, **stopping)
        feed = {self._session.get_inputs()[0].name: np.zeros(self.input_shape, dtype=np.float32)}
        run = self._session.run

        def time_once_ms() -> float:
            t0 = time.perf_counter_ns()
            run(None, feed)
            return (time.perf_counter_ns() - t0) / 1e6

        for _ in range(warmup):
            run(None, feed)
        samples = time_until_stable(time_once_ms, **stopping)
        return Latency.from_samples(samples, batch_size=int(self.input_shape[0]), threads=self.threads,
                                    device="onnxruntime-cpu")


def measure_on_target(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    target: Target,
    threads: int = 1,
    warmup: int = 5,
    min_repeats: int = 10,
    max_repeats: int = 200,
    max_seconds: float = 2.0,
    rel_tol: float = 0.02,
) -> Latency:
    """Median/IQR latency (ms) of one forward pass of ``model`` on an input of ``input_shape``, measured
    once on `target` (`TargetTimer`: how each target is timed). Warm-up, the stopping rule and the
    statistics are the same for every target; the caller's model is not changed.
    """
    if not 1 <= min_repeats <= max_repeats:
        raise ValueError("need 1 <= min_repeats <= max_repeats")
    return TargetTimer(model, input_shape, target=target, threads=threads).measure(
        warmup=warmup, min_repeats=min_repeats, max_repeats=max_repeats, max_seconds=max_seconds, rel_tol=rel_tol)
