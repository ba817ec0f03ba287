"""Is a supernet's training healthy? The checks, each ending in a one-line message that names what to try.

A run whose training failed must never read like one that worked. Two levels:

- an error stops training at once (`UserError`, the CLI's exit 2): a non-finite loss, gradient
  norm or weight (`diverged`). It is caught before the update that would spread it into the
  weights, so the last checkpoint stays good.
- a problem is recorded with the run (`Problem`, `health`): `failed` when no subnet learned (the
  extremes and a few random subnets at chance on validation), else a `warning`: a streak of epochs
  at chance during training (`chance_streaks`), the extremes at chance while random subnets are
  not, the largest subnet below the smallest, the supernet far below a quick standalone training
  of its smallest subnet (`nas.training.assess`), a budget shorter than the default's floor.

"At chance" for an accuracy measured on n samples means within two standard errors of always
answering the most common class; for a training loss, at least `CHANCE_LOSS_SHARE` of ln(classes),
the cross-entropy of a uniform prediction (whatever the label smoothing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from nas.errors import UserError
from nas.training.config import MIN_STEPS, TrainConfig, TrainingBudget

Level = Literal["warning", "failed"]
CHANCE_LOSS_SHARE = 0.97  # a training loss this close to ln(classes) is at chance
STREAK_SHARE = 0.05  # a streak of epochs at chance worth a warning: this share of the epochs, and at least
STREAK_MIN_EPOCHS = 3  # this many; from the first epoch on (training that has not learned yet; hard data
START_SHARE = 0.2  # sits near chance for a while): this share of the epochs
MIN_GAP = 0.05  # an accuracy gap below this is never worth a warning, however many samples measured it


@dataclass(frozen=True)
class Problem:
    check: str  # what found it: chance_streak, at_chance, largest_below_smallest, below_standalone, short_budget
    level: Level
    message: str  # one line, naming what to try

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def diverged(what: str, config: TrainConfig) -> str:
    """The message of a training stopped by a non-finite value (`what`: "the loss of subnet X is nan")."""
    return (f"training diverged: {what}; start it again with a lower --lr (now {config.lr:g}) (the checkpoint "
            "of the last finished epoch is kept)")


def check_finite_weights(params: Sequence[torch.Tensor], config: TrainConfig) -> None:
    """A `UserError` (`diverged`) when a weight is NaN or infinite."""
    bad = [p for p in params if not bool(torch.isfinite(p).all())]
    if bad:
        raise UserError(diverged(f"{len(bad)} weight tensors hold NaN or infinite values", config))


def chance_accuracy(labels: torch.Tensor) -> float:
    """The accuracy of always answering the most common class."""
    return float(torch.bincount(labels).max()) / len(labels) if len(labels) else 0.0


def margin(accuracy: float, n: int) -> float:
    """Two standard errors of an accuracy measured on n samples."""
    return 2 * math.sqrt(max(accuracy * (1 - accuracy), 0.0) / max(n, 1))


def at_chance(accuracy: float, chance: float, n: int) -> bool:
    return accuracy <= chance + margin(chance, n)


def worse(a: float, b: float, n: int) -> bool:
    """Accuracy `a` is below `b` (both on the same n samples) by more than noise and by at least `MIN_GAP`."""
    return b - a > max(MIN_GAP, 2 * math.sqrt((a * (1 - a) + b * (1 - b)) / max(n, 1)))


def streak_epochs(budget: TrainingBudget, *, from_start: bool) -> int:
    """How many epochs in a row at chance are worth a warning: after the loss had left chance, or
    `from_start` (it never had)."""
    need = max(STREAK_MIN_EPOCHS, math.ceil(STREAK_SHARE * budget.epochs))
    return max(need, math.ceil(START_SHARE * budget.epochs)) if from_start else need


def epoch_at_chance(record: dict[str, Any], num_classes: int, train_chance: float, train_size: int) -> bool:
    """Whether an epoch of the history trained at chance: its loss (the first subnet drawn each step:
    the largest one under sandwich and complexity sampling) near ln(classes) or its training accuracy
    at chance."""
    return (record["loss"] >= CHANCE_LOSS_SHARE * math.log(num_classes)
            or at_chance(record["train_acc"], train_chance, train_size))


def teacher_learned(history: Sequence[dict[str, Any]], num_classes: int) -> bool:
    """Whether the last epoch's training loss (the first subnet drawn each step: the teacher under
    sandwich and complexity sampling) is below chance. Before the first epoch: no."""
    return bool(history) and history[-1]["loss"] < CHANCE_LOSS_SHARE * math.log(num_classes)


def chance_streaks(history: Sequence[dict[str, Any]], num_classes: int, train_chance: float, train_size: int,
                   budget: TrainingBudget, config: TrainConfig) -> list[Problem]:
    """A warning for each streak of `streak_epochs` epochs at chance in the history (one per streak,
    said when it reaches that length: `train_supernet` says the last one as soon as it appears)."""
    run, problems = 0, []
    best_loss = math.inf  # the lowest epoch loss before the streak: had it learned?
    for i, record in enumerate(history):
        if epoch_at_chance(record, num_classes, train_chance, train_size):
            run += 1
        else:
            run, best_loss = 0, min(best_loss, record["loss"])
        need = streak_epochs(budget, from_start=not math.isfinite(best_loss))
        if run == need:
            problems.append(Problem("chance_streak", "warning",
                                    _streak_message(i + 2 - need, need, best_loss, num_classes, config)))
    return problems


def _streak_message(start: int, length: int, best_loss: float, num_classes: int, config: TrainConfig) -> str:
    chance = f"chance (ln {num_classes} = {math.log(num_classes):.3f})"
    if math.isfinite(best_loss):
        return (f"training collapsed: the training loss went back to {chance} at epoch {start} and stayed there "
                f"{length} epochs, after it had reached {best_loss:.3f}; try a lower --lr (now {config.lr:g})")
    return (f"the supernet has not learned in {length} epochs: its training loss or accuracy is at {chance}; "
            f"check that the labels match the inputs, or try another --lr (now {config.lr:g})")


def final_problems(val_largest: float, val_smallest: float, val_random: Sequence[float], val_chance: float,
                   val_size: int, budget: TrainingBudget, config: TrainConfig) -> list[Problem]:
    """What the validation accuracy after training says (of the extremes, and of a few random
    subnets: in a space whose extremes are all attention, other subnets may learn when they do not):
    failed when no subnet beats chance; warnings for extremes at chance, for the largest below the
    smallest, and for a budget below the default's floor."""
    problems = []
    extremes = f"its largest and smallest subnets score {val_largest:.3f} and {val_smallest:.3f} on validation"
    chance = f"no better than always answering the most common class ({val_chance:.3f})"
    above = [a for a in val_random if not at_chance(a, val_chance, val_size)]
    if at_chance(val_largest, val_chance, val_size) and at_chance(val_smallest, val_chance, val_size):
        if not above:
            problems.append(Problem("at_chance", "failed", (
                f"supernet training failed: {extremes}, and {len(val_random)} random subnets at most "
                f"{max(val_random, default=0.0):.3f}, {chance}; check that the labels match the inputs, or try a "
                f"lower --lr (now {config.lr:g}) or more --steps (now {budget.steps})")))
        else:
            problems.append(Problem("extremes_at_chance", "warning", (
                f"{extremes}, {chance}; {len(above)} of {len(val_random)} random subnets do better (best "
                f"{max(above):.3f}): the extremes learn this data poorly; try --no-distill (the students then "
                f"learn from the labels), more --steps (now {budget.steps}) or a lower --lr (now {config.lr:g})")))
    elif worse(val_largest, val_smallest, val_size):
        problems.append(Problem("largest_below_smallest", "warning", (
            f"the largest subnet scores {val_largest:.3f} on validation, below the smallest ({val_smallest:.3f}): "
            f"the large subnets are undertrained or unstable; try a lower --lr (now {config.lr:g}) or more --steps "
            f"(now {budget.steps})")))
    if budget.steps < MIN_STEPS and (config.epochs is not None or config.steps is not None):
        problems.append(Problem("short_budget", "warning", (
            f"training ran {budget.steps} optimizer steps, fewer than the {MIN_STEPS} the default budget gives at "
            "least: subnets may be undertrained; give more --steps, or leave out --epochs and --steps")))
    return problems


def health(problems: Sequence[Problem], **figures: Any) -> dict[str, Any]:
    """The health record of a run (JSON): its status (ok, warning or failed), its problems, and `figures`."""
    levels = {p.level for p in problems}
    status = "failed" if "failed" in levels else "warning" if levels else "ok"
    return {"status": status, "problems": [p.to_dict() for p in problems], **figures}

