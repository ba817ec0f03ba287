"""Progress display: a rich bar (counts, elapsed, time left, a status text) on a terminal, and
plain periodic lines when the output is a file or a pipe (CI logs, `| tee`).

Both estimate the time left with `time_left`: the work left at the rate of the latest half of the
time so far. The first steps (allocations, kernels set up for each new subnet shape, a CPU's
short turbo) then drop out of the estimate as the run goes on, a rate that drifts (a machine that
gets busier) is followed, and half the run still smooths what varies from step to step (random
subnets, an evaluation at the end of each epoch). Work done before the bar started (a resumed
run) is shown as done but is no part of the rate.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

PLAIN_EVERY_S = 10.0
SAMPLE_EVERY_S = 0.5  # the rate is measured between samples of (seconds, done) this far apart at least


def time_left(times: Sequence[float], done: Sequence[float], total: float) -> float | None:
    """Seconds to reach `total` from samples of the time since the start (ascending) and the work
    done then, at the rate of the latest half of the time so far; None before there is a rate."""
    if len(times) < 2 or times[-1] <= 0:
        return None
    i = min(bisect.bisect_left(times, times[-1] / 2), len(times) - 2)  # the first sample of the latest half
    rate = (done[-1] - done[i]) / max(times[-1] - times[i], 1e-9)
    return max(total - done[-1], 0.0) / rate if rate > 0 else None


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Bar:
    def __init__(self, progress: Progress | None, task: TaskID | None, console: Console | None = None,
                 description: str = "", total: float | None = None, completed: float = 0):
        self._progress, self._task, self._console = progress, task, console
        self._description, self._total, self._done = description, total, completed
        self._start = self._last = time.perf_counter()
        self._times, self._dones = [0.0], [float(completed)]  # samples for `time_left`

    def left(self) -> float | None:
        """The estimated seconds left (`time_left`), None without a total or a rate yet."""
        return time_left(self._times, self._dones, self._total) if self._total else None

    def update(self, status: str = "", advance: float = 1) -> None:
        self._done += advance
        now = time.perf_counter()
        if now - self._start - self._times[-1] >= SAMPLE_EVERY_S:
            self._times.append(now - self._start)
            self._dones.append(self._done)
        if self._progress is not None:
            assert self._task is not None  # a rich bar always comes with its task
            self._progress.update(self._task, advance=advance, status=status, left=clock(self.left()))
        elif self._console is not None:
            finished = self._total is not None and self._done >= self._total
            if now - self._last >= PLAIN_EVERY_S or finished:
                self._last = now
                share = f"{self._done:.0f}/{self._total:.0f}" if self._total else f"{self._done:.0f}"
                left = self.left()
                left_text = f", ~{left:.0f} s left" if left is not None and not finished else ""
                self._console.print(f"{self._description}: {share} after {now - self._start:.0f} s{left_text}  {status}")


@contextmanager
def progress_bar(total: float | None, description: str, *, enabled: bool = True,
                 completed: int = 0) -> Iterator[Bar]:
    """`completed`: done before (a resumed run), shown as done but no part of the rate that the
    time left is estimated from."""
    console = Console(stderr=True, soft_wrap=True)
    if not enabled:
        yield Bar(None, None)
        return
    if not console.is_terminal:
        yield Bar(None, None, console, description, total, completed)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("left {task.fields[left]}"), TextColumn("{task.fields[status]}"), console=console,
    )
    with progress:
        task = progress.add_task(description, total=total, completed=completed, status="", left=clock(None))
        yield Bar(progress, task, total=total, completed=completed)
