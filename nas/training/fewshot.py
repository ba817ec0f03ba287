"""Few-shot supernets (Zhao et al. 2021, "Few-shot neural architecture search").

One supernet is trained for a fraction (`split`) of the budget with the uniform rule, then copied
once per choice of one architecture decision (`nas.training.subspace`); each copy is trained on,
from the shared weights, only on subnets that make its choice, and a subnet inherits the weights of
its copy (`FewShotSupernet`). Weights that incompatible choices fought over in the one-shot supernet
then serve one choice each.

Compute (`compute`): ``equal`` splits the remaining steps among the copies in proportion to the
share of the space's subnets each holds (`subspace.shares`), so the whole run trains as many subnet
steps as the one-shot supernet would, and a subnet is drawn as often; ``each`` gives every copy all
the remaining steps (Zhao et al.'s setting), K - 1 times as many again.

Schedule (`schedule`): ``restart``: a copy's schedule is a warm restart (Loshchilov & Hutter 2017),
a new optimizer and a cosine from the recipe's learning rate down over its own steps, no warm-up;
``continue`` (with ``compute="each"``): every copy resumes the one-shot run where it paused, its
optimizer moments and its place on the cosine included, and trains the rest of that schedule, as
if the one-shot run had gone on in the copy's sub-space. The pause is a checkpoint in `workdir`.
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from torch import Tensor, nn

from nas.data.datasets import TaskData
from nas.errors import FieldError, UserError
from nas.training.config import TrainConfig, training_budget
from nas.training.subspace import DECISIONS, Subspace, decision, shares
from nas.training.train import train_supernet
from search_spaces import Arch, HybridSupernet, SearchSpace, SubnetModel

Compute = Literal["equal", "each"]
Schedule = Literal["restart", "continue"]


@dataclass(frozen=True)
class FewShotConfig:
    split: float = 0.5  # the fraction of the budget's steps trained as one supernet, before the copies
    by: str = "mixer0"  # the decision that splits it (`nas.training.subspace.DECISIONS`)
    compute: Compute = "equal"
    schedule: Schedule = "restart"

    def __post_init__(self) -> None:
        if not isinstance(self.split, (int, float)) or isinstance(self.split, bool) or not 0 < self.split < 1:
            raise FieldError("split", f"must be a number in (0, 1), got {self.split!r}")
        if self.by not in DECISIONS:
            raise FieldError("by", f"must be one of {sorted(DECISIONS)}, got {self.by!r}")
        if self.compute not in ("equal", "each"):
            raise FieldError("compute", f"must be 'equal' or 'each', got {self.compute!r}")
        if self.schedule not in ("restart", "continue"):
            raise FieldError("schedule", f"must be 'restart' or 'continue', got {self.schedule!r}")
        if self.schedule == "continue" and self.compute != "each":
            raise FieldError("schedule", "must be 'restart' with compute='equal': 'continue' gives a copy the one-shot "
                                         "schedule's remaining steps, compute='each'")


def copy_steps(remaining: int, share: dict[str, float], compute: Compute) -> dict[str, int]:
    """The steps of each copy (choices with a share > 0): all `remaining` each, or `remaining` split
    in proportion to the shares (largest remainders; at least one step a copy)."""
    held = {c: s for c, s in share.items() if s > 0}
    if compute == "each":
        return {c: remaining for c in held}
    total = sum(held.values())
    exact = {c: remaining * s / total for c, s in held.items()}
    steps = {c: int(v) for c, v in exact.items()}
    for c in sorted(held, key=lambda c: steps[c] - exact[c])[: remaining - sum(steps.values())]:
        steps[c] += 1
    return {c: max(1, n) for c, n in steps.items()}


class FewShotSupernet(nn.Module):
    """The copies of a few-shot supernet, one per choice of `by`: a subnet runs on its copy's weights.
    Called like a supernet, `model(x, arch)`, and `extract(arch)` gives its static model."""

    def __init__(self, space: SearchSpace, by: str, copies: dict[str, HybridSupernet]):
        super().__init__()
        self.space, self.by = space, decision(by)
        self.copies = nn.ModuleDict(copies)

    def copy_for(self, arch: Arch) -> HybridSupernet:
        choice = self.by.choice(self.space.validate(arch))
        if choice not in self.copies:
            raise UserError(f"no copy holds {self.by.name}={choice} (copies: {', '.join(self.copies)})")
        return self.copies[choice]  # type: ignore[return-value]

    def forward(self, x: Tensor, arch: Arch) -> Tensor:
        return self.copy_for(arch)(x, arch)

    def extract(self, arch: Arch) -> SubnetModel:
        return self.copy_for(arch).extract(arch)


def train_fewshot(supernet: HybridSupernet, data: TaskData, config: TrainConfig,
                  fewshot: FewShotConfig, *, workdir: Path | None = None) -> tuple[FewShotSupernet, dict]:
    """Train `supernet` in place for `fewshot.split` of `config`'s budget (uniform rule), then its
    copies; the few-shot supernet and a JSON-able summary (steps of each part, seconds, the shares).
    `workdir` (for `schedule="continue"`): where the one-shot run's checkpoint and the copies' go."""
    if config.sampling != "uniform":
        raise FieldError("sampling", f"a few-shot supernet trains with the uniform rule, got {config.sampling!r}")
    if fewshot.schedule == "continue" and workdir is None:
        raise ValueError("schedule='continue' needs a workdir for the one-shot run's checkpoint")
    start = time.perf_counter()
    total = training_budget(config, len(data.train)).steps
    base_steps = max(1, min(total - 1, round(fewshot.split * total)))
    whole = replace(config, epochs=None, steps=total)
    if fewshot.schedule == "continue":
        assert workdir is not None
        base = workdir / "fewshot-base.safetensors"
        train_supernet(supernet, data, whole, checkpoint=base, pause_at=base_steps, show_progress=False)
    else:
        train_supernet(supernet, data, replace(config, epochs=None, steps=base_steps), show_progress=False)
    share = shares(supernet.space, fewshot.by)
    steps = copy_steps(total - base_steps, share, fewshot.compute)
    copies: dict[str, HybridSupernet] = {}
    for i, (choice, n) in enumerate(steps.items()):
        copies[choice] = copy.deepcopy(supernet)
        within = Subspace(fewshot.by, choice)
        if fewshot.schedule == "continue":
            assert workdir is not None
            own = workdir / f"fewshot-{choice}.safetensors"
            shutil.copyfile(base, own)
            train_supernet(copies[choice], data, whole, checkpoint=own, resume=True, show_progress=False,
                           within=within)
        else:
            restart = replace(config, epochs=None, steps=n, warmup_epochs=0, seed=config.seed + 1 + i)
            train_supernet(copies[choice], data, restart, show_progress=False, within=within)
    return FewShotSupernet(supernet.space, fewshot.by, copies), {
        "fewshot": asdict(fewshot), "base_steps": base_steps, "copy_steps": steps, "shares": share,
        "steps": base_steps + sum(steps.values()), "seconds": time.perf_counter() - start}
