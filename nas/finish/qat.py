"""Quantization-aware fine-tuning (QAT) of a finished subnet handed over in int8.

The int8 model handed over is always ONNX Runtime's post-training quantization of the float weights
(`nas.hardware.quantize`): one quantizer. QAT only adapts those float weights to the rounding that
quantizer will apply (Jacob et al., 2018, "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference"): a short fine-tune in which the weight of every
`nn.Conv1d`/`nn.Conv2d`/`nn.Linear` and the tensors around it are rounded as ONNX Runtime will
round them, with torch's own fake-quantize ops (straight-through gradients):

- weights: per output channel, symmetric int8, scale = max |w| / 127 (ONNX Runtime's
  `WeightSymmetric`, range [-127, 127]), through `torch.nn.utils.parametrize`;
- the layer's input and output: per tensor, asymmetric uint8 [0, 255] over the observed range
  widened to include 0 (ONNX Runtime's QDQ activations, min-max calibration), through forward
  (pre-)hooks. The ranges are calibrated as ONNX Runtime calibrates them (min-max of the float
  model on the first `CALIBRATION_SAMPLES` training rows), then follow an exponential moving
  average of each training batch's min and max (`EMA`, torch's `MovingAverageMinMaxObserver`'s).

Not simulated: the activation-by-activation MatMuls inside attention and the int32 bias. Every
parametrization and hook is removed afterwards: the model keeps its structure, state-dict keys and
plain float weights. Why not torch.ao's `prepare_qat_fx`: docs/quantization.md.

`int8_handover` decides (`qat_wanted`), runs it, and keeps the QAT weights only when their
re-quantized int8 model is more accurate on the validation split than before.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from nas.data.datasets import TaskData, in_memory
from nas.evaluation.accuracy import evaluate
from nas.evaluation.evaluator import INT8_TOLERANCE
from nas.finish.finetune import QAT, FinishConfig, recipe, scratch_steps
from nas.finish.package import DeployedModel, quantize_deployed, stored_rows
from nas.hardware.quantize import CALIBRATION_SAMPLES, Int8Model, Precision, int8_stages, stage_of
from nas.training.train import train_standalone

QatMode = Literal["auto", "always", "off"]
QUANTIZED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)  # what ONNX Runtime quantizes (Conv, Gemm, MatMul)
EMA = 0.01  # weight of a training batch's min and max in the activation ranges
QAT_BUDGET = 0.1  # optimizer steps as a fraction of the from-scratch steps
QAT_LR = 0.1  # the fine-tune's learning rate times this: QAT only nudges trained weights


class _WeightFakeQuant(nn.Module):
    """A parametrization: the weight (out, ...) on ONNX Runtime's symmetric int8 grid per output channel."""

    def forward(self, w: Tensor) -> Tensor:
        scale = w.detach().abs().flatten(1).amax(1) / 127  # (out,)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale)).float()  # an all-zero channel: ORT's 1.0
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -127, 127)


class _Range:
    """One tensor's observed range and its fake quantization as ONNX Runtime's int8 activations."""

    def __init__(self) -> None:
        self.low: Tensor | None = None
        self.high: Tensor | None = None

    def observe(self, x: Tensor, ema: float | None) -> None:
        """Widen the range to `x`'s (min-max calibration, `ema` None), or move it towards `x`'s by `ema`."""
        low, high = x.detach().min().float(), x.detach().max().float()
        if self.low is None or self.high is None:
            self.low, self.high = low, high
        elif ema is None:
            self.low, self.high = torch.minimum(self.low, low), torch.maximum(self.high, high)
        else:
            self.low, self.high = self.low + ema * (low - self.low), self.high + ema * (high - self.high)

    def fake_quant(self, x: Tensor) -> Tensor:
        if self.low is None or self.high is None:
            raise RuntimeError("fake-quantized before its range was calibrated")
        low, high = self.low.clamp(max=0), self.high.clamp(min=0)  # 0 representable, as ORT's compute_scale_zp
        scale = (high - low) / 255
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = torch.round(-low / scale).clamp(0, 255).to(torch.int32)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)


class FakeQuant:
    """`model`'s Conv/Linear layers with fake-quantized weights, inputs and outputs (module docstring),
    installed in place; `remove()` (or leaving `fake_quantized`) takes every trace of it away.

    Until `calibrate` ends, the model runs in float and only the ranges are observed; then the
    weights are fake-quantized too. In training mode each forward pass moves the ranges (`EMA`);
    in eval mode they stay."""

    def __init__(self, model: nn.Module, stages: frozenset[int] | None = None):
        self.model = model
        self.layers = [m for name, m in model.named_modules() if isinstance(m, QUANTIZED_LAYERS)
                       and (stages is None or stage_of(name) in stages)]
        if not self.layers:
            raise ValueError("the model has no Conv or Linear layer to quantize")
        self.ranges = {id(m): (_Range(), _Range()) for m in self.layers}  # (input, output)
        self.calibrating = True
        self.handles = [h for m in self.layers for h in (m.register_forward_pre_hook(self._before),
                                                          m.register_forward_hook(self._after))]

    def _tensor(self, r: _Range, x: Tensor, training: bool) -> Tensor:
        if self.calibrating:
            r.observe(x, None)
            return x
        if training:
            r.observe(x, EMA)
        return r.fake_quant(x.float()).to(x.dtype)  # in float32: under CUDA's bfloat16 autocast too

    def _before(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (self._tensor(self.ranges[id(module)][0], args[0], module.training), *args[1:])

    def _after(self, module: nn.Module, args: tuple[Any, ...], out: Tensor) -> Tensor:
        r = self.ranges[id(module)][1]
        bias = getattr(module, "bias", None)
        if isinstance(module, nn.Linear) and bias is not None and args[0].dim() > 2:
            # exported as MatMul then Add: ONNX Runtime quantizes the MatMul's output, before the bias
            return self._tensor(r, out - bias, module.training) + bias
        return self._tensor(r, out, module.training)

    @torch.no_grad()
    def calibrate(self, x: Tensor, batch: int = 64) -> None:
        """Observe the float model's ranges on `x` (N, ...) in batches (min-max, as ONNX Runtime
        calibrates), then fake-quantize the weights."""
        training = self.model.training
        self.model.eval()
        for i in range(0, len(x), batch):
            self.model(x[i:i + batch])
        self.model.train(training)
        for m in self.layers:
            parametrize.register_parametrization(m, "weight", _WeightFakeQuant())
        self.calibrating = False

    def remove(self) -> None:
        """The plain float model again: hooks off, the weights' parametrizations removed (their
        float values kept, not the rounded ones)."""
        for h in self.handles:
            h.remove()
        for m in self.layers:
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)


@contextmanager
def fake_quantized(model: nn.Module, calibration: Tensor, stages: frozenset[int] | None = None) -> Iterator[FakeQuant]:
    """`model` fake-quantized as ONNX Runtime will quantize it (in whole, or the layers of `stages`),
    calibrated on `calibration` (the subnet's inputs: standardised rows), for the `with` block only."""
    fake = FakeQuant(model, stages)
    try:
        fake.calibrate(calibration.to(next(model.parameters()).device))
        yield fake
    finally:
        fake.remove()


def qat_wanted(mode: QatMode, float_val_acc: float, int8_val_acc: float) -> bool:
    """Whether QAT runs: `always`, never (`off`), or (`auto`) when post-training quantization loses
    more than `INT8_TOLERANCE` of validation accuracy."""
    if mode not in QAT:
        raise ValueError(f"qat must be one of {list(QAT)}, got {mode!r}")
    return mode == "always" or (mode == "auto" and float_val_acc - int8_val_acc > INT8_TOLERANCE)


def qat_steps(data: TaskData) -> int:
    return max(1, round(QAT_BUDGET * scratch_steps(data)))


def train_qat(model: nn.Module, data: TaskData, config: FinishConfig, *, steps: int | None = None,
              precision: Precision = "int8", show_progress: bool = False) -> dict[str, Any]:
    """Fine-tune `model` (a subnet, on the config's device) in place with quantization in the loop:
    the fine-tune recipe at `QAT_LR` x its learning rate for `steps` (default `qat_steps`), the
    epoch of the lowest fake-quantized validation loss kept (the start included).
    `train_standalone`'s summary."""
    train = recipe(replace(config, how="finetune"))
    train = replace(train, lr=train.lr * QAT_LR)
    calibration = in_memory(data.train, CALIBRATION_SAMPLES).x[:CALIBRATION_SAMPLES]
    with fake_quantized(model, calibration, int8_stages(precision)):
        return train_standalone(model, data, train, steps=steps or qat_steps(data), select="val_loss",
                                patience=config.patience, show_progress=show_progress, description="QAT")


@dataclass(frozen=True)
class Int8Handover:
    """What `int8_handover` hands over: the float model, its int8 model and the QAT record."""

    model: DeployedModel  # the float model the int8 one is quantized from (QAT weights when kept)
    int8: Int8Model  # ONNX Runtime's post-training quantization of `model`
    record: dict[str, Any] | None  # model.json's int8.qat (None: not considered, the model was not finished)
    metrics: dict[str, float]  # QAT weights kept: `model`'s float val_acc and test_acc (else empty)


def _quantized(model: DeployedModel, data: TaskData, precision: Precision) -> tuple[Int8Model, float, float]:
    """`model`'s int8 model (in `precision`) and its validation and test accuracy."""
    int8 = quantize_deployed(model, data, precision=precision)
    val, test = (int8.accuracy_and_loss(*stored_rows(data, split))[0] for split in ("val", "test"))
    return int8, val, test


def int8_handover(model: DeployedModel, data: TaskData, config: FinishConfig | None, *, steps: int | None = None,
                  precision: Precision = "int8", show_progress: bool = False) -> Int8Handover:
    """The int8 model handed over for `model` (on the CPU) in `precision` (int8 in whole or in some
    stages): its post-training quantization, or, for a model finished with `config` (None: handed
    over as extracted, never trained), that of its QAT-trained copy when `qat_wanted` by `config.qat`
    and more accurate on the validation split. `model` is not changed."""
    if config is None:
        return Int8Handover(model, quantize_deployed(model, data, precision=precision), None, {})
    float_val = evaluate(model.subnet, data.val)
    int8, ptq, ptq_test = _quantized(model, data, precision)
    record: dict[str, Any] = {"mode": config.qat, "ran": False, "kept": False, "float_val_acc": float_val,
                              "ptq_val_acc": ptq, "ptq_test_acc": ptq_test, "tolerance": INT8_TOLERANCE}
    if not qat_wanted(config.qat, float_val, ptq):
        return Int8Handover(model, int8, record, {})
    subnet = copy.deepcopy(model.subnet).to(config.device)
    start = time.perf_counter()
    summary = train_qat(subnet, data, config, steps=steps, precision=precision, show_progress=show_progress)
    trained = DeployedModel.for_data(subnet.cpu().eval(), data)
    qat_int8, qat, qat_test = _quantized(trained, data, precision)  # the test split only recorded, never a criterion
    record |= {"ran": True, "kept": qat > ptq, "val_acc": qat, "test_acc": qat_test, "steps": summary["steps"],
               "best_step": summary["best_step"], "lr": recipe(replace(config, how="finetune")).lr * QAT_LR,
               "seconds": time.perf_counter() - start}
    if not record["kept"]:
        return Int8Handover(model, int8, record, {})
    metrics = {"val_acc": evaluate(subnet, data.val), "test_acc": evaluate(subnet, data.test)}
    return Int8Handover(trained, qat_int8, record, metrics)
