"""A search's `evaluations.csv`: its columns, and reading it back (a resumed search, `nas finetune`),
checked like user input."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.runs.files import check_regular, write_text
from nas.search.remeasure import COLUMNS as REMEASURE_COLUMNS
from search_spaces import Arch

# precision: the one the row was evaluated in (fp32, int8); other_*: with --precision search, the other's figures
COLUMNS = ["index", "id", "strategy", "val_acc", "val_loss", "latency_ms", "latency_iqr_ms", "latency_predicted_ms",
           "latency_measured_ms", "flops", "params", "memory_bytes", "model_bytes", "precision", "other_val_acc",
           "other_latency_ms", "feasible", "violation", "acc_predicted", "cost_predicted", "seconds", "time", "arch"]
# searches recorded before the precision (and before the loss) was: resumed as they are, in fp32
FP32_COLUMNS = [c for c in COLUMNS if c not in ("model_bytes", "precision", "other_val_acc", "other_latency_ms")]
LEGACY_COLUMNS = [c for c in FP32_COLUMNS if c != "val_loss"]


def read_evaluations(path: Path, space) -> list[tuple[Arch, dict]]:
    """The complete rows of an interrupted search's `evaluations.csv`, in order, checked like user
    input (a known header, an architecture of `space` with its id, finite figures, an accuracy in
    [0, 1]). A last line cut off by a kill is dropped (the file is rewritten without it, atomically);
    anything else malformed is an error naming the file and the line."""
    if not check_regular(path):
        return []  # killed before the first evaluation was written
    try:
        text = path.read_text()
    except (OSError, ValueError) as e:
        raise UserError(f"{path} cannot be read: {e}") from None
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]  # a row cut off mid-write
        write_text(path, "".join(lines))
    if not lines:
        return []
    reader = csv.DictReader(lines)
    header = reader.fieldnames or []
    known = (COLUMNS, FP32_COLUMNS, LEGACY_COLUMNS)
    if header not in [*known, *(c + REMEASURE_COLUMNS for c in known[:2])]:  # re-measured before the choice
        raise UserError(f"{path}: the header is not that of a search's evaluations (expected {','.join(COLUMNS)})")
    numbers = [k for k in ("val_acc", "val_loss", "latency_ms", "flops", "params", "memory_bytes", "model_bytes",
                           "violation", "seconds", "time") if k in header]
    rows = []
    for number, raw in enumerate(reader, start=2):
        try:
            arch, row = _recorded_row(raw, space, numbers)
        except (ValueError, TypeError) as e:  # ArchError is a ValueError
            raise UserError(f"{path}, line {number}: not a valid evaluation ({e})") from None
        rows.append((arch, row))
    return rows


NOT_MEASURED = ("latency_ms",)  # nan (or empty) when neither the objective nor a limit needs latency
UNBOUNDED = ("val_loss",)  # a subnet whose loss diverged records nan or inf


def _recorded_row(raw: dict[str, Any], space, numbers: list[str]) -> tuple[Arch, dict[str, float]]:
    """One recorded evaluation: its architecture and its figures `numbers`, or ValueError naming what
    is wrong."""
    if None in raw or any(v is None for v in raw.values()):
        raise ValueError("the row has more or fewer fields than the header")
    arch = space.parse(raw["arch"])
    if raw["id"] != arch.id:
        raise ValueError(f"id {raw['id']!r} is not the id of its architecture ({arch.id})")
    row = {}
    for key in numbers:
        value = float(raw[key]) if raw[key] != "" or key not in NOT_MEASURED else math.nan
        allowed = (key in NOT_MEASURED and math.isnan(value)) or (key in UNBOUNDED and not value < 0)
        if not ((math.isfinite(value) and value >= 0) or allowed):
            raise ValueError(f"{key} must be a finite number >= 0, got {raw[key]!r}")
        row[key] = value
    if row["val_acc"] > 1:
        raise ValueError(f"val_acc must be in [0, 1], got {raw['val_acc']!r}")
    return arch, row


def header(path: Path) -> list[str]:
    """The columns of an evaluations.csv (`read_evaluations` checked them)."""
    with path.open(newline="") as fh:
        return next(csv.reader(fh))
