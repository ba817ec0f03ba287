"""A subnet as a chain of typed, independently buildable units, and its analytic costs.

`block_specs(spec, arch)` cuts the static model of `arch` (`SubnetModel`) into `BlockSpec` units:
the input resize, the stem, per stage a down-sampling layer and its blocks, and the head. A unit's
cost depends only on its spec, so one latency lookup table serves every subnet that uses it
(ProxylessNAS / Once-for-All style latency tables).

`block_macs` counts multiply-adds exactly as `nas.costs.count_flops` does with fvcore and its
extra handlers, so the sum over units equals fvcore on the extracted model, at a tiny cost:
- convolution: out_channels * in_channels/groups * k * k per output pixel; linear: in * out per token;
- GroupNorm / LayerNorm: 5 per element of their input (fvcore's convention with an affine);
- bilinear upsampling: 4 per output element (fvcore's convention); linear (sequences): 2;
- sequences (`dims=1`) are counted like a grid of height 1 with 1-D kernels;
- token mixers: their entry's `macs` (search_spaces/mixers.py): matmul and scaled dot-product
  attention exact; elementwise ops, pooling and means count 0.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

from torch import Tensor, nn

from search_spaces.arch import Arch, ArchError, AttnBlock, ConvBlock
from search_spaces.config import hidden_width
from search_spaces.mixers import TOKEN_MIXERS, MixerShape, has_qkv
from search_spaces.static import ConvNorm, ModelSpec, StaticAttnBlock, StaticConvBlock, resize, spatial_mean

Kind = Literal["resize", "stem", "down", "conv", "attn", "head"]
KINDS: tuple[str, ...] = get_args(Kind)
NORM_MACS = 5  # fvcore counts 5 per input element of an affine GroupNorm / LayerNorm
UPSAMPLE_MACS = {2: 4, 1: 2}  # per output element: bilinear (fvcore's count), linear (nas.costs registers it)


@dataclass(frozen=True)
class BlockSpec:
    """One unit of a subnet, with everything its cost depends on. Unused fields are 0 or "".

    - resize: bilinear resize of the input (in_channels = out_channels), in/out_resolution.
    - stem, down: 3x3 convolution with `stride` + GroupNorm (the stem adds GELU).
    - conv: inverted residual at `in_resolution`; `hidden` expanded channels, depthwise `kernel`.
    - attn: transformer block; `mixer`, `heads` x `head_dim` (0 for a mixer without q/k/v),
      `window` (0 unless the mixer uses it), MLP `hidden` width.
    - head: spatial mean, LayerNorm, linear to `out_channels` classes.
    """

    kind: Kind
    in_channels: int
    out_channels: int
    in_resolution: int
    out_resolution: int
    stride: int = 0
    kernel: int = 0
    hidden: int = 0
    mixer: str = ""
    heads: int = 0
    head_dim: int = 0
    window: int = 0
    dims: int = 2  # 2: an image unit (resolution = H = W), 1: a sequence unit (resolution = T)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ArchError(f"block kind must be one of {list(KINDS)}, got {self.kind!r}")
        for name in _int_fields():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ArchError(f"block {name} must be an integer >= 0, got {value!r}")
        if self.dims not in (1, 2):
            raise ArchError(f"block dims must be 1 or 2, got {self.dims!r}")
        if not isinstance(self.mixer, str) or (self.mixer and self.mixer not in TOKEN_MIXERS):
            raise ArchError(f"block mixer must be one of {TOKEN_MIXERS.names()} or '', got {self.mixer!r}")
        if (self.kind == "attn") != (self.mixer != ""):
            raise ArchError(f"block mixer is set exactly for attn blocks; got kind {self.kind!r}, mixer {self.mixer!r}")

    @property
    def attn_width(self) -> int:
        """Channels of q (and of k, v): heads * head_dim."""
        return self.heads * self.head_dim

    @property
    def grid(self) -> tuple[int, int]:
        """(height, width) of the unit's token grid: a sequence is a grid of height 1."""
        r = self.in_resolution
        return (r, r) if self.dims == 2 else (1, r)

    @property
    def mixer_shape(self) -> MixerShape:
        """What the token mixer's costs depend on (an attn unit)."""
        return MixerShape(self.in_channels, self.heads, self.head_dim, *self.grid, self.window)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> BlockSpec:
        if not isinstance(data, dict):
            raise ArchError(f"block spec must be an object, got {type(data).__name__}")
        allowed = {f.name for f in fields(cls)}
        if extra := set(data) - allowed:
            raise ArchError(f"block spec: unknown key(s) {sorted(extra)}")
        if missing := {"kind", "in_channels", "out_channels", "in_resolution", "out_resolution"} - set(data):
            raise ArchError(f"block spec: missing key(s) {sorted(missing)}")
        return cls(**data)



@functools.cache
def _int_fields() -> tuple[str, ...]:
    """BlockSpec's integer fields (cached: `dataclasses.fields` was most of the cost of building one)."""
    return tuple(f.name for f in fields(BlockSpec) if f.name not in ("kind", "mixer"))

def conv_out(resolution: int, stride: int) -> int:
    """Output size of a 3x3 convolution with padding 1."""
    return (resolution - 1) // stride + 1


@functools.lru_cache(maxsize=16384)  # costs, features and latency predictors all ask for the same archs
def block_specs(spec: ModelSpec, arch: Arch) -> tuple[BlockSpec, ...]:
    """The units of `SubnetModel(spec, arch)`, in execution order (a tuple of frozen values: cached)."""
    units: list[BlockSpec] = []
    r = arch.resolution
    d = spec.dims
    if r != spec.input_size:
        units.append(BlockSpec("resize", spec.in_channels, spec.in_channels, spec.input_size, r, dims=d))
    res = conv_out(r, spec.stem_stride)
    units.append(BlockSpec("stem", spec.in_channels, arch.stem_width, r, res, stride=spec.stem_stride, kernel=3, dims=d))
    prev = arch.stem_width
    for stage in arch.stages:
        w, out = stage.width, conv_out(res, stage.stride)
        units.append(BlockSpec("down", prev, w, res, out, stride=stage.stride, kernel=3, dims=d))
        res, prev = out, w
        units += [unit_of(b, w, res, spec) for b in stage.blocks]
    units.append(BlockSpec("head", prev, spec.num_classes, res, 0, dims=d))
    return tuple(units)


def unit_of(block: ConvBlock | AttnBlock, width: int, resolution: int, spec: ModelSpec) -> BlockSpec:
    """The unit of one searchable block at a given width and resolution."""
    if isinstance(block, ConvBlock):
        return BlockSpec("conv", width, width, resolution, resolution, kernel=block.kernel,
                         hidden=hidden_width(width, block.expand), dims=spec.dims)
    mixer = TOKEN_MIXERS.get(block.mixer)
    return BlockSpec("attn", width, width, resolution, resolution, hidden=hidden_width(width, block.mlp_ratio),
                     mixer=block.mixer, heads=block.heads, head_dim=spec.head_dim if mixer.has_qkv else 0,
                     window=spec.window if mixer.uses_window else 0, dims=spec.dims)


# ---- analytic costs ----------------------------------------------------------------------------


def block_macs(b: BlockSpec) -> int:
    """Multiply-adds of one forward pass of the unit for one sample (fvcore's conventions)."""
    d = b.dims
    ci, co, n = b.in_channels, b.out_channels, b.out_resolution**d
    if b.kind == "resize":
        return UPSAMPLE_MACS[d] * ci * n
    if b.kind in ("stem", "down"):
        return n * (co * ci * b.kernel**d + NORM_MACS * co)
    if b.kind == "conv":
        h = b.hidden
        return n * (ci * h + NORM_MACS * h + h * b.kernel**d + NORM_MACS * h + h * co + NORM_MACS * co)
    if b.kind == "attn":
        w, m, a = ci, b.hidden, b.attn_width
        total = n * (w * 3**d + 2 * NORM_MACS * w + 2 * w * m)  # positional conv, two norms, MLP
        mixer = TOKEN_MIXERS.get(b.mixer)
        if mixer.has_qkv:
            total += n * (w * 3 * a + a * w)  # q/k/v and output projections
        return total + mixer.macs(b.mixer_shape)
    return NORM_MACS * ci + ci * co  # head: LayerNorm + linear; the spatial mean counts 0


def block_params(b: BlockSpec) -> int:
    """Parameters of the unit (the sum over a subnet's units is `SearchSpace.count_params`)."""
    ci, co, d = b.in_channels, b.out_channels, b.dims
    if b.kind == "resize":
        return 0
    if b.kind in ("stem", "down"):
        return ci * co * b.kernel**d + 2 * co
    if b.kind == "conv":
        h = b.hidden
        return ci * h + 2 * h + h * b.kernel**d + 2 * h + h * co + 2 * co
    if b.kind == "attn":
        w, m, a = ci, b.hidden, b.attn_width
        total = w * 3**d + w + 4 * w + w * m + m + m * w + w
        return total + (w * 3 * a + 3 * a + a * w + w if has_qkv(b.mixer) else 0)
    return 2 * ci + ci * co + co


def count_macs(spec: ModelSpec, arch: Arch, batch: int = 1) -> int:
    """Multiply-adds of one forward pass of `arch` on `batch` samples; equals fvcore exactly."""
    return batch * sum(block_macs(b) for b in block_specs(spec, arch))


# ---- memory ------------------------------------------------------------------------------------
def unit_activation_elements(b: BlockSpec) -> int:
    """Most activation elements alive at once while the unit runs (its input included), one sample.

    Follows eager PyTorch on this code (a tensor lives while a variable or a caller holds it) and
    assumes fused attention kernels that never materialise the score matrix (flash / memory-
    efficient SDPA on CPU and CUDA). In units of tokens n, width w, hidden h or MLP m, q width a:
    - resize: input + output; stem, down: input + convolution output + its normalised copy;
    - conv: input + three expanded tensors (the depthwise input is still held while its output is
      normalised);
    - attn: input, the input after positional encoding and the larger of the mixer's own peak
      (its entry's `peak_elements`) and the MLP's: what the block still holds of the mixer (with
      q/k/v: q/k/v + output, 4a; without: its normalised input, w) + the residual stream w + MLP
      pair 2m.
    - head: input + its mean.
    """
    ci, co, n_in, n = b.in_channels, b.out_channels, b.in_resolution**b.dims, b.out_resolution**b.dims
    if b.kind == "resize":
        return ci * n_in + co * n
    if b.kind in ("stem", "down"):
        return ci * n_in + 2 * co * n
    if b.kind == "conv":
        return ci * n + 3 * b.hidden * n
    if b.kind == "attn":
        w, m, a = ci, b.hidden, b.attn_width
        mixer = TOKEN_MIXERS.get(b.mixer)
        held = 4 * a * n if mixer.has_qkv else w * n  # the locals of `attn_block_forward` alive in the MLP
        return 2 * w * n + max(mixer.peak_elements(b.mixer_shape), held + n * (w + 2 * m))
    return ci * n_in + ci


def activation_peak_elements(spec: ModelSpec, arch: Arch) -> int:
    """Most activation elements alive at once in a forward pass of `arch` (one sample).

    While a unit runs, its callers still hold tensors besides the unit's input: the model input,
    the stem output (held by the sequence of stages), the current stage's input and, after the
    stage's first block, its down-sampled tensor. Their sum plus `unit_activation_elements` is
    maximised over the units.
    """
    units = iter(block_specs(spec, arch))
    x_in = spec.in_channels * spec.input_size**spec.dims
    peak = 0

    def run(held: int) -> BlockSpec:
        nonlocal peak
        b = next(units)
        peak = max(peak, held + unit_activation_elements(b))
        return b

    resized = arch.resolution != spec.input_size
    if resized:
        run(0)  # the resize reads the model input itself
    stem = run(x_in if resized else 0)
    stem_out = _out_elements(stem)
    for i, stage in enumerate(arch.stages):
        down = run(x_in + (stem_out if i > 0 else 0))
        stage_in = down.in_channels * down.in_resolution**down.dims if i > 0 else 0  # stage 0 reads the stem output
        for j in range(stage.depth):
            run(x_in + stem_out + stage_in + (_out_elements(down) if j > 0 else 0))
    run(x_in)  # head
    return peak


def _out_elements(b: BlockSpec) -> int:
    return b.out_channels * b.out_resolution**b.dims


def peak_memory_bytes(spec: ModelSpec, arch: Arch, batch: int = 1, bytes_per_element: int = 4) -> int:
    """Estimated peak memory of an inference forward pass on `batch` samples: all weights plus
    the most activations alive at once (`activation_peak_elements`, the model input included).

    Not counted: kernel workspaces, allocator rounding and caching, the framework itself.
    """
    params = sum(block_params(b) for b in block_specs(spec, arch))
    return bytes_per_element * (params + batch * activation_peak_elements(spec, arch))


# ---- building one unit -------------------------------------------------------------------------
class Head(nn.Module):
    """The classifier of `SubnetModel`: spatial mean, LayerNorm, linear."""

    def __init__(self, width: int, num_classes: int):
        super().__init__()
        self.head_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W) or (B, C, T) -> (B, classes)
        return self.head(self.head_norm(spatial_mean(x)))


def build_block(b: BlockSpec) -> nn.Module:
    """A standalone module computing the unit with the static layers `SubnetModel` uses."""
    if b.kind == "resize":
        return resize(b.dims, b.out_resolution)
    if b.kind in ("stem", "down"):
        return ConvNorm(b.in_channels, b.out_channels, b.stride, act=b.kind == "stem", dims=b.dims)
    if b.kind == "conv":
        return StaticConvBlock(b.in_channels, ConvBlock(b.kernel, _ratio(b.hidden, b.in_channels)), b.dims)
    if b.kind == "attn":
        block = AttnBlock(b.mixer, b.heads, _ratio(b.hidden, b.in_channels))
        return StaticAttnBlock(b.in_channels, block, b.head_dim, b.window, b.dims)
    return Head(b.in_channels, b.out_channels)


def _ratio(hidden: int, width: int) -> float:
    """A ratio whose `hidden_width` is exactly `hidden`."""
    ratio = hidden / width
    if hidden_width(width, ratio) != hidden:
        raise ArchError(f"no ratio gives hidden width {hidden} at width {width}")
    return ratio


def block_input_shape(b: BlockSpec, batch: int) -> tuple[int, ...]:
    """(B, C, H, W) or (B, C, T) of the unit's input."""
    return (batch, b.in_channels, *(b.in_resolution,) * b.dims)
