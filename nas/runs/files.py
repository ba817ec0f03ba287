"""Run folders and the files in them: atomic writes, safetensors + JSON, never pickle.

A run folder holds `config.json`, `supernet.safetensors` + `space.json`, `evaluations.csv`,
`pareto.csv`/`pareto.png` and `models/<id>/` (`model.safetensors` + `model.json`).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from nas.errors import UserError
from search_spaces import Arch, ArchError, HybridSupernet, ModelSpec, SearchSpace, SpaceConfig, SubnetModel
from search_spaces.arch import loads_json, show

SUPERNET_FILE, SPACE_FILE, MODEL_FILE, MODEL_META = "supernet.safetensors", "space.json", "model.safetensors", "model.json"
FORMAT_VERSION = "1"


def prepare_run_dir(path: Path, *, force: bool, resume: bool = False) -> Path:
    """Create `path`; refuse to reuse a non-empty folder unless `force` (or `resume`) is given."""
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} exists and is not a folder")
    if path.exists() and any(path.iterdir()) and not (force or resume):
        raise UserError(f"--out {path} already holds a run; pass --force to overwrite it or choose another --out")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: Any) -> None:
    _atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: tmp.write_text(text))


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
    _atomic(path, lambda tmp: save_file(cpu, str(tmp), metadata=meta))


def _load_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
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
    state = _load_safetensors(path, "supernet file")
    supernet = HybridSupernet(space)
    _load_state(supernet, state, path, f"space {space.config.name!r}")
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


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
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


def save_model(folder: Path, model: SubnetModel, info: dict[str, Any]) -> Path:
    """A standalone subnet: `model.safetensors` + `model.json` (architecture, spec, metrics)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(folder / MODEL_FILE, model.state_dict(), {"format": "nas-model", "arch": model.arch.to_json()})
    write_json(folder / MODEL_META, {
        "format_version": FORMAT_VERSION, "id": model.arch.id, "arch": model.arch.to_dict(),
        "spec": model.spec.to_dict(), **info,
    })
    return folder


def load_model(path: str | Path, device: str = "cpu") -> SubnetModel:
    """An extracted subnet as a plain `torch.nn.Module`, without the supernet and without pickle."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    meta = read_json(folder / MODEL_META, "model description")
    try:
        arch = Arch.from_dict(meta["arch"])
        spec = ModelSpec(**meta["spec"])
    except (KeyError, TypeError, ArchError) as e:
        raise UserError(f"model description {folder / MODEL_META} is invalid: {e}") from None
    model = SubnetModel(spec, arch)
    _load_state(model, _load_safetensors(folder / MODEL_FILE, "model file"), folder / MODEL_FILE, f"architecture {arch.id}")
    return model.to(device).eval()
