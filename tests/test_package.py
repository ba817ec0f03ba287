"""A model folder is a product: the model takes the data as stored (its preprocessing inside), refuses
inputs it does not take, runs the same in torch and ONNX Runtime, describes itself in model.json and
its card (whose code runs), its files follow the umask, and folders of the old format still load."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import nas
from nas.data.datasets import Split, load_data
from nas.errors import UserError
from nas.evaluation.accuracy import evaluate
from nas.evaluation.evaluator import Evaluator
from nas.finish.package import (
    DeployedModel,
    InputError,
    LegacyModelWarning,
    add_baselines,
    describe_model,
    evaluator_costs,
    load_model,
    save_model_folder,
)
from nas.hardware.measure import LatencySettings
from nas.runs.files import write_json
from search_spaces import Arch, HybridSupernet, SearchSpace, SpaceConfig
from tests.helpers import same_weights, stored_digits, subprocess_env, tiny_supernet

METRICS = {"val_acc": 0.5, "test_acc": 0.25}


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def _fit(subnet: torch.nn.Module, data, steps: int = 30) -> torch.nn.Module:
    """A few seeded Adam steps on the standardised training split: well above chance on digits."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(subnet.parameters(), lr=3e-3)
    subnet.train()
    for _ in range(steps):
        idx = torch.randint(0, len(data.train), (128,), generator=generator)
        loss = torch.nn.functional.cross_entropy(subnet(data.train.x[idx]), data.train.y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return subnet.eval()


@pytest.fixture(scope="module")
def packaged(digits, tmp_path_factory):
    """(folder, the bare subnet, the evaluator of its costs): the smallest subnet of the tiny space, trained
    a little, packaged with costs measured by an Evaluator."""
    supernet = tiny_supernet()
    arch = supernet.space.smallest()
    evaluator = Evaluator(supernet, digits, LatencySettings(max_seconds=0.05))
    costs = evaluator_costs(evaluator, evaluator.costs(arch))
    subnet = _fit(supernet.extract(arch), digits)
    folder = tmp_path_factory.mktemp("package") / "models" / arch.id
    save_model_folder(folder, DeployedModel.for_data(subnet, digits), metrics=METRICS, costs=costs,
                      data=digits.describe(), space=supernet.space.config.name)
    return folder, subnet, evaluator


def _session(folder: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])


def test_data_as_stored_gives_the_accuracy_of_the_bare_subnet(packaged, digits):
    folder, subnet, _ = packaged
    model = nas.load_model(folder)
    assert isinstance(model, DeployedModel) and model.standardizes and not model.training
    for split in ("val", "test"):
        stored = stored_digits(digits, split)
        with torch.no_grad():  # the same float32 standardisation as load_data: the same logits, bit for bit
            assert torch.equal(model(stored.x), subnet(getattr(digits, split).x))
        accuracy = evaluate(model, stored)
        assert accuracy == evaluate(subnet, getattr(digits, split)) > 0.5  # a trained model, well above chance
    assert evaluate(model, digits.test) != evaluate(model, stored_digits(digits, "test"))  # not standardised twice


def test_torch_and_onnxruntime_give_the_same_predictions(packaged, digits):
    folder, _, _ = packaged
    model, session = nas.load_model(folder), _session(folder)
    stored = stored_digits(digits, "test").x
    with torch.no_grad():
        expected = model(stored).numpy()
    for batch in (stored.numpy(), stored[:1].numpy()):  # the batch size is free
        got = session.run(None, {"input": batch})[0]
        np.testing.assert_allclose(got, expected[: len(batch)], atol=1e-4, rtol=1e-3)
        assert (got.argmax(1) == expected[: len(batch)].argmax(1)).all()


@pytest.mark.parametrize("make, words", [
    (lambda x: x[:, 0], ["(5, 8, 8)", "(N, 1, 8, 8)", "x[:, None]"]),  # grayscale stored as (N, H, W)
    (lambda x: x.permute(0, 2, 3, 1), ["(5, 8, 8, 1)", "channels first", "x.permute(0, 3, 1, 2)"]),
    (lambda x: torch.zeros(5, 1, 16, 16), ["(5, 1, 16, 16)", "never resizes"]),
    (lambda x: x.repeat(1, 3, 1, 1), ["(5, 3, 8, 8)", "(N, 1, 8, 8)"]),
    (lambda x: x[0], ["(1, 8, 8)", "(N, 1, 8, 8)"]),  # one sample without its batch axis
    (lambda x: x.double(), ["torch.float64", "float32", "x.float()"]),
    (lambda x: (x * 16).to(torch.uint8), ["torch.uint8", "/ 255"]),
    (lambda x: x.numpy(), ["ndarray", "torch.from_numpy"]),
])
def test_inputs_it_does_not_take_are_refused(packaged, digits, make, words):
    model = nas.load_model(packaged[0])
    with pytest.raises(InputError) as info:
        model(make(stored_digits(digits, "test").x[:5]))
    assert isinstance(info.value, ValueError) and isinstance(info.value, UserError)
    message = str(info.value)
    assert all(w in message for w in words), message


def test_onnxruntime_refuses_another_shape_or_dtype(packaged):
    session = _session(packaged[0])
    for x in (np.zeros((2, 1, 16, 16), np.float32), np.zeros((2, 1, 8, 8), np.float64)):
        with pytest.raises(Exception, match=r"(?i)invalid"):
            session.run(None, {"input": x})


def test_model_json_describes_the_model_and_round_trips(packaged, digits, tmp_path):
    folder, subnet, evaluator = packaged
    meta = json.loads((folder / "model.json").read_text())
    assert meta["format_version"] == "2" and meta["id"] == subnet.arch.id == folder.name
    assert Arch.from_dict(meta["arch"]) == subnet.arch and meta["spec"] == subnet.spec.to_dict()
    assert meta["input"] == {"shape": [None, 1, 8, 8], "axes": ["N", "C", "H", "W"], "dtype": "float32",
                             "standardized_inside": True}
    assert meta["labels"] == list(range(10)) and meta["output"]["shape"] == [None, 10]
    assert meta["preprocessing"]["mean"] == pytest.approx(digits.mean, rel=1e-6)
    assert meta["preprocessing"]["std"] == pytest.approx(digits.std, rel=1e-6)
    assert meta["data"] == digits.describe() and meta["data"]["sizes"] == {"train": 1257, "val": 270, "test": 270}
    assert meta["metrics"] == METRICS
    costs = meta["costs"]
    assert costs["params"]["value"] == sum(p.numel() for p in subnet.parameters())
    assert costs["flops"]["value"] == evaluator.supernet.space.count_flops(subnet.arch) > 0
    assert costs["memory_bytes"]["input_shape"] == [1, 1, 8, 8]
    latency = costs["latency_ms"]
    assert latency["value"] > 0 and latency["source"] == "measured" and latency["measured_ms"] == latency["value"]
    assert (latency["target"], latency["threads"], latency["batch"], latency["input_shape"]) == ("cpu", 1, 1, [1, 1, 8, 8])
    assert latency["hardware"]["device"] == "cpu" and "processor" in latency["hardware"]
    assert meta["onnx"]["file"] == "model.onnx" and meta["onnx"]["dynamic_axes"] == {"input": [0], "output": [0]}
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        tensors_meta = fh.metadata()
    assert tensors_meta["format_version"] == "2" and json.loads(tensors_meta["preprocessing"]) == meta["preprocessing"]
    # loaded and saved again: the same description, weights and card
    again = save_model_folder(tmp_path / "again", nas.load_model(folder), metrics=meta["metrics"], costs=meta["costs"],
                              data=meta["data"], space=meta["space"])
    assert json.loads((again / "model.json").read_text()) == meta
    assert (again / "README.md").read_text() == (folder / "README.md").read_text()
    assert same_weights(load_file(str(again / "model.safetensors")), load_file(str(folder / "model.safetensors")))
    assert describe_model(nas.load_model(again), metrics=METRICS, costs=costs, data=meta["data"],
                          space=meta["space"]) == {k: v for k, v in meta.items() if k != "onnx"}


def _code_blocks(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, flags=re.S)


def test_the_card_says_what_the_model_is_and_its_code_runs(packaged):
    folder, subnet, _ = packaged
    card = (folder / "README.md").read_text()
    meta = json.loads((folder / "model.json").read_text())
    for text in (subnet.arch.id, "digits", "(N, 1, 8, 8)", "0.5000", "0.2500", "measured on cpu, 1 thread(s), batch 1",
                 f"{meta['costs']['params']['value']:,}", "multiply-adds", "train 1,257, val 270, test 270",
                 f"fp32: the weights ({4 * meta['costs']['params']['value']:,} bytes: 4 a parameter)"):
        assert text in card, text
    blocks = _code_blocks(card)
    assert len(blocks) == 2 and "import nas" in blocks[0] and not re.search(r"import (nas|torch)", blocks[1])
    printed = []
    for code in blocks:
        proc = subprocess.run([sys.executable, "-c", code], cwd=folder, env=subprocess_env(), capture_output=True,
                              text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
        printed.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    x = np.random.default_rng(0).normal(size=(4, 1, 8, 8)).astype(np.float32)  # the card's example input
    with torch.no_grad():
        expected = nas.load_model(folder)(torch.from_numpy(x)).argmax(1).tolist()
    assert printed == [expected, expected]


def test_the_card_shows_metrics_before_and_after_finishing(packaged, tmp_path):
    folder = packaged[0]
    meta = json.loads((folder / "model.json").read_text())
    metrics = {"val_acc": 0.91, "test_acc": 0.93, "before_finishing": {"val_acc": 0.81, "test_acc": 0.8},
               "finishing": {"method": "fine-tune", "epochs": 10, "seconds": 9.5}}
    out = save_model_folder(tmp_path / "m", nas.load_model(folder), metrics=metrics, costs=meta["costs"],
                            data=meta["data"], space=meta["space"])
    card = (out / "README.md").read_text()
    assert "| inherited from the supernet (before finishing) | 0.8100 | 0.8000 |" in card
    assert "| this model (after finishing) | 0.9100 | 0.9300 |" in card
    assert "method fine-tune, epochs 10, seconds 9.5" in card
    assert json.loads((out / "model.json").read_text())["metrics"] == metrics


def test_baselines_are_added_to_a_written_folder_and_its_card(packaged, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(packaged[0], folder)
    rows = [{"method": "logistic regression", "test_acc": 0.96}, {"method": "RBF SVC", "test_acc": 0.98}]
    add_baselines(folder, {"baselines": rows, "below": True})
    meta = json.loads((folder / "model.json").read_text())
    assert meta["metrics"]["baselines"] == {"test_acc": {"logistic regression": 0.96, "RBF SVC": 0.98}, "below": True}
    card = (folder / "README.md").read_text()
    assert "| baseline: scikit-learn RBF SVC on the flattened inputs, same split | - | 0.9800 |" in card
    assert "**This model is below a scikit-learn baseline on the same split" in card
    assert nas.load_model(folder).arch.id == packaged[1].arch.id  # still loads


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_files_get_the_mode_the_umask_gives(packaged, tmp_path, umask):
    folder = packaged[0]
    meta = json.loads((folder / "model.json").read_text())
    previous = os.umask(umask)
    try:
        out = save_model_folder(tmp_path / "m", nas.load_model(folder), metrics=METRICS, costs=meta["costs"],
                                data=meta["data"], space=meta["space"])
        write_json(tmp_path / "m" / "extra.json", {"a": 1})
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert set(modes) == {"model.safetensors", "model.json", "model.onnx", "README.md", "extra.json"}  # no temporaries
    assert set(modes.values()) == {0o666 & ~umask}, modes
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask


def test_a_folder_of_the_old_format_loads_with_a_warning(packaged, digits, tmp_path):
    _, subnet, _ = packaged
    old = tmp_path / "old"
    old.mkdir()
    save_file(subnet.state_dict(), str(old / "model.safetensors"), metadata={"format": "nas-model"})
    (old / "model.json").write_text(json.dumps({  # what nas.runs.files.save_model wrote
        "format_version": "1", "id": subnet.arch.id, "arch": subnet.arch.to_dict(), "spec": subnet.spec.to_dict(),
        "metrics": METRICS, "data": digits.describe(), "space": "tiny"}))
    with pytest.warns(LegacyModelWarning, match="without its preprocessing"):
        model = load_model(old)
    assert not model.standardizes and model.labels == tuple(range(10))
    with torch.no_grad():  # it takes standardised inputs, as before
        assert torch.equal(model(digits.test.x), subnet(digits.test.x))


def test_bad_folders_are_named(packaged, tmp_path):
    folder, _, _ = packaged
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    meta = json.loads((folder / "model.json").read_text())
    for edit, message in [({"format_version": "9"}, "format_version '9'"),
                          ({"preprocessing": {"mean": [0.0]}}, "is invalid"),
                          ({"preprocessing": meta["preprocessing"] | {"std": [0.0]}}, "std finite and > 0"),
                          ({"labels": []}, "labels")]:
        (bad / "model.json").write_text(json.dumps(meta | edit))
        with pytest.raises(UserError, match=re.escape(message)):
            load_model(bad)


MICRO_SEQ = {  # a small sequence space of 3-channel inputs, 24 steps
    "name": "micro-seq", "dims": 1, "in_channels": 3, "num_classes": 4, "input_size": 24, "resolutions": [24],
    "stem_widths": [8], "stages": [{"depths": [1, 2], "widths": [8, 16], "strides": [1, 2],
                                    "block_types": ["conv", "attn"]}],
    "kernels": [3], "expand_ratios": [2], "mixers": ["softmax"], "heads": [2], "mlp_ratios": [2], "head_dim": 4,
    "window": 4, "layout": "free",
}


def test_a_sequence_model_takes_channels_first_and_exports(tmp_path):
    torch.manual_seed(0)
    supernet = HybridSupernet(SearchSpace(SpaceConfig.from_dict(MICRO_SEQ)))
    subnet = supernet.extract(supernet.space.largest()).eval()
    model = DeployedModel(subnet, mean=[0.5, -1.0, 2.0], std=[1.0, 2.0, 0.5], labels=["a", "b", "c", "d"])
    x = torch.randn(6, 3, 24)
    with torch.no_grad():
        torch.testing.assert_close(model(x), subnet((x - model.mean) / model.std))
    with pytest.raises(InputError, match=re.escape("x.permute(0, 2, 1)")):
        model(x.permute(0, 2, 1))
    with pytest.raises(InputError, match=re.escape("(N, C, T) = (N, 3, 24)")):
        model(torch.randn(6, 3, 40))  # another length: refused, never resampled
    data = {"name": "toy", "sizes": {"train": 6, "val": 6, "test": 6}, "num_classes": 4, "in_channels": 3,
            "input_size": 24, "dims": 1}
    costs = {"params": {"value": 1, "how": "exact count"}}
    folder = save_model_folder(tmp_path / "m", model, metrics=METRICS, costs=costs, data=data, space="micro-seq")
    loaded = nas.load_model(folder)
    assert loaded.labels == ("a", "b", "c", "d")
    with torch.no_grad():
        expected = loaded(x).numpy()
    np.testing.assert_allclose(_session(folder).run(None, {"input": x.numpy()})[0], expected, atol=1e-4, rtol=1e-3)
    assert "sequence classifier" in (folder / "README.md").read_text()


def test_deployed_model_rejects_bad_preprocessing():
    subnet = HybridSupernet(SearchSpace(SpaceConfig.from_dict(MICRO_SEQ))).extract(
        SearchSpace(SpaceConfig.from_dict(MICRO_SEQ)).smallest())
    with pytest.raises(ValueError, match="one value per input channel"):
        DeployedModel(subnet, mean=[0.0], std=[1.0], labels=range(4))
    with pytest.raises(ValueError, match="together"):
        DeployedModel(subnet, mean=[0.0] * 3, std=None, labels=range(4))
    with pytest.raises(ValueError, match="labels"):
        DeployedModel(subnet, mean=None, std=None, labels=range(5))


def test_stored_digits_undo_the_standardisation_exactly(digits):
    """stored_digits undoes load_data exactly (the test data of the tests above is the data as stored)."""
    stored = stored_digits(digits, "train")
    again = (stored.x - torch.tensor(digits.mean).float().view(1, -1, 1, 1)) / torch.tensor(digits.std).float().view(1, -1, 1, 1)
    assert torch.equal(again, digits.train.x) and isinstance(stored, Split)
    assert torch.equal(stored.x * 16, torch.round(stored.x * 16)) and stored.x.min() == 0 and stored.x.max() == 1
