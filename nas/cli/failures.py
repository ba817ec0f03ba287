"""Every failure of the `nas` command line on one line.

Bad input is the library's `UserError` (and `DataError`, `ArchError`): `nas: error: MESSAGE`, exit
2. So are the failures that come from the machine or from a file rather than from nas: the OS (a
full disk, a permission, a path that cannot be created), memory, torch running out of device memory,
a safetensors file that cannot be read or written. Anything else is an internal error (a bug):
one line and exit 1, the traceback only with `--debug`. The files a run wrote are kept either way
(every one is written atomically, the evaluations appended row by row), so it can be resumed.
"""

from __future__ import annotations

import errno
import sys
import traceback

import torch
from safetensors import SafetensorError

MAX_CHARS = 600  # of a message from outside nas (torch's may run to pages)


def one_line(text: str, limit: int | None = None) -> str:
    """`text` with its line breaks and runs of spaces collapsed, cut at `limit` characters."""
    line = " ".join(str(text).split())
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


def _os_error(e: OSError) -> str:
    what = e.strerror or one_line(str(e), MAX_CHARS) or type(e).__name__
    where = " and ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    advice = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
              errno.EACCES: "check the permissions", errno.EPERM: "check the permissions",
              errno.EROFS: "write elsewhere (--out)"}.get(e.errno or 0)
    return f"{what}{f': {where}' if where else ''}" + (f" ({advice})" if advice else "")


def external_failure(e: BaseException) -> str | None:
    """The one-line message of a failure that is not a bug of nas (exit 2), or None."""
    if isinstance(e, OSError):
        return _os_error(e)
    if isinstance(e, MemoryError):
        return f"out of memory{f' ({one_line(str(e), MAX_CHARS)})' if str(e) else ''}: the machine cannot hold what " \
               "this command needs (a smaller space, batch or data)"
    if isinstance(e, torch.OutOfMemoryError):
        return f"out of device memory: {one_line(str(e), 200)} (a smaller space or batch, or --device cpu)"
    if isinstance(e, SafetensorError):
        return f"a safetensors file could not be read or written: {one_line(str(e), MAX_CHARS)}"
    return None


def report_failure(e: Exception, *, debug: bool, hint: str = "") -> int:
    """Print the one line of a failure that is not bad input; returns the exit code (2, or 1 for a bug)."""
    if debug:
        traceback.print_exception(e)
    message = external_failure(e)
    if message is not None:
        print(f"nas: error: {message}{hint}", file=sys.stderr)
        return 2
    text = one_line(str(e), MAX_CHARS)
    print(f"nas: internal error: {type(e).__name__}{f': {text}' if text else ''}{hint}"
          + ("" if debug else " (run with --debug for the traceback, and report it)"), file=sys.stderr)
    return 1
