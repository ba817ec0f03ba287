"""User-facing errors: the CLI prints their message on one line and exits non-zero. And the bounded
retry that says when it fails: a rejection-sampling loop draws at most a fixed number of times, and
when no draw meets its constraint it warns (`RetryWarning`), naming what was drawn, how many times,
the constraint and the fallback it goes on with."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from search_spaces.arch import is_finite_number, show

T = TypeVar("T")


class UserError(Exception):
    """Bad input or an impossible request; the message names what is wrong."""


class FieldError(UserError):
    """A value refused by the type that owns it, named by its field: `max_flops must be > 0, got -1`.

    The library speaks in fields; a front end presents the field in its own words (a CLI flag, a
    key of a JSON file) with `named`, so that one validation serves every face."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem


_KINDS = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}


def check_field_types(config: Any, *, skip: tuple[str, ...] = ()) -> None:
    """Each field of the dataclass `config` holds a value of its annotated type (int, float: finite,
    bool, str, a Literal's strings, or None where the annotation allows it), else a `FieldError`
    naming the field: a config read from a JSON file may hold anything. Literal values and ranges
    are the config's own to check."""
    hints = get_type_hints(type(config))
    for f in fields(config):
        if f.name in skip:
            continue
        hint, value, optional = hints[f.name], getattr(config, f.name), False
        if get_origin(hint) is Union or (get_origin(hint) is not None and type(None) in get_args(hint)):
            optional, hint = True, next(a for a in get_args(hint) if a is not type(None))
        if get_origin(hint) is Literal:
            hint = str
        if optional and value is None:
            continue
        if not (is_finite_number(value) if hint is float else type(value) is hint):
            raise FieldError(f.name, f"must be {_KINDS[hint]}, got {show(value)}")


@contextmanager
def named(name: Callable[[str], str]) -> Iterator[None]:
    """Inside, a `FieldError` about field F is raised again about field `name(F)`, same problem."""
    try:
        yield
    except FieldError as e:
        raise FieldError(name(e.field), e.problem) from None


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
