"""Tests for nas.targets: ONNX export checked against torch, latency per target, the shared stopping rule."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn

from nas.errors import UserError
from nas.hardware.measure import Latency
from nas.hardware.targets import TARGETS, export_onnx, measure_on_target
from search_spaces import HybridSupernet, get_space
from search_spaces.mixers import TOKEN_MIXERS

TINY_SHAPE = (1, 1, 8, 8)


def _conv(kernel: int = 3, expand: int = 2) -> dict:
    return {"type": "conv", "kernel": kernel, "expand": expand}


def _attn(mixer: str, heads: int = 2, mlp_ratio: int = 2) -> dict:
    return {"type": "attn", "mixer": mixer, "heads": 0 if mixer == "pool" else heads, "mlp_ratio": mlp_ratio}


def _tiny_arch(resolution: int, stride1: int, stage1: list[dict], stage2: list[dict]) -> dict:
    return {
        "resolution": resolution, "stem_width": 16,
        "stages": [
            {"width": 16, "stride": 1, "blocks": [_conv()]},
            {"width": 24, "stride": stride1, "blocks": stage1},
            {"width": 32, "stride": 2, "blocks": stage2},
        ],
    }  # fmt: skip


# Every mixer, every resolution (8 = no resize, 10 and 12 = bilinear upsampling), and window
# attention on grids that need padding and a key mask (10x10 and 6x6 with window 4).
TINY_ARCHS = {
    "softmax-8": _tiny_arch(8, 1, [_conv(5, 3), _attn("softmax")], [_attn("softmax", 4)]),
    "linear-10": _tiny_arch(10, 1, [_attn("linear", 1)], [_attn("linear"), _attn("linear", 4, 3)]),
    "window-10-padded": _tiny_arch(10, 1, [_conv(7, 4), _attn("window")], [_attn("window", 1), _attn("window")]),
    "pool-12": _tiny_arch(12, 2, [_attn("pool")], [_attn("pool", mlp_ratio=4)]),
    "all-mixers-12": _tiny_arch(12, 2, [_conv(), _attn("window")], [_attn("softmax"), _attn("linear"), _attn("pool")]),
}


@pytest.fixture(scope="module")
def tiny() -> tuple:
    space = get_space("tiny")
    torch.manual_seed(0)
    return space, HybridSupernet(space)


def _subnet(tiny: tuple, name: str = "all-mixers-12") -> nn.Module:
    space, supernet = tiny
    return supernet.extract(space.parse(TINY_ARCHS[name]))


def test_tiny_archs_cover_every_mixer_and_resolution(tiny: tuple) -> None:
    space = tiny[0]
    archs = [space.parse(a) for a in TINY_ARCHS.values()]
    assert {b.mixer for a in archs for b in a.blocks if hasattr(b, "mixer")} == set(TOKEN_MIXERS)
    assert {a.resolution for a in archs} == set(space.config.resolutions)


def _assert_ort_matches_torch(path, model: nn.Module, shape: tuple[int, ...]) -> None:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(TINY_ARCHS))
def test_onnx_export_matches_torch_tiny(tiny: tuple, name: str, tmp_path) -> None:
    model = _subnet(tiny, name)
    path = export_onnx(model, TINY_SHAPE, tmp_path / "sub" / "model.onnx", dynamic_batch=True)
    assert path.is_file()
    _assert_ort_matches_torch(path, model, (3, 1, 8, 8))  # another batch size than the traced one


def test_onnx_export_matches_torch_cifar(tmp_path) -> None:
    space = get_space("cifar")
    torch.manual_seed(0)
    model = HybridSupernet(space).extract(space.sample(np.random.default_rng(0)))
    shape = (2, 3, 32, 32)
    path = export_onnx(model, shape, tmp_path / "cifar.onnx")
    _assert_ort_matches_torch(path, model, shape)


def test_export_is_quiet(tiny: tuple, tmp_path, capfd) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(_subnet(tiny), TINY_SHAPE, tmp_path / "m.onnx")
    assert [str(w.message) for w in caught] == []
    assert capfd.readouterr() == ("", "")


class DataDependent(nn.Module):
    """Traced on zeros, so the export keeps the `x + 1` branch that torch takes only for zeros."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1 if bool((x == 0).all()) else x


def test_export_mismatch_names_the_difference(tmp_path) -> None:
    with pytest.raises(UserError, match=r"max abs difference 1 > tolerance"):
        export_onnx(DataDependent(), (1, 4), tmp_path / "m.onnx")
    with pytest.raises(UserError, match=r"max abs difference 1 > tolerance"):
        measure_on_target(DataDependent(), (1, 4), target="onnxruntime")


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "params": [(id(p), p.requires_grad, p.device, p.dtype) for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()],
    }


def test_callers_model_is_unchanged(tiny: tuple, tmp_path) -> None:
    model = _subnet(tiny, "window-10-padded").train()
    model.stages[0].eval()  # mixed modes must survive
    model.stem.conv.weight.requires_grad_(False)
    model.head.register_forward_hook(lambda *_: None)
    before, threads = _snapshot(model), torch.get_num_threads()
    measure_on_target(model, TINY_SHAPE, target="onnxruntime", min_repeats=2, max_repeats=4, warmup=1)
    export_onnx(model, TINY_SHAPE, tmp_path / "m.onnx", dynamic_batch=True)
    after = _snapshot(model)
    assert after["params"] == before["params"]
    assert after["training"] == before["training"] and after["hooks"] == before["hooks"]
    assert all(torch.equal(v, before["state"][k]) for k, v in after["state"].items())
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("target", ["cpu", "onnxruntime"])
def test_measure_on_target_latency(tiny: tuple, target: str) -> None:
    lat = measure_on_target(_subnet(tiny), (2, 1, 8, 8), target=target, threads=1, warmup=2,
                            min_repeats=5, max_repeats=30, max_seconds=0.5)
    assert isinstance(lat, Latency)
    assert 0 < lat.median_ms < 1000 and lat.iqr_ms >= 0
    assert 5 <= lat.repeats <= 30
    assert (lat.batch_size, lat.threads) == (2, 1)
    assert lat.device == {"cpu": "cpu", "onnxruntime": "onnxruntime-cpu"}[target]


def test_onnxruntime_records_its_threads() -> None:
    lat = measure_on_target(nn.Linear(8, 8), (3, 8), target="onnxruntime", threads=2, min_repeats=2, max_repeats=4)
    assert (lat.batch_size, lat.threads, lat.device) == (3, 2, "onnxruntime-cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_measure_on_cuda() -> None:
    lat = measure_on_target(nn.Linear(8, 8), (2, 8), target="cuda", min_repeats=2, max_repeats=4)
    assert lat.device.startswith("cuda") and lat.median_ms > 0


def test_bad_requests_are_user_errors(monkeypatch) -> None:
    model = nn.Linear(4, 4)
    assert TARGETS == ("cpu", "cuda", "onnxruntime")
    with pytest.raises(UserError, match="unknown target 'tpu'; choose one of cpu, cuda, onnxruntime"):
        measure_on_target(model, (1, 4), target="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            measure_on_target(model, (1, 4), target="cuda")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"'onnxruntime' is not installed; .*pip install onnx onnxruntime"):
        measure_on_target(model, (1, 4), target="onnxruntime")
    with pytest.raises(ValueError, match="threads"):
        measure_on_target(model, (1, 4), target="cpu", threads=0)


