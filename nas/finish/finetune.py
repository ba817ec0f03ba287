"""Finishing a searched subnet: its inherited weights trained further (the default), or trained from
scratch, or taken as extracted.

A subnet extracted from a weight-sharing supernet is rarely as accurate as the same architecture
trained on its own: its weights were shared with every other subnet. Once-for-All fine-tunes the
extracted subnets (Cai et al., 2020); HAT and BossNAS retrain the found architecture from scratch.
`finish_subnet` does either, or neither:

- `how="finetune"` (the default): the inherited weights trained further with a recipe for short
  fine-tunes: AdamW at the from-scratch learning rate, cosine schedule from the first step with no
  warm-up, no label smoothing, no augmentation, no distillation, half the from-scratch steps; the
  last weights kept (`select="auto"`). It costs half of training from scratch and matched or beat
  it on every task measured, from 425 training samples up (docs/benchmarks.md, "Finishing").
  Keeping the epoch of the best validation loss instead (`select="val_loss"`, with `patience`
  epochs before stopping early) lost to it on small validation splits, where that choice is noise.
- `how="scratch"`: the architecture trained from its initialisation with the supernet's default
  recipe and budget (`TrainConfig`), the last epoch kept: exactly the reference the handed-over
  model must match, and the only choice when there are no trained weights (a zero-shot search).
- `how="inherit"`: the inherited weights as they are.

The loop is `nas.training.train.train_standalone`, the one loop for standalone models. When
several finalists are finished, `choose_after_finishing` picks one by validation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from nas.data.datasets import TaskData
from nas.errors import FieldError, UserError, check_field_types
from nas.evaluation.accuracy import accuracy_and_loss, evaluate
from nas.training.config import TrainConfig, training_budget
from nas.training.train import steps_per_epoch, train_standalone
from search_spaces import Arch, HybridSupernet, SubnetModel
from search_spaces.arch import show
from search_spaces.static import initialised_subnet

HOW = ("inherit", "finetune", "scratch")
SELECT = ("auto", "val_loss", "val_acc", "last")
QAT = ("auto", "always", "off")


@dataclass(frozen=True)
class FinishConfig:
    """How a searched subnet is finished. `budget` and the recipe fields (`batch_size` to
    `label_smoothing`) are the fine-tune's: `how="scratch"` trains with `TrainConfig`'s recipe and
    budget, unless `steps` or `epochs` is given. The selection fields apply to both."""

    how: Literal["inherit", "finetune", "scratch"] = "finetune"
    budget: float = 0.5  # optimizer steps as a fraction of the from-scratch steps (`scratch_steps`)
    steps: int | None = None  # optimizer steps instead of `budget`
    epochs: int | None = None  # epochs instead of `budget`
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 0
    augment: bool = False  # random translation (`nas.training.train.augment`)
    label_smoothing: float = 0.0
    patience: int = 5  # epochs without improvement before stopping; 0 (or select="last"): never stop early
    # the epoch kept: the lowest validation loss, the highest validation accuracy (the loss breaking
    # ties), or the last one (no validation during training); auto: the last
    select: Literal["auto", "val_loss", "val_acc", "last"] = "auto"
    # quantization-aware training of a subnet handed over in int8, after finishing (nas.finish.qat):
    # when post-training quantization loses more than INT8_TOLERANCE (auto), always, or never (off)
    qat: Literal["auto", "always", "off"] = "auto"
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_field_types(self)  # the types first: the config may come from a JSON file
        if self.how not in HOW:
            raise FieldError("how", f"must be one of {list(HOW)}, got {self.how!r}")
        if self.select not in SELECT:
            raise FieldError("select", f"must be one of {list(SELECT)}, got {self.select!r}")
        if self.qat not in QAT:
            raise FieldError("qat", f"must be one of {list(QAT)}, got {self.qat!r}")
        if not 0 <= self.seed < 2**63:
            raise FieldError("seed", f"must be in [0, 2**63), got {self.seed}")
        if not self.budget > 0:
            raise FieldError("budget", f"must be > 0 (a fraction of the from-scratch steps), got {self.budget}")
        if self.steps is not None and self.epochs is not None:
            raise FieldError("steps", f"and epochs are alternatives: give one, not both (got {self.steps} and {self.epochs})")
        for name in ("steps", "epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise FieldError(name, f"must be >= 1, got {value}")
        if not self.lr > 0:
            raise FieldError("lr", f"must be > 0, got {self.lr}")
        for name in ("weight_decay", "warmup_epochs", "patience"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.label_smoothing < 1:
            raise FieldError("label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        if not self.device:
            raise FieldError("device", "must be a device name such as 'cpu' or 'cuda'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def selection(self) -> Literal["val_loss", "val_acc", "last"]:
        """The epoch kept, `select` resolved."""
        return "last" if self.select == "auto" else self.select

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinishConfig:
        if not isinstance(data, dict):
            raise UserError(f"finish config must be an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known, key=str)
        if unknown:
            raise UserError(f"finish config: unknown keys {show(unknown)}; allowed: {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class FinishRecord:
    """Before (the inherited weights) and after finishing, on the validation and test splits."""

    id: str
    how: str
    val_acc_before: float
    val_loss_before: float
    test_acc_before: float
    val_acc_after: float
    val_loss_after: float
    test_acc_after: float
    seconds: float  # training and its validations
    steps: int  # optimizer steps taken
    best_step: int  # the step of the weights kept (0: the starting weights)
    stopped: bool  # `stop` ended training before its budget

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FinishResult:
    model: SubnetModel  # the finished subnet, in eval mode, on the config's device
    record: FinishRecord
    history: tuple[dict, ...]  # one record per epoch (`train_standalone`'s), empty for "inherit"


def scratch_steps(data: TaskData) -> int:
    """The optimizer steps of training a subnet from scratch with the default recipe and budget."""
    return training_budget(TrainConfig(), len(data.train)).steps


def recipe(config: FinishConfig) -> TrainConfig:
    """The training recipe of `config`: the fine-tune's, or the default one for `how="scratch"`."""
    if config.how == "scratch":
        return TrainConfig(seed=config.seed, device=config.device)
    return TrainConfig(batch_size=config.batch_size, lr=config.lr, weight_decay=config.weight_decay,
                       warmup_epochs=config.warmup_epochs, label_smoothing=config.label_smoothing,
                       max_shift=-1 if config.augment else 0, seed=config.seed, device=config.device)


def finish_steps(config: FinishConfig, data: TaskData) -> int:
    """Optimizer steps of finishing: `steps`, `epochs` epochs, or `budget` x the from-scratch steps
    (all of them for `how="scratch"`); at least one."""
    if config.steps is not None:
        return config.steps
    if config.epochs is not None:
        return config.epochs * steps_per_epoch(data, recipe(config))
    if config.how == "scratch":
        return scratch_steps(data)
    return max(1, round(config.budget * scratch_steps(data)))


def finish_subnet(supernet: HybridSupernet, arch: Arch, data: TaskData, config: FinishConfig = FinishConfig(), *,
                  show_progress: bool = True, stop: Callable[[], bool] | None = None,
                  start: SubnetModel | None = None) -> FinishResult:
    """Finish subnet `arch` of `supernet` as `config` says; the supernet is left unchanged.

    `start`: the weights a fine-tune starts from instead of the inherited ones (a static model of
    `arch`, trained in place); the "before" figures stay the inherited weights'.

    Deterministic for a seed on one device. `stop` is polled after every step: when it turns true,
    training ends there with the best weights so far, and the record says `stopped`."""
    device = config.device
    inherited = supernet.extract(arch).to(device)
    val_acc, val_loss = accuracy_and_loss(inherited, data.val, device=device)
    test_acc = evaluate(inherited, data.test, device=device)
    before = {"val_acc_before": val_acc, "val_loss_before": val_loss, "test_acc_before": test_acc}
    if config.how == "inherit":
        after = {"val_acc_after": val_acc, "val_loss_after": val_loss, "test_acc_after": test_acc}
        record = FinishRecord(id=arch.id, how=config.how, **before, **after, seconds=0.0, steps=0, best_step=0,
                              stopped=False)
        return FinishResult(inherited.eval(), record, ())
    if start is not None and (config.how != "finetune" or start.arch != arch):
        raise ValueError(f"start: a model of {arch.id} for how='finetune', got {start.arch.id} for how={config.how!r}")
    if config.how == "finetune":
        model = inherited if start is None else start.to(device)
    else:
        model = initialised_subnet(supernet.spec, arch, config.seed)
    select = None if config.selection == "last" else config.selection
    summary = train_standalone(model, data, recipe(config), steps=finish_steps(config, data), select=select,
                               patience=config.patience if select else 0, stop=stop, show_progress=show_progress,
                               description=f"finishing {arch.id} ({config.how})")
    val_acc, val_loss = accuracy_and_loss(model, data.val, device=device)
    after = {"val_acc_after": val_acc, "val_loss_after": val_loss,
             "test_acc_after": evaluate(model, data.test, device=device)}
    record = FinishRecord(id=arch.id, how=config.how, **before, **after, seconds=summary["seconds"],
                          steps=summary["steps"], best_step=summary["best_step"], stopped=summary["stopped"])
    return FinishResult(model.eval(), record, tuple(summary["history"]))


def finished_metrics(record: FinishRecord) -> dict[str, Any]:
    """What a model folder's and a search's metrics say of a finished subnet: its accuracy after
    finishing, `before_finishing` (the inherited weights') and `finishing` (how it was done)."""
    return {"val_acc": record.val_acc_after, "test_acc": record.test_acc_after,
            "before_finishing": {"val_acc": record.val_acc_before, "test_acc": record.test_acc_before},
            "finishing": {k: v for k, v in record.to_dict().items() if not k.endswith(("_before", "_after"))}}


def choose_after_finishing(results: Sequence[FinishResult], *, by: Literal["val_acc", "val_loss"] = "val_acc") -> int:
    """The index of the finished subnet to hand over: the highest validation accuracy after
    finishing, then the lowest validation loss (`by="val_loss"`: the loss first, as a search ranks
    subnets on a small validation split, `nas.search.ranking`); on a full tie the earliest (pass
    the subnet the search chose first). The test split plays no part."""
    if not results:
        raise ValueError("choose_after_finishing needs at least one finished subnet")
    scores = [(r.record.val_acc_after, -_finite(r.record.val_loss_after)) for r in results]
    if by == "val_loss":
        scores = [(loss, acc) for acc, loss in scores]
    return max(range(len(results)), key=lambda i: (scores[i], -i))


def _finite(loss: float) -> float:
    return loss if math.isfinite(loss) else math.inf
