"""User-facing errors: the CLI prints their message on one line and exits non-zero."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Bad input or an impossible request; the message names what is wrong."""


class FieldError(UserError):
    """A value refused by the type that owns it, named by its field: `max_flops must be > 0, got -1`.

    The library speaks in fields; a front end presents the field in its own words (a CLI flag, a
    key of a JSON file) with `named`, so that one validation serves every face."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem


@contextmanager
def named(name: Callable[[str], str]) -> Iterator[None]:
    """Inside, a `FieldError` about field F is raised again about field `name(F)`, same problem."""
    try:
        yield
    except FieldError as e:
        raise FieldError(name(e.field), e.problem) from None
