"""Training checkpoints: the whole state of `nas.training.train.train_supernet` in one safetensors file.

Weights, optimizer moments, every random generator, the sampler's state, the history and, when
training stopped mid-epoch, the epoch's generator state, steps, losses and hits. Written atomically,
no pickle; reading one checks its format, its space and its training settings against the run's,
and refuses anything malformed with one line naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from nas.errors import UserError
from nas.runs.files import save_tensors
from nas.training.config import TrainConfig
from nas.training.sampling import Sampler
from search_spaces import ArchError, HybridSupernet, SpaceConfig
from search_spaces.arch import is_finite_number, show

CHECKPOINT_FILE = "checkpoint.safetensors"
CHECKPOINT_FORMAT = "1"


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(path: Path, supernet: HybridSupernet, opt: torch.optim.Optimizer, sampler: Sampler,
                    gen: torch.Generator, config: TrainConfig, progress: dict[str, Any], *,
                    epoch_gen: Tensor | None = None) -> None:
    """Everything a resumed run needs, in one safetensors file written atomically (no pickle).

    Mid-epoch (`progress["epoch_steps"]` > 0) it also holds `epoch_gen`, the data generator's state
    at the start of that epoch, from which a resumed run replays the epoch's order and skips the
    steps already trained."""
    tensors = {f"model.{k}": v for k, v in supernet.state_dict().items()}
    optim_tensors, optim_meta = _optimizer_tensors(opt)
    tensors |= optim_tensors
    tensors["rng.generator"] = gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    if epoch_gen is not None:
        tensors["rng.epoch_generator"] = epoch_gen
    meta = {
        "format": "nas-checkpoint", "format_version": CHECKPOINT_FORMAT,
        "config": json.dumps(config.to_dict()), "progress": json.dumps(progress),
        "sampler": json.dumps(sampler.state_dict()), "optimizer": json.dumps(optim_meta),
        "space": json.dumps(supernet.space.config.to_dict()),
    }
    save_tensors(path, tensors, meta)


def read_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: nothing to resume")
    try:
        with safe_open(str(path), "pt") as fh:
            raw = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118  (safe_open is not iterable)
        if raw.get("format") != "nas-checkpoint" or raw.get("format_version") != CHECKPOINT_FORMAT:
            raise UserError(f"checkpoint {path} is not a nas checkpoint of format {CHECKPOINT_FORMAT}")
        meta = {k: json.loads(raw[k]) for k in ("config", "progress", "sampler", "optimizer", "space")}
    except (SafetensorError, OSError, KeyError, ValueError, RecursionError) as e:
        raise UserError(f"checkpoint {path} is corrupt ({e})") from None
    if not_objects := [k for k, v in meta.items() if not isinstance(v, dict)]:
        raise UserError(f"checkpoint {path} is corrupt: its {', '.join(not_objects)} metadata must be JSON objects")
    return tensors, meta


def load_checkpoint(path: Path, supernet: HybridSupernet, opt: torch.optim.Optimizer, sampler: Sampler,
                    gen: torch.Generator, config: TrainConfig, epochs: int) -> tuple[dict[str, Any], Tensor | None]:
    """Restores the state in place; returns the progress (with the partial epoch's keys filled in)
    and, mid-epoch, the data generator's state at the start of that epoch. `epochs`: the run's
    (`training_budget(config, ...).epochs`)."""
    tensors, meta = read_checkpoint(path)
    try:  # parsed, so that a checkpoint written before a field was added (its default) still matches
        recorded_space = SpaceConfig.from_dict(meta["space"])
    except ArchError as e:
        raise UserError(f"checkpoint {path} is corrupt: {e}") from None
    if recorded_space != supernet.space.config:
        raise UserError(f"checkpoint {path} belongs to another search space ({meta['space'].get('name')!r})")
    # a setting added after the checkpoint was written has its default there (best_of: 1, no change)
    recorded = {k: v for k, v in {**TrainConfig().to_dict(), **meta["config"]}.items() if k != "device"}
    wanted = {k: v for k, v in json.loads(json.dumps(config.to_dict())).items() if k != "device"}
    changed = sorted(k for k in wanted if recorded.get(k) != wanted[k])
    if changed:
        raise UserError(f"checkpoint {path} was written with other training settings: "
                        + ", ".join(f"{k}={show(recorded.get(k))} (now {wanted[k]!r})" for k in changed))
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        supernet.load_state_dict(model_state, strict=True)
    except RuntimeError as e:
        raise UserError(f"checkpoint {path} does not match the supernet: {str(e).splitlines()[0]}") from None
    try:  # the rest comes from the file too: anything malformed in it makes a corrupt checkpoint, not a traceback
        state: dict[Any, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        for key, value in meta["optimizer"]["scalars"].items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = value
        opt.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
        sampler.load_state_dict(meta["sampler"])
        gen.set_state(tensors["rng.generator"])
        torch.set_rng_state(tensors["rng.torch"])
        progress = _check_progress(meta["progress"], epochs)
        epoch_gen = tensors["rng.epoch_generator"] if progress["epoch_steps"] else None
    except (AttributeError, IndexError, KeyError, TypeError, ValueError, RuntimeError) as e:
        first_line = str(e).partition("\n")[0]
        raise UserError(f"checkpoint {path} is corrupt ({type(e).__name__}: {first_line[:300]})") from None
    return progress, epoch_gen


def _check_progress(progress: dict[str, Any], epochs: int) -> dict[str, Any]:
    """What `train_supernet` reads from a checkpoint's progress: finished epochs, steps, time, history,
    and after an interruption mid-epoch the steps, losses and hits of the partial epoch."""
    epoch, step, seconds, history = progress["epoch"], progress["step"], progress["seconds"], progress["history"]
    if not (type(epoch) is int and 0 <= epoch <= epochs and type(step) is int and step >= 0
            and is_finite_number(seconds) and seconds >= 0 and isinstance(history, list) and len(history) == epoch):
        raise ValueError(f"progress epoch={show(epoch)}, step={show(step)}, seconds={show(seconds)} or its history "
                         f"does not describe a run of {epochs} epochs")
    for entry in history:
        if not isinstance(entry, dict) or not {"val_acc_largest", "val_acc_smallest"} <= entry.keys():
            raise ValueError(f"progress history entry {show(entry)} lacks the validation accuracies")
    partial = {"epoch_steps": progress.get("epoch_steps", 0), "epoch_losses": progress.get("epoch_losses", []),
               "epoch_correct": progress.get("epoch_correct", 0)}
    done, losses, correct = partial["epoch_steps"], partial["epoch_losses"], partial["epoch_correct"]
    if not (type(done) is int and done >= 0 and (done == 0 or epoch < epochs) and isinstance(losses, list)
            and len(losses) == done and all(is_finite_number(v) for v in losses)
            and type(correct) is int and correct >= 0):
        raise ValueError(f"progress of the interrupted epoch (epoch_steps={show(done)}, epoch_losses={show(losses)}, "
                         f"epoch_correct={show(correct)}) is inconsistent")
    return {**progress, **partial}
