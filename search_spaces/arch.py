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
import math
import reprlib
from dataclasses import dataclass
from typing import Any

from search_spaces.mixers import TOKEN_MIXERS


class ArchError(ValueError):
    """An architecture field is invalid; the message names the field."""


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 3, 60, 60, 40


def show(value: Any) -> str:
    """`repr` for an error message: bounded in length and depth, whatever a user file holds."""
    return _SHORT.repr(value)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")  # the json module would keep the last one silently
        seen[key] = value
    return seen


def loads_json(text: str) -> Any:
    """`json.loads` for files people write: a key given twice is an error (ValueError), not the last one wins."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is a finite float: no NaN, no inf, no integer beyond any float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _check_int(name: str, value: Any, minimum: int = 1) -> None:
    if not _is_int(value) or value < minimum:
        raise ArchError(f"{name} must be an integer >= {minimum}, got {show(value)}")


def _check_ratio(name: str, value: Any) -> None:
    if not is_finite_number(value) or not value > 0:
        raise ArchError(f"{name} must be a positive finite number, got {show(value)}")


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
    """Pre-norm transformer block: token mixer then MLP. `heads` is 0 for a mixer without q/k/v (pool).

    `mixer` names an entry of `search_spaces.mixers.TOKEN_MIXERS`."""

    mixer: str
    heads: int
    mlp_ratio: float

    def __post_init__(self) -> None:
        if not isinstance(self.mixer, str) or self.mixer not in TOKEN_MIXERS:
            raise ArchError(f"mixer must be one of {TOKEN_MIXERS.names()}, got {show(self.mixer)}")
        if not TOKEN_MIXERS.get(self.mixer).has_qkv:
            if not _is_int(self.heads) or self.heads != 0:  # 0.0 or False would be another id for it
                raise ArchError(f"heads must be 0 for the {self.mixer} mixer, got {show(self.heads)}")
        else:
            _check_int("heads", self.heads)
        _check_ratio("mlp_ratio", self.mlp_ratio)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "attn", "mixer": self.mixer, "heads": self.heads, "mlp_ratio": self.mlp_ratio}


Block = ConvBlock | AttnBlock


@dataclass(frozen=True)
class Stage:
    width: int
    stride: int
    blocks: tuple[Block, ...]

    def __post_init__(self) -> None:
        _check_int("width", self.width)
        if not _is_int(self.stride) or self.stride not in (1, 2):  # True == 1, 1.0 == 1: not strides
            raise ArchError(f"stride must be 1 or 2, got {show(self.stride)}")
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

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (Ray, multiprocessing) without the cached hash: str hashes differ between processes."""
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

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
            data = loads_json(text)
        except (ValueError, TypeError, RecursionError) as e:  # also too deep, or an integer too long
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
        raise ArchError(f"{where}: unknown key(s) {show(sorted(extra, key=str))}; allowed: {sorted(keys)}")


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
    raise ArchError(f"{where}.type must be 'conv' or 'attn', got {show(kind)}")
