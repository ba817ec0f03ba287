"""Ctrl-C that finishes the unit of work under way (an evaluation, a training step) before stopping.

The first SIGINT only raises a flag that the loop polls between units, so what the unit produced is
written and the run can be resumed exactly; a second SIGINT interrupts at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def finish_on_interrupt(unit: str) -> Iterator[Callable[[], bool]]:
    """Yields `stop()`: True once Ctrl-C was pressed. Only in the main thread (signals can be handled
    nowhere else); elsewhere the flag never rises and Ctrl-C behaves as usual."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag.is_set
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        print(f"\nnas: stopping after {unit} (Ctrl-C again to stop at once)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
