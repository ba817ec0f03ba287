"""Token mixers as pure functions, shared by the supernet and the extracted static models.

- softmax: multi-head scaled dot-product attention (Vaswani et al., 2017).
- linear: kernelized attention with feature map elu(x)+1 (Katharopoulos et al., 2020), O(N).
- window: softmax attention inside non-overlapping local windows (Swin, Liu et al., 2021);
  the grid is padded to whole windows and padded keys are masked out. A sequence is a grid of
  height 1: windows of `window` consecutive tokens (Longformer-style local attention, unshifted).
- pool: average pooling minus identity (PoolFormer / MetaFormer, Yu et al., 2022); no q/k/v.

The three attention mixers read the same q/k/v projections, so one set of weights serves all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-6


def softmax_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    # q, k, v: (B, heads, N, head_dim)
    return F.scaled_dot_product_attention(q, k, v)


def linear_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
    kv = k.transpose(-2, -1) @ v  # (B, heads, head_dim, head_dim)
    norm = q @ k.sum(dim=-2, keepdim=True).transpose(-2, -1)  # (B, heads, N, 1)
    return (q @ kv) / (norm + EPS)


def window_attention(q: Tensor, k: Tensor, v: Tensor, height: int, width: int, window: int) -> Tensor:
    b, h, n, d = q.shape
    wh, ww = min(window, height), min(window, width)
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


def attention(mixer: str, q: Tensor, k: Tensor, v: Tensor, height: int, width: int, window: int) -> Tensor:
    if mixer == "softmax":
        return softmax_attention(q, k, v)
    if mixer == "linear":
        return linear_attention(q, k, v)
    if mixer == "window":
        return window_attention(q, k, v, height, width, window)
    raise ValueError(f"mixer {mixer!r} is not an attention mixer")


def pool_mixer(x: Tensor) -> Tensor:
    # x: (B, C, H, W) or (B, C, T)
    pool = F.avg_pool1d if x.dim() == 3 else F.avg_pool2d
    return pool(x, 3, stride=1, padding=1, count_include_pad=False) - x
