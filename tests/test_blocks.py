"""Units of a subnet and their analytic costs: FLOPs equal fvcore's, parameters, peak memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from nas.hardware.measure import count_flops, count_params, measure_peak_memory_cpu, measure_peak_memory_cuda
from search_spaces import ArchError, ModelSpec, SubnetModel, get_space, list_spaces
from search_spaces.blocks import (
    BlockSpec,
    block_input_shape,
    block_macs,
    block_params,
    block_specs,
    build_block,
    count_macs,
    peak_memory_bytes,
)
from search_spaces.mixers import TOKEN_MIXERS, MixerShape

ARCHS_PER_SPACE = {"tiny": 8, "cifar": 4, "imagenet": 2, "seq": 8}  # plus the largest subnet


def _archs(name: str, n: int, seed: int = 0):
    space = get_space(name)
    rng = np.random.default_rng(seed)
    return space, [space.sample(rng) for _ in range(n)]


@pytest.mark.parametrize("name", list_spaces())
def test_analytic_flops_equal_fvcore(name):
    space, archs = _archs(name, ARCHS_PER_SPACE[name])
    spec = ModelSpec.from_config(space.config)
    shape = spec.input_shape(1)
    for arch in [*archs, space.largest()]:
        assert space.count_flops(arch) == count_flops(SubnetModel(spec, arch), shape), arch.to_json()


def test_analytic_flops_scale_with_batch_and_smallest_variant():
    space = get_space("tiny")
    spec = ModelSpec.from_config(space.config)
    arch = space.smallest()
    assert count_macs(spec, arch, batch=3) == 3 * space.count_flops(arch) == count_flops(SubnetModel(spec, arch), (3, 1, 8, 8))


@pytest.mark.parametrize("mixer", ["softmax", "linear", "window", "pool"])
@pytest.mark.parametrize(("res", "dims"), [(4, 2), (6, 2), (6, 1), (13, 1)])
def test_every_unit_kind_matches_fvcore(mixer, res, dims):
    """One transformer unit per mixer (window 4 pads a 6x6 grid to 8x8, 13 tokens to 16), plus conv,
    down, resize, head; on images (dims 2) and sequences (dims 1)."""
    attn = mixer != "pool"
    units = [
        BlockSpec("attn", 16, 16, res, res, hidden=40, mixer=mixer, heads=3 if attn else 0,
                  head_dim=8 if attn else 0, window=4 if mixer == "window" else 0, dims=dims),
        BlockSpec("conv", 16, 16, res, res, kernel=5, hidden=48, dims=dims),
        BlockSpec("down", 8, 16, res, (res - 1) // 2 + 1, stride=2, kernel=3, dims=dims),
        BlockSpec("stem", 3, 8, res, res, stride=1, kernel=3, dims=dims),
        BlockSpec("resize", 3, 3, 8, res, dims=dims),
        BlockSpec("head", 16, 10, res, 0, dims=dims),
    ]
    for b in units:
        module = build_block(b)
        assert block_macs(b) == count_flops(module, block_input_shape(b, 1)), b
        assert block_params(b) == count_params(module), b


class _Mixer(nn.Module):
    def __init__(self, mixer: str, size: int, window: int):
        super().__init__()
        self.mixer, self.size, self.window = mixer, size, window

    def forward(self, q):  # q: (B, heads, N, head_dim), used as q, k and v
        return TOKEN_MIXERS.get(self.mixer).attend(q, q, q, self.size, self.size, self.window)


@pytest.mark.parametrize("size", [4, 6, 7])
def test_attention_flops_match_hand_formulas(size):
    heads, d, window = 2, 8, 4
    n = size * size
    padded = (-(-size // window) * window) ** 2  # the grid padded to whole 4x4 windows
    hand = {
        "softmax": heads * n * n * d + heads * n * n * d,  # QK^T, then attn @ V
        "linear": heads * d * n * d + heads * n * d + heads * n * d * d,  # k^T v, q . sum(k), q (k^T v)
        "window": 2 * heads * padded * window * window * d,  # per padded window of 16 tokens
    }
    for mixer, expected in hand.items():
        assert TOKEN_MIXERS.get(mixer).macs(MixerShape(16, heads, d, size, size, window)) == expected
        assert count_flops(_Mixer(mixer, size, window), (1, heads, n, d)) == expected
    assert TOKEN_MIXERS.get("pool").macs(MixerShape(16, 0, 0, size, size, 0)) == 0


@pytest.mark.parametrize("name", list_spaces())
def test_unit_params_sum_to_count_params(name):
    space, archs = _archs(name, 20, seed=1)
    spec = ModelSpec.from_config(space.config)
    for arch in [*archs, space.largest(), space.smallest()]:
        assert sum(block_params(b) for b in block_specs(spec, arch)) == space.count_params(arch)


def test_units_chain_into_the_subnet():
    space, archs = _archs("tiny", 5, seed=2)
    spec = ModelSpec.from_config(space.config)
    for arch in archs:
        units = block_specs(spec, arch)
        x = torch.zeros(spec.input_shape(2))
        with torch.no_grad():
            for b in units:
                assert tuple(x.shape) == block_input_shape(b, 2), b
                x = build_block(b)(x)
        assert tuple(x.shape) == (2, spec.num_classes)
        model_params = count_params(SubnetModel(spec, arch))
        assert sum(count_params(build_block(b)) for b in units) == model_params


def test_block_spec_json_round_trip_and_errors():
    space = get_space("tiny")
    units = space.units()
    for b in units:
        again = BlockSpec.from_dict(json.loads(json.dumps(b.to_dict())))
        assert again == b and hash(again) == hash(b)
    good = units[0].to_dict()
    with pytest.raises(ArchError, match="unknown key"):
        BlockSpec.from_dict(good | {"colour": 1})
    with pytest.raises(ArchError, match="in_channels"):
        BlockSpec.from_dict(good | {"in_channels": -1})
    with pytest.raises(ArchError, match="kind"):
        BlockSpec.from_dict(good | {"kind": "lstm"})
    with pytest.raises(ArchError, match="mixer"):
        BlockSpec("conv", 8, 8, 4, 4, mixer="softmax")


@pytest.mark.parametrize("name", list_spaces())
def test_space_units_cover_every_subnet(name):
    space, archs = _archs(name, 300, seed=3)
    spec = ModelSpec.from_config(space.config)
    units = set(space.units())
    for arch in [*archs, space.largest(), *space.smallest_variants()]:
        assert set(block_specs(spec, arch)) <= units


@pytest.mark.parametrize("name,batch", [("tiny", 1), ("tiny", 3), ("cifar", 2)])
def test_peak_memory_estimate_matches_cpu_measurement(name, batch):
    space, archs = _archs(name, 6, seed=4)
    spec = ModelSpec.from_config(space.config)
    shape = spec.input_shape(batch)
    for arch in [*archs, space.largest(), space.smallest()]:
        estimate, measured = peak_memory_bytes(spec, arch, batch), measure_peak_memory_cpu(SubnetModel(spec, arch), shape)
        assert abs(estimate / measured - 1) < 0.05, (arch.to_json(), estimate, measured)
        assert estimate > 4 * space.count_params(arch)
    arch = space.largest()
    assert space.peak_memory_bytes(arch, 4) > space.peak_memory_bytes(arch, 1) > space.peak_memory_bytes(space.smallest(), 1)




@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_peak_memory_estimate_against_cuda():
    space, archs = _archs("cifar", 3, seed=5)
    spec = ModelSpec.from_config(space.config)
    for arch in archs:
        measured = measure_peak_memory_cuda(SubnetModel(spec, arch), (8, 3, 32, 32))
        assert 0.5 < peak_memory_bytes(spec, arch, 8) / measured < 2.0
