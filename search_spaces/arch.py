"""Architecture values: frozen, hashable, validated on construction, lossless JSON round trip.

An architecture names one subnet of a hybrid CNN-transformer supernet: the input resolution, the
stem width, and per stage its width, stride and the list of *active* blocks (its depth is the
length of that list). Each block is either a convolution block (inverted residual, Once-for-All's
kernel/expand elasticity) or a transformer block (token mixer, heads, MLP ratio: AutoFormer/HAT
elasticity plus the attention type of "NAS on Efficient Transformers and Beyond").

These classes only check what holds for every space (types, positivity, field combinations);
`SearchSpace.validate` checks membership of a given space.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args

Mixer = Literal["softmax", "linear", "window", "pool"]
MIXERS: tuple[str, ...] = get_args(Mixer)
ATTENTION_MIXERS: tuple[str, ...] = ("softmax", "linear", "window")  # share q/k/v projections


class ArchError(ValueError):
    """An architecture field is invalid; the message names the field."""


def _check_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ArchError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_ratio(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ArchError(f"{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class ConvBlock:
    """Inverted residual: 1x1 expand -> k x k depthwise -> 1x1 project, residual."""

    kernel: int
    expand: float

    def __post_init__(self) -> None:
        _check_int("kernel", self.kernel)
        if self.kernel % 2 == 0:
            raise ArchError(f"kernel must be odd, got {self.kernel}")
        _check_ratio("expand", self.expand)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "conv", "kernel": self.kernel, "expand": self.expand}


@dataclass(frozen=True)
class AttnBlock:
    """Pre-norm transformer block: token mixer then MLP. `heads` is 0 for the pooling mixer."""

    mixer: Mixer
    heads: int
    mlp_ratio: float

    def __post_init__(self) -> None:
        if self.mixer not in MIXERS:
            raise ArchError(f"mixer must be one of {list(MIXERS)}, got {self.mixer!r}")
        if self.mixer == "pool":
            if self.heads != 0:
                raise ArchError(f"heads must be 0 for the pool mixer, got {self.heads!r}")
        else:
            _check_int("heads", self.heads)
        _check_ratio("mlp_ratio", self.mlp_ratio)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "attn", "mixer": self.mixer, "heads": self.heads, "mlp_ratio": self.mlp_ratio}


Block = Union[ConvBlock, AttnBlock]


@dataclass(frozen=True)
class Stage:
    width: int
    stride: int
    blocks: tuple[Block, ...]

    def __post_init__(self) -> None:
        _check_int("width", self.width)
        if self.stride not in (1, 2):
            raise ArchError(f"stride must be 1 or 2, got {self.stride!r}")
        if not isinstance(self.blocks, tuple) or not self.blocks:
            raise ArchError("blocks must be a non-empty tuple")
        for b in self.blocks:
            if not isinstance(b, (ConvBlock, AttnBlock)):
                raise ArchError(f"blocks must hold ConvBlock/AttnBlock, got {type(b).__name__}")

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "stride": self.stride, "blocks": [b.to_dict() for b in self.blocks]}


@dataclass(frozen=True)
class Arch:
    resolution: int
    stem_width: int
    stages: tuple[Stage, ...]

    def __hash__(self) -> int:  # archs are dict keys everywhere in a search: hash the nested tuples once
        try:
            return self.__dict__["_hash"]
        except KeyError:
            value = hash((self.resolution, self.stem_width, self.stages))
            self.__dict__["_hash"] = value  # not a field: eq, repr and to_dict ignore it
            return value

    def __post_init__(self) -> None:
        _check_int("resolution", self.resolution)
        _check_int("stem_width", self.stem_width)
        if not isinstance(self.stages, tuple) or not self.stages:
            raise ArchError("stages must be a non-empty tuple")
        for s in self.stages:
            if not isinstance(s, Stage):
                raise ArchError(f"stages must hold Stage values, got {type(s).__name__}")

    @property
    def blocks(self) -> tuple[Block, ...]:
        return tuple(b for s in self.stages for b in s.blocks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "stem_width": self.stem_width,
            "stages": [s.to_dict() for s in self.stages],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def id(self) -> str:
        """Stable short identifier: hash of the canonical JSON."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:10]

    @classmethod
    def from_dict(cls, data: Any) -> Arch:
        obj = _expect(data, dict, "arch")
        _expect_keys(obj, {"resolution", "stem_width", "stages"}, "arch")
        stages = tuple(
            _stage_from_dict(s, f"stages[{i}]") for i, s in enumerate(_expect(obj["stages"], list, "stages"))
        )
        try:
            return cls(resolution=obj["resolution"], stem_width=obj["stem_width"], stages=stages)
        except ArchError as e:
            raise ArchError(f"arch: {e}") from None

    @classmethod
    def from_json(cls, text: str) -> Arch:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArchError(f"architecture is not valid JSON: {e}") from None
        return cls.from_dict(data)


def _expect(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind):
        raise ArchError(f"{where} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _expect_keys(obj: dict, keys: set[str], where: str) -> None:
    missing, extra = keys - obj.keys(), obj.keys() - keys
    if missing:
        raise ArchError(f"{where}: missing key(s) {sorted(missing)}")
    if extra:
        raise ArchError(f"{where}: unknown key(s) {sorted(extra)}; allowed: {sorted(keys)}")


def _stage_from_dict(data: Any, where: str) -> Stage:
    obj = _expect(data, dict, where)
    _expect_keys(obj, {"width", "stride", "blocks"}, where)
    blocks = tuple(
        _block_from_dict(b, f"{where}.blocks[{i}]") for i, b in enumerate(_expect(obj["blocks"], list, f"{where}.blocks"))
    )
    try:
        return Stage(width=obj["width"], stride=obj["stride"], blocks=blocks)
    except ArchError as e:
        raise ArchError(f"{where}: {e}") from None


def _block_from_dict(data: Any, where: str) -> Block:
    obj = _expect(data, dict, where)
    kind = obj.get("type")
    try:
        if kind == "conv":
            _expect_keys(obj, {"type", "kernel", "expand"}, where)
            return ConvBlock(kernel=obj["kernel"], expand=obj["expand"])
        if kind == "attn":
            _expect_keys(obj, {"type", "mixer", "heads", "mlp_ratio"}, where)
            return AttnBlock(mixer=obj["mixer"], heads=obj["heads"], mlp_ratio=obj["mlp_ratio"])
    except ArchError as e:
        raise ArchError(f"{where}: {e}") from None
    raise ArchError(f"{where}.type must be 'conv' or 'attn', got {kind!r}")
