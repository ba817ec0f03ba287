"""A model folder is a product: everything needed to call the model on the data as the user stored it.

`models/<id>/` holds `model.safetensors` (the subnet's weights), `model.json` (architecture, model
spec, input shape and dtype, class labels, the preprocessing, the data and splits it was trained on,
metrics, and every cost with where it was measured), `model.onnx` (the same computation, the
preprocessing included, checked against torch with ONNX Runtime when written) and `README.md`, a
model card (timm and Hugging Face model cards) with code that loads and calls the model with torch
and with ONNX Runtime.

The model is a `DeployedModel`: the extracted `SubnetModel` behind the per-channel standardisation
that `nas.data.load_data` applies with the training split's mean and std. It takes float32 inputs
in the canonical channel-first layout, (N, C, H, W) images or (N, C, T) sequences, as stored (not
standardised), and refuses any other shape or dtype with an error naming both: it never resizes.

Folders written before the preprocessing travelled with the model (`format_version` "1") still
load: as a `DeployedModel` that standardises nothing (its inputs must be standardised as at
training, as before), with a `LegacyModelWarning` saying so.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from nas.data.datasets import TaskData, in_memory
from nas.errors import UserError
from nas.finish.card import render_card
from nas.runs.files import (
    load_safetensors,
    load_state,
    package_versions,
    read_json,
    save_tensors,
    write_atomically,
    write_json,
)
from search_spaces import Arch, ModelSpec, SubnetModel
from search_spaces.arch import show

if TYPE_CHECKING:
    from nas.evaluation.evaluator import Evaluator
    from nas.hardware.measure import LatencySettings
    from nas.hardware.quantize import Int8Model

MODEL_FILE, MODEL_META, ONNX_FILE, CARD_FILE = "model.safetensors", "model.json", "model.onnx", "README.md"
INT8_FILE = "model.int8.onnx"  # the model quantized to int8 (ONNX Runtime, QDQ), when it is handed over in int8
FORMAT_VERSION = "2"
LEGACY_VERSION = "1"  # without preprocessing, input description, ONNX or card
# the optional latency figures of a search's row (absent or NaN: not known)
_LATENCY_DETAILS = ("latency_iqr_ms", "latency_predicted_ms", "latency_measured_ms", "latency_search_ms",
                    "latency_low_ms", "latency_high_ms", "latency_rounds")


class InputError(UserError, ValueError):
    """An input the model does not take (type, dtype, rank, channels or size); the message names
    what was expected and what was given."""


class LegacyModelWarning(UserWarning):
    """A model folder written before the preprocessing travelled with the model."""


class DeployedModel(nn.Module):
    """An extracted subnet with its preprocessing inside: float32 (N, C, H, W) or (N, C, T) as stored
    -> per-channel (x - mean) / std -> logits (N, num_outputs). Output `i` is class `labels[i]`.

    `mean`/`std` None: no standardisation (a folder of the legacy format). Inputs of another
    type, dtype or shape raise `InputError`, also while tracing for ONNX, whose graph then has the
    same fixed shape but for the batch."""

    mean: Tensor  # (1, C, 1, 1) or (1, C, 1): buffers, not in the state dict (model.json holds them)
    std: Tensor

    def __init__(self, subnet: SubnetModel, *, mean: Sequence[float] | None, std: Sequence[float] | None,
                 labels: Sequence[int | str]):
        super().__init__()
        spec = subnet.spec
        self.subnet = subnet
        self.input_shape: tuple[int, ...] = spec.input_shape(1)[1:]  # (C, H, W) or (C, T)
        self.labels: tuple[int | str, ...] = tuple(labels)
        self.standardizes = mean is not None
        if (mean is None) != (std is None):
            raise ValueError("mean and std are given together or not at all")
        if not self.labels or len(self.labels) > spec.num_classes or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be 1 to {spec.num_classes} distinct values, got {show(list(self.labels))}")
        channels = spec.in_channels
        mean = [0.0] * channels if mean is None else [float(m) for m in mean]
        std = [1.0] * channels if std is None else [float(s) for s in std]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need one value per input channel ({channels}), got {len(mean)} and {len(std)}")
        if not all(math.isfinite(m) for m in mean) or not all(math.isfinite(s) and s > 0 for s in std):
            raise ValueError(f"mean must be finite and std finite and > 0, got mean {mean} and std {std}")
        per_channel = (1, channels) + (1,) * spec.dims
        device = next(subnet.parameters()).device
        # float32, as load_data standardises: the same rounding, so the same inputs reach the subnet
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32, device=device).view(per_channel),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32, device=device).view(per_channel),
                             persistent=False)

    @classmethod
    def for_data(cls, subnet: SubnetModel, data: TaskData) -> DeployedModel:
        """`subnet` behind the standardisation `data` was loaded with; labels: the data's class names
        (image folders), else 0..K-1 of its K classes."""
        return cls(subnet, mean=data.mean, std=data.std, labels=data.class_names or range(data.num_classes))

    @property
    def arch(self) -> Arch:
        return self.subnet.arch

    @property
    def spec(self) -> ModelSpec:
        return self.subnet.spec

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        # (N, C, H, W) or (N, C, T) as stored -> standardised per channel -> logits (N, num_outputs)
        return self.subnet((x - self.mean) / self.std)

    def describe_input(self) -> str:
        axes = "N, C, H, W" if self.spec.dims == 2 else "N, C, T"
        return f"float32 ({axes}) = (N, {', '.join(map(str, self.input_shape))})"

    def check_input(self, x: Any) -> None:
        """Raise `InputError` unless `x` is a float32 tensor of shape (N, *input_shape)."""
        expected = f"this model takes {self.describe_input()}"
        if not isinstance(x, Tensor):
            hint = ": convert it with torch.from_numpy(x)" if type(x).__module__ == "numpy" else ""
            raise InputError(f"the input is a {type(x).__name__}, not a torch.Tensor; {expected}{hint}")
        if x.dtype != torch.float32:
            raise InputError(f"the input has dtype {x.dtype}; {expected}{_dtype_hint(x.dtype)}")
        shape = tuple(int(n) for n in x.shape)
        if shape[1:] != self.input_shape:
            raise InputError(f"the input has shape {shape}; {expected}, and never resizes its input"
                             f"{_layout_hint(shape, self.input_shape)}")


def _dtype_hint(dtype: torch.dtype) -> str:
    if dtype == torch.uint8:
        return ": nas reads uint8 data as x / 255, so pass x.float() / 255"
    return "" if dtype.is_complex else ": convert it with x.float()"


def _layout_hint(shape: tuple[int, ...], expected: tuple[int, ...]) -> str:
    """How to turn a layout `nas.data.load_data` accepts into the canonical one, when `shape` is one."""
    channels, *size = expected
    if channels == 1 and shape[1:] == tuple(size):
        return ": single-channel data stored without a channel axis needs one, x[:, None]"
    if shape[1:] == (*size, channels):
        order = (0, len(shape) - 1, *range(1, len(shape) - 1))
        return f": channels-last data needs its channels first, x.permute{order}"
    return ""


# ----------------------------------------------------------------------------------- costs
def cost_record(values: Mapping[str, Any], *, latency: LatencySettings | Mapping[str, Any], input_shape: Sequence[int],
                hardware: Mapping[str, Any], profile: str | None = None) -> dict[str, Any]:
    """Every cost of a subnet with where it was measured, for `model.json` and the card.

    `values`: `params`, `flops`, `memory_bytes` and `latency_ms` (None or NaN: not measured), and
    any of `latency_iqr_ms`, `latency_predicted_ms`, `latency_measured_ms` and, for a latency measured
    again in rounds before the choice (`nas.search.remeasure`), `latency_search_ms` (the search's
    reading), `latency_low_ms`, `latency_high_ms`, `latency_rounds`; `latency`: the settings
    it was measured or profiled with (device, threads, batch_size); `input_shape`: one sample's
    shape the costs are for, (C, H, W) or (C, T) (a deployment sequence length can differ from the
    data's); `hardware`: the machine latency was measured (or profiled) on; `profile`: the latency
    profile it was predicted from."""
    settings = latency if isinstance(latency, Mapping) else asdict(latency)
    device, threads, batch = settings["device"], int(settings["threads"]), int(settings["batch_size"])
    sample = [int(n) for n in input_shape]
    figures = {k: _number(values[k]) for k in ("params", "flops", "memory_bytes", "latency_ms")}
    details = {k: _number(values[k]) if k in values else None for k in _LATENCY_DETAILS}
    rounds = int(details["latency_rounds"] or 0)
    how = (f"median of {rounds} interleaved rounds beside a reference subnet, corrected for the machine's drift "
           "(each round: the median of repeated forward passes after warm-up)" if rounds
           else "median of repeated forward passes after warm-up")
    if figures["latency_ms"] is None:
        source = "not measured"
    elif details["latency_predicted_ms"] is not None:
        source = "predicted"
    else:
        source = "measured"
    return {
        "params": {"value": figures["params"], "how": "exact count of the parameters"},
        "flops": {"value": figures["flops"], "unit": "multiply-adds", "input_shape": [1, *sample],
                  "how": "analytic count of one forward pass (equal to fvcore's on the extracted model)"},
        "memory_bytes": {"value": figures["memory_bytes"], "input_shape": [batch, *sample],
                         "how": "analytic estimate of peak inference memory: weights, input and the largest "
                                "set of activations alive at once"},
        "latency_ms": {
            "value": figures["latency_ms"], "iqr_ms": details["latency_iqr_ms"], "source": source,
            "predicted_ms": details["latency_predicted_ms"], "measured_ms": details["latency_measured_ms"],
            "rounds": rounds, "low_ms": details["latency_low_ms"], "high_ms": details["latency_high_ms"],
            "search_ms": details["latency_search_ms"],
            "target": device, "threads": threads, "batch": batch, "input_shape": [batch, *sample],
            "how": how if source != "predicted"
                   else "predicted from a latency profile of the target" + (f" ({profile})" if profile else ""),
            "hardware": dict(hardware),
        },
    }


def evaluator_costs(evaluator: Evaluator, values: Mapping[str, Any]) -> dict[str, Any]:
    """`cost_record` with the settings of the evaluator that measured `values`."""
    from nas.hardware.measure import describe_hardware

    predictor = evaluator.predictor
    if predictor is not None and "device" in predictor.meta:
        hardware = predictor.meta["device"]  # the profile's machine
    else:
        hardware = describe_hardware(evaluator.latency.device)
    return cost_record(values, latency=evaluator.latency, input_shape=evaluator.input_shape(1)[1:], hardware=hardware)


def run_costs(config: Mapping[str, Any], values: Mapping[str, Any], spec: ModelSpec) -> dict[str, Any]:
    """`cost_record` of a subnet evaluated by a search run, from the run's `config.json` and the
    subnet's row of its `evaluations.csv`."""
    latency = config["latency"]
    hardware = latency["device"] if "device" in latency else config["hardware"]  # a profile's device, else this run's
    size = config["args"]["seq_len"] or spec.input_size  # what the costs are for
    return cost_record(values, latency=latency["settings"], input_shape=spec.input_shape(1, size)[1:],
                       hardware=hardware, profile=latency["profile"])


def _number(value: Any) -> float | int | None:
    value = value.item() if hasattr(value, "item") else value  # numpy and pandas scalars
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


# ----------------------------------------------------------------------------------- int8
def stored_rows(data: TaskData, split: str, limit: int | None = None) -> tuple[Tensor, Tensor]:
    """A split's inputs as stored (the standardisation `load_data` applied undone: what a
    `DeployedModel` takes) and its labels; with `limit`, only that many rows are read."""
    split_data = getattr(data, split)
    rows = in_memory(split_data, len(split_data) if limit is None else limit)
    part = rows.x.cpu() if limit is None else rows.x[:limit].cpu()
    shape = (1, -1) + (1,) * (part.dim() - 2)
    mean, std = (torch.tensor(v, dtype=torch.float32).view(shape) for v in (data.mean, data.std))
    return part * std + mean, rows.y if limit is None else rows.y[:limit]


def stored(data: TaskData, split: str) -> Tensor:
    """A split's inputs as stored (`stored_rows`)."""
    return stored_rows(data, split)[0]


def quantize_deployed(model: DeployedModel, data: TaskData, *, batch: int | None = None, threads: int = 1,
                      precision: str = "int8") -> Int8Model:
    """`model` (preprocessing inside) quantized to int8 by ONNX Runtime, in whole or in the stages
    `precision` names, calibrated on the first rows of the training split as stored
    (`nas.hardware.quantize`); `batch`: fixed (to time it), or free."""
    from nas.hardware.quantize import CALIBRATION_SAMPLES, int8_stages, quantize_model

    return quantize_model(model, model.input_shape, stored_rows(data, "train", CALIBRATION_SAMPLES)[0], batch=batch,
                          threads=threads, stages=int8_stages(precision))


def _write_int8(folder: Path, int8: Int8Model, data: TaskData, qat: Mapping[str, Any] | None) -> dict[str, Any]:
    """Write `int8` as `INT8_FILE`, load the written file and measure its validation and test accuracy
    with ONNX Runtime; they must equal the in-memory model's (else `UserError`). model.json's entry,
    with `qat` (`nas.finish.qat.int8_handover`'s record) when it was considered."""
    from nas.hardware.quantize import CALIBRATION_SAMPLES, QUANTIZED_OPS, Int8Model

    write_atomically(folder / INT8_FILE, lambda tmp: tmp.write_bytes(int8.onnx_bytes))
    written = Int8Model.load(folder / INT8_FILE)
    acc = {}
    for split in ("val", "test"):
        x, y = stored_rows(data, split)
        acc[split] = written.accuracy_and_loss(x, y)[0]
        if acc[split] != int8.accuracy_and_loss(x, y)[0]:
            raise UserError(f"{folder / INT8_FILE}: the written int8 model's {split} accuracy differs from the "
                            "quantized model's")
    kept = qat is not None and qat["kept"]
    after = ("after finishing and quantization-aware fine-tuning of the float weights (qat)" if kept
             else "after finishing (no quantization-aware training" + (": qat" if qat is not None else "") + ")")
    entry = {"file": INT8_FILE, "val_acc": acc["val"], "test_acc": acc["test"], "weight_bytes": written.weight_bytes(),
             "file_bytes": len(int8.onnx_bytes), "runtime": "onnxruntime (CPUExecutionProvider)",
             "how": f"post-training static quantization (onnxruntime.quantization.quantize_static): QDQ, int8 weights "
                    f"per output channel, uint8 activations calibrated (min-max) on the first {CALIBRATION_SAMPLES} rows "
                    f"of the training split, {after}; the layers with weights ({', '.join(QUANTIZED_OPS)}) quantized"
                    f"{'' if int8.stages is None else ' in stages ' + ', '.join(map(str, sorted(int8.stages)))}, "
                    "the rest float",
             "checked": "accuracy re-measured with ONNX Runtime from the written file"}
    return entry if qat is None else entry | {"qat": dict(qat)}


# ----------------------------------------------------------------------------------- the folder
def save_model_folder(folder: Path, model: DeployedModel, *, metrics: Mapping[str, Any], costs: Mapping[str, Any],
                      data: Mapping[str, Any], space: str, int8: Int8Model | None = None,
                      task: TaskData | None = None, qat: Mapping[str, Any] | None = None) -> Path:
    """Write the model folder (module docstring) and return it.

    `metrics`: JSON-able figures, with `val_acc` and `test_acc` of this model; a finished model adds
    `before_finishing` ({"val_acc", "test_acc"} with the inherited weights) and `finishing` (how:
    method, epochs, seconds, ...), which the card shows. `costs`: `cost_record`'s. `data`:
    `TaskData.describe()` of the data it was trained on. The ONNX export is checked against torch
    with ONNX Runtime before anything is written (`UserError` if they differ). `int8`: the model is
    handed over quantized (`quantize_deployed`), written as `INT8_FILE` with its accuracy on `task`'s
    validation and test splits re-measured from the file (model.json's `int8`, the card's precision);
    `qat`: whether quantization-aware fine-tuning ran and was kept (`nas.finish.qat.int8_handover`)."""
    from nas.hardware.targets import ATOL, OPSET, RTOL, export_onnx

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / ONNX_FILE, lambda tmp: export_onnx(model, (1, *model.input_shape), tmp, dynamic_batch=True))
    description = describe_model(model, metrics=metrics, costs=costs, data=data, space=space)
    description["onnx"] = {"file": ONNX_FILE, "opset": OPSET, "input": "input", "output": "output",
                           "dynamic_axes": {"input": [0], "output": [0]},
                           "checked": f"ONNX Runtime against torch on a random input, within {ATOL:g} + {RTOL:g} x max |output|"}
    if int8 is not None:
        description["precision"] = int8.precision
        if task is None:
            raise ValueError("an int8 model is checked on the task's data: give task")
        description["int8"] = _write_int8(folder, int8, task, qat)
        description["files"]["int8"] = INT8_FILE
    save_tensors(folder / MODEL_FILE, model.subnet.state_dict(), {
        "format": "nas-model", "format_version": FORMAT_VERSION, "arch": model.arch.to_json(),
        "spec": json.dumps(model.spec.to_dict()), "preprocessing": json.dumps(description["preprocessing"]),
    })
    write_json(folder / MODEL_META, description)
    write_atomically(folder / CARD_FILE, lambda tmp: tmp.write_text(render_card(description)))
    return folder


def add_baselines(folder: Path, verdict: Mapping[str, Any]) -> None:
    """Record in a written model folder (model.json's `metrics.baselines`, and its card) how the
    model compares with scikit-learn baselines on the same split (`nas.evaluation.baselines.compare`)."""
    meta = read_json(folder / MODEL_META, "model description")
    meta["metrics"]["baselines"] = {"test_acc": {r["method"]: r["test_acc"] for r in verdict["baselines"]},
                                    "below": verdict["below"]}
    write_json(folder / MODEL_META, meta)
    write_atomically(folder / CARD_FILE, lambda tmp: tmp.write_text(render_card(meta)))


def describe_model(model: DeployedModel, *, metrics: Mapping[str, Any], costs: Mapping[str, Any],
                   data: Mapping[str, Any], space: str) -> dict[str, Any]:
    """`model.json`'s content (without the ONNX entry)."""
    spec = model.spec
    axes = ["N", "C", "H", "W"] if spec.dims == 2 else ["N", "C", "T"]
    return {
        "format": "nas-model", "format_version": FORMAT_VERSION, "id": model.arch.id, "space": space,
        "arch": model.arch.to_dict(), "spec": spec.to_dict(),
        "input": {"shape": [None, *model.input_shape], "axes": axes, "dtype": "float32",
                  "standardized_inside": model.standardizes},
        "output": {"shape": [None, spec.num_classes], "kind": "logits", "labels": "output i is class labels[i]"},
        "labels": list(model.labels),
        "preprocessing": {"kind": "standardize", "formula": "(x - mean[c]) / std[c] for each channel c",
                          "mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist(),
                          "where": "inside the model (torch and ONNX): pass the data as stored"},
        "data": dict(data), "metrics": dict(metrics), "costs": dict(costs),
        "precision": "fp32",  # int8: also quantized (`save_model_folder`'s `int8`)
        "files": {"weights": MODEL_FILE, "description": MODEL_META, "onnx": ONNX_FILE, "card": CARD_FILE},
        "versions": package_versions(),
    }


def load_model(path: str | Path, device: str = "cpu") -> DeployedModel:
    """The model of a model folder (or of a file in it) as a `DeployedModel` in eval mode, without
    the supernet and without pickle. A legacy folder (module docstring) loads with a warning."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    meta_path = folder / MODEL_META
    meta = read_json(meta_path, "model description")
    if not isinstance(meta, dict):
        raise UserError(f"model description {meta_path} is not a JSON object")
    version = meta.get("format_version")
    if version not in (FORMAT_VERSION, LEGACY_VERSION):
        raise UserError(f"model description {meta_path} has format_version {show(version)}; this nas reads "
                        f"{FORMAT_VERSION!r} (and {LEGACY_VERSION!r}, written before the preprocessing travelled with it)")
    try:
        arch = Arch.from_dict(meta["arch"])
        spec = ModelSpec(**meta["spec"])
        subnet = SubnetModel(spec, arch)
    except (KeyError, TypeError, ValueError) as e:  # ArchError is a ValueError
        raise UserError(f"model description {meta_path} is invalid: {e}") from None
    load_state(subnet, load_safetensors(folder / MODEL_FILE, "model file"), folder / MODEL_FILE, f"architecture {arch.id}")
    try:
        if version == LEGACY_VERSION:
            model = _legacy(subnet, meta, folder)
        else:
            prep = meta["preprocessing"]
            model = DeployedModel(subnet, mean=prep["mean"], std=prep["std"], labels=meta["labels"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"model description {meta_path} is invalid: {e}") from None
    return model.to(device).eval()


def _legacy(subnet: SubnetModel, meta: dict[str, Any], folder: Path) -> DeployedModel:
    classes = meta["data"]["num_classes"] if isinstance(meta.get("data"), dict) else subnet.spec.num_classes
    warnings.warn(f"model folder {folder} was written by an older nas, without its preprocessing: the model takes "
                  "inputs standardised per channel with the training split's mean and std, as at training; extract "
                  "it again (nas extract) for a folder whose model takes the data as stored", LegacyModelWarning,
                  stacklevel=3)
    return DeployedModel(subnet, mean=None, std=None, labels=range(classes))


__all__ = ["CARD_FILE", "INT8_FILE", "MODEL_FILE", "MODEL_META", "ONNX_FILE", "DeployedModel", "InputError", "LegacyModelWarning",
           "cost_record", "evaluator_costs", "load_model", "quantize_deployed", "run_costs", "save_model_folder", "stored"]
