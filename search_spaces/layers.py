"""Elastic layers: one shared weight, sliced per call. They keep no "active subnet" state.

Each layer has a single `_slice` helper used both by `forward` (the sizes are arguments) and by
`state` (the sliced tensors, cloned, for an extracted static layer). Channels are prefixes; a
kernel is the centre crop of the largest one (Once-for-All, Cai et al., 2020); q/k/v heads are
sliced head-major with the bias through the same index (AutoFormer without its bias bug).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _state(weight: Tensor, bias: Tensor | None) -> dict[str, Tensor]:
    out = {"weight": weight.detach().clone().contiguous()}
    if bias is not None:
        out["bias"] = bias.detach().clone().contiguous()
    return out


class ElasticConv(nn.Module):
    """Conv1d (`dims=1`, sequences) or Conv2d (`dims=2`, images) over channel prefixes and
    centre-cropped kernels; `depthwise` uses groups=channels."""

    def __init__(self, max_in: int, max_out: int, max_kernel: int, *, dims: int = 2, depthwise: bool = False,
                 bias: bool = False):
        super().__init__()
        self.depthwise, self.dims = depthwise, dims
        in_per_group = 1 if depthwise else max_in
        self.weight = nn.Parameter(torch.empty(max_out, in_per_group, *(max_kernel,) * dims))
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def _slice(self, in_ch: int, out_ch: int, kernel: int) -> tuple[Tensor, Tensor | None]:
        start = (self.weight.shape[-1] - kernel) // 2
        crop = (slice(start, start + kernel),) * self.dims
        # built apart: mypy takes `w[(a, *b)]` for the star subscript of Python 3.11
        index = (slice(None, out_ch), slice(None, 1 if self.depthwise else in_ch), *crop)
        weight = self.weight[index]
        return weight, None if self.bias is None else self.bias[:out_ch]

    def forward(self, x: Tensor, out_ch: int, kernel: int, stride: int = 1) -> Tensor:
        in_ch = x.shape[1]
        if self.depthwise:
            out_ch = in_ch
        weight, bias = self._slice(in_ch, out_ch, kernel)
        conv = F.conv1d if self.dims == 1 else F.conv2d
        return conv(x, weight, bias, stride, kernel // 2, 1, in_ch if self.depthwise else 1)

    def state(self, in_ch: int, out_ch: int, kernel: int) -> dict[str, Tensor]:
        return _state(*self._slice(in_ch, out_ch, kernel))


class ElasticLinear(nn.Module):
    """Linear over input/output prefixes (nested MLP widths as in MatFormer)."""

    def __init__(self, max_in: int, max_out: int, *, bias: bool = True):
        super().__init__()
        layer = nn.Linear(max_in, max_out, bias=bias)  # borrow torch's default initialisation
        self.weight = layer.weight
        self.bias = layer.bias

    def _slice(self, in_features: int, out_features: int) -> tuple[Tensor, Tensor | None]:
        return self.weight[:out_features, :in_features], None if self.bias is None else self.bias[:out_features]

    def forward(self, x: Tensor, out_features: int) -> Tensor:
        return F.linear(x, *self._slice(x.shape[-1], out_features))

    def state(self, in_features: int, out_features: int) -> dict[str, Tensor]:
        return _state(*self._slice(in_features, out_features))


class ElasticQKV(nn.Module):
    """q/k/v projection with elastic heads: weight viewed as (3, max_heads, head_dim, max_in)."""

    def __init__(self, max_in: int, max_heads: int, head_dim: int):
        super().__init__()
        self.max_heads, self.head_dim = max_heads, head_dim
        layer = nn.Linear(max_in, 3 * max_heads * head_dim)
        self.weight = layer.weight
        self.bias = layer.bias

    def _slice(self, in_features: int, heads: int) -> tuple[Tensor, Tensor]:
        w = self.weight.view(3, self.max_heads, self.head_dim, -1)[:, :heads, :, :in_features]
        b = self.bias.view(3, self.max_heads, self.head_dim)[:, :heads]
        return w.reshape(3 * heads * self.head_dim, in_features), b.reshape(-1)

    def forward(self, x: Tensor, heads: int) -> Tensor:
        return F.linear(x, *self._slice(x.shape[-1], heads))

    def state(self, in_features: int, heads: int) -> dict[str, Tensor]:
        return _state(*self._slice(in_features, heads))


class ElasticNorm(nn.Module):
    """Per-sample normalization over channel prefixes: LayerNorm on the last dim (`kind="layer"`)
    or GroupNorm with one group on (B, C, H, W) or (B, C, T) (`kind="group"`).

    Why no BatchNorm: its running statistics depend on which subnet produced them, so every
    subnet would need its statistics recalibrated before evaluation. Per-sample norms give every
    subnet correct statistics for free, in training and in the extracted model alike.
    """

    def __init__(self, max_ch: int, kind: str, *, eps: float = 1e-5):
        super().__init__()
        if kind not in ("layer", "group"):
            raise ValueError(f"kind must be 'layer' or 'group', got {kind!r}")
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.ones(max_ch))
        self.bias = nn.Parameter(torch.zeros(max_ch))

    def _slice(self, ch: int) -> tuple[Tensor, Tensor]:
        return self.weight[:ch], self.bias[:ch]

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "layer":
            ch = x.shape[-1]
            return F.layer_norm(x, (ch,), *self._slice(ch), self.eps)
        return F.group_norm(x, 1, *self._slice(x.shape[1]), self.eps)

    def state(self, ch: int) -> dict[str, Tensor]:
        return _state(*self._slice(ch))
