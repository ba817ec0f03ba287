"""The model card (`README.md` of a model folder), written from `model.json`'s content alone: what
the model is, its metrics (before and after finishing when it was finished), its costs and where
they were measured, the data, and code that loads and calls it with torch and with ONNX Runtime."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_SPLITS = ("train", "val", "test")  # the order the card lists them in (model.json sorts its keys)


def render_card(meta: Mapping[str, Any]) -> str:
    """Markdown of the card for a model described by `meta` (`model.json`)."""
    sections = [_summary(meta), _io(meta), _metrics(meta["metrics"]), _precision(meta), _costs(meta["costs"]),
                _data(meta), _usage(meta), _files()]
    return "\n\n".join(s.strip("\n") for s in sections) + "\n"


def _summary(meta: Mapping[str, Any]) -> str:
    images = meta["spec"]["dims"] == 2
    kind = "image" if images else "sequence"
    arch = meta["arch"]
    rows = "\n".join(f"| {i} | {s['width']} | {s['stride']} | {_blocks(s['blocks'])} |"
                     for i, s in enumerate(arch["stages"], start=1))
    size = arch["resolution"]
    resample = ("" if size == meta["spec"]["input_size"] else
                f"resamples its input to {f'{size}x{size}' if images else f'length {size}'} (the architecture's "
                "resolution), then has ")
    return f"""
# {meta['space']} subnet {meta['id']}: {kind} classifier for {meta['data']['name']}

{'An image' if images else 'A sequence'} classifier found by nas (hardware-aware neural architecture search with one weight-sharing
supernet) in the search space `{meta['space']}`, extracted as plain PyTorch layers. It
takes the data as stored and standardises it itself; `model.onnx` holds the same computation.

Architecture `{meta['id']}`: {resample}a stem of width {arch['stem_width']}, then:

| stage | width | stride | blocks |
|---|---|---|---|
{rows}
"""


def _blocks(blocks: list[Mapping[str, Any]]) -> str:
    """Runs of equal blocks: `2 x conv (kernel 7, expand 4); 1 x softmax attention (4 heads, mlp 4)`."""
    names = [_block(b) for b in blocks]
    runs: list[list[Any]] = []
    for name in names:
        if runs and runs[-1][1] == name:
            runs[-1][0] += 1
        else:
            runs.append([1, name])
    return "; ".join(f"{n} x {name}" for n, name in runs)


def _block(block: Mapping[str, Any]) -> str:
    if block["type"] == "conv":
        return f"conv (kernel {block['kernel']}, expand {block['expand']:g})"
    heads = f"{block['heads']} heads, " if block["heads"] else ""
    return f"{block['mixer']} mixer ({heads}mlp {block['mlp_ratio']:g})"


def _io(meta: Mapping[str, Any]) -> str:
    shape = "(N, " + ", ".join(str(n) for n in meta["input"]["shape"][1:]) + ")"
    axes = ", ".join(meta["input"]["axes"])
    prep = meta["preprocessing"]
    labels, outputs = meta["labels"], meta["output"]["shape"][1]
    if meta["input"]["standardized_inside"]:
        standardise = (f"Do not standardise it: the model subtracts the mean {_floats(prep['mean'])} and divides by the "
                       f"std {_floats(prep['std'])} of each channel (the training split's) itself.")
    else:
        standardise = ("This folder has no preprocessing: standardise each channel as at training before calling it.")
    extra = (f" Outputs {len(labels)} to {outputs - 1} stand for classes the data did not have."
             if outputs > len(labels) else "")
    last = "x.transpose(0, 3, 1, 2)" if meta["spec"]["dims"] == 2 else "x.transpose(0, 2, 1)"
    axis = "Data kept without a channel axis needs one (`x[:, None]`), c" if meta["spec"]["in_channels"] == 1 else "C"
    return f"""
## Input and output

- **Input**: float32 `{shape}` ({axes}), the data as stored, channels first. {standardise}
  {axis}hannels-last data needs its channels first (`{last}` in numpy), and images stored as uint8 are read by nas as `x / 255`: do the same.
  Any other shape or dtype is refused with an error naming what was expected; the model never resizes.
- **Output**: logits `(N, {outputs})`; output `i` is class `labels[i]`, labels {_labels(labels)}.{extra}
"""


def _labels(labels: list) -> str:
    return ", ".join(str(v) for v in labels) if len(labels) <= 20 else f"{labels[0]} ... {labels[-1]} ({len(labels)})"


def _floats(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def _metrics(metrics: Mapping[str, Any]) -> str:
    rows = []
    before = metrics.get("before_finishing")
    finishing = metrics.get("finishing")
    if isinstance(before, Mapping):
        rows.append(("inherited from the supernet (before finishing)", before))
    rows.append(("this model" + (" (after finishing)" if before or finishing else " (weights inherited from the supernet)"),
                 metrics))
    baselines = metrics.get("baselines")
    if isinstance(baselines, Mapping):
        rows += [(f"baseline: scikit-learn {name} on the flattened inputs, same split", {"test_acc": acc})
                 for name, acc in baselines["test_acc"].items()]
    table = "\n".join(f"| {name} | {_acc(m, 'val_acc')} | {_acc(m, 'test_acc')} |" for name, m in rows)
    how = ""
    if isinstance(finishing, Mapping) and finishing:
        how = "\nFinishing: " + ", ".join(f"{k} {_value(v)}" for k, v in finishing.items()) + "."
    if isinstance(baselines, Mapping) and baselines["below"]:
        how += ("\n**This model is below a scikit-learn baseline on the same split: on these data the searched "
                "networks do worse than a simple classifier; do not deploy it as it is.**")
    return f"""
## Metrics

| weights | validation accuracy | test accuracy |
|---|---|---|
{table}
{how}"""


def _quantized(precision: str) -> str:
    """"int8", or "int8[1,3]" with the stages it names: which layers are in int8."""
    from nas.hardware.quantize import int8_stages

    stages = int8_stages(precision)
    return precision if stages is None else (
        f"{precision} (int8 in the layers of stage{'s' if len(stages) > 1 else ''} {', '.join(map(str, sorted(stages)))}; "
        "the stem, the head and the other stages in float)")


def _precision(meta: Mapping[str, Any]) -> str:
    from nas.hardware.quantize import float_bytes

    int8 = meta.get("int8")
    if not isinstance(int8, Mapping):
        params = meta["costs"]["params"]["value"] if "params" in meta["costs"] else None
        size = "" if params is None else f" ({float_bytes(params):,.0f} bytes: 4 a parameter)"
        return f"""
## Precision

{meta.get("precision", "fp32")}: the weights{size} and `model.onnx` are float32.
"""
    return f"""
## Precision

{_quantized(str(meta.get("precision", "int8")))}: handed over quantized as `{int8['file']}` ({int8['weight_bytes']:,} bytes of
weights), run with {int8['runtime']}; its costs below are the int8 model's. How: {int8['how']}.

| model | validation accuracy | test accuracy |
|---|---|---|
| int8 (`{int8['file']}`, {int8['checked']}) | {_acc(int8, 'val_acc')} | {_acc(int8, 'test_acc')} |

`model.safetensors` and `model.onnx` hold the float32 model it was quantized from.{_qat(int8.get("qat"))}
"""


def _qat(qat: Any) -> str:
    """The card's line on quantization-aware fine-tuning (`nas.finish.qat`), when it was considered."""
    if not isinstance(qat, Mapping):
        return ""
    ptq = f"post-training quantization of the finished weights: validation accuracy {_acc(qat, 'ptq_val_acc')}"
    if not qat["ran"]:
        return (f"\n\nQuantization-aware fine-tuning (`--qat {qat['mode']}`) did not run: {ptq}, float "
                f"{_acc(qat, 'float_val_acc')} (it runs when int8 loses more than {100 * qat['tolerance']:g} points).")
    outcome = ("kept: the float weights above are the QAT-trained ones" if qat["kept"]
               else "discarded: it did not beat post-training quantization")
    return (f"\n\nQuantization-aware fine-tuning (`--qat {qat['mode']}`) ran {qat['steps']} steps; {ptq}, after "
            f"QAT {_acc(qat, 'val_acc')}: {outcome}.")


def _acc(metrics: Mapping[str, Any], key: str) -> str:
    value = metrics.get(key)
    return "-" if value is None else f"{value:.4f}"


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _costs(costs: Mapping[str, Any]) -> str:
    rows = []
    if "params" in costs:
        rows.append(("parameters", _count(costs["params"]["value"]), costs["params"]["how"]))
    if "flops" in costs:
        f = costs["flops"]
        rows.append(("FLOPs", f"{_count(f['value'])} {f['unit']}", f"{f['how']}, input {_shape(f['input_shape'])}"))
    if "memory_bytes" in costs:
        m = costs["memory_bytes"]
        value = "-" if m["value"] is None else f"{m['value'] / 2**20:.3f} MiB"
        rows.append(("peak memory", value, f"{m['how']}, input {_shape(m['input_shape'])}"))
    if "latency_ms" in costs:
        lat = costs["latency_ms"]
        value = "-" if lat["value"] is None else f"{lat['value']:.3f} ms"
        if lat["iqr_ms"] is not None:
            value += f" (IQR {lat['iqr_ms']:.3f})"
        if lat.get("rounds"):
            value += f"; {lat['low_ms']:.3f}-{lat['high_ms']:.3f} over {lat['rounds']} rounds"
        if lat["source"] == "predicted" and lat["measured_ms"] is not None:
            value += f"; measured {lat['measured_ms']:.3f} ms"
        if lat.get("handed_over"):
            check, limit = lat["handed_over"], lat["handed_over"]["limit_ms"]
            value += f"; as handed over {check['median_ms']:.3f} ms" + (
                "" if limit is None else f" ({'within' if check['meets_limit'] else 'over'} the {limit:g} ms limit)")
        hw = lat["hardware"]
        machine = hw.get("cuda_device_name") if str(lat["target"]).startswith("cuda") else hw.get("processor")
        where = (f"{lat['source']} on {lat['target']}, {lat['threads']} thread(s), batch {lat['batch']}, input "
                 f"{_shape(lat['input_shape'])}, {machine or 'unknown machine'}: {lat['how']}")
        rows.append(("latency", value, where))
    table = "\n".join(f"| {name} | {value} | {where} |" for name, value, where in rows)
    return f"""
## Costs and where they were measured

| cost | value | how and where |
|---|---|---|
{table}
"""


def _count(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _shape(shape: list) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ")"


def _data(meta: Mapping[str, Any]) -> str:
    data = meta["data"]
    order = sorted(data["sizes"], key=lambda name: (_SPLITS.index(name) if name in _SPLITS else len(_SPLITS), name))
    given = data.get("given_splits", ())  # the splits that came with the data; the others were carved from it
    sizes = ", ".join(f"{name} {data['sizes'][name]:,}" + (" (given)" if name in given else "") for name in order)
    prep = meta["preprocessing"]
    return f"""
## Data

Trained and measured on `{data['name']}`: {data['num_classes']} classes, splits {sizes}.
Per-channel mean {_floats(prep['mean'])} and std {_floats(prep['std'])} of the training split, applied inside the model.
"""


def _usage(meta: Mapping[str, Any]) -> str:
    shape = ", ".join(str(n) for n in (4, *meta["input"]["shape"][1:]))
    outputs = meta["output"]["shape"][1]
    example = (f"x = np.random.default_rng(0).normal(size=({shape})).astype(np.float32)  "
               "# stands for your data, as stored")
    if outputs == len(meta["labels"]):
        torch_out, ort_out = ("[model.labels[i] for i in logits.argmax(dim=1).tolist()]",
                              "[labels[i] for i in logits.argmax(axis=1).tolist()]")
    else:  # outputs past the labels: print indices, which may be past them
        torch_out, ort_out = "logits.argmax(dim=1).tolist()", "logits.argmax(axis=1).tolist()"
    return f"""
## Use it

Run from this folder, or set `folder` to its path. With PyTorch and nas:

```python
import numpy as np
import torch

import nas

folder = "."
model = nas.load_model(folder)  # a torch.nn.Module in eval mode
{example}
with torch.no_grad():
    logits = model(torch.from_numpy(x))  # (N, {outputs})
print({torch_out})  # predicted classes
```

With ONNX Runtime and numpy only (no nas, no torch):

```python
import json

import numpy as np
import onnxruntime as ort

folder = "."
session = ort.InferenceSession(f"{{folder}}/model.onnx", providers=["CPUExecutionProvider"])
labels = json.load(open(f"{{folder}}/model.json"))["labels"]  # output i is class labels[i]
{example}
logits = session.run(None, {{"input": x}})[0]  # (N, {outputs})
print({ort_out})  # predicted classes
```
"""


def _files() -> str:
    return """
## Files

- `model.safetensors`: the weights (no pickle).
- `model.json`: architecture, model spec, input, labels, preprocessing, data, metrics and costs.
- `model.onnx`: the model with its preprocessing, batch size free; checked against torch with ONNX Runtime when written.
- `model.int8.onnx` (an int8 model only): the model quantized to int8, preprocessing inside, batch size free.
- `README.md`: this card.
"""
