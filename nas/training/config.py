"""The supernet training recipe: one frozen, validated value (a resumed run reads it from JSON), and
the training budget it gives on a dataset (`training_budget`).

The budget is set in epochs or in optimizer steps, one of the two; by default it is `DEFAULT_EPOCHS`
epochs, and at least `MIN_STEPS` steps: on a small training set 40 epochs are a few dozen
steps, far too few for any subnet to learn (docs/design.md, "Training budget").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from nas.errors import FieldError, UserError, check_field_types, named
from nas.training.sampling import DEFAULT_PHASE_SHARE, SAMPLING_RULES, check_num_random, check_phase_share
from search_spaces.arch import show

DEFAULT_EPOCHS = 40  # the default budget on a large training set
MIN_STEPS = 1000  # the default budget's floor in optimizer steps (docs/benchmarks.md, "Training budget")
# The sampling rule a built-in space trains with by default where it was measured to rank the space's
# subnets better than the sandwich rule (docs/benchmarks.md, "Ranking fidelity": mnist1d at 40 epochs,
# and on 500 samples, where it leaves the largest and smallest subnets undertrained but ranks better still).
SPACE_SAMPLING: dict[str, dict[str, Any]] = {"seq": {"sampling": "uniform", "num_random": 4}}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int | None = None  # the budget in epochs; None with `steps` None: the default (`training_budget`)
    steps: int | None = None  # the budget in optimizer steps (the last epoch may be cut short)
    batch_size: int = 64
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    sampling: Literal["uniform", "sandwich", "complexity", "progressive"] = "sandwich"
    num_random: int = 2
    phase_share: float = DEFAULT_PHASE_SHARE  # the progressive rule: the share of the steps in each restricted phase
    best_of: int = 1  # candidates per random slot, the one with the lowest batch loss trained (1: off; `sampling`)
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
        if self.steps is not None and self.epochs is not None:
            raise FieldError("steps", f"and epochs are alternatives: give one, not both (got {self.steps} and {self.epochs})")
        for name in ("epochs", "steps", "batch_size", "best_of"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise FieldError(name, f"must be >= 1, got {value}")
        if self.optimizer not in ("adamw", "sgd"):
            raise FieldError("optimizer", f"must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.sampling not in SAMPLING_RULES:
            raise FieldError("sampling", f"must be one of {list(SAMPLING_RULES)}, got {self.sampling!r}")
        check_phase_share(self.phase_share)
        if not self.lr > 0:
            raise FieldError("lr", f"must be > 0, got {self.lr}")
        for name in ("warmup_epochs", "weight_decay"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"must be >= 0, got {getattr(self, name)}")
        check_num_random(self.sampling, self.num_random)
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


@dataclass(frozen=True)
class TrainingBudget:
    """The optimizer steps of a training run on a training set of a given size, in epochs of
    `steps_per_epoch` batches (the last epoch may be cut short)."""

    steps: int
    steps_per_epoch: int
    warmup_steps: int

    @property
    def epochs(self) -> int:
        return math.ceil(self.steps / self.steps_per_epoch)

    def epoch_steps(self, epoch: int) -> int:
        """The steps of epoch `epoch` (0-based)."""
        return min(self.steps_per_epoch, self.steps - epoch * self.steps_per_epoch)


def training_budget(config: TrainConfig, train_size: int) -> TrainingBudget:
    """`config`'s budget on `train_size` training samples: its `steps`, its `epochs`, or the default,
    `DEFAULT_EPOCHS` epochs but at least `MIN_STEPS` steps, in whole epochs."""
    per_epoch = math.ceil(train_size / config.batch_size)
    if config.steps is not None:
        steps = config.steps
    elif config.epochs is not None:
        steps = config.epochs * per_epoch
    else:
        steps = max(DEFAULT_EPOCHS, math.ceil(MIN_STEPS / per_epoch)) * per_epoch
    return TrainingBudget(steps=steps, steps_per_epoch=per_epoch, warmup_steps=config.warmup_epochs * per_epoch)
