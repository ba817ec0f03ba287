"""Static subnets: plain torch layers only, what `extract` returns and `nas.load_model` rebuilds.

The block computations are written once (`conv_block_forward`, `attn_block_forward`) against
callables; the static blocks pass their `nn.Conv2d`/`nn.Linear`/norm modules and the supernet
passes its elastic layers with the sizes bound, so both run exactly the same math.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces.arch import ATTENTION_MIXERS, Arch, AttnBlock, ConvBlock
from search_spaces.mixers import attention, pool_mixer
from search_spaces.space import SpaceConfig, hidden_width

Op = Callable[[Tensor], Tensor]


def conv_block_forward(x: Tensor, pw1: Op, n1: Op, dw: Op, n2: Op, pw2: Op, n3: Op) -> Tensor:
    # x: (B, C, H, W) -> expand -> depthwise -> project, residual
    y = F.gelu(n1(pw1(x)))
    y = F.gelu(n2(dw(y)))
    return x + n3(pw2(y))


def attn_block_forward(
    x: Tensor, *, cpe: Op, norm1: Op, qkv: Op | None, proj: Op | None, norm2: Op, fc1: Op, fc2: Op,
    mixer: str, heads: int, head_dim: int, window: int,
) -> Tensor:
    x = x + cpe(x)  # conditional positional encoding (depthwise 3x3, CPVT)
    b, c, h, w = x.shape
    t = x.flatten(2).transpose(1, 2)  # (B, N, C)
    if mixer == "pool":
        y = norm1(t).transpose(1, 2).reshape(b, c, h, w)
        t = t + pool_mixer(y).flatten(2).transpose(1, 2)
    else:
        q, k, v = qkv(norm1(t)).reshape(b, h * w, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        o = attention(mixer, q, k, v, h, w, window)  # (B, heads, N, head_dim)
        t = t + proj(o.transpose(1, 2).reshape(b, h * w, heads * head_dim))
    t = t + fc2(F.gelu(fc1(norm2(t))))
    return t.transpose(1, 2).reshape(b, c, h, w)


@dataclass(frozen=True)
class ModelSpec:
    """What a static model needs besides its architecture (saved next to it as JSON)."""

    in_channels: int
    num_classes: int
    input_size: int
    head_dim: int
    window: int
    stem_stride: int

    @classmethod
    def from_config(cls, config: SpaceConfig) -> ModelSpec:
        return cls(config.in_channels, config.num_classes, config.input_size, config.head_dim,
                   config.window, config.stem_stride)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ConvNorm(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, act: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.norm = nn.GroupNorm(1, out_ch)
        self.act = nn.GELU() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class StaticConvBlock(nn.Module):
    def __init__(self, width: int, block: ConvBlock):
        super().__init__()
        h = hidden_width(width, block.expand)
        self.pw1 = nn.Conv2d(width, h, 1, bias=False)
        self.n1 = nn.GroupNorm(1, h)
        self.dw = nn.Conv2d(h, h, block.kernel, 1, block.kernel // 2, groups=h, bias=False)
        self.n2 = nn.GroupNorm(1, h)
        self.pw2 = nn.Conv2d(h, width, 1, bias=False)
        self.n3 = nn.GroupNorm(1, width)

    def forward(self, x: Tensor) -> Tensor:
        return conv_block_forward(x, self.pw1, self.n1, self.dw, self.n2, self.pw2, self.n3)


class StaticAttnBlock(nn.Module):
    def __init__(self, width: int, block: AttnBlock, head_dim: int, window: int):
        super().__init__()
        self.mixer, self.heads, self.head_dim, self.window = block.mixer, block.heads, head_dim, window
        self.cpe = nn.Conv2d(width, width, 3, 1, 1, groups=width)
        self.norm1 = nn.LayerNorm(width)
        if block.mixer in ATTENTION_MIXERS:
            self.qkv = nn.Linear(width, 3 * block.heads * head_dim)
            self.proj = nn.Linear(block.heads * head_dim, width)
        else:
            self.qkv = self.proj = None
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
        self.down = ConvNorm(in_ch, stage.width, stage.stride, act=False)
        self.blocks = nn.Sequential(*[
            StaticConvBlock(stage.width, b) if isinstance(b, ConvBlock)
            else StaticAttnBlock(stage.width, b, spec.head_dim, spec.window)
            for b in stage.blocks
        ])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.down(x))


class SubnetModel(nn.Module):
    """A standalone subnet. Input: (B, in_channels, input_size, input_size) -> logits (B, classes)."""

    def __init__(self, spec: ModelSpec, arch: Arch):
        super().__init__()
        self.spec, self.arch = spec, arch
        self.resize = (
            nn.Identity() if arch.resolution == spec.input_size
            else nn.Upsample(size=(arch.resolution, arch.resolution), mode="bilinear", align_corners=False)
        )
        self.stem = ConvNorm(spec.in_channels, arch.stem_width, spec.stem_stride, act=True)
        widths = [arch.stem_width] + [s.width for s in arch.stages]
        self.stages = nn.Sequential(*[StaticStage(w, s, spec) for w, s in zip(widths, arch.stages)])
        self.head_norm = nn.LayerNorm(widths[-1])
        self.head = nn.Linear(widths[-1], spec.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(self.resize(x)))
        return self.head(self.head_norm(x.mean(dim=(2, 3))))
