"""Quantization-aware fine-tuning (nas.finish.qat): the fake quantization mimics ONNX Runtime's and
leaves no trace, gradients pass it, when QAT runs, and its weights kept only when int8 gains."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from nas.cli.main import main
from nas.evaluation.evaluator import INT8_TOLERANCE
from nas.finish.finetune import FinishConfig
from nas.finish.package import DeployedModel, quantize_deployed, stored_rows
from nas.finish.qat import FakeQuant, fake_quantized, int8_handover, qat_wanted
from nas.hardware.quantize import quantize_model, stage_of
from nas.training.config import TrainConfig
from nas.training.train import train_standalone
from tests.helpers import few_digits, tiny_supernet


def _no_trace(model: nn.Module, keys: set[str], state: dict[str, torch.Tensor]) -> None:
    """The model as before fake quantization: plain layers, no hooks, the same weights."""
    for m in model.modules():
        assert not m._forward_pre_hooks and not m._forward_hooks, type(m).__name__
        assert not parametrize.is_parametrized(m)
    assert set(model.state_dict()) == keys
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_fake_quantization_is_onnx_runtimes_and_leaves_no_trace():
    """A chain with no tensor shared by two consumers: ONNX Runtime's int8 model, run on the same
    weights and calibration rows, computes what the fake-quantized model computes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.GELU(), nn.Flatten(), nn.Linear(512, 10)).eval()
    calibration, x = torch.randn(64, 1, 8, 8), torch.randn(32, 1, 8, 8)
    keys, state = set(model.state_dict()), {k: v.clone() for k, v in model.state_dict().items()}
    ort = quantize_model(model, (1, 8, 8), calibration).logits(x)
    with torch.no_grad():
        fp32 = model(x).numpy()
        with fake_quantized(model, calibration) as fake_quant:
            fake = model(x).numpy()
            out = fake_quant.ranges[id(model[3])][1]
            step = float(out.high.clamp(min=0) - out.low.clamp(max=0)) / 255  # the output's int8 grid
    diff = np.abs(fake - ort)
    # equal, but for a few values on a rounding boundary (integer kernels round the accumulator apart)
    assert (diff < 1e-5).mean() >= 0.95 and diff.max() < 1.01 * step
    assert (np.abs(fp32 - ort) > 0.05 * step).mean() > 0.5  # where float alone differs
    _no_trace(model, keys, state)


def test_fake_quantized_subnet_predicts_as_its_int8_model_and_is_restored():
    """On a subnet ONNX Runtime also rounds tensors that feed a residual branch besides a layer
    (the simulation rounds the layer's own input only): close, not equal."""
    supernet, data = tiny_supernet(), few_digits(256)
    subnet = supernet.extract(supernet.space.smallest()).eval()
    keys, state = set(subnet.state_dict()), {k: v.clone() for k, v in subnet.state_dict().items()}
    deployed = DeployedModel.for_data(subnet, data)
    x = stored_rows(data, "val")[0]
    ort = quantize_deployed(deployed, data).logits(x)
    with torch.no_grad(), fake_quantized(subnet, data.train.x[:256]):
        fake = deployed(x).numpy()
    assert (fake.argmax(1) == ort.argmax(1)).mean() >= 0.95
    assert np.abs(fake - ort).mean() < 0.05 * np.abs(ort).mean()
    _no_trace(subnet, keys, state)


def test_in_some_stages_only_their_layers_are_fake_quantized_as_onnx_runtime_quantizes_them():
    supernet, data = tiny_supernet(), few_digits(256)
    subnet = supernet.extract(supernet.space.largest()).eval()
    names = {id(m): n for n, m in subnet.named_modules()}
    fake = FakeQuant(subnet, frozenset({1}))
    assert fake.layers and {stage_of(names[id(m)]) for m in fake.layers} == {1}
    fake.remove()
    deployed = DeployedModel.for_data(subnet, data)
    x = stored_rows(data, "val")[0]
    ort = quantize_deployed(deployed, data, precision="int8[1]").logits(x)
    with torch.no_grad():
        plain = deployed(x).numpy()
        with fake_quantized(subnet, data.train.x[:256], frozenset({1})):
            fake_out = deployed(x).numpy()
    assert np.abs(fake_out - ort).mean() < np.abs(plain - ort).mean()  # nearer ONNX Runtime's than float is


def test_gradients_pass_the_fake_quantization_straight_through():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3)).train()
    fake = FakeQuant(model)
    fake.calibrate(torch.randn(16, 6))
    model(torch.randn(4, 6)).square().sum().backward()
    grads = [m.parametrizations.weight.original.grad for m in fake.layers]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    fake.remove()
    assert all(isinstance(m.weight, nn.Parameter) for m in fake.layers)


def test_qat_runs_when_asked_or_when_int8_loses_more_than_the_tolerance():
    assert not qat_wanted("off", 0.9, 0.1)
    assert qat_wanted("always", 0.9, 0.95)
    assert qat_wanted("auto", 0.90, 0.90 - 2 * INT8_TOLERANCE)
    assert not qat_wanted("auto", 0.90, 0.90 - INT8_TOLERANCE / 2)
    assert not qat_wanted("auto", 0.90, 0.91)
    with pytest.raises(ValueError, match="qat"):
        qat_wanted("sometimes", 0.9, 0.8)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def briefly_trained():
    supernet, data = tiny_supernet(), few_digits(512)
    subnet = supernet.extract(supernet.space.smallest())
    train_standalone(subnet, data, TrainConfig(lr=3e-3), steps=40)
    return DeployedModel.for_data(subnet.eval(), data), data


def test_qat_weights_are_kept_only_when_their_int8_model_is_more_accurate(briefly_trained):
    model, data = briefly_trained
    before = {k: v.clone() for k, v in model.subnet.state_dict().items()}
    off = int8_handover(model, data, FinishConfig(qat="off"))
    assert not off.record["ran"] and off.model is model and off.metrics == {}
    ran = int8_handover(model, data, FinishConfig(qat="always", lr=3e-3), steps=30)
    r = ran.record
    assert r["ran"] and r["steps"] == 30 and r["ptq_val_acc"] == off.record["ptq_val_acc"]
    assert r["kept"] == (r["val_acc"] > r["ptq_val_acc"])
    held = ran.int8.accuracy_and_loss(*stored_rows(data, "val"))[0]
    assert held == (r["val_acc"] if r["kept"] else r["ptq_val_acc"])  # the int8 model handed over is the better
    assert (ran.model is not model) == r["kept"] and bool(ran.metrics) == r["kept"]
    assert all(torch.equal(v, before[k]) for k, v in model.subnet.state_dict().items())  # the input untouched



def test_qat_is_refused_where_it_has_no_effect(trained_run, tmp_path, capsys):
    code = main(["search", "--supernet", str(trained_run), "--budget", "2", "--qat", "always", "--quiet",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("nas: error: --qat has no effect with --precision") and "\n" not in err


def test_an_int8_search_records_qat_in_the_model_folder(trained_run, tmp_path):
    out = tmp_path / "run"
    assert main(["search", "--supernet", str(trained_run), "--budget", "2", "--max-latency-ms", "50", "--precision",
                 "int8", "--target", "onnxruntime", "--finish", "finetune", "--finish-budget", "0.02", "--qat",
                 "always", "--quiet", "--out", str(out)]) == 0
    summary = json.loads((out / "search.json").read_text())
    int8 = summary["chosen"]["int8"]
    assert int8["qat"]["ran"] and int8["qat"]["mode"] == "always"
    assert int8["val_acc"] == (int8["qat"]["val_acc"] if int8["qat"]["kept"] else int8["qat"]["ptq_val_acc"])
    card = (out / summary["chosen"]["path"] / "README.md").read_text()
    assert "Quantization-aware fine-tuning (`--qat always`) ran" in card
    # nas finetune takes --qat too: off, the finished weights' post-training quantization as it is
    assert main(["finetune", str(out), "--finish-budget", "0.02", "--qat", "off", "--quiet", "--out", str(tmp_path / "ft")]) == 0
    meta = json.loads((tmp_path / "ft" / summary["chosen"]["id"] / "model.json").read_text())
    assert meta["int8"]["qat"]["mode"] == "off" and not meta["int8"]["qat"]["ran"]
    assert meta["int8"]["val_acc"] == meta["int8"]["qat"]["ptq_val_acc"]
    # as extracted, nothing is trained: --qat given is refused in one line, nothing written
    assert main(["finetune", str(out), "--finish", "inherit", "--qat", "always", "--quiet",
                 "--out", str(tmp_path / "inherit")]) == 2
    assert not (tmp_path / "inherit").exists()
