"""What `nas train` and `nas search` say about the health of their supernet (`nas.training.health`):
one line per problem on stderr as it is found, the extremes' validation accuracy and the status in
the final lines, and the same in the run's JSON.

A run whose supernet training failed (no subnet above chance) still goes to its end with exit code
0: the model it hands over carries its own validation accuracy, measured after finishing. What can't
be trusted is the search's ranking, and the final line and search.json say so."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from nas.data.datasets import TaskData
from nas.evaluation.accuracy import evaluate
from nas.evaluation.baselines import compare, fit_baselines
from nas.finish.finetune import FinishConfig
from nas.finish.package import add_baselines
from nas.runs.files import SPACE_FILE, SUPERNET_FILE, read_json, write_json
from nas.training.health import Problem
from search_spaces import HybridSupernet


def say_problem(problem: Problem | dict[str, Any]) -> None:
    """One line on stderr: `nas: warning: ...` or `nas: failed: ...`."""
    p = problem if isinstance(problem, Problem) else Problem(**problem)
    print(f"nas: {p.level}: {p.message}", file=sys.stderr)


class Said:
    """`on_problem` of `train_supernet`: says each problem as it is found, and keeps it."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def __call__(self, problem: Problem) -> None:
        self.problems.append(problem)
        say_problem(problem)


def say_problems(health: dict[str, Any] | None, *, said: Sequence[Problem] = ()) -> None:
    """Each problem of a health record but those `said` already (during training)."""
    for problem in (health or {}).get("problems", []):
        if Problem(**problem) not in said:
            say_problem(problem)


def accuracy_text(health: dict[str, Any] | None, largest: float, smallest: float) -> str:
    """`validation accuracy largest 0.903, smallest 0.871 (healthy)`, with the status when it is not ok."""
    text = f"validation accuracy largest {largest:.3f}, smallest {smallest:.3f}"
    if health is None:
        return text + " (training health not recorded)"
    alone = health.get("standalone")
    if health["status"] == "ok":
        return text + (f" (healthy; the smallest trained alone: {alone['val_acc']:.3f})" if alone else " (healthy)")
    return text + f" ({status_text(health)})"


def status_text(health: dict[str, Any]) -> str:
    problems = health["problems"]
    if health["status"] == "failed":
        return "SUPERNET TRAINING FAILED: its results can't be trusted (see above)"
    return f"{len(problems)} training warning{'s' * (len(problems) > 1)} above: its results may not be trustworthy"


def final_line(health: dict[str, Any] | None) -> str | None:
    """The line that ends a search whose supernet is not healthy (None when it is, or unknown): its
    worst problem, and how many more there are."""
    if health is None or health["status"] == "ok":
        return None
    problems = sorted(health["problems"], key=lambda p: p["level"] != "failed")  # a failure first
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    what = "FAILED" if health["status"] == "failed" else "raised a warning"
    return f"nas: this run's supernet training {what}: {problems[0]['message']}{more}; recorded in search.json"


def recorded_health(supernet: str | Path) -> dict[str, Any] | None:
    """The health recorded with a trained supernet (a run folder or its .safetensors file), None when
    it has none (trained before health was recorded, or saved by other means)."""
    path = Path(supernet)
    meta = (path if path.is_dir() else path.parent) / SPACE_FILE
    if (path.is_dir() and not (path / SUPERNET_FILE).is_file()) or not meta.is_file():
        return None
    recorded = read_json(meta, "supernet space file")
    summary = recorded.get("summary") if isinstance(recorded, dict) else None
    found = summary.get("health") if isinstance(summary, dict) else None
    return found if isinstance(found, dict) and found.get("status") in ("ok", "warning", "failed") else None


def finishing_for(finish: FinishConfig, health: dict[str, Any] | None, *, asked: bool = False) -> FinishConfig:
    """How to finish subnets of a supernet with this `health`: a failed supernet's weights are no
    start, so a fine-tune becomes training from scratch, said in one note; `asked` (the user named
    the fine-tune): it stays, with a warning."""
    if finish.how != "finetune" or health is None or health["status"] != "failed":
        return finish
    if asked:
        print("nas: warning: fine-tuning from the weights of a supernet whose training failed, as asked "
              "(--finish scratch trains the subnets from scratch)", file=sys.stderr)
        return finish
    print("nas: note: the chosen subnet is trained from scratch, not fine-tuned: the supernet failed, so its "
          "weights are no start", file=sys.stderr)
    return replace(finish, how="scratch")


def weights_text(chosen: dict[str, Any]) -> str:
    """", N MiB of weights" (as deployed) for a search's last line; "" for a record from before `model_bytes`."""
    return f", {chosen['model_bytes'] / 2**20:.2f} MiB of weights" if "model_bytes" in chosen else ""


def check_baselines(data: TaskData, test_acc: float, *, model: Path, search: Path | None) -> None:
    """A handed-over model of `test_acc`, in folder `model`, against scikit-learn baselines on the
    same split (`nas.evaluation.baselines`): one line, a warning when it is below them, the figures
    in its model.json and card, and in `search`'s search.json under "baselines" (None: not there).
    The model is written before: a check that cannot run (or is interrupted) says so in a note instead."""
    start = time.perf_counter()
    try:
        verdict = compare(fit_baselines(data), float(test_acc), len(data.test))
    except (Exception, KeyboardInterrupt) as e:
        reason = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
        verdict = {"skipped": " ".join(reason.split())}
        print(f"nas: note: the handed-over model was not compared with scikit-learn baselines ({verdict['skipped']})",
              file=sys.stderr)
    if search is not None:
        add_to_search(search, "baselines", verdict)
    if "skipped" in verdict:
        return
    add_baselines(model, verdict)
    scores = ", ".join(f"{r['method']} {r['test_acc']:.4f}" for r in verdict["baselines"])
    print(f"baselines on the same split (scikit-learn, test acc, {time.perf_counter() - start:.0f} s): {scores}; "
          f"this model {verdict['model_test_acc']:.4f}")
    if verdict["below"]:
        print(f"nas: warning: the handed-over model is below a scikit-learn baseline on the same split (test acc "
              f"{verdict['model_test_acc']:.4f} against {verdict['best']}'s {verdict['best_test_acc']:.4f}): on these "
              "data the searched networks do worse than a simple classifier; do not deploy it as it is", file=sys.stderr)


def add_to_search(out: Path, key: str, value: Any) -> None:
    """Sets `key` of run `out`'s search.json, when it is written; the rest is kept."""
    path = out / "search.json"
    if path.is_file():
        write_json(path, {**read_json(path, "search summary"), key: value})


def record_in_search(out: Path, record: dict[str, Any]) -> None:
    """Adds the supernet's record (its extremes' validation accuracy and health) to a written search.json."""
    add_to_search(out, "supernet", record)


def supernet_record(supernet: HybridSupernet, data: TaskData, path: Path, health: dict[str, Any] | None,
                    device: str) -> dict[str, Any]:
    """What search.json records of its supernet: its file, the validation accuracy of its extremes
    on the search's data, and its training health (None when not recorded)."""
    space = supernet.space
    return {"path": str(path.resolve()), "val_acc_largest": evaluate(supernet, data.val, space.largest(), device=device),
            "val_acc_smallest": evaluate(supernet, data.val, space.smallest(), device=device), "health": health}
