"""Cost measures for arbitrary ``torch.nn.Module`` subnets.

* :func:`count_params` -- exact number of unique parameter elements.
* :func:`count_flops` -- multiply-accumulates (MACs) of one forward pass, via
  ``fvcore.nn.FlopCountAnalysis`` (one conv/linear MAC counts as 1).  On top
  of fvcore's defaults we register exact handlers for
  ``aten::scaled_dot_product_attention`` (QK^T plus attn@V; softmax, mask and
  scaling are ignored), ``aten::einsum`` and ``aten::matmul``/``mm``/``bmm``
  (broadcast-aware).  Following the fvcore convention, elementwise ops
  (add, mul, activations such as GELU/ELU, softmax, pooling) count as zero;
  fvcore's defaults for norm layers and upsampling are kept.
* :func:`measure_latency` -- median/IQR wall-clock latency of ``forward``.
* :func:`measure_peak_memory_cpu` / :func:`measure_peak_memory_cuda` -- peak bytes of one
  inference forward pass: weights + input + the largest set of activations alive at once.
* :func:`describe_hardware` -- JSON-able description of the host/device.

No cost function mutates the measured model: hooks added during tracing are
removed even on failure, and every module's ``training`` flag is restored.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import math
import os
import platform
import string
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from nas.errors import FieldError

with warnings.catch_warnings():  # fvcore scripts helpers at import: torch.jit.script is deprecated
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import elementwise_flop_counter, get_shape

__all__ = [
    "Latency", "LatencySettings", "count_flops", "count_params", "describe_hardware", "measure_latency", "measure_peak_memory_cpu",
    "measure_peak_memory_cuda", "time_until_stable",
]

# Per-module hook registries (fvcore adds scope hooks while tracing).
_HOOK_DICTS = (
    "_forward_pre_hooks", "_forward_hooks", "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
    "_backward_hooks", "_backward_pre_hooks",
)  # fmt: skip
_FVCORE_LOGGERS = ("fvcore", "fvcore.nn.jit_analysis")


# --------------------------------------------------------------------------- params
def count_params(model: nn.Module) -> int:
    """Number of parameter elements; tensors shared between modules count once.

    Parameters are deduplicated by identity and by the memory they view
    (so two ``Parameter`` objects wrapping the same storage count once).
    """
    seen_views: set[tuple[Any, ...]] = set()
    total = 0
    for p in model.parameters():  # already unique by identity
        if p.device.type != "meta" and p.numel() > 0:
            view = (str(p.device), p.data_ptr(), tuple(p.shape), p.stride())
            if view in seen_views:
                continue
            seen_views.add(view)
        total += p.numel()
    return total


# --------------------------------------------------------------------------- flops
def _sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of scaled dot-product attention: QK^T and attn@V."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    if q is None or k is None or v is None:
        raise ValueError("scaled_dot_product_attention: q/k/v shapes unknown")
    # q: (*batch, Lq, E), k: (..., Lk, E), v: (..., Lk, Ev); batch dims taken from q.
    return math.prod(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])


def _matmul_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of matmul/mm/bmm: prod(output shape) * contracted dim (broadcast-aware)."""
    a, out = get_shape(inputs[0]), get_shape(outputs[0])
    if a is None or out is None:
        raise ValueError("matmul: operand shapes unknown")
    return math.prod(out) * a[-1]


def _einsum_macs(equation: str, shapes: list[list[int]]) -> int:
    """Exact MACs of an einsum, following numpy's optimal pairwise contraction path."""
    equation = equation.replace(" ", "")
    lhs, arrow, out = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum: {len(terms)} terms but {len(shapes)} operands")
    # Expand "..." into fresh letters, right-aligned as in broadcasting.
    free = iter(c for c in string.ascii_letters if c not in equation)
    spans = [len(s) - len(t) + 3 if "..." in t else 0 for t, s in zip(terms, shapes)]
    ell_rank = max(spans, default=0)
    ell = "".join(next(free) for _ in range(ell_rank))
    terms = [t.replace("...", ell[ell_rank - n :]) for t, n in zip(terms, spans)]
    if arrow:
        out = out.replace("...", ell)
    else:
        letters = "".join(terms)
        once = (c for c in set(letters) if letters.count(c) == 1 and c not in ell)
        out = ell + "".join(sorted(once))
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        for c, n in zip(term, shape):
            sizes[c] = max(sizes.get(c, 1), n)
    if len(terms) < 2:
        return 0
    views = [np.broadcast_to(np.zeros((), dtype=np.float32), s) for s in shapes]
    path = np.einsum_path(",".join(terms) + "->" + out, *views, optimize="optimal")[0][1:]
    ops = list(terms)
    macs = 0
    for step in path:
        picked = [ops[i] for i in step]
        for i in sorted(step, reverse=True):
            ops.pop(i)
        union = set("".join(picked))
        if len(picked) >= 2:
            macs += (len(picked) - 1) * math.prod(sizes[c] for c in union)
        keep = set(out).union(*(set(t) for t in ops))
        ops.append("".join(sorted(union & keep)))
    return macs


def _einsum_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    equation = inputs[0].toIValue()
    shapes = [get_shape(v) for v in inputs[1].node().inputs()]
    if any(s is None for s in shapes):
        raise ValueError("einsum: operand shapes unknown")
    return _einsum_macs(equation, shapes)


_EXTRA_HANDLES = {
    "aten::scaled_dot_product_attention": _sdpa_flop_jit,
    "aten::einsum": _einsum_flop_jit,
    "aten::matmul": _matmul_flop_jit,
    "aten::mm": _matmul_flop_jit,
    "aten::bmm": _matmul_flop_jit,
    # fvcore counts bilinear upsampling as 4 per output element and has no linear (1-D) handler: 2
    "aten::upsample_linear1d": elementwise_flop_counter(0, 2),
}


@contextlib.contextmanager
def _preserved(model: nn.Module) -> Iterator[None]:
    """Restore every module's ``training`` flag and drop hooks added inside the block."""
    modules = list(model.modules())
    flags = [m.training for m in modules]
    hook_dicts = [getattr(m, a) for m in modules for a in _HOOK_DICTS if hasattr(m, a)]
    keys = [set(d) for d in hook_dicts]
    try:
        yield
    finally:
        for m, was_training in zip(modules, flags):
            m.training = was_training
        for d, old in zip(hook_dicts, keys):
            for k in [k for k in d if k not in old]:
                del d[k]


def _model_device(model: nn.Module) -> torch.device:
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def _quiet_fvcore() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _FVCORE_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one eval-mode forward pass on a zero input of ``input_shape`` (batch included).

    Uses fvcore with exact handlers for SDPA, einsum and matmul-family ops.
    Elementwise ops (add, mul, activations, softmax, pooling) count as zero.
    """
    with _preserved(model), _quiet_fvcore(), torch.no_grad():
        model.eval()
        x = torch.zeros(input_shape, device=_model_device(model))
        analysis = (
            FlopCountAnalysis(model, x)
            .set_op_handle(**_EXTRA_HANDLES)
            .unsupported_ops_warnings(False)
            .uncalled_modules_warnings(False)
            .tracer_warnings("none")
        )
        return round(analysis.total())


# --------------------------------------------------------------------------- latency
@dataclass(frozen=True)
class LatencySettings:
    device: str = "cpu"
    threads: int = 1
    batch_size: int = 1
    max_seconds: float = 0.5

    def __post_init__(self) -> None:
        for name in ("threads", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FieldError(name, f"must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class Latency:
    """Latency of one forward pass (median and inter-quartile range, milliseconds)."""

    median_ms: float
    iqr_ms: float
    repeats: int
    batch_size: int
    threads: int
    device: str

    @classmethod
    def from_samples(cls, samples_ms: list[float], *, batch_size: int, threads: int, device: str) -> Latency:
        q1, med, q3 = np.percentile(samples_ms, [25, 50, 75])
        return cls(float(med), float(q3 - q1), len(samples_ms), batch_size, threads, device)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _resolve(d: torch.device) -> torch.device:
    """``cuda`` -> ``cuda:<current>`` so that device comparisons are meaningful."""
    if d.type == "cuda" and d.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return d


@contextlib.contextmanager
def _num_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        yield
    finally:
        torch.set_num_threads(previous)


def _time_once_ms(model: nn.Module, x: torch.Tensor, cuda: bool) -> float:
    if cuda:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        model(x)
        end.record()
        torch.cuda.synchronize(x.device)
        return float(start.elapsed_time(end))
    t0 = time.perf_counter_ns()
    model(x)
    return (time.perf_counter_ns() - t0) / 1e6


def time_until_stable(
    time_once_ms: Callable[[], float], *, min_repeats: int, max_repeats: int, max_seconds: float, rel_tol: float,
) -> list[float]:
    """Samples of ``time_once_ms()`` (milliseconds), taken after the caller's warm-up.

    Samples are taken in rounds of ``min_repeats`` until the median of all
    samples changes by less than ``rel_tol`` between consecutive rounds, or
    ``max_repeats`` samples / ``max_seconds`` of timing are reached.
    """
    if not 1 <= min_repeats <= max_repeats:
        raise ValueError("need 1 <= min_repeats <= max_repeats")
    samples: list[float] = []
    deadline = time.perf_counter() + max_seconds
    prev_median: float | None = None
    while len(samples) < max_repeats:
        for _ in range(min(min_repeats, max_repeats - len(samples))):
            samples.append(time_once_ms())
        median = float(np.median(samples))
        if prev_median is not None and abs(median - prev_median) <= rel_tol * prev_median:
            break  # median is stable between consecutive rounds
        if time.perf_counter() >= deadline:
            break
        prev_median = median
    return samples


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    device: str = "cpu",
    threads: int | None = 1,
    warmup: int = 5,
    min_repeats: int = 10,
    max_repeats: int = 200,
    max_seconds: float = 2.0,
    rel_tol: float = 0.02,
) -> Latency:
    """Median/IQR latency of ``model(torch.zeros(input_shape))`` in eval + inference mode.

    Samples are taken as in :func:`time_until_stable` (rounds of ``min_repeats``
    until the median of all samples changes by less than ``rel_tol`` between
    consecutive rounds, or ``max_repeats`` samples / ``max_seconds``).  The model
    is measured on a deep copy only when it lives on another device; the
    caller's model, training flags and ``torch.get_num_threads()`` are restored.
    """
    if not 1 <= min_repeats <= max_repeats:
        raise ValueError("need 1 <= min_repeats <= max_repeats")
    cuda = torch.device(device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is unavailable")
    target = _resolve(torch.device(device))
    same = _resolve(_model_device(model)) == target
    net = model if same else copy.deepcopy(model).to(target)  # never move the caller's model
    with _preserved(net), _num_threads(threads), torch.inference_mode():
        used_threads = torch.get_num_threads()
        net.eval()
        x = torch.zeros(input_shape, device=target)
        for _ in range(warmup):
            net(x)
        if cuda:
            torch.cuda.synchronize(target)
        samples = time_until_stable(
            lambda: _time_once_ms(net, x, cuda),
            min_repeats=min_repeats, max_repeats=max_repeats, max_seconds=max_seconds, rel_tol=rel_tol,
        )
    batch_size = int(input_shape[0]) if input_shape else 1
    return Latency.from_samples(samples, batch_size=batch_size, threads=used_threads, device=str(target))


# --------------------------------------------------------------------------- memory
def _state_bytes(model: nn.Module) -> int:
    """Bytes of the parameters and buffers, each storage once."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in itertools.chain(model.parameters(), model.buffers())}
    return sum(storages.values())


class _LiveBytes(TorchDispatchMode):
    """Bytes of the tensors that operators create and that are still alive, and their peak.

    An output whose storage is one of the operator's inputs' (a view, an in-place result) adds
    nothing; a new storage counts until it is freed. Workspaces inside kernels are not seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._alive: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in inputs or key in self._alive:
                continue
            self._alive.add(key)
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key, storage.nbytes())
        return out

    def _free(self, key: int, nbytes: int) -> None:
        self._alive.discard(key)
        self.live -= nbytes


def measure_peak_memory_cpu(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Peak bytes of an inference forward pass on CPU: weights + input + the peak of the tensors
    the forward pass creates (counted by intercepting every operator; kernel workspaces and
    allocator overheads are not included). Runs on one thread: the tensors do not depend on it."""
    net = model if _model_device(model).type == "cpu" else copy.deepcopy(model).cpu()
    with _preserved(net), _num_threads(1), torch.inference_mode():
        net.eval()
        x = torch.zeros(input_shape)
        counter = _LiveBytes()
        with counter:
            net(x)
    return _state_bytes(net) + x.untyped_storage().nbytes() + counter.peak


def measure_peak_memory_cuda(model: nn.Module, input_shape: tuple[int, ...], device: str = "cuda") -> int:
    """Peak bytes of an inference forward pass on a CUDA device (`torch.cuda.max_memory_allocated`):
    weights + input + the peak of the activations. Buffers that persist after a first warm-up pass
    (cuBLAS/cuDNN workspaces) are left out, as in :func:`measure_peak_memory_cpu`."""
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is unavailable")
    target = _resolve(torch.device(device))
    net = copy.deepcopy(model).to(target)  # never move the caller's model
    with torch.inference_mode():
        net.eval()
        x = torch.zeros(input_shape, device=target)
        net(x)  # warm-up: lazily created workspaces
        torch.cuda.synchronize(target)
        torch.cuda.reset_peak_memory_stats(target)
        before = torch.cuda.memory_allocated(target)
        net(x)
        torch.cuda.synchronize(target)
        peak = torch.cuda.max_memory_allocated(target) - before
    return _state_bytes(net) + x.untyped_storage().nbytes() + peak


# --------------------------------------------------------------------------- hardware
def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def describe_hardware(device: str = "cpu") -> dict[str, Any]:
    """JSON-serialisable description of the machine and torch runtime."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model_name(),
        "logical_cores": os.cpu_count(),
        "torch_version": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "python_version": platform.python_version(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["cuda_device_name"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda_version"] = torch.version.cuda
    return info
