"""Progress display: a rich bar (counts, elapsed, time left, a status text) on a terminal, and
plain periodic lines when the output is a file or a pipe (CI logs, `| tee`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

PLAIN_EVERY_S = 10.0


class Bar:
    def __init__(self, progress: Progress | None, task: TaskID | None, console: Console | None = None,
                 description: str = "", total: float | None = None):
        self._progress, self._task, self._console = progress, task, console
        self._description, self._total, self._done = description, total, 0.0
        self._start = self._last = time.perf_counter()

    def update(self, status: str = "", advance: float = 1) -> None:
        self._done += advance
        if self._progress is not None:
            assert self._task is not None  # a rich bar always comes with its task
            self._progress.update(self._task, advance=advance, status=status)
        elif self._console is not None:
            now = time.perf_counter()
            finished = self._total is not None and self._done >= self._total
            if now - self._last >= PLAIN_EVERY_S or finished:
                self._last = now
                elapsed = now - self._start
                share = f"{self._done:.0f}/{self._total:.0f}" if self._total else f"{self._done:.0f}"
                left = ""
                if self._total and self._done > 0 and not finished:
                    left = f", ~{elapsed * (self._total - self._done) / self._done:.0f} s left"
                self._console.print(f"{self._description}: {share} after {elapsed:.0f} s{left}  {status}")


@contextmanager
def progress_bar(total: float | None, description: str, *, enabled: bool = True) -> Iterator[Bar]:
    console = Console(stderr=True, soft_wrap=True)
    if not enabled:
        yield Bar(None, None)
        return
    if not console.is_terminal:
        yield Bar(None, None, console, description, total)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("left"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"), console=console,
    )
    with progress:
        task = progress.add_task(description, total=total, status="")
        yield Bar(progress, task)
