"""The search space as data, and the operations every strategy needs.

`SpaceConfig` is what a user writes (a JSON file or the dataclass): the choices per stage and per
block. `SearchSpace` owns sampling, mutation, crossover, validation, a fixed-length numeric
encoding for predictors, the exact number of architectures, and the exact parameter count.

Layouts: with ``layout="conv_first"`` every convolution block precedes every transformer block
(the searchable CNN-to-transformer switch of hybrid models such as CoAtNet or MobileViT); with
``layout="free"`` each block position picks its type on its own (BossNAS).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from search_spaces.arch import (ATTENTION_MIXERS, MIXERS, Arch, ArchError, AttnBlock, Block, ConvBlock, Stage,
                                 is_finite_number, show)

BlockType = Literal["conv", "attn"]


def hidden_width(width: int, ratio: float) -> int:
    """Channels of an expanded layer; nested prefixes of the largest one (MatFormer)."""
    return max(1, int(round(width * ratio)))


def scaled_resolution(resolution: int, input_size: int, size: int) -> int:
    """The resolution a subnet resamples its input to when inputs have `size` instead of `input_size`."""
    return resolution if size == input_size else max(1, round(resolution * size / input_size))


def _tuple(name: str, value: Any, kind: type | tuple[type, ...] = int) -> tuple:
    if not isinstance(value, (list, tuple)) or not value:
        raise ArchError(f"space: {name} must be a non-empty list, got {show(value)}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, kind):
            raise ArchError(f"space: {name} holds {show(v)}, expected {kind}")
        if kind is not str and not (is_finite_number(v) and v > 0):  # sizes and ratios
            raise ArchError(f"space: {name} must hold positive finite numbers, got {show(v)}")
    if len(set(value)) != len(value):
        raise ArchError(f"space: {name} has duplicates: {show(list(value))}")
    return tuple(value)


@dataclass(frozen=True)
class StageSpace:
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    strides: tuple[int, ...] = (1,)
    block_types: tuple[BlockType, ...] = ("conv", "attn")

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", _tuple("depths", self.depths))
        object.__setattr__(self, "widths", _tuple("widths", self.widths))
        object.__setattr__(self, "strides", _tuple("strides", self.strides))
        object.__setattr__(self, "block_types", _tuple("block_types", self.block_types, str))
        if min(self.depths) < 1 or min(self.widths) < 1:
            raise ArchError("space: depths and widths must be >= 1")
        if not set(self.strides) <= {1, 2}:
            raise ArchError(f"space: strides must be 1 or 2, got {show(list(self.strides))}")
        if not set(self.block_types) <= {"conv", "attn"}:
            raise ArchError(f"space: block_types must be 'conv'/'attn', got {show(list(self.block_types))}")


@dataclass(frozen=True)
class SpaceConfig:
    """Choices of a hybrid CNN-transformer space. Every field is plain data (JSON)."""

    name: str
    in_channels: int
    num_classes: int
    input_size: int
    resolutions: tuple[int, ...]
    stem_widths: tuple[int, ...]
    stages: tuple[StageSpace, ...]
    stem_stride: int = 1
    kernels: tuple[int, ...] = (3, 5, 7)
    expand_ratios: tuple[float, ...] = (2, 3, 4)
    mixers: tuple[str, ...] = MIXERS
    heads: tuple[int, ...] = (1, 2, 4)
    mlp_ratios: tuple[float, ...] = (2, 3, 4)
    head_dim: int = 16
    window: int = 4
    layout: Literal["conv_first", "free"] = "conv_first"
    dims: int = 2  # 2: images (C, H, W), resolution = H = W; 1: sequences (C, T), resolution = T tokens

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ArchError(f"space: name must be a non-empty string, got {show(self.name)}")
        for name in ("resolutions", "stem_widths", "kernels", "heads"):
            object.__setattr__(self, name, _tuple(name, getattr(self, name)))
        for name in ("expand_ratios", "mlp_ratios"):
            object.__setattr__(self, name, _tuple(name, getattr(self, name), (int, float)))
        object.__setattr__(self, "mixers", _tuple("mixers", self.mixers, str))
        stages = tuple(s if isinstance(s, StageSpace) else StageSpace(**s) for s in self.stages)
        object.__setattr__(self, "stages", stages)
        if not stages:
            raise ArchError("space: stages must be non-empty")
        if unknown := set(self.mixers) - set(MIXERS):
            raise ArchError(f"space: unknown mixers {show(sorted(unknown))}; allowed: {list(MIXERS)}")
        if any(k % 2 == 0 for k in self.kernels):
            raise ArchError(f"space: kernels must be odd, got {show(list(self.kernels))}")
        if not isinstance(self.layout, str) or self.layout not in ("conv_first", "free"):
            raise ArchError(f"space: layout must be 'conv_first' or 'free', got {show(self.layout)}")
        only = [set(s.block_types) for s in stages]
        if self.layout == "conv_first" and any(
            a == {"attn"} and b == {"conv"} for i, a in enumerate(only) for b in only[i + 1:]
        ):  # no architecture could put every conv block before every transformer block
            raise ArchError("space: stages: layout 'conv_first' cannot follow a transformer-only stage with a "
                            "conv-only stage")
        if isinstance(self.dims, bool) or self.dims not in (1, 2):
            raise ArchError(f"space: dims must be 1 (sequences) or 2 (images), got {show(self.dims)}")
        for name in ("in_channels", "num_classes", "input_size", "head_dim", "window", "stem_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ArchError(f"space: {name} must be a positive integer, got {show(value)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def at_input_size(self, size: int) -> SpaceConfig:
        """The space on inputs of `size` (a sequence length at deployment): what its hardware costs
        are computed on. Same weights; each resolution scaled like `static.at_input_size`."""
        resolutions = tuple(dict.fromkeys(scaled_resolution(r, self.input_size, size) for r in self.resolutions))
        return replace(self, input_size=size, resolutions=resolutions)

    @classmethod
    def from_dict(cls, data: Any) -> SpaceConfig:
        if not isinstance(data, dict):
            raise ArchError("space: expected a JSON object")
        allowed = {f.name for f in fields(cls)}
        if extra := set(data) - allowed:
            raise ArchError(f"space: unknown key(s) {show(sorted(extra, key=str))}; allowed: {sorted(allowed)}")
        if missing := {f.name for f in fields(cls) if f.default is MISSING} - set(data):
            raise ArchError(f"space: missing key(s) {sorted(missing)}")
        stage_keys = {f.name for f in fields(StageSpace)}
        if not isinstance(data["stages"], list):
            raise ArchError("space: stages must be a list of objects")
        for i, s in enumerate(data["stages"]):
            if not isinstance(s, dict) or set(s) - stage_keys:
                raise ArchError(f"space: stages[{i}] must be an object with keys from {sorted(stage_keys)}")
            if missing := {f.name for f in fields(StageSpace) if f.default is MISSING} - set(s):
                raise ArchError(f"space: stages[{i}]: missing key(s) {sorted(missing)}")
        try:
            return cls(**data)
        except TypeError as e:  # a missing required key
            raise ArchError(f"space: {e}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> SpaceConfig:
        try:  # ValueError: also bad UTF-8 or JSON, an integer too long, and ArchError; RecursionError: too deep
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, RecursionError) as e:
            raise ArchError(f"space file {path}: {e}") from None


@dataclass(frozen=True)
class SearchSpace:
    config: SpaceConfig
    _attn_options: tuple[AttnBlock, ...] = field(init=False, repr=False, compare=False)
    _conv_options: tuple[ConvBlock, ...] = field(init=False, repr=False, compare=False)
    # archs already validated: a search validates the same values many times (mutate, encode, costs)
    _valid: dict = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        c = self.config
        conv = tuple(ConvBlock(k, e) for k in c.kernels for e in c.expand_ratios)
        attn = tuple(
            AttnBlock(m, h, r)
            for m in c.mixers
            for h in ((0,) if m == "pool" else c.heads)
            for r in c.mlp_ratios
        )
        object.__setattr__(self, "_conv_options", conv)
        object.__setattr__(self, "_attn_options", attn)

    def block_options(self, kind: BlockType) -> tuple[Block, ...]:
        """Every block of a type that a block position may hold."""
        return self._conv_options if kind == "conv" else self._attn_options

    # ---- sampling -------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Arch:
        c = self.config
        depths = [int(rng.choice(s.depths)) for s in c.stages]
        types = self._sample_types(depths, rng)
        return self._build(
            resolution=int(rng.choice(c.resolutions)),
            stem_width=int(rng.choice(c.stem_widths)),
            widths=[int(rng.choice(s.widths)) for s in c.stages],
            strides=[int(rng.choice(s.strides)) for s in c.stages],
            blocks=[[self._sample_block(t, rng) for t in ts] for ts in types],
        )

    def smallest(self) -> Arch:
        """Fewest resources: minimum of every choice, attention-free pooling blocks where allowed."""
        return self._extreme(largest=False)

    def largest(self) -> Arch:
        """Most capacity: maximum of every choice, softmax transformer blocks where allowed."""
        return self._extreme(largest=True)

    def smallest_variants(self) -> list[Arch]:
        """Minimal choices under every block-type layout: the cheapest subnet is one of them."""
        c = self.config
        depths = [min(s.depths) for s in c.stages]
        if c.layout == "conv_first":
            return [self._extreme(False, n_conv) for n_conv in self.feasible_switches(depths)]
        return [self._extreme(False, prefer_attn=False), self._extreme(False)]

    def _extreme(self, largest: bool, n_conv: int | None = None, prefer_attn: bool = True) -> Arch:
        c = self.config
        pick = max if largest else min
        depths = [pick(s.depths) for s in c.stages]
        attn_allowed = [
            ["attn" in s.block_types and (prefer_attn or "conv" not in s.block_types)] * d
            for s, d in zip(c.stages, depths)
        ]
        if c.layout == "conv_first":  # by default the fewest conv blocks the layout allows
            n_conv = min(self.feasible_switches(depths)) if n_conv is None else n_conv
            flat = [i >= n_conv for i in range(sum(depths))]
            attn_allowed = self._split(flat, depths)
        conv = ConvBlock(pick(c.kernels), pick(c.expand_ratios))
        mixer = "softmax" if largest else "pool"
        if mixer not in c.mixers:
            mixer = next((m for m in c.mixers if m != "pool"), "pool") if largest else c.mixers[0]
        heads = 0 if mixer == "pool" else pick(c.heads)
        attn = AttnBlock(mixer, heads, pick(c.mlp_ratios))
        return self._build(
            resolution=pick(c.resolutions),
            stem_width=pick(c.stem_widths),
            widths=[pick(s.widths) for s in c.stages],
            strides=[(min if largest else max)(s.strides) for s in c.stages],
            blocks=[[attn if a else conv for a in row] for row in attn_allowed],
        )

    def mutate(self, arch: Arch, rng: np.random.Generator, prob: float = 0.2) -> Arch:
        """Resample each choice with probability `prob`; retries (bounded) until the result differs."""
        self.validate(arch)
        for _ in range(20):
            child = self._mutate_once(arch, rng, prob)
            if child != arch:
                return child
        return child

    def _mutate_once(self, arch: Arch, rng: np.random.Generator, prob: float) -> Arch:
        c = self.config

        def maybe(current: Any, choices: tuple) -> Any:
            return type(current)(rng.choice(choices)) if rng.random() < prob else current

        blocks, widths, strides = [], [], []
        for s, space in zip(arch.stages, c.stages):
            widths.append(maybe(s.width, space.widths))
            strides.append(maybe(s.stride, space.strides))
            depth = maybe(s.depth, space.depths)
            row = [self._mutate_block(b, space, rng, prob) for b in s.blocks[:depth]]
            row += [self._sample_block(str(rng.choice(space.block_types)), rng) for _ in range(depth - len(row))]
            blocks.append(row)
        if c.layout == "conv_first" and rng.random() < prob:  # move the CNN-to-transformer switch
            depths = [len(r) for r in blocks]
            blocks = self._retype(blocks, int(rng.choice(self.feasible_switches(depths))), rng)
        return self._build(
            resolution=maybe(arch.resolution, c.resolutions),
            stem_width=maybe(arch.stem_width, c.stem_widths),
            widths=widths,
            strides=strides,
            blocks=self._repair(blocks, rng),
        )

    def _mutate_block(self, block: Block, space: StageSpace, rng: np.random.Generator, prob: float) -> Block:
        if self.config.layout == "free" and len(space.block_types) > 1 and rng.random() < prob:
            return self._sample_block("attn" if isinstance(block, ConvBlock) else "conv", rng)
        if rng.random() < prob:
            return self._sample_block("conv" if isinstance(block, ConvBlock) else "attn", rng)
        return block

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        """Uniform crossover of every choice, block by block; the layout is repaired afterwards."""
        self.validate(a)
        self.validate(b)

        def pick(x: Any, y: Any) -> Any:
            return x if rng.random() < 0.5 else y

        blocks = []
        for sa, sb in zip(a.stages, b.stages):
            depth = pick(sa.depth, sb.depth)
            row = []
            for j in range(depth):
                options = [s.blocks[j] for s in (sa, sb) if j < s.depth]
                row.append(options[int(rng.integers(len(options)))])
            blocks.append(row)
        return self._build(
            resolution=pick(a.resolution, b.resolution),
            stem_width=pick(a.stem_width, b.stem_width),
            widths=[pick(sa.width, sb.width) for sa, sb in zip(a.stages, b.stages)],
            strides=[pick(sa.stride, sb.stride) for sa, sb in zip(a.stages, b.stages)],
            blocks=self._repair(blocks, rng),
        )

    # ---- layout helpers ---------------------------------------------------------------------
    def feasible_switches(self, depths: list[int]) -> list[int]:
        """Numbers of leading conv blocks that respect every stage's allowed block types."""
        allowed = [set(s.block_types) for s, d in zip(self.config.stages, depths) for _ in range(d)]
        total = len(allowed)
        return [
            n
            for n in range(total + 1)
            if all("conv" in allowed[i] for i in range(n)) and all("attn" in allowed[i] for i in range(n, total))
        ]

    @staticmethod
    def _split(flat: list, depths: list[int]) -> list[list]:
        out, i = [], 0
        for d in depths:
            out.append(flat[i : i + d])
            i += d
        return out

    def _sample_types(self, depths: list[int], rng: np.random.Generator) -> list[list[str]]:
        if self.config.layout == "free":
            return [[str(rng.choice(s.block_types)) for _ in range(d)] for s, d in zip(self.config.stages, depths)]
        n_conv = int(rng.choice(self.feasible_switches(depths)))
        return self._split(["conv" if i < n_conv else "attn" for i in range(sum(depths))], depths)

    def _retype(self, blocks: list[list[Block]], n_conv: int, rng: np.random.Generator) -> list[list[Block]]:
        flat = [b for row in blocks for b in row]
        out = []
        for i, b in enumerate(flat):
            want = ConvBlock if i < n_conv else AttnBlock
            out.append(b if isinstance(b, want) else self._sample_block("conv" if i < n_conv else "attn", rng))
        return self._split(out, [len(r) for r in blocks])

    def _repair(self, blocks: list[list[Block]], rng: np.random.Generator) -> list[list[Block]]:
        """Make block types legal: allowed per stage, and for conv_first, conv before attn."""
        depths = [len(r) for r in blocks]
        if self.config.layout == "conv_first":
            n_now = sum(isinstance(b, ConvBlock) for row in blocks for b in row)
            n_conv = min(self.feasible_switches(depths), key=lambda n: (abs(n - n_now), n))
            return self._retype(blocks, n_conv, rng)
        out = []
        for row, s in zip(blocks, self.config.stages):
            out.append([
                b if ("conv" if isinstance(b, ConvBlock) else "attn") in s.block_types
                else self._sample_block(s.block_types[0], rng)
                for b in row
            ])
        return out

    def _sample_block(self, kind: str, rng: np.random.Generator) -> Block:
        options = self._conv_options if kind == "conv" else self._attn_options
        return options[int(rng.integers(len(options)))]

    def _build(self, *, resolution, stem_width, widths, strides, blocks) -> Arch:
        stages = tuple(Stage(w, s, tuple(bs)) for w, s, bs in zip(widths, strides, blocks))
        arch = Arch(resolution=resolution, stem_width=stem_width, stages=stages)
        self.validate(arch)
        return arch

    # ---- validation -------------------------------------------------------------------------
    def validate(self, arch: Arch) -> Arch:
        """Raise ArchError naming the first field that is not a choice of this space."""
        if not isinstance(arch, Arch):
            raise ArchError(f"expected an Arch, got {type(arch).__name__}")
        if arch in self._valid:
            return arch
        self._check(arch)
        if len(self._valid) >= 200_000:  # bounded: a long search must not grow it without end
            self._valid.clear()
        self._valid[arch] = None
        return arch

    def _check(self, arch: Arch) -> None:
        c = self.config

        def check(where: str, value: Any, allowed: tuple) -> None:
            if value not in allowed:
                raise ArchError(f"{where}={value!r} is not allowed; choices: {list(allowed)}")

        if not isinstance(arch, Arch):
            raise ArchError(f"expected an Arch, got {type(arch).__name__}")
        check("resolution", arch.resolution, c.resolutions)
        check("stem_width", arch.stem_width, c.stem_widths)
        if len(arch.stages) != len(c.stages):
            raise ArchError(f"stages: {len(arch.stages)} given, space {c.name!r} has {len(c.stages)}")
        for i, (s, space) in enumerate(zip(arch.stages, c.stages)):
            check(f"stages[{i}].width", s.width, space.widths)
            check(f"stages[{i}].stride", s.stride, space.strides)
            check(f"stages[{i}].depth", s.depth, space.depths)
            for j, b in enumerate(s.blocks):
                where = f"stages[{i}].blocks[{j}]"
                check(f"{where}.type", "conv" if isinstance(b, ConvBlock) else "attn", space.block_types)
                if isinstance(b, ConvBlock):
                    check(f"{where}.kernel", b.kernel, c.kernels)
                    check(f"{where}.expand", b.expand, c.expand_ratios)
                else:
                    check(f"{where}.mixer", b.mixer, c.mixers)
                    if b.mixer != "pool":
                        check(f"{where}.heads", b.heads, c.heads)
                    check(f"{where}.mlp_ratio", b.mlp_ratio, c.mlp_ratios)
        if c.layout == "conv_first":
            kinds = [isinstance(b, AttnBlock) for b in arch.blocks]
            if kinds != sorted(kinds):
                raise ArchError("layout: space uses 'conv_first', so no conv block may follow a transformer block")

    def parse(self, data: Any) -> Arch:
        """An Arch from a JSON string or dict, validated against this space."""
        arch = Arch.from_json(data) if isinstance(data, str) else Arch.from_dict(data)
        return self.validate(arch)

    # ---- size, encoding, parameters ---------------------------------------------------------
    def size(self) -> int:
        """Exact number of distinct architectures (Python integer, no overflow)."""
        c = self.config
        n_conv, n_attn = len(self._conv_options), len(self._attn_options)
        # state: 0 = no transformer block seen yet, 1 = seen (only matters for conv_first)
        counts = {0: 1, 1: 0}
        for s in c.stages:
            nc = n_conv if "conv" in s.block_types else 0
            na = n_attn if "attn" in s.block_types else 0
            new = {0: 0, 1: 0}
            for d in s.depths:
                if c.layout == "free":
                    new[0] += (counts[0] + counts[1]) * (nc + na) ** d
                    continue
                new[0] += counts[0] * nc**d
                new[1] += counts[0] * sum(nc**a * na ** (d - a) for a in range(d)) + counts[1] * na**d
            mult = len(s.widths) * len(s.strides)
            counts = {k: v * mult for k, v in new.items()}
        return (counts[0] + counts[1]) * len(c.resolutions) * len(c.stem_widths)

    def encode(self, arch: Arch) -> np.ndarray:
        """Fixed-length float vector: globals, per stage (depth, width, stride), per block slot."""
        self.validate(arch)
        values: list[float] = [arch.resolution, arch.stem_width]
        for s, space in zip(arch.stages, self.config.stages):
            values += [s.depth, s.width, s.stride]
            for j in range(max(space.depths)):
                b = s.blocks[j] if j < s.depth else None
                slot = [0.0] * (6 + len(MIXERS))
                if isinstance(b, ConvBlock):
                    slot[:4] = [1.0, 0.0, b.kernel, b.expand]
                elif isinstance(b, AttnBlock):
                    slot[:2] = [1.0, 1.0]
                    slot[4:6] = [b.heads, b.mlp_ratio]
                    slot[6 + MIXERS.index(b.mixer)] = 1.0
                values += slot
        return np.asarray(values, dtype=np.float32)

    def count_params(self, arch: Arch) -> int:
        """Exact parameter count of the extracted model of `arch`."""
        self.validate(arch)
        c = self.config
        k3 = 3**c.dims  # a 3x3 (images) or 3 (sequences) kernel
        total = c.in_channels * arch.stem_width * k3 + 2 * arch.stem_width
        prev = arch.stem_width
        for s in arch.stages:
            w = s.width
            total += prev * w * k3 + 2 * w
            for b in s.blocks:
                if isinstance(b, ConvBlock):
                    h = hidden_width(w, b.expand)
                    total += w * h + 2 * h + h * b.kernel**c.dims + 2 * h + h * w + 2 * w
                    continue
                total += w * k3 + w + 4 * w  # positional dw conv (+bias), two LayerNorms
                if b.mixer in ATTENTION_MIXERS:
                    a = b.heads * c.head_dim
                    total += w * 3 * a + 3 * a + a * w + w
                m = hidden_width(w, b.mlp_ratio)
                total += w * m + m + m * w + w
            prev = w
        return total + 2 * prev + prev * c.num_classes + c.num_classes

    def count_flops(self, arch: Arch, batch: int = 1, *, input_size: int | None = None) -> int:
        """Exact multiply-adds of one forward pass of the extracted model of `arch`, as fvcore counts
        them (`nas.costs.count_flops`), from the architecture alone (`search_spaces.blocks`).
        `input_size`: on inputs of that size (a sequence length at deployment) instead."""
        from search_spaces.blocks import count_macs  # blocks builds on static, which imports this module

        return count_macs(*self._geometry(arch, input_size), batch)

    def _geometry(self, arch: Arch, input_size: int | None):
        """(ModelSpec, Arch) of `arch` on inputs of `input_size` (default: the space's input size)."""
        from search_spaces.static import ModelSpec, at_input_size

        spec = ModelSpec.from_config(self.config)
        arch = self.validate(arch)
        return (spec, arch) if input_size is None else at_input_size(spec, arch, input_size)

    def peak_memory_bytes(self, arch: Arch, batch: int = 1, bytes_per_element: int = 4, *,
                          input_size: int | None = None) -> int:
        """Estimated peak memory of an inference forward pass: weights + most live activations."""
        from search_spaces.blocks import peak_memory_bytes

        return peak_memory_bytes(*self._geometry(arch, input_size), batch, bytes_per_element)
