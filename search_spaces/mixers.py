"""Token mixers: one `TokenMixer` entry per mixer in `TOKEN_MIXERS`, the only place that knows them.

- softmax: multi-head scaled dot-product attention (Vaswani et al., 2017).
- linear: kernelized attention with feature map elu(x)+1 (Katharopoulos et al., 2020), O(N).
- window: softmax attention inside non-overlapping local windows (Swin, Liu et al., 2021);
  the grid is padded to whole windows and padded keys are masked out. A sequence is a grid of
  height 1: windows of `window` consecutive tokens (Longformer-style local attention, unshifted).
- pool: average pooling minus identity (PoolFormer / MetaFormer, Yu et al., 2022); no q/k/v.

An entry holds the mixer's forward, its multiply-adds, its activation peak and whether it reads
q/k/v. The attention mixers (`has_qkv`) read the same q/k/v projections of `heads` x `head_dim`, so
one set of supernet weights serves all of them; a block with a mixer without q/k/v has no q/k/v
or output projection and `heads` 0. The supernet, the static models, the cost model, the space
and the predictors' features ask this table and never compare mixer names.

Adding a mixer is one entry: write its forward and its two counts, then
`register_mixer(TokenMixer(name=..., attend=..., macs=..., peak_elements=...))` (or `mix=` for one
without q/k/v). The tests in tests/test_mixers.py run over every entry (forward on grids and
sequences, multiply-adds equal to fvcore's, memory against a measurement, supernet == extracted
model) and show it with a throwaway entry. A mixer registered here is built in: it joins the
default choices of a space (`SpaceConfig.mixers`); the order of registration is the order of the
one-hot encodings (`SearchSpace.encode`, the predictors' features), so a new one goes last.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from search_spaces.registry import Registry

EPS = 1e-6


@dataclass(frozen=True)
class MixerShape:
    """What a mixer's costs depend on, for one sample: a grid of `height` x `width` tokens (a
    sequence is a grid of height 1) of `channels`, and for a q/k/v mixer `heads` x `head_dim`
    (0 otherwise) and the window (0 unless the mixer uses it)."""

    channels: int
    heads: int
    head_dim: int
    height: int
    width: int
    window: int

    @property
    def tokens(self) -> int:
        return self.height * self.width

    @property
    def attn_width(self) -> int:
        """Channels of q (and of k, v): heads * head_dim."""
        return self.heads * self.head_dim


# q, k, v: (B, heads, N, head_dim), then height, width (N = height * width), window -> (B, heads, N, head_dim)
Attend = Callable[[Tensor, Tensor, Tensor, int, int, int], Tensor]
# the normalised block input as a grid, (B, C, H, W) or (B, C, T) -> the same shape
Mix = Callable[[Tensor], Tensor]
Count = Callable[[MixerShape], int]


@dataclass(frozen=True)
class TokenMixer:
    """One token mixer. Exactly one of `attend` (q/k/v mixers) and `mix` (the others) is given.

    - macs: multiply-adds of the forward alone for one sample, as fvcore counts them with the
      handlers of `nas.hardware.measure.count_flops` (matmuls and SDPA exact, elementwise ops 0).
    - peak_elements: activation elements alive at the mixer's peak for one sample, its inputs
      included (q, k, v; or the normalised grid), besides the block's input and its position-encoded
      copy; fused SDPA kernels never materialise the score matrix.
    - uses_window: the space's `window` reaches the mixer (0 is passed otherwise).
    """

    name: str
    macs: Count
    peak_elements: Count
    attend: Attend | None = None
    mix: Mix | None = None
    uses_window: bool = False

    def __post_init__(self) -> None:
        if (self.attend is None) == (self.mix is None):
            raise ValueError(f"token mixer {self.name!r}: give exactly one of attend (with q/k/v) and mix")

    @property
    def has_qkv(self) -> bool:
        """Reads the shared q/k/v projections (and has an output projection and heads)."""
        return self.attend is not None


TOKEN_MIXERS: Registry[TokenMixer] = Registry("token mixer", ordered=True)


def register_mixer(mixer: TokenMixer) -> TokenMixer:
    return TOKEN_MIXERS.add(mixer.name, mixer)


def has_qkv(name: str) -> bool:
    """Whether the registered mixer `name` reads q/k/v (and has heads)."""
    return TOKEN_MIXERS.get(name).has_qkv


# ---- softmax ------------------------------------------------------------------------------
def softmax_attention(q: Tensor, k: Tensor, v: Tensor, height: int, width: int, window: int) -> Tensor:
    # q, k, v: (B, heads, N, head_dim); global: the grid and window play no part
    return F.scaled_dot_product_attention(q, k, v)


register_mixer(TokenMixer(
    name="softmax",
    attend=softmax_attention,
    macs=lambda s: s.heads * s.tokens * s.tokens * 2 * s.head_dim,  # QK^T and attn@V
    peak_elements=lambda s: 4 * s.attn_width * s.tokens,  # q/k/v and the output
))


# ---- linear -------------------------------------------------------------------------------
def linear_attention(q: Tensor, k: Tensor, v: Tensor, height: int, width: int, window: int) -> Tensor:
    q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
    kv = k.transpose(-2, -1) @ v  # (B, heads, head_dim, head_dim)
    norm = q @ k.sum(dim=-2, keepdim=True).transpose(-2, -1)  # (B, heads, N, 1)
    return (q @ kv) / (norm + EPS)


register_mixer(TokenMixer(
    name="linear",
    attend=linear_attention,
    # k^T v, q (k^T v), and the normaliser q . sum(k)
    macs=lambda s: s.heads * (2 * s.tokens * s.head_dim * s.head_dim + s.tokens * s.head_dim),
    # q/k/v, their feature maps, q (k^T v) and its normalised copy, and k^T v per head
    peak_elements=lambda s: 8 * s.attn_width * s.tokens + s.heads * s.head_dim**2,
))


# ---- window -------------------------------------------------------------------------------
def window_sizes(height: int, width: int, window: int) -> tuple[int, int]:
    """(height, width) of one window: `window`, or the whole side of a smaller grid."""
    return min(window, height), min(window, width)


def padded_tokens(height: int, width: int, window: int) -> int:
    """Tokens of the grid padded to whole windows."""
    wh, ww = window_sizes(height, width, window)
    return math.ceil(height / wh) * wh * math.ceil(width / ww) * ww


def window_attention(q: Tensor, k: Tensor, v: Tensor, height: int, width: int, window: int) -> Tensor:
    b, h, n, d = q.shape
    wh, ww = window_sizes(height, width, window)
    ph, pw = -height % wh, -width % ww
    nh, nw = (height + ph) // wh, (width + pw) // ww

    def to_windows(t: Tensor) -> Tensor:
        t = t.reshape(b, h, height, width, d)
        if ph or pw:
            t = F.pad(t, (0, 0, 0, pw, 0, ph))
        t = t.reshape(b, h, nh, wh, nw, ww, d).permute(0, 1, 2, 4, 3, 5, 6)
        return t.reshape(b, h, nh * nw, wh * ww, d)  # (B, heads, windows, window tokens, head_dim)

    mask = None
    if ph or pw:  # padded keys take no part
        valid = torch.zeros(height + ph, width + pw, dtype=torch.bool, device=q.device)
        valid[:height, :width] = True
        valid = valid.reshape(nh, wh, nw, ww).permute(0, 2, 1, 3).reshape(nh * nw, 1, wh * ww)
        mask = valid.expand(nh * nw, wh * ww, wh * ww)
    out = F.scaled_dot_product_attention(to_windows(q), to_windows(k), to_windows(v), attn_mask=mask)
    out = out.reshape(b, h, nh, nw, wh, ww, d).permute(0, 1, 2, 4, 3, 5, 6)
    out = out.reshape(b, h, height + ph, width + pw, d)[:, :, :height, :width]
    return out.reshape(b, h, n, d)


def _window_macs(s: MixerShape) -> int:
    wh, ww = window_sizes(s.height, s.width, s.window)  # per padded window: QK^T and attn@V over wh*ww tokens
    return s.heads * padded_tokens(s.height, s.width, s.window) * wh * ww * 2 * s.head_dim


register_mixer(TokenMixer(
    name="window",
    attend=window_attention,
    macs=_window_macs,
    # q/k/v, then windowed copies of q, k, v and the windowed output on the padded grid
    peak_elements=lambda s: 3 * s.attn_width * s.tokens
    + 4 * s.attn_width * padded_tokens(s.height, s.width, s.window),
    uses_window=True,
))


# ---- pool ---------------------------------------------------------------------------------
def pool_mixer(x: Tensor) -> Tensor:
    # x: (B, C, H, W) or (B, C, T)
    pool = F.avg_pool1d if x.dim() == 3 else F.avg_pool2d
    return pool(x, 3, stride=1, padding=1, count_include_pad=False) - x


register_mixer(TokenMixer(
    name="pool",
    mix=pool_mixer,
    macs=lambda s: 0,  # pooling and the subtraction are elementwise
    peak_elements=lambda s: 3 * s.channels * s.tokens,  # the normalised grid, its pooling, the difference
))
