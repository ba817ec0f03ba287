"""The search space as data, and the operations every strategy needs.

`SpaceConfig` (search_spaces/config.py) is what a user writes (a JSON file or the dataclass): the
choices per stage and per block. `SearchSpace` owns sampling, mutation, crossover, validation, a fixed-length numeric
encoding for predictors, the exact number of architectures, and the exact parameter count.

Layouts: with ``layout="conv_first"`` every convolution block precedes every transformer block
(the searchable CNN-to-transformer switch of hybrid models such as CoAtNet or MobileViT); with
``layout="free"`` each block position picks its type on its own (BossNAS).
"""

from __future__ import annotations

import itertools
from dataclasses import astuple, dataclass, field
from typing import Any

import numpy as np

from search_spaces import blocks
from search_spaces.arch import Arch, ArchError, AttnBlock, Block, ConvBlock, Stage
from search_spaces.blocks import KINDS, BlockSpec, block_params, block_specs, conv_out, count_macs, unit_of
from search_spaces.config import BlockType, SpaceConfig, StageSpace
from search_spaces.mixers import TOKEN_MIXERS, has_qkv
from search_spaces.static import ModelSpec, at_input_size


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
            for h in (c.heads if has_qkv(m) else (0,))
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
        """Fewest resources: minimum of every choice, a mixer without q/k/v (pool) where allowed."""
        return self._extreme(largest=False)

    def largest(self) -> Arch:
        """Most capacity: maximum of every choice, softmax transformer blocks where allowed."""
        return self._extreme(largest=True)

    def smallest_variants(self) -> list[Arch]:
        """Minimal choices under every block-type layout, with each token mixer for all transformer
        blocks: which mixer is cheapest depends on the input size (softmax attention grows with
        its square), so the cheapest subnet is one of them whenever one mixer is cheapest at every
        block position."""
        c = self.config
        depths = [min(s.depths) for s in c.stages]
        if c.layout == "conv_first":
            variants = [self._extreme(False, n_conv, mixer=m) for n_conv in self.feasible_switches(depths)
                        for m in c.mixers]
        else:
            variants = [self._extreme(False, prefer_attn=False)] + [self._extreme(False, mixer=m) for m in c.mixers]
        return list(dict.fromkeys(variants))

    def _extreme(self, largest: bool, n_conv: int | None = None, prefer_attn: bool = True,
                 mixer: str | None = None) -> Arch:
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
        if mixer is None:  # largest: softmax where allowed, else a mixer with q/k/v; smallest: one without
            wanted = [m for m in c.mixers if has_qkv(m) == largest]
            mixer = "softmax" if largest and "softmax" in c.mixers else next(iter(wanted), c.mixers[0])
        heads = pick(c.heads) if has_qkv(mixer) else 0
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

    def nearest_switch(self, depths: list[int], n_conv: int) -> int:
        """The conv_first repair rule: the feasible CNN-to-transformer switch (number of leading conv
        blocks, `feasible_switches`) nearest `n_conv`."""
        return min(self.feasible_switches(depths), key=lambda n: (abs(n - n_conv), n))

    def _repair(self, blocks: list[list[Block]], rng: np.random.Generator) -> list[list[Block]]:
        """Make block types legal: allowed per stage, and for conv_first, conv before attn (as many
        conv blocks as `nearest_switch` allows)."""
        depths = [len(r) for r in blocks]
        if self.config.layout == "conv_first":
            n_now = sum(isinstance(b, ConvBlock) for row in blocks for b in row)
            return self._retype(blocks, self.nearest_switch(depths, n_now), rng)
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
                    if has_qkv(b.mixer):
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
        mixers = TOKEN_MIXERS.names()  # one-hot of the mixer, in registration order
        values: list[float] = [arch.resolution, arch.stem_width]
        for s, space in zip(arch.stages, self.config.stages):
            values += [s.depth, s.width, s.stride]
            for j in range(max(space.depths)):
                b = s.blocks[j] if j < s.depth else None
                slot = [0.0] * (6 + len(mixers))
                if isinstance(b, ConvBlock):
                    slot[:4] = [1.0, 0.0, b.kernel, b.expand]
                elif isinstance(b, AttnBlock):
                    slot[:2] = [1.0, 1.0]
                    slot[4:6] = [b.heads, b.mlp_ratio]
                    slot[6 + mixers.index(b.mixer)] = 1.0
                values += slot
        return np.asarray(values, dtype=np.float32)

    def count_params(self, arch: Arch) -> int:
        """Exact parameter count of the extracted model of `arch`: the sum over its units."""
        return sum(block_params(b) for b in block_specs(*self._geometry(arch, None)))

    def units(self) -> list[BlockSpec]:
        """Every distinct unit that some subnet of `space` contains, in a deterministic order.

        Resolutions are propagated stage by stage (each stride choice applied to each reachable
        resolution); a block type is included in a stage only where the layout lets it appear there.
        """
        c = self.config
        spec = ModelSpec.from_config(c)
        units: set[BlockSpec] = set()
        res_by_input: dict[int, int] = {}
        d = c.dims
        for r in c.resolutions:
            if r != c.input_size:
                units.add(BlockSpec("resize", c.in_channels, c.in_channels, c.input_size, r, dims=d))
            res_by_input[r] = conv_out(r, c.stem_stride)
            for w in c.stem_widths:
                units.add(BlockSpec("stem", c.in_channels, w, r, res_by_input[r], stride=c.stem_stride, kernel=3, dims=d))
        resolutions, prev_widths = set(res_by_input.values()), c.stem_widths
        types = [set(s.block_types) for s in c.stages]
        for i, stage in enumerate(c.stages):
            out_res = {conv_out(r, s) for r in resolutions for s in stage.strides}
            for p, w, s, r in itertools.product(prev_widths, stage.widths, stage.strides, resolutions):
                units.add(BlockSpec("down", p, w, r, conv_out(r, s), stride=s, kernel=3, dims=d))
            if c.layout == "conv_first":  # conv only after conv-capable stages, attn only before attn-capable ones
                conv_ok = all("conv" in t for t in types[: i + 1])
                attn_ok = all("attn" in t for t in types[i:])
            else:
                conv_ok, attn_ok = "conv" in types[i], "attn" in types[i]
            blocks = [*(self.block_options("conv") if conv_ok else ()), *(self.block_options("attn") if attn_ok else ())]
            for w, r, b in itertools.product(stage.widths, out_res, blocks):
                units.add(unit_of(b, w, r, spec))
            resolutions, prev_widths = out_res, stage.widths
        for w, r in itertools.product(prev_widths, resolutions):
            units.add(BlockSpec("head", w, c.num_classes, r, 0, dims=d))
        order = {k: i for i, k in enumerate(KINDS)}
        return sorted(units, key=lambda b: (order[b.kind], *(str(v) for v in astuple(b)[1:])))

    def count_flops(self, arch: Arch, batch: int = 1, *, input_size: int | None = None) -> int:
        """Exact multiply-adds of one forward pass of the extracted model of `arch`, as fvcore counts
        them (`nas.costs.count_flops`), from the architecture alone (`search_spaces.blocks`).
        `input_size`: on inputs of that size (a sequence length at deployment) instead."""
        return count_macs(*self._geometry(arch, input_size), batch)

    def _geometry(self, arch: Arch, input_size: int | None) -> tuple[ModelSpec, Arch]:
        """(ModelSpec, Arch) of `arch` on inputs of `input_size` (default: the space's input size)."""
        spec = ModelSpec.from_config(self.config)
        arch = self.validate(arch)
        return (spec, arch) if input_size is None else at_input_size(spec, arch, input_size)

    def peak_memory_bytes(self, arch: Arch, batch: int = 1, bytes_per_element: int = 4, *,
                          input_size: int | None = None) -> int:
        """Estimated peak memory of an inference forward pass: weights + most live activations."""
        return blocks.peak_memory_bytes(*self._geometry(arch, input_size), batch, bytes_per_element)
