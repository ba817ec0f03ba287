"""After supernet training: its health (`nas.training.health`) from the extremes' validation
accuracy, the streaks of epochs at chance, and a quick standalone check.

The standalone check trains the space's smallest subnet alone, from a fresh initialisation, with
the supernet's recipe for `STANDALONE_SHARE` of its optimizer steps. A smallest subnet step costs
a fraction of a supernet step (which runs the largest, the smallest and the random subnets), so the
check adds a few percent to training (docs/benchmarks.md, "Training health"). Trained alone on a
quarter of the budget, the subnet sets a floor: the same subnet inside a healthy supernet, trained
on the whole budget, scores about as well or better. Far below it, the supernet is undertrained or
its training went wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nas.data.datasets import TaskData
from nas.evaluation.accuracy import evaluate
from nas.training.config import TrainConfig, training_budget
from nas.training.health import Problem, chance_accuracy, final_problems, health, worse
from nas.training.train import train_standalone
from search_spaces import HybridSupernet, SubnetModel

STANDALONE_SHARE = 0.25  # of the supernet's optimizer steps
PROBES = 8  # random subnets evaluated besides the extremes: did any subnet learn?


def standalone_check(supernet: HybridSupernet, data: TaskData, config: TrainConfig, *,
                     show_progress: bool = False) -> dict[str, Any]:
    """The validation accuracy of the smallest subnet trained alone for `STANDALONE_SHARE` of the
    supernet's steps (fresh weights seeded by `config.seed`; torch's global generator is left as it was)."""
    arch = supernet.space.smallest()
    steps = max(1, round(STANDALONE_SHARE * training_budget(config, len(data.train)).steps))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = SubnetModel(supernet.spec, arch)
        summary = train_standalone(model, data, config, steps=steps, show_progress=show_progress,
                                   description="health check: the smallest subnet alone")
    return {"arch": arch.id, "steps": steps, "val_acc": summary["val_acc"], "seconds": summary["seconds"]}


def assess_training(supernet: HybridSupernet, data: TaskData, config: TrainConfig, summary: dict[str, Any], *,
                    standalone: bool = True, show_progress: bool = False) -> dict[str, Any]:
    """The health record of a trained supernet (`health`): the problems `train_supernet` saw during
    training (its summary's), those of the final validation accuracy of the extremes and of
    `PROBES` random subnets, and, with `standalone`, the comparison with `standalone_check` (run
    only when training did not fail)."""
    plan = training_budget(config, len(data.train))
    largest, smallest = summary["val_acc_largest"], summary["val_acc_smallest"]
    chance, n = chance_accuracy(data.val.y), len(data.val)
    rng = np.random.default_rng(config.seed)
    randoms = [evaluate(supernet, data.val, supernet.space.sample(rng), device=config.device) for _ in range(PROBES)]
    problems = [Problem(**p) for p in summary.get("problems", [])]
    problems += final_problems(largest, smallest, randoms, chance, n, plan, config)
    alone = None
    if standalone and not any(p.level == "failed" for p in problems):
        alone = standalone_check(supernet, data, config, show_progress=show_progress)
        if worse(smallest, alone["val_acc"], n):
            problems.append(Problem("below_standalone", "warning", (
                f"the supernet's smallest subnet scores {smallest:.3f} on validation; trained alone for "
                f"{alone['steps']} steps ({STANDALONE_SHARE:.0%} of the supernet's) it scores {alone['val_acc']:.3f}: "
                f"the supernet is undertrained or weight sharing hurts it; try more --steps (now {plan.steps}) or "
                f"a lower --lr (now {config.lr:g})")))
    return health(problems, val_acc_largest=largest, val_acc_smallest=smallest, val_acc_random=randoms,
                  val_chance=chance, standalone=alone)
