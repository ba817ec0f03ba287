"""Weight-sharing hybrid CNN-transformer supernet.

Every block position of a stage holds a convolution block (kernel 3/5/7 from one centre-cropped
kernel, elastic expand ratio) and a transformer block (any token mixer of `search_spaces.mixers`,
the attentions on shared q/k/v; elastic heads and MLP ratio), as allowed by the space. The
architecture is an argument of `forward`; nothing is stored on the modules, so one supernet can
serve several threads or Ray workers. `extract(arch)` returns a `SubnetModel` of plain layers
with the inherited weights copied in.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces.arch import Arch, AttnBlock, ConvBlock
from search_spaces.config import hidden_width
from search_spaces.layers import ElasticConv, ElasticLinear, ElasticNorm, ElasticQKV
from search_spaces.mixers import has_qkv
from search_spaces.space import SearchSpace
from search_spaces.static import (
    ModelSpec,
    SubnetModel,
    at_input_size,
    attn_block_forward,
    conv_block_forward,
    spatial_mean,
)

State = dict[str, Tensor]


def _prefixed(prefix: str, **parts: State) -> State:
    return {f"{prefix}{name}.{key}": t for name, state in parts.items() for key, t in state.items()}


class ElasticConvNorm(nn.Module):
    def __init__(self, max_in: int, max_out: int, act: bool, dims: int):
        super().__init__()
        self.conv = ElasticConv(max_in, max_out, 3, dims=dims)
        self.norm = ElasticNorm(max_out, "group")
        self.act = act

    def forward(self, x: Tensor, out_ch: int, stride: int) -> Tensor:
        y = self.norm(self.conv(x, out_ch, 3, stride))
        return F.gelu(y) if self.act else y

    def state(self, prefix: str, in_ch: int, out_ch: int) -> State:
        return _prefixed(prefix, conv=self.conv.state(in_ch, out_ch, 3), norm=self.norm.state(out_ch))


class ElasticConvBlock(nn.Module):
    def __init__(self, max_width: int, max_expand: float, max_kernel: int, dims: int):
        super().__init__()
        h = hidden_width(max_width, max_expand)
        self.pw1 = ElasticConv(max_width, h, 1, dims=dims)
        self.n1 = ElasticNorm(h, "group")
        self.dw = ElasticConv(h, h, max_kernel, dims=dims, depthwise=True)
        self.n2 = ElasticNorm(h, "group")
        self.pw2 = ElasticConv(h, max_width, 1, dims=dims)
        self.n3 = ElasticNorm(max_width, "group")

    def forward(self, x: Tensor, block: ConvBlock) -> Tensor:
        w, h = x.shape[1], hidden_width(x.shape[1], block.expand)
        return conv_block_forward(
            x, lambda t: self.pw1(t, h, 1), self.n1, lambda t: self.dw(t, h, block.kernel),
            self.n2, lambda t: self.pw2(t, w, 1), self.n3,
        )

    def state(self, prefix: str, width: int, block: ConvBlock) -> State:
        h = hidden_width(width, block.expand)
        return _prefixed(
            prefix, pw1=self.pw1.state(width, h, 1), n1=self.n1.state(h), dw=self.dw.state(h, h, block.kernel),
            n2=self.n2.state(h), pw2=self.pw2.state(h, width, 1), n3=self.n3.state(width),
        )


class ElasticAttnBlock(nn.Module):
    def __init__(self, max_width: int, max_heads: int, head_dim: int, max_mlp: float, window: int, attention: bool,
                 dims: int):
        super().__init__()
        self.head_dim, self.window = head_dim, window
        self.cpe = ElasticConv(max_width, max_width, 3, dims=dims, depthwise=True, bias=True)
        self.norm1 = ElasticNorm(max_width, "layer")
        self.qkv = ElasticQKV(max_width, max_heads, head_dim) if attention else None
        self.proj = ElasticLinear(max_heads * head_dim, max_width) if attention else None
        self.norm2 = ElasticNorm(max_width, "layer")
        m = hidden_width(max_width, max_mlp)
        self.fc1 = ElasticLinear(max_width, m)
        self.fc2 = ElasticLinear(m, max_width)

    def forward(self, x: Tensor, block: AttnBlock) -> Tensor:
        w, m = x.shape[1], hidden_width(x.shape[1], block.mlp_ratio)
        qkv, proj = self.qkv, self.proj
        return attn_block_forward(
            x, cpe=lambda t: self.cpe(t, w, 3), norm1=self.norm1,
            qkv=None if qkv is None else lambda t: qkv(t, block.heads),
            proj=None if proj is None else lambda t: proj(t, w), norm2=self.norm2,
            fc1=lambda t: self.fc1(t, m), fc2=lambda t: self.fc2(t, w),
            mixer=block.mixer, heads=block.heads, head_dim=self.head_dim, window=self.window,
        )

    def state(self, prefix: str, width: int, block: AttnBlock) -> State:
        m, a = hidden_width(width, block.mlp_ratio), block.heads * self.head_dim
        parts = {"cpe": self.cpe.state(width, width, 3), "norm1": self.norm1.state(width)}
        if has_qkv(block.mixer):
            assert self.qkv is not None and self.proj is not None  # the space has q/k/v mixers
            parts |= {"qkv": self.qkv.state(width, block.heads), "proj": self.proj.state(a, width)}
        parts |= {"norm2": self.norm2.state(width), "fc1": self.fc1.state(width, m), "fc2": self.fc2.state(m, width)}
        return _prefixed(prefix, **parts)


class BlockSlot(nn.Module):
    """One block position: the weights of each block type the stage allows."""

    def __init__(self, space: SearchSpace, max_width: int, block_types: tuple[str, ...]):
        super().__init__()
        c = space.config
        self.conv = (
            ElasticConvBlock(max_width, max(c.expand_ratios), max(c.kernels), c.dims) if "conv" in block_types else None
        )
        has_attn = "attn" in block_types
        attention = any(has_qkv(m) for m in c.mixers)
        self.attn = (
            ElasticAttnBlock(max_width, max(c.heads), c.head_dim, max(c.mlp_ratios), c.window, attention, c.dims)
            if has_attn else None
        )

    # The space validated the arch, so the slot holds the weights of its block's type.
    def forward(self, x: Tensor, block: ConvBlock | AttnBlock) -> Tensor:
        if isinstance(block, ConvBlock):
            assert self.conv is not None
            return self.conv(x, block)
        assert self.attn is not None
        return self.attn(x, block)

    def state(self, prefix: str, width: int, block: ConvBlock | AttnBlock) -> State:
        if isinstance(block, ConvBlock):
            assert self.conv is not None
            return self.conv.state(prefix, width, block)
        assert self.attn is not None
        return self.attn.state(prefix, width, block)


class HybridSupernet(nn.Module):
    def __init__(self, space: SearchSpace):
        super().__init__()
        c = space.config
        self.space, self.spec = space, ModelSpec.from_config(c)
        self.stem = ElasticConvNorm(c.in_channels, max(c.stem_widths), act=True, dims=c.dims)
        prev = max(c.stem_widths)
        self.downs, self.slots = nn.ModuleList(), nn.ModuleList()
        for s in c.stages:
            self.downs.append(ElasticConvNorm(prev, max(s.widths), act=False, dims=c.dims))
            self.slots.append(nn.ModuleList(BlockSlot(space, max(s.widths), s.block_types) for _ in range(max(s.depths))))
            prev = max(s.widths)
        self.head_norm = ElasticNorm(prev, "layer")
        self.head = ElasticLinear(prev, c.num_classes)

    @staticmethod
    def count_params(space: SearchSpace) -> int:
        """The parameters `HybridSupernet(space)` would hold, counted without allocating them: its
        modules built on torch's meta device, one block slot per stage (the others are the same).
        What a caller checks against the machine's memory before building a supernet."""
        c = space.config

        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        with torch.device("meta"):
            total, prev = count(ElasticConvNorm(c.in_channels, max(c.stem_widths), act=True, dims=c.dims)), max(c.stem_widths)
            for s in c.stages:
                width = max(s.widths)
                total += count(ElasticConvNorm(prev, width, act=False, dims=c.dims))
                total += max(s.depths) * count(BlockSlot(space, width, s.block_types))
                prev = width
            return total + count(ElasticNorm(prev, "layer")) + count(ElasticLinear(prev, c.num_classes))

    def forward(self, x: Tensor, arch: Arch) -> Tensor:
        # x: (B, in_channels, input_size, input_size), or (B, in_channels, input_size) -> logits (B, num_classes)
        self.space.validate(arch)
        if arch.resolution != self.spec.input_size:
            dims = self.spec.dims
            x = F.interpolate(x, size=(arch.resolution,) * dims, mode="bilinear" if dims == 2 else "linear",
                              align_corners=False)
        x = self.stem(x, arch.stem_width, self.spec.stem_stride)
        for down, slots, stage in zip(self.downs, self.slots, arch.stages):
            x = down(x, stage.width, stage.stride)
            for slot, block in zip(cast(nn.ModuleList, slots), stage.blocks):
                x = slot(x, block)
        x = self.head_norm(spatial_mean(x))
        return self.head(x, self.spec.num_classes)

    def subnet_state_dict(self, arch: Arch) -> State:
        """Inherited weights of `arch`, keyed as in `SubnetModel`."""
        self.space.validate(arch)
        state = self.stem.state("stem.", self.spec.in_channels, arch.stem_width)
        prev = arch.stem_width
        for i, (down, slots, stage) in enumerate(zip(self.downs, self.slots, arch.stages)):
            state |= cast(ElasticConvNorm, down).state(f"stages.{i}.down.", prev, stage.width)
            for j, (slot, block) in enumerate(zip(cast(nn.ModuleList, slots), stage.blocks)):
                state |= cast(BlockSlot, slot).state(f"stages.{i}.blocks.{j}.", stage.width, block)
            prev = stage.width
        state |= _prefixed("", head_norm=self.head_norm.state(prev), head=self.head.state(prev, self.spec.num_classes))
        return state

    def extract(self, arch: Arch, *, input_size: int | None = None) -> SubnetModel:
        """`arch` as a static model with the inherited weights. `input_size`: the model for inputs of
        that size instead (a sequence length at deployment): the same weights, with any input
        resampling of `arch` scaled by the same factor (`static.at_input_size`)."""
        self.space.validate(arch)
        spec, arch_at = self.spec, arch
        if input_size is not None:
            spec, arch_at = at_input_size(self.spec, arch, input_size)
        model = SubnetModel(spec, arch_at)
        model.load_state_dict(self.subnet_state_dict(arch), strict=True)
        return model.to(next(self.parameters()).device)
