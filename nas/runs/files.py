"""Run folders and the files in them: atomic writes, safetensors + JSON, never pickle.

A run folder holds `config.json`, `supernet.safetensors` + `space.json`, `evaluations.csv`,
`pareto.csv`/`pareto.png` and `models/<id>/` (a model folder: `nas.finish.package`). Files are
written atomically (a temporary file renamed over the target) with the mode a plain `open()`
gives them: 0666 less the user's umask. Nothing is written through a symbolic link or into a
non-regular file (a FIFO, a device) where a run file belongs: that is refused (`check_regular`),
so a run never writes outside its folder. A command holds its run folder's lock (`nas.runs.lock`)
while it writes there.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import stat
from importlib import metadata
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from nas.errors import UserError
from nas.runs.lock import hold, holds_files
from nas.runs.resources import check_supernet_fits
from search_spaces import ArchError, HybridSupernet, SearchSpace, SpaceConfig
from search_spaces.arch import loads_json, show

SUPERNET_FILE, SPACE_FILE = "supernet.safetensors", "space.json"
FORMAT_VERSION = "1"


def prepare_run_dir(path: Path, *, force: bool, resume: bool = False) -> Path:
    """Create `path` and lock it for the current command (`nas.runs.lock.hold`: inside a
    `command_scope`); refuse to reuse a non-empty folder unless `force` (or `resume`) is given."""
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} exists and is not a folder")
    hold(path, create=True)
    if holds_files(path) and not (force or resume):
        raise UserError(f"--out {path} already holds a run; pass --force to overwrite it or choose another --out")
    return path


def check_regular(path: Path) -> bool:
    """Whether `path` exists (False: it does not); `UserError` when it is a symbolic link or not a
    regular file (a FIFO, a socket, a device, a folder): a run file is never written through one."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode):
        raise UserError(f"{path} is a symbolic link; nas never writes through links (the file it points to is outside "
                        "the run): remove it")
    if not stat.S_ISREG(mode):
        raise UserError(f"{path} is not a regular file (a folder, FIFO, socket or device); remove it")
    return True


def open_run_file(path: Path, *, append: bool) -> IO[str]:
    """A run file opened for writing text: at its end (`append`) or emptied. Never through a link
    (O_NOFOLLOW) nor into a non-regular file (a FIFO would block forever), `UserError` instead."""
    check_regular(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        check_regular(path)  # replaced since: the same refusal
        raise UserError(f"cannot write {path}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        check_regular(path)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a" if append else "w", newline="")


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` fills a new temporary file beside `path`, which then replaces `path` in one step.
    A symbolic link or a non-regular file at `path` is refused (`check_regular`), not replaced.

    The temporary file is created as `open()` creates files (mode 0666 less the umask), not 0600 as
    `tempfile.mkstemp` would, so the result has the mode the user's umask asks for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    check_regular(path)
    tmp = _new_file(path.parent, f".{path.name}.", ".tmp")
    mode = stat.S_IMODE(tmp.stat().st_mode)
    try:
        write(tmp)
        os.chmod(tmp, mode)  # a writer may have replaced the file with one of its own mode (safetensors does)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _new_file(folder: Path, prefix: str, suffix: str, tries: int = 100) -> Path:
    """An empty file of a fresh random name in `folder`, created with mode 0666 & ~umask."""
    for _ in range(tries):
        candidate = folder / f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary file name {prefix}*{suffix} in {folder} after {tries} tries")


def write_json(path: Path, data: Any) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def write_text(path: Path, text: str) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(text))


def read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:  # ValueError: also bad UTF-8, or an integer too long; RecursionError: nesting too deep
        return loads_json(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{what} {path} is not valid JSON: {e}") from None


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("nas", "torch", "numpy", "optuna", "ray", "fvcore", "pandas", "safetensors"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    write_atomically(path, lambda tmp: save_file(cpu, str(tmp), metadata=meta))


def load_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{what} {path} is corrupt or not a safetensors file ({e})") from None


def save_supernet(folder: Path, supernet: HybridSupernet, extra: dict[str, Any]) -> Path:
    space = supernet.space.config.to_dict()
    write_json(folder / SPACE_FILE, {"format_version": FORMAT_VERSION, "space": space, **extra})
    meta = {"format": "nas-supernet", "format_version": FORMAT_VERSION, "space": json.dumps(space)}
    save_tensors(folder / SUPERNET_FILE, supernet.state_dict(), meta)
    return folder / SUPERNET_FILE


def load_supernet(path: str | Path, device: str = "cpu") -> HybridSupernet:
    """A supernet from its `.safetensors` file or from a run folder holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / SUPERNET_FILE
    meta_path = path.with_name(SPACE_FILE)
    embedded = _embedded_space(path)  # also refuses anything that is not a safetensors file, before reading more
    meta = read_json(meta_path, "supernet space file") if meta_path.is_file() else embedded
    if not isinstance(meta, dict) or "space" not in meta:
        raise UserError(f"supernet space file {meta_path} has no 'space' entry")
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"supernet space file {meta_path} has format_version {show(meta.get('format_version'))}, "
                        f"this nas reads {FORMAT_VERSION!r}")
    if meta is not embedded and meta["space"] != embedded["space"]:  # weights of equal shapes may mean other layers
        raise UserError(f"supernet space file {meta_path} does not match the space stored in {path} (they differ in "
                        f"{show(_differing_keys(meta['space'], embedded['space']))}): the files come from different runs")
    try:
        space = SearchSpace(SpaceConfig.from_dict(meta["space"]))
    except ArchError as e:
        raise UserError(f"supernet space file {meta_path}: {e}") from None
    check_supernet_fits(space, batch=1, optimizer=None, what=f"loaded from {path}")
    state = load_safetensors(path, "supernet file")
    if bad := sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())):
        raise UserError(f"supernet file {path} holds NaN or infinite weights ({len(bad)} tensors, e.g. {bad[0]}): "
                        "its training diverged; train it again with a lower --lr")
    supernet = HybridSupernet(space)
    load_state(supernet, state, path, f"space {space.config.name!r}")
    return supernet.to(device)


def _embedded_space(path: Path) -> dict[str, Any]:
    """The space stored in a supernet file's metadata, for a file without its space.json."""
    if not path.is_file():
        raise UserError(f"supernet file {path} does not exist")
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
        return {"format_version": meta.get("format_version"), "space": json.loads(meta["space"])}
    except (SafetensorError, OSError, KeyError, ValueError, RecursionError) as e:
        raise UserError(f"supernet file {path} is corrupt or has no space metadata ({e})") from None


def _differing_keys(a: Any, b: Any) -> list[str]:
    if not isinstance(a, dict) or not isinstance(b, dict):
        return ["space"]
    return sorted(str(k) for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def load_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    expected = module.state_dict()
    missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
    if missing or unexpected:
        names = sorted(missing)[:3] or sorted(unexpected)[:3]
        raise UserError(f"{path} does not match {what}: {len(missing)} missing and {len(unexpected)} "
                        f"unexpected tensors (e.g. {names})")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise UserError(f"{path} does not match {what}: {key} has shape {tuple(tensor.shape)}, "
                            f"expected {tuple(expected[key].shape)}")
    module.load_state_dict(state, strict=True)
