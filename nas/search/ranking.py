"""What a search ranks subnets by: validation accuracy, or the validation loss where accuracy is too
coarse to rank them.

Accuracy on n validation samples moves in steps of 1/n, and its sampling noise, sqrt(p(1 - p) / n),
is 2 points at 90% on 200 samples: below `MIN_VAL_SAMPLES` samples, subnets that differ by a point
or two tie or swap by chance, and a strategy told accuracy learns from ties. The mean
cross-entropy on the same samples, computed in the same pass, is continuous and weighs how
confident each prediction is, so it separates them. The search then tells the strategy the loss
(minimized) instead of the accuracy (maximized), and ranks the Pareto front and the chosen subnet
by it. Accuracy stays the reported metric (and the hypervolume's axis).

The rule depends on the size of the validation split alone, known before the first evaluation: a
strategy is told one objective from its first tell to its last, and a resumed search ranks as the
interrupted one did. A search recorded before `val_loss` was (no such column) ranks by accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

MIN_VAL_SAMPLES = 200  # fewer validation samples: rank by the validation loss
LOSS_CAP = 1e3  # what a non-finite loss is ranked as: no working subnet reaches it (p = e^-1000 on the truth)


@dataclass(frozen=True)
class Ranking:
    """`column`: the evaluation column subnets are ranked by; `reason`: why, in one line."""

    column: Literal["val_acc", "val_loss"]
    reason: str

    def score(self, row: Any) -> float:
        """The first objective a strategy is told (minimized): -accuracy, or the loss."""
        if self.column == "val_acc":
            return -float(row["val_acc"])
        loss = float(row["val_loss"])
        return loss if math.isfinite(loss) else LOSS_CAP

    def scores(self, table: pd.DataFrame) -> np.ndarray:
        """`score` of every row of an evaluations table."""
        return np.array([self.score(row) for _, row in table.iterrows()], dtype=float)

    def describe(self, table: pd.DataFrame) -> dict[str, Any]:
        """What search.json records: the column, why, and how coarse accuracy was among the
        feasible subnets (its distinct values)."""
        feasible = table[table["feasible"].astype(bool)]
        return {"by": self.column, "reason": self.reason,
                "distinct_val_acc": int(feasible["val_acc"].nunique())}


def search_ranking(val_samples: int, *, loss_recorded: bool = True) -> Ranking:
    """The ranking of a search on `val_samples` validation samples; `loss_recorded`: whether its
    evaluations record the loss (those written before it was recorded do not)."""
    if val_samples >= MIN_VAL_SAMPLES:
        return Ranking("val_acc", f"{val_samples} validation samples (at least {MIN_VAL_SAMPLES})")
    if not loss_recorded:
        return Ranking("val_acc", "recorded before the search ranked small validation splits by loss")
    return Ranking("val_loss", f"only {val_samples} validation samples (fewer than {MIN_VAL_SAMPLES}): accuracy "
                               f"moves in steps of {1 / val_samples:.3f}, too coarse to rank subnets, so they are "
                               "ranked by validation loss (accuracy is still reported)")
