"""What a user writes to define a search space: `SpaceConfig` (a JSON file or the dataclass) with its
`StageSpace`s, validated on construction with one-line errors naming the key.

`SearchSpace` (search_spaces/space.py) owns the operations on the architectures of a config.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, cast

from search_spaces.arch import ArchError, is_finite_number, loads_json, show
from search_spaces.mixers import TOKEN_MIXERS

BlockType = Literal["conv", "attn"]

# Upper bounds of a space's sizes: far above any space that trains on one machine, low enough that a
# typo (a width of 10**6, a depth of 10**6) is refused before anything is built. Whether a space
# within them fits the machine's memory is checked against the machine (`nas.runs.resources`).
MAX_SIZE = {"widths": 8192, "stem_widths": 8192, "depths": 64, "in_channels": 4096, "num_classes": 100_000,
            "input_size": 16384, "resolutions": 16384, "kernels": 31, "heads": 64, "head_dim": 1024,
            "window": 16384, "expand_ratios": 16, "mlp_ratios": 16, "stem_stride": 16, "stages": 32}
MAX_CHOICES = 64  # values in one list of choices


def hidden_width(width: int, ratio: float) -> int:
    """Channels of an expanded layer; nested prefixes of the largest one (MatFormer)."""
    return max(1, round(width * ratio))


def scaled_resolution(resolution: int, input_size: int, size: int) -> int:
    """The resolution a subnet resamples its input to when inputs have `size` instead of `input_size`."""
    return resolution if size == input_size else max(1, round(resolution * size / input_size))


def _tuple(name: str, value: Any, kind: type | tuple[type, ...] = int) -> tuple:
    if not isinstance(value, (list, tuple)) or not value:
        raise ArchError(f"space: {name} must be a non-empty list, got {show(value)}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, kind):
            raise ArchError(f"space: {name} holds {show(v)}, expected {kind}")
        if kind is not str and not (is_finite_number(v) and cast(float, v) > 0):  # sizes and ratios
            raise ArchError(f"space: {name} must hold positive finite numbers, got {show(v)}")
        if name in MAX_SIZE and cast(float, v) > MAX_SIZE[name]:
            raise ArchError(f"space: {name} must hold values <= {MAX_SIZE[name]}, got {show(v)}")
    if len(value) > MAX_CHOICES:
        raise ArchError(f"space: {name} holds {len(value)} choices, at most {MAX_CHOICES} are allowed")
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
    mixers: tuple[str, ...] = tuple(TOKEN_MIXERS.names())  # the built-in token mixers, in their order
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
        if len(self.stages) > MAX_SIZE["stages"]:
            raise ArchError(f"space: stages holds {len(self.stages)} stages, at most {MAX_SIZE['stages']} are allowed")
        stages = tuple(s if isinstance(s, StageSpace) else StageSpace(**s) for s in self.stages)
        object.__setattr__(self, "stages", stages)
        if not stages:
            raise ArchError("space: stages must be non-empty")
        if unknown := {m for m in self.mixers if m not in TOKEN_MIXERS}:
            raise ArchError(f"space: unknown mixers {show(sorted(unknown))}; allowed: {TOKEN_MIXERS.names()}")
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
        if type(self.dims) is not int or self.dims not in (1, 2):
            raise ArchError(f"space: dims must be 1 (sequences) or 2 (images), got {show(self.dims)}")
        for name in ("in_channels", "num_classes", "input_size", "head_dim", "window", "stem_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ArchError(f"space: {name} must be a positive integer, got {show(value)}")
            if value > MAX_SIZE[name]:
                raise ArchError(f"space: {name} must be <= {MAX_SIZE[name]}, got {value}")

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
            return cls.from_dict(loads_json(Path(path).read_text()))
        except (OSError, ValueError, RecursionError) as e:
            raise ArchError(f"space file {path}: {e}") from None
