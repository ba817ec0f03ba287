"""Every token mixer, through its one entry of `search_spaces.mixers.TOKEN_MIXERS`: the forward on
image grids and sequences (windows padded or not), multiply-adds equal to fvcore's, the activation
estimate against a measurement, q/k/v weights exactly where the entry says, and the supernet equal
to the extracted model in a space that uses it.

The `mixer` fixture runs each test over the table plus a throwaway entry (sigmoid attention),
registered for the test and removed after it: adding a mixer is one entry, and these tests check it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.hardware.measure import count_flops, count_params, measure_peak_memory_cpu
from search_spaces import ArchError, AttnBlock, BlockSpec, HybridSupernet, ModelSpec, SearchSpace, SpaceConfig
from search_spaces.blocks import (
    block_input_shape,
    block_macs,
    block_params,
    build_block,
    unit_activation_elements,
    unit_of,
)
from search_spaces.mixers import TOKEN_MIXERS, MixerShape, TokenMixer, pool_mixer, register_mixer, window_attention
from search_spaces.presets import SEQ, TINY

WIDTH, HEADS, HEAD_DIM, WINDOW, MLP_RATIO = 16, 3, 8, 4, 2.5
# (resolution, dims): window 4 fits a 4x4 grid, pads 6x6 to 8x8 and 13 tokens to 16; 3 tokens < window
GRIDS = [(4, 2), (6, 2), (13, 1), (3, 1)]


def sigmoid_attention(q: Tensor, k: Tensor, v: Tensor, height: int, width: int, window: int) -> Tensor:
    # q, k, v: (B, heads, N, head_dim); the sigmoid of the scaled scores (B, heads, N, N) instead of their softmax
    return torch.sigmoid(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5) @ v


def _sigmoid_peak(s: MixerShape) -> int:
    scores = s.heads * s.tokens**2  # two score matrices (raw and scaled, scaled and sigmoid), or one and the output
    return 3 * s.attn_width * s.tokens + max(2 * scores, scores + s.attn_width * s.tokens)


# All it takes to add an attention type (registered only inside the tests that use it).
SIGMOID = TokenMixer(
    name="sigmoid",
    attend=sigmoid_attention,
    macs=lambda s: 2 * s.heads * s.tokens**2 * s.head_dim,  # QK^T and scores @ V
    peak_elements=_sigmoid_peak,
)


@contextlib.contextmanager
def registered(mixer: TokenMixer) -> Iterator[TokenMixer]:
    register_mixer(mixer)
    try:
        yield mixer
    finally:
        TOKEN_MIXERS.remove(mixer.name)


@pytest.fixture(params=[*TOKEN_MIXERS.names(), SIGMOID.name])
def mixer(request: pytest.FixtureRequest) -> Iterator[TokenMixer]:
    if request.param == SIGMOID.name:
        with registered(SIGMOID):
            yield SIGMOID
    else:
        yield TOKEN_MIXERS.get(request.param)


def _unit(mixer: TokenMixer, resolution: int, dims: int) -> BlockSpec:
    """The transformer unit of `mixer` on a grid, built by the same rule as every subnet's units."""
    spec = ModelSpec(in_channels=1, num_classes=2, input_size=resolution, head_dim=HEAD_DIM, window=WINDOW,
                     stem_stride=1, dims=dims)
    block = AttnBlock(mixer.name, HEADS if mixer.has_qkv else 0, MLP_RATIO)
    return unit_of(block, WIDTH, resolution, spec)


class _MixerAlone(nn.Module):
    """The mixer's forward alone: q, k, v all the input (B, heads, N, head_dim), or the grid (B, C, ...)."""

    def __init__(self, mixer: TokenMixer, height: int, width: int, window: int):
        super().__init__()
        self.mixer, self.grid = mixer, (height, width, window)

    def forward(self, x: Tensor) -> Tensor:
        if self.mixer.attend is not None:
            return self.mixer.attend(x, x, x, *self.grid)
        assert self.mixer.mix is not None
        return self.mixer.mix(x)


def _mixer_input_shape(unit: BlockSpec, batch: int) -> tuple[int, ...]:
    s = unit.mixer_shape
    if TOKEN_MIXERS.get(unit.mixer).has_qkv:
        return (batch, s.heads, s.tokens, s.head_dim)
    return block_input_shape(unit, batch)


@pytest.mark.parametrize(("resolution", "dims"), GRIDS)
def test_forward_keeps_the_shape_and_stays_finite(mixer, resolution, dims):
    unit = _unit(mixer, resolution, dims)
    torch.manual_seed(0)
    x = torch.randn(_mixer_input_shape(unit, 2))
    out = _MixerAlone(mixer, *unit.grid, unit.window)(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    block = build_block(unit)
    x = torch.randn(block_input_shape(unit, 2), requires_grad=True)
    out = block(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in block.parameters())


def test_tokens_mix_across_the_grid(mixer):
    """A change at one token reaches another token of its window (or of the sequence)."""
    unit = _unit(mixer, 4, 2)
    block = build_block(unit).eval()
    torch.manual_seed(1)
    x = torch.randn(block_input_shape(unit, 1))
    y = x.clone()
    y[..., 0, 0] += 1.0
    with torch.no_grad():
        changed = (block(x) - block(y)).abs()[0].sum(0)  # (H, W)
    assert changed[1, 2] > 0  # beyond the reach of the 3x3 positional convolution from (0, 0)


@pytest.mark.parametrize(("resolution", "dims"), GRIDS)
def test_macs_equal_fvcore(mixer, resolution, dims):
    unit = _unit(mixer, resolution, dims)
    alone = _MixerAlone(mixer, *unit.grid, unit.window)
    assert mixer.macs(unit.mixer_shape) == count_flops(alone, _mixer_input_shape(unit, 1))
    assert block_macs(unit) == count_flops(build_block(unit), block_input_shape(unit, 1))


@pytest.mark.parametrize(("resolution", "dims"), GRIDS)
def test_memory_estimate_matches_measurement(mixer, resolution, dims):
    unit = _unit(mixer, resolution, dims)
    estimate = 4 * (block_params(unit) + 2 * unit_activation_elements(unit))
    measured = measure_peak_memory_cpu(build_block(unit), block_input_shape(unit, 2))
    assert abs(estimate / measured - 1) < 0.05, (estimate, measured)


def test_qkv_weights_exactly_where_the_entry_says(mixer):
    unit = _unit(mixer, 6, 2)
    block = build_block(unit)
    layers = {name.split(".")[0] for name, _ in block.named_parameters()}
    assert ("qkv" in layers) is ("proj" in layers) is mixer.has_qkv
    assert block_params(unit) == count_params(block)
    assert (unit.heads, unit.head_dim) == ((HEADS, HEAD_DIM) if mixer.has_qkv else (0, 0))
    assert unit.window == (WINDOW if mixer.uses_window else 0)
    with pytest.raises(ArchError, match="heads"):
        AttnBlock(mixer.name, 0 if mixer.has_qkv else 2, 2)


@pytest.mark.parametrize("base", [TINY, SEQ], ids=["images", "sequences"])
def test_supernet_equals_the_extracted_model(mixer, base):
    """In a space whose transformer blocks choose between `mixer`, softmax and pool (shared q/k/v),
    the supernet computes what the extracted model computes, and the analytic costs are fvcore's."""
    mixers = tuple(dict.fromkeys((mixer.name, "softmax", "pool")))
    space = SearchSpace(replace(base, name=f"with-{mixer.name}", mixers=mixers, layout="free"))
    torch.manual_seed(2)
    supernet = HybridSupernet(space).eval()
    spec = ModelSpec.from_config(space.config)
    rng = np.random.default_rng(3)
    archs = [a for a in space.smallest_variants() if any(getattr(b, "mixer", "") == mixer.name for b in a.blocks)]
    assert archs  # every transformer block on `mixer`
    archs += [space.sample(rng) for _ in range(3)]
    x = torch.randn(spec.input_shape(2))
    for arch in archs:
        model = supernet.extract(arch).eval()
        with torch.no_grad():
            torch.testing.assert_close(supernet(x, arch), model(x), rtol=1e-5, atol=1e-5)
        assert space.count_flops(arch) == count_flops(model, spec.input_shape(1)), arch.to_json()
        assert space.count_params(arch) == count_params(model)
        assert space.encode(arch).shape == (len(space.encode(space.largest())),)


def test_an_unknown_mixer_is_refused_with_the_choices():
    names = TOKEN_MIXERS.names()
    for make in (lambda: AttnBlock("fft", 2, 2), lambda: BlockSpec("attn", 8, 8, 4, 4, mixer="fft"),
                 lambda: SpaceConfig(**{**TINY.to_dict(), "mixers": ["softmax", "fft"]})):
        with pytest.raises(ArchError, match="fft") as refused:
            make()
        assert all(repr(n) in str(refused.value) for n in names), str(refused.value)


def test_adding_a_mixer_is_one_entry():
    before = TOKEN_MIXERS.names()
    base = SearchSpace(replace(TINY, name="two", mixers=("softmax", "pool")))
    width = len(base.encode(base.largest()))
    with registered(SIGMOID):
        assert TOKEN_MIXERS.names() == [*before, "sigmoid"]  # last: the built-ins keep their encoding columns
        space = SearchSpace(replace(TINY, name="three", mixers=("softmax", "pool", "sigmoid")))
        assert {b.mixer for b in space.block_options("attn")} == {"softmax", "pool", "sigmoid"}
        assert len(base.encode(base.largest())) == width + _slots(base)  # one more one-hot column per block slot
        with pytest.raises(ValueError, match="already registered"):
            register_mixer(SIGMOID)
    assert TOKEN_MIXERS.names() == before
    with pytest.raises(ArchError, match="mixer must be one of"):
        AttnBlock("sigmoid", 2, 2)
    with pytest.raises(ValueError, match="exactly one of attend"):
        TokenMixer(name="both", attend=sigmoid_attention, mix=pool_mixer, macs=lambda s: 0, peak_elements=lambda s: 0)


def _slots(space: SearchSpace) -> int:
    """Block slots of the encoding: each has one column per registered mixer."""
    return sum(max(s.depths) for s in space.config.stages)


def test_window_attention_over_time_is_softmax_inside_each_window():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 2, 13, 4).unbind(0)  # (B, heads, T, head_dim); 13 steps pad to 4 windows of 4
    out = window_attention(q, k, v, 1, 13, 4)
    for start in range(0, 13, 4):
        s = slice(start, min(start + 4, 13))
        expected = F.scaled_dot_product_attention(q[:, :, s], k[:, :, s], v[:, :, s])
        torch.testing.assert_close(out[:, :, s], expected)
