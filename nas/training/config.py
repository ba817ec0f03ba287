"""The supernet training recipe: one frozen, validated value (a resumed run reads it from JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from nas.errors import FieldError, UserError, check_field_types, named
from nas.training.sampling import SAMPLING_RULES
from search_spaces.arch import show


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 64
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    sampling: Literal["uniform", "sandwich", "complexity"] = "sandwich"
    num_random: int = 2
    distill: bool = True
    grad_clip: float = 5.0
    max_shift: int = -1  # random translation in pixels; -1: input_size // 8 (at least 1)
    hflip: bool = False
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_field_types(self)  # the types first: a resumed run reads these values from a JSON file
        if not 0 <= self.seed < 2**63:
            raise FieldError("seed", f"must be in [0, 2**63), got {self.seed}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.optimizer not in ("adamw", "sgd"):
            raise FieldError("optimizer", f"must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.sampling not in SAMPLING_RULES:
            raise FieldError("sampling", f"must be one of {list(SAMPLING_RULES)}, got {self.sampling!r}")
        if not self.lr > 0:
            raise FieldError("lr", f"must be > 0, got {self.lr}")
        for name in ("num_random", "warmup_epochs", "weight_decay"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.label_smoothing < 1:
            raise FieldError("label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, key: str = "train") -> TrainConfig:
        """The config recorded as a JSON object under `key` (a file's section); errors name its
        keys as `key.field`."""
        if not isinstance(data, dict):
            raise UserError(f"{key} must be an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known, key=str)
        if unknown:
            raise UserError(f"{key}: unknown keys {show(unknown)}; allowed: {sorted(known)}")
        with named(lambda field: f"{key}.{field}"):
            return cls(**data)
