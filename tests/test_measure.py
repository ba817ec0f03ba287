"""Tests for nas.costs: parameter/MAC counting, latency measurement, hardware info."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.hardware.measure import (
    Latency,
    count_flops,
    count_params,
    describe_hardware,
    measure_latency,
    measure_peak_memory_cpu,
    time_until_stable,
)


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.head = nn.Linear(4, 7, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(x))


class Attn(nn.Module):
    """Linear projections + SDPA on (B, H, L, E) inputs."""

    def __init__(self, dim: int = 8, masked: bool = False) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.masked = masked
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        length = x.shape[-2]
        mask = torch.ones(length, length, dtype=torch.bool).tril() if self.masked else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return F.elu(self.drop(self.proj(out)) * 2.0 + x)


class EinsumMix(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, L, 8)
        y = torch.einsum("bld,de->ble", x, self.w)  # B*L*8*5
        g = torch.einsum("ble,bme->blm", y, y)  # B*L*L*5
        return g @ y  # B*L*L*5 via matmul


def _hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def test_count_params_linear_and_tied() -> None:
    assert count_params(nn.Linear(10, 5)) == 55
    assert count_params(TiedLM()) == 7 * 4
    shared = nn.Linear(3, 3)
    assert count_params(nn.Sequential(shared, nn.ReLU(), shared)) == 12


def test_count_flops_linear_and_conv() -> None:
    assert count_flops(nn.Linear(10, 5), (1, 10)) == 50
    conv = nn.Conv2d(3, 16, kernel_size=3, stride=2, padding=1, bias=True)
    h_out = w_out = (32 + 2 - 3) // 2 + 1
    assert count_flops(conv, (2, 3, 32, 32)) == 2 * 16 * h_out * w_out * 3 * 3 * 3


@pytest.mark.parametrize("masked", [False, True])
def test_count_flops_sdpa(masked: bool) -> None:
    b, h, length, e = 2, 4, 16, 8
    tokens = b * h * length
    linear_macs = tokens * e * 3 * e + tokens * e * e
    sdpa_macs = b * h * length * length * e * 2
    assert count_flops(Attn(e, masked=masked), (b, h, length, e)) == linear_macs + sdpa_macs


def test_count_flops_einsum_and_matmul() -> None:
    b, length = 3, 6
    expected = b * length * 8 * 5 + 2 * b * length * length * 5
    assert count_flops(EinsumMix(), (b, length, 8)) == expected


def test_count_flops_does_not_mutate_model() -> None:
    model = nn.Sequential(Attn(8), nn.Sequential(nn.Linear(8, 8), nn.GELU()))
    model.train()
    model[1].eval()  # mixed modes must survive
    before = [m.training for m in model.modules()]
    n_hooks = _hook_count(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    count_flops(model, (1, 2, 4, 8))
    assert [m.training for m in model.modules()] == before
    assert _hook_count(model) == n_hooks == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


def test_count_flops_removes_hooks_on_failure() -> None:
    model = nn.Linear(4, 4)
    with pytest.raises(RuntimeError):
        count_flops(model, (1, 5))  # wrong feature size
    assert _hook_count(model) == 0
    assert model.training


def test_measure_latency_contract() -> None:
    model = nn.Sequential(nn.Linear(16, 16), nn.Dropout(0.1))
    model.train()
    threads_before = torch.get_num_threads()
    lat = measure_latency(model, (4, 16), threads=1, min_repeats=5, max_repeats=40, max_seconds=1.0)
    assert isinstance(lat, Latency)
    assert lat.median_ms > 0 and lat.iqr_ms >= 0
    assert 5 <= lat.repeats <= 40
    assert lat.batch_size == 4 and lat.threads == 1 and lat.device == "cpu"
    assert torch.get_num_threads() == threads_before
    assert model.training and all(m.training for m in model.modules())
    assert json.loads(json.dumps(lat.to_dict()))["repeats"] == lat.repeats


def test_measure_latency_orders_models() -> None:
    big = nn.Sequential(*[nn.Linear(512, 512) for _ in range(8)])
    small = nn.Linear(16, 16)
    t_big = measure_latency(big, (32, 512), max_repeats=60, max_seconds=1.5).median_ms
    t_small = measure_latency(small, (32, 16), max_repeats=60, max_seconds=1.5).median_ms
    assert t_big / t_small > 2


def test_describe_hardware_json() -> None:
    info = describe_hardware()
    assert json.loads(json.dumps(info)) == info
    assert info["torch_version"] == torch.__version__
    assert isinstance(info["logical_cores"], int)


def test_time_until_stable_stopping_rule() -> None:
    stable = time_until_stable(lambda: 1.0, min_repeats=5, max_repeats=100, max_seconds=10, rel_tol=0.02)
    assert len(stable) == 10  # two rounds with the same median
    ticks = iter(range(1, 10_000))
    growing = time_until_stable(lambda: float(next(ticks)), min_repeats=5, max_repeats=23, max_seconds=10, rel_tol=0.02)
    assert len(growing) == 23  # the median never settles: capped by max_repeats
    with pytest.raises(ValueError):
        time_until_stable(lambda: 1.0, min_repeats=0, max_repeats=5, max_seconds=1, rel_tol=0.02)
    lat = Latency.from_samples([1.0, 2.0, 3.0, 4.0, 5.0], batch_size=1, threads=1, device="cpu")
    assert (lat.median_ms, lat.iqr_ms, lat.repeats) == (3.0, 2.0, 5)


def test_measure_peak_memory_cpu_leaves_model_alone():
    model = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 4)).train()
    peak = measure_peak_memory_cpu(model, (8, 16))
    weights = 4 * count_params(model)
    # weights + input + (first output and its GELU alive together)
    assert peak == weights + 4 * 8 * 16 + 4 * 2 * 8 * 64
    assert model.training
