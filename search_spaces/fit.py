"""A space is a family, instantiated for the data: its channels, classes and input size come from
the data it is trained on (`SpaceFamily.fit`), so one definition serves 8x8 digits and 64x64 photos,
40-step and 1,000-step sequences.

- A built-in (or registered) space is written for reference data (`tiny`: digits, 1x8x8, 10
  classes; `seq`: mnist1d, 1x40): on other data it takes the data's `in_channels`, `num_classes`
  and `input_size`, and its `resolutions` scale by the ratio of input sizes (`tiny`'s 8/10/12 on
  28x28 images: 28/35/42).
- A space file states these fields or leaves them out. A field it states must agree with the data
  (`num_classes`: at least the data's), else one line names the field, the file's value and the
  data's; a field it leaves out is the data's. Its `resolutions` are as written; left out, the
  input size alone.

Nothing else changes with the input size, and nothing needs to: convolutions pad ("same"), a
stride-2 stage never takes a side below 1, window attention uses windows of at most the grid's
side, and positions come from a depthwise convolution (CPVT), so every input size gives a valid
space whose subnets run. What the input size does change is cost: the search measures it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_spaces.arch import ArchError, loads_json, show
from search_spaces.config import SpaceConfig, scaled_resolution

DATA_FIELDS = ("in_channels", "num_classes", "input_size")  # what a space takes from the data
_KIND = {1: "sequences (dims 1)", 2: "images (dims 2)"}
_STAND_IN = {"in_channels": 1, "num_classes": 2, "input_size": 32}  # checks a file that leaves them out


@dataclass(frozen=True)
class DataShape:
    """What a space takes from the data: its kind (`dims` 2: images, H = W = `input_size`; 1:
    sequences of `input_size` steps), channels and classes (the largest label + 1)."""

    dims: int
    in_channels: int
    input_size: int
    num_classes: int

    def __post_init__(self) -> None:
        for name in ("dims", "in_channels", "input_size", "num_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ArchError(f"data shape: {name} must be a positive integer, got {show(value)}")
        if self.dims not in _KIND:
            raise ArchError(f"data shape: dims must be 1 (sequences) or 2 (images), got {self.dims}")


@dataclass(frozen=True, eq=False)
class SpaceFamily:
    """What `--space` names, before it meets the data: `fit(shape)` is the space for that data.

    `definition` holds SpaceConfig's fields as JSON, as written (a built-in's: all of them);
    `builtin`: its data fields are those of its reference data, all replaced by the data's, and its
    resolutions scale with the input size. `where` names it in messages."""

    where: str
    definition: dict[str, Any]
    builtin: bool = False
    example: SpaceConfig = field(init=False, repr=False)  # the definition with stand-ins for what it leaves out

    def __post_init__(self) -> None:
        if not isinstance(self.definition, dict):
            raise ArchError(f"{self.where}: expected a JSON object")
        values = {k: _STAND_IN[k] for k in self.fitted} | {k: v for k, v in self.definition.items()}
        size = values["input_size"]  # a bad one is named by SpaceConfig, not as a bad resolution
        values.setdefault("resolutions", [size if type(size) is int and size > 0 else 1])
        object.__setattr__(self, "example", _config(values, self.where))

    @classmethod
    def of(cls, config: SpaceConfig) -> SpaceFamily:
        """A built-in (or registered) space: written for its reference data, fitted to any other."""
        return cls(f"space {config.name!r}", _plain(config), builtin=True)

    @classmethod
    def from_file(cls, path: str | Path) -> SpaceFamily:
        try:  # as SpaceConfig.from_file: bad UTF-8 or JSON, a too long integer, too deep nesting
            data = loads_json(Path(path).read_text())
        except (OSError, ValueError, RecursionError) as e:
            raise ArchError(f"space file {path}: {e}") from None
        return cls(f"space file {path}", data)

    @property
    def name(self) -> str:
        return self.example.name

    @property
    def dims(self) -> int:
        return self.example.dims

    @property
    def fitted(self) -> tuple[str, ...]:
        """The data fields that come from the data (a built-in's: all; a file's: those it leaves out)."""
        return DATA_FIELDS if self.builtin else tuple(k for k in DATA_FIELDS if k not in self.definition)

    def as_written(self) -> dict[str, Any]:
        """The definition with every default filled in, and without what it leaves to the data: a space file."""
        left_out = [k for k in (*self.fitted, "resolutions") if not self.builtin and k not in self.definition]
        return {k: v for k, v in _plain(self.example).items() if k not in left_out}

    def fit(self, shape: DataShape) -> SpaceConfig:
        """The space for data of `shape`; ArchError when the definition contradicts it."""
        if shape.dims != self.dims:
            raise ArchError(f"{self.where} takes {_KIND[self.dims]}, but the data are {_KIND[shape.dims]}")
        stated = _plain(self.example)
        values = stated | {k: getattr(shape, k) for k in self.fitted}
        for key in DATA_FIELDS:
            if key not in self.fitted and _contradicts(key, stated[key], getattr(shape, key)):
                raise ArchError(f"{self.where} sets {key} {stated[key]}, but the data's is {getattr(shape, key)}: "
                                f"leave {key} out of the file to take the data's")
        if not self.builtin and "resolutions" not in self.definition:
            values["resolutions"] = [shape.input_size]
        elif self.builtin:
            values["resolutions"] = list(dict.fromkeys(
                scaled_resolution(r, self.example.input_size, shape.input_size) for r in self.example.resolutions))
        return _config(values, self.where)


def _contradicts(key: str, stated: int, data: int) -> bool:
    """A stated data field that cannot serve the data: fewer classes than its labels need, or another
    channel count or input size."""
    return stated < data if key == "num_classes" else stated != data


def _plain(config: SpaceConfig) -> dict[str, Any]:
    """A config's fields as JSON values (lists, not tuples), as a file holds them."""
    return json.loads(json.dumps(config.to_dict()))


def _config(values: dict[str, Any], where: str) -> SpaceConfig:
    try:
        return SpaceConfig.from_dict(values)
    except ArchError as e:
        raise ArchError(f"{where}: {str(e).removeprefix('space: ')}") from None
