"""What a dataset holds, read from its headers alone: images or sequences, and their size
(`data_kind`), so that a run without `--space` takes the built-in space made for data of that kind
and size (`search_spaces.presets.space_for`).

Nothing is decoded: the shape of an `.npz` file's ``x`` comes from its zip member's array header, a
`.npy` folder's from a memory map, an image folder's from the first image's header. Arrays
[N, T] and [N, T, C] with T != C are sequences (images are square); [N, H, W] with H == W and 4-D
arrays are images. What cannot be read gives None, and loading the data says what is wrong.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from nas.data.datasets import DATASETS
from nas.data.images import IMAGE_EXTENSIONS, is_image_folder
from nas.data.npy import channels_last, is_npy_folder
from search_spaces.presets import space_for


class DataKind(NamedTuple):
    dims: int  # 2: images, 1: sequences
    size: int  # the image side or the sequence length

    def describe(self) -> str:
        return f"{self.size}x{self.size} images" if self.dims == 2 else f"sequences of {self.size} steps"


def space_for_data(spec: str) -> tuple[str, DataKind] | None:
    """The built-in space for the data `spec`'s kind and size, and that kind; None when the data do
    not tell."""
    kind = data_kind(spec)
    return None if kind is None else (space_for(kind.dims, kind.size), kind)


def data_kind(spec: str) -> DataKind | None:
    """The kind and size of the data `spec` (a `load_data` spec) holds; None when its headers do not tell."""
    if spec in DATASETS:
        builtin = DATASETS.get(spec)
        return DataKind(builtin.dims, builtin.input_size)
    path = Path(spec)
    try:
        if is_npy_folder(path):
            return _of_shape(np.load(path / "x.npy", mmap_mode="r", allow_pickle=False).shape)
        if path.is_dir():
            return _image_folder(path) if is_image_folder(path) else DataKind(2, 32)  # else: CIFAR-10 batches
        if path.suffix == ".npz" and path.is_file():
            return _of_shape(_npz_shape(path, "x"))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
        return None
    return None


def _of_shape(shape: tuple[int, ...]) -> DataKind | None:
    if len(shape) == 2:
        return DataKind(1, shape[1])
    if len(shape) == 3:
        return DataKind(2, shape[1]) if shape[1] == shape[2] else DataKind(1, shape[1])
    if len(shape) == 4:  # [N, C, H, W] or [N, H, W, C]
        return DataKind(2, shape[1] if channels_last(shape) else shape[2])
    return None


def _npz_shape(path: Path, name: str) -> tuple[int, ...]:
    with zipfile.ZipFile(path) as archive, archive.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read(f)
    return tuple(int(n) for n in shape)


def _image_folder(path: Path) -> DataKind | None:
    from PIL import Image  # Pillow: only for image folders

    for pattern in ("*/*", "*/*/*"):  # class folders, or train/val/test folders of class folders
        for f in path.glob(pattern):
            if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".") and f.is_file():
                with Image.open(f) as image:
                    return DataKind(2, min(image.size))
    return None
