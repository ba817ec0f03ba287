"""User-facing errors: the CLI prints their message on one line and exits non-zero. And the bounded
retry that says when it fails: a rejection-sampling loop draws at most a fixed number of times, and
when no draw meets its constraint it warns (`RetryWarning`), naming what was drawn, how many times,
the constraint and the fallback it goes on with."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """Bad input or an impossible request; the message names what is wrong."""


class RetryWarning(UserWarning):
    """A bounded retry found nothing that meets its constraint and went on with a fallback."""


def retries_exhausted(what: str, tries: int, constraint: str, *, fallback: str) -> None:
    """Warn (`RetryWarning`) that none of `tries` draws of `what` met `constraint`, and what is done
    instead (`fallback`). Python shows a warning once per place and text: a message without
    changing figures is said once, however often it recurs."""
    warnings.warn(f"none of {tries} draws of {what} {constraint}; {fallback}", RetryWarning, stacklevel=3)


def draw_bounded(draw: Callable[[], T], gap: Callable[[T], float], *, tries: int, what: str, constraint: str,
                 fallback: str) -> tuple[T, bool]:
    """At most `tries` calls of `draw`, until one's `gap` (how far it is from meeting `constraint`)
    is 0: returns it and True. When every draw misses, `retries_exhausted` warns and the closest
    draw (the latest on ties) is returned with False."""
    if tries < 1:
        raise ValueError(f"a bounded retry needs tries >= 1, got {tries}")
    closest: tuple[float, T] | None = None
    for _ in range(tries):
        x = draw()
        g = gap(x)
        if g <= 0:
            return x, True
        if closest is None or g <= closest[0]:
            closest = (g, x)
    assert closest is not None
    retries_exhausted(what, tries, constraint, fallback=fallback)
    return closest[1], False
