"""Static subnets: plain torch layers only, what `extract` returns and `nas.load_model` rebuilds.

The block computations are written once (`conv_block_forward`, `attn_block_forward`) against
callables; the static blocks pass their `nn.Conv2d`/`nn.Linear`/norm modules and the supernet
passes its elastic layers with the sizes bound, so both run exactly the same math.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces.arch import Arch, ArchError, AttnBlock, ConvBlock
from search_spaces.config import SpaceConfig, hidden_width, scaled_resolution
from search_spaces.mixers import TOKEN_MIXERS, has_qkv

Op = Callable[[Tensor], Tensor]


def conv_block_forward(x: Tensor, pw1: Op, n1: Op, dw: Op, n2: Op, pw2: Op, n3: Op) -> Tensor:
    # x: (B, C, H, W) or (B, C, T) -> expand -> depthwise -> project, residual
    y = F.gelu(n1(pw1(x)))
    y = F.gelu(n2(dw(y)))
    return x + n3(pw2(y))


def attn_block_forward(
    x: Tensor, *, cpe: Op, norm1: Op, qkv: Op | None, proj: Op | None, norm2: Op, fc1: Op, fc2: Op,
    mixer: str, heads: int, head_dim: int, window: int,
) -> Tensor:
    token_mixer = TOKEN_MIXERS.get(mixer)
    x = x + cpe(x)  # conditional positional encoding (depthwise 3x3 or 3, CPVT)
    b, c, *grid = x.shape  # grid: [H, W], or [T] for a sequence (a grid of height 1)
    h, w = grid if len(grid) == 2 else (1, grid[0])
    t = x.flatten(2).transpose(1, 2)  # (B, N, C)
    if token_mixer.mix is not None:  # no q/k/v: mixes the normalised tokens laid out as the grid
        y = norm1(t).transpose(1, 2).reshape(b, c, *grid)
        t = t + token_mixer.mix(y).flatten(2).transpose(1, 2)
    else:
        assert token_mixer.attend is not None and qkv is not None and proj is not None  # a q/k/v mixer's block
        q, k, v = qkv(norm1(t)).reshape(b, h * w, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        o = token_mixer.attend(q, k, v, h, w, window)  # (B, heads, N, head_dim)
        t = t + proj(o.transpose(1, 2).reshape(b, h * w, heads * head_dim))
    t = t + fc2(F.gelu(fc1(norm2(t))))
    return t.transpose(1, 2).reshape(b, c, *grid)


@dataclass(frozen=True)
class ModelSpec:
    """What a static model needs besides its architecture (saved next to it as JSON)."""

    in_channels: int
    num_classes: int
    input_size: int
    head_dim: int
    window: int
    stem_stride: int
    dims: int = 2  # 2: images (B, C, H, W); 1: sequences (B, C, T)

    @classmethod
    def from_config(cls, config: SpaceConfig) -> ModelSpec:
        return cls(config.in_channels, config.num_classes, config.input_size, config.head_dim,
                   config.window, config.stem_stride, config.dims)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def input_shape(self, batch: int, size: int | None = None) -> tuple[int, ...]:
        """(B, C, H, W) or (B, C, T) of the model input; `size` instead of `input_size` if given."""
        return (batch, self.in_channels, *(size or self.input_size,) * self.dims)


def at_input_size(spec: ModelSpec, arch: Arch, size: int) -> tuple[ModelSpec, Arch]:
    """The model spec and architecture of `arch` run on inputs of `size` (a sequence length at
    deployment, for hardware costs): the same weights, the input resampled by the same factor."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ArchError(f"input size must be a positive integer, got {size!r}")
    if size == spec.input_size:
        return spec, arch
    resolution = scaled_resolution(arch.resolution, spec.input_size, size)
    return replace(spec, input_size=size), replace(arch, resolution=resolution)


def conv_nd(dims: int, in_ch: int, out_ch: int, kernel: int, stride: int = 1, *, groups: int = 1,
            bias: bool = False) -> nn.Module:
    """nn.Conv1d or nn.Conv2d with "same" padding for odd kernels."""
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    return conv(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=bias)


def resize(dims: int, size: int) -> nn.Module:
    """Bilinear (images) or linear (sequences) resampling of the input to `size`."""
    return nn.Upsample(size=(size,) * dims, mode="bilinear" if dims == 2 else "linear", align_corners=False)


def spatial_mean(x: Tensor) -> Tensor:
    # (B, C, H, W) or (B, C, T) -> (B, C)
    return x.mean(dim=tuple(range(2, x.dim())))


class ConvNorm(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, act: bool, dims: int = 2):
        super().__init__()
        self.conv = conv_nd(dims, in_ch, out_ch, 3, stride)
        self.norm = nn.GroupNorm(1, out_ch)
        self.act = nn.GELU() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class StaticConvBlock(nn.Module):
    def __init__(self, width: int, block: ConvBlock, dims: int = 2):
        super().__init__()
        h = hidden_width(width, block.expand)
        self.pw1 = conv_nd(dims, width, h, 1)
        self.n1 = nn.GroupNorm(1, h)
        self.dw = conv_nd(dims, h, h, block.kernel, groups=h)
        self.n2 = nn.GroupNorm(1, h)
        self.pw2 = conv_nd(dims, h, width, 1)
        self.n3 = nn.GroupNorm(1, width)

    def forward(self, x: Tensor) -> Tensor:
        return conv_block_forward(x, self.pw1, self.n1, self.dw, self.n2, self.pw2, self.n3)


class StaticAttnBlock(nn.Module):
    def __init__(self, width: int, block: AttnBlock, head_dim: int, window: int, dims: int = 2):
        super().__init__()
        self.mixer, self.heads, self.head_dim, self.window = block.mixer, block.heads, head_dim, window
        self.cpe = conv_nd(dims, width, width, 3, groups=width, bias=True)
        self.norm1 = nn.LayerNorm(width)
        attention = has_qkv(block.mixer)
        self.qkv: nn.Linear | None = nn.Linear(width, 3 * block.heads * head_dim) if attention else None
        self.proj: nn.Linear | None = nn.Linear(block.heads * head_dim, width) if attention else None
        self.norm2 = nn.LayerNorm(width)
        m = hidden_width(width, block.mlp_ratio)
        self.fc1 = nn.Linear(width, m)
        self.fc2 = nn.Linear(m, width)

    def forward(self, x: Tensor) -> Tensor:
        return attn_block_forward(
            x, cpe=self.cpe, norm1=self.norm1, qkv=self.qkv, proj=self.proj, norm2=self.norm2,
            fc1=self.fc1, fc2=self.fc2, mixer=self.mixer, heads=self.heads, head_dim=self.head_dim,
            window=self.window,
        )


class StaticStage(nn.Module):
    def __init__(self, in_ch: int, stage, spec: ModelSpec):
        super().__init__()
        self.down = ConvNorm(in_ch, stage.width, stage.stride, act=False, dims=spec.dims)
        self.blocks = nn.Sequential(*[
            StaticConvBlock(stage.width, b, spec.dims) if isinstance(b, ConvBlock)
            else StaticAttnBlock(stage.width, b, spec.head_dim, spec.window, spec.dims)
            for b in stage.blocks
        ])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.down(x))


class SubnetModel(nn.Module):
    """A standalone subnet. Input: `spec.input_shape(B)`, (B, C, H, W) or (B, C, T) -> logits (B, classes).

    Nothing in it depends on the input size (the positional encoding is convolutional), so the
    same weights run on sequences of any length (`HybridSupernet.extract(arch, input_size=...)`)."""

    def __init__(self, spec: ModelSpec, arch: Arch):
        super().__init__()
        self.spec, self.arch = spec, arch
        self.resize = nn.Identity() if arch.resolution == spec.input_size else resize(spec.dims, arch.resolution)
        self.stem = ConvNorm(spec.in_channels, arch.stem_width, spec.stem_stride, act=True, dims=spec.dims)
        widths = [arch.stem_width] + [s.width for s in arch.stages]
        self.stages = nn.Sequential(*[StaticStage(w, s, spec) for w, s in zip(widths, arch.stages)])
        self.head_norm = nn.LayerNorm(widths[-1])
        self.head = nn.Linear(widths[-1], spec.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(self.resize(x)))
        return self.head(self.head_norm(spatial_mean(x)))


def initialised_subnet(spec: ModelSpec, arch: Arch, seed: int) -> SubnetModel:
    """`arch` as a freshly initialised static model: torch's default initialisation, seeded (the
    global generator's state is restored afterwards). What training from scratch starts from."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SubnetModel(spec, arch)
