"""The data layer's error (shared by `nas.data.datasets` and `nas.data.images`)."""

from __future__ import annotations


class DataError(ValueError):
    """Bad dataset input; message is one clear line naming the file/key/problem."""


def one_line(exc: BaseException) -> str:
    """`exc` as one line: its type and its message with the whitespace collapsed."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
