"""Image folders: one sub-folder of PNG, JPEG or WebP files per class, read with Pillow into the
arrays `load_data` builds a `TaskData` from.

Two layouts: ``PATH/<class>/<image>`` (all splits carved from it, as from an ``.npz`` ``x``), or
``PATH/train/<class>/...`` with optional ``PATH/val/<class>/...`` and ``PATH/test/<class>/...``,
used as given (as an ``.npz`` file's ``x_val``/``x_test``). The classes are the sorted names of the
training class folders; class ``i`` is the i-th name. Images become float32 (N, C, S, S) in [0, 1]:
one channel when every image is grayscale, else RGB (alpha dropped); 8-bit values / 255, 16-bit
values / 65535. S is the shorter side of the most common image size (ties: the larger size); every
image of another size is resized to S x S here (after turning it as its EXIF orientation says), bilinear with antialiasing (Pillow), stretched when
it is not square: the only resize on the way in, and recorded. Files with other extensions, hidden
files and sub-folders of class folders are ignored and counted. The decoded arrays are checked
against the memory available before any image is decoded; a folder too large for it, or of large
images, is read image by image instead (`list_image_folder`, `read_pixels`; `nas.data.stream`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.data.errors import DataError, one_line
from nas.errors import UserError
from nas.runs.resources import check_memory, gib, within_half_memory

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
SPLITS = ("train", "val", "test")
_GRAY = {"1", "L", "LA", "I;16", "I;16L", "I;16B"}
_MODES = _GRAY | {"P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_COPIES = 3  # the decoded array, then the training split and the standardized splits `_build` makes


@dataclass(frozen=True)
class ImageFolder:
    """An image folder read: x (N, C, S, S) float32 in [0, 1], y (N,) int64, the splits the folder
    gives (None where it gives none), the class names and what was read (`record`, for describe())."""

    x: np.ndarray
    y: np.ndarray
    val: tuple[np.ndarray, np.ndarray] | None
    test: tuple[np.ndarray, np.ndarray] | None
    class_names: tuple[str, ...]
    record: dict[str, Any]


def is_image_folder(path: Path) -> bool:
    """A directory with sub-folders that is not a CIFAR-10 python-batches directory."""
    return path.is_dir() and not (path / "data_batch_1").exists() and bool(_subfolders(path))


@dataclass(frozen=True)
class FolderListing:
    """An image folder listed from the file headers alone (nothing decoded): each split's (file, class
    index) pairs, the class names, the channels and side S the images are read at, and `record`."""

    files: dict[str, list[tuple[Path, int]]]
    class_names: tuple[str, ...]
    channels: int
    side: int
    record: dict[str, Any]

    def decoded_bytes(self) -> int:
        """The bytes of every image decoded as float32 (C, S, S)."""
        return sum(map(len, self.files.values())) * self.channels * self.side * self.side * 4


def list_image_folder(path: Path) -> FolderListing:
    """List the image folder `path` (module docstring) and read every file's header; `DataError`
    naming the file or folder at fault."""
    roots = _split_roots(path)
    classes = _subfolders(roots["train"])
    if len(classes) < 2:
        raise DataError(f"{roots['train']}: an image folder needs one sub-folder of images per class, and at least 2 "
                        f"classes; found {len(classes)} class folder(s)")
    names = tuple(c.name for c in classes)
    ignored = Counter[str]()
    files = {split: _list_split(root, names, ignored) for split, root in roots.items()}
    every = [f for split in files.values() for f, _ in split]
    sizes, modes = _headers(every)
    side = _side(sizes)
    channels = 1 if all(m in _GRAY for m in modes) else 3
    resized = sum(size != (side, side) for size in sizes)
    record = {"format": "image folder", "layout": "class folders" if roots["train"] == path else "train/val/test folders",
              "images": len(every), "mode": "L" if channels == 1 else "RGB",
              "size": [side, side], "resized": resized,
              "resize": f"bilinear, antialiased (Pillow), to {side}x{side}" if resized else None,
              "ignored_files": sum(ignored.values())}
    return FolderListing(files, names, channels, side, record)


def read_image_folder(path: Path) -> ImageFolder:
    """Read the image folder `path` (module docstring) into memory; `DataError` naming the file or folder at fault."""
    listing = list_image_folder(path)
    n, channels, side = listing.record["images"], listing.channels, listing.side
    try:
        check_memory(_COPIES * listing.decoded_bytes(),
                     f"{path}: {n:,} images read as {channels}x{side}x{side} float32 "
                     f"({gib(listing.decoded_bytes())}, and its standardized copies)")
    except UserError as exc:
        raise DataError(str(exc)) from None
    arrays = {split: _decode(pairs, channels, side) for split, pairs in listing.files.items()}
    x, y = arrays["train"]
    return ImageFolder(x, y, arrays.get("val"), arrays.get("test"), listing.class_names, listing.record)


def fits_in_memory(listing: FolderListing) -> bool:
    """Whether the folder decoded up front (and its standardized copies) takes at most half the memory
    available now; a larger folder is streamed (`nas.data.stream`)."""
    return within_half_memory(_COPIES * listing.decoded_bytes())


def _split_roots(path: Path) -> dict[str, Path]:
    """{"train": folder, and "val"/"test" when the folder has them}."""
    if not path.is_dir():
        raise DataError(f"{path}: not a folder")
    if not (path / "train").is_dir():
        return {"train": path}
    others = [d.name for d in _subfolders(path) if d.name not in SPLITS]
    if others:
        raise DataError(f"{path}: has a train folder, so it holds only train, val and test folders; "
                        f"also found {', '.join(sorted(others)[:5])}")
    return {split: path / split for split in SPLITS if (path / split).is_dir()}


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError as exc:
        raise DataError(f"{folder}: unreadable folder ({one_line(exc)})") from exc


def _list_split(root: Path, names: tuple[str, ...], ignored: Counter[str]) -> list[tuple[Path, int]]:
    """(image file, class index) of the split in `root`, sorted; counts the files ignored in `ignored`."""
    found = _subfolders(root)
    unknown = [d.name for d in found if d.name not in names]
    if unknown:
        raise DataError(f"{root}: class folder(s) {', '.join(unknown[:5])} not among the training classes "
                        f"({', '.join(names[:10])}{' ...' if len(names) > 10 else ''})")
    pairs = []
    for folder in found:
        images = []
        for f in sorted(folder.iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(f)
            else:
                ignored[f.suffix.lower() or f.name] += 1
        if not images:
            raise DataError(f"{folder}: empty class folder (no {'/'.join(IMAGE_EXTENSIONS)} files)")
        pairs += [(f, names.index(folder.name)) for f in images]
    return pairs


def _headers(files: list[Path]) -> tuple[list[tuple[int, int]], set[str]]:
    """Each file's (width, height) and the modes seen, from the headers alone (nothing decoded)."""
    from PIL import Image

    sizes, modes = [], set()
    for f in files:
        try:
            with Image.open(f) as img:
                sizes.append(img.size)
                mode = img.mode
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"{f}: unreadable image ({one_line(exc)})") from exc
        if mode not in _MODES:
            raise DataError(f"{f}: image mode {mode} is not supported; save it as 8- or 16-bit grayscale or RGB")
        modes.add(mode)
    return sizes, modes


def _side(sizes: list[tuple[int, int]]) -> int:
    """S: the shorter side of the most common (width, height); ties go to the larger size."""
    counts = Counter(sizes)
    width, height = max(counts, key=lambda s: (counts[s], s[0] * s[1], s))
    return min(width, height)


def _decode(pairs: list[tuple[Path, int]], channels: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(x (N, channels, side, side) float32 in [0, 1], y (N,) int64) of the images in `pairs`."""
    x = np.empty((len(pairs), channels, side, side), dtype=np.float32)
    for i, (f, _) in enumerate(pairs):
        x[i] = read_pixels(f, channels, side)
    return x, np.array([label for _, label in pairs], dtype=np.int64)


def read_pixels(f: Path, channels: int, side: int | None) -> np.ndarray:
    """One image as float32 (channels, side, side) in [0, 1] (`side` None: at its own size, (channels, H, W))."""
    from PIL import Image, ImageOps

    try:
        with Image.open(f) as opened:
            img = ImageOps.exif_transpose(opened)  # as a viewer shows it (a camera's EXIF orientation)
            if img.mode.startswith("I;16"):  # 16-bit grayscale: as float ("F"), which Pillow resizes
                scale = np.float32(65535)
                img = Image.fromarray(np.asarray(img, dtype=np.float32))  # mode "F"
            else:
                scale = np.float32(255)
                img = img.convert("L" if channels == 1 else "RGB")
            if side is not None and img.size != (side, side):
                img = img.resize((side, side), Image.Resampling.BILINEAR)  # antialiased when shrinking
            arr = np.asarray(img, dtype=np.float32)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{f}: unreadable or truncated image ({one_line(exc)})") from exc
    if arr.ndim == 2:  # (H, W)
        arr = np.repeat(arr[None], channels, axis=0)
    else:  # (H, W, 3) -> (3, H, W)
        arr = arr.transpose(2, 0, 1)
    return arr / scale
