"""Search spaces: architecture values, the space as data, elastic layers, supernets.

Imports nothing from `nas` or `predictors`.
"""

from __future__ import annotations

from pathlib import Path

from search_spaces.arch import Arch, ArchError, AttnBlock, ConvBlock, Stage
from search_spaces.blocks import (
    BlockSpec,
    block_macs,
    block_params,
    block_specs,
    build_block,
    count_macs,
    peak_memory_bytes,
)
from search_spaces.config import SpaceConfig, StageSpace
from search_spaces.fit import DATA_FIELDS, DataShape, SpaceFamily
from search_spaces.presets import CIFAR, IMAGENET, SEQ, TINY
from search_spaces.registry import Registry
from search_spaces.space import SearchSpace
from search_spaces.static import ModelSpec, SubnetModel
from search_spaces.supernet import HybridSupernet

SPACES: Registry[SpaceConfig] = Registry("space", ArchError)


def register_space(config: SpaceConfig) -> SpaceConfig:
    """A space is data: registered under its config's name."""
    return SPACES.add(config.name, config)


def list_spaces() -> list[str]:
    return SPACES.names()


def get_family(name_or_path: str) -> SpaceFamily:
    """A registered space by name, or a space JSON file by path, before it meets the data (`search_spaces.fit`)."""
    if name_or_path in SPACES:
        return SpaceFamily.of(SPACES.get(name_or_path))
    if name_or_path.endswith(".json") or Path(name_or_path).is_file():
        if not Path(name_or_path).is_file():
            raise ArchError(f"space file {name_or_path} does not exist")
        return SpaceFamily.from_file(name_or_path)
    raise ArchError(f"unknown space {name_or_path!r}; built-in: {list_spaces()}, or a path to a space .json")


def get_space(name_or_path: str, data: DataShape | None = None) -> SearchSpace:
    """A registered space by name, or a space JSON file by path, fitted to data of shape `data`.
    Without `data`: a built-in space as written (for its reference data), a file as written, which
    must then state every field it would take from the data."""
    family = get_family(name_or_path)
    if data is not None:
        return SearchSpace(family.fit(data))
    if family.fitted and not family.builtin:
        raise ArchError(f"{family.where} leaves {', '.join(family.fitted)} to the data, and no data is given")
    return SearchSpace(family.example)


for _config in (TINY, CIFAR, IMAGENET, SEQ):
    register_space(_config)

__all__ = [
    "DATA_FIELDS",
    "Arch",
    "ArchError",
    "AttnBlock",
    "BlockSpec",
    "ConvBlock",
    "DataShape",
    "HybridSupernet",
    "ModelSpec",
    "SearchSpace",
    "SpaceConfig",
    "SpaceFamily",
    "Stage",
    "StageSpace",
    "SubnetModel",
    "block_macs",
    "block_params",
    "block_specs",
    "build_block",
    "count_macs",
    "get_family",
    "get_space",
    "list_spaces",
    "peak_memory_bytes",
    "register_space",
]
