"""User-facing errors: the CLI prints their message on one line and exits non-zero."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an impossible request; the message names what is wrong."""
