"""One writer per run folder: an exclusive lock file, `RUN/.nas.lock`, held while a command works on it.

The lock is the kernel's (`fcntl.flock` on the open lock file), so it ends with the process that
holds it, however that process ends (kill -9 included): a lock file that nobody holds is stale and
is taken over, with a note naming the process that left it. The file records who holds it (pid,
host, command line, start time), so that a second command on the same folder is refused with one
line naming the holder. It is removed when the holder releases it; a folder the lock created and
that is still empty then is removed too (a refused command leaves nothing behind).

A command takes its locks inside `command_scope()` with `hold(folder)`; they are released when the
scope ends. `run_lock` is the context manager underneath, for library code. Locks are reentrant
within a process (one process is one writer). flock locks are advisory and may not work on network
file systems (NFS without lock support): there the lock file still names the holder, but two hosts
may both believe they hold it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from nas.errors import UserError

LOCK_FILE = ".nas.lock"
_HELD: dict[Path, list[int]] = {}  # the lock files this process holds -> [open fd, times taken] (reentrant)
_SCOPE: ContextVar[tuple[ExitStack, str] | None] = ContextVar("nas_run_locks", default=None)


def lock_path(target: Path) -> Path:
    """The lock file of a run folder (inside it) or of a single output file (beside it)."""
    return target / LOCK_FILE if target.is_dir() else target.with_name(f".{target.name}{LOCK_FILE}")


def holds_files(folder: Path) -> bool:
    """Whether `folder` holds anything but its lock file."""
    return any(p.name != LOCK_FILE for p in folder.iterdir())


@contextmanager
def run_lock(target: Path, command: str) -> Iterator[None]:
    """Exclusive use of the run folder (or output file) `target` by this process while inside;
    `UserError` naming the holder when another process has it. A folder `target` must exist."""
    path = lock_path(target).absolute()
    held = _HELD.setdefault(path, [-1, 0])
    if held[1] == 0:
        try:
            held[0] = _acquire(path, command)
        except BaseException:
            del _HELD[path]
            raise
    held[1] += 1
    try:
        yield
    finally:
        held[1] -= 1
        if held[1] == 0:
            del _HELD[path]
            path.unlink(missing_ok=True)  # before unlocking: a process waiting for it then opens a new file
            os.close(held[0])  # releases the flock


def _acquire(path: Path, command: str) -> int:
    """The open lock file, locked. A file replaced while we waited for it (its holder released it and
    removed it) is opened again, so that two processes never lock two different files of one name."""
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:
            raise UserError(f"run folder {path.parent} does not exist") from None
        except OSError as e:  # a link or a folder in its place, a read-only folder
            raise UserError(f"cannot open the lock file {path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise UserError(f"{path.parent} is in use by {_describe(holder)}; wait until it ends, or stop it "
                            "(one process writes a run folder at a time)") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        if (stale := _read(fd)) is not None:
            print(f"nas: note: {path.parent}: taking over the lock left by {_describe(stale)}, which ended without "
                  "releasing it", file=sys.stderr)
        _write(fd, command)
        return fd
    raise UserError(f"{path}: the lock file keeps being replaced by another process")


def _read(fd: int) -> dict[str, Any] | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        holder = json.loads(os.read(fd, 65536) or b"null")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else None


def _write(fd: int, command: str) -> None:
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process (its lock file names none)"
    command = str(holder.get("command", "a nas command"))
    command = command if len(command) <= 120 else command[:117] + "..."
    return f"`{command}` (pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('since')})"


@contextmanager
def command_scope(command: str) -> Iterator[None]:
    """The locks `hold` takes inside are held until the scope ends; `command`: the command line they name."""
    stack = ExitStack()
    token = _SCOPE.set((stack, command))
    try:
        with stack:
            yield
    finally:
        _SCOPE.reset(token)


def hold(target: Path, *, create: bool = False) -> None:
    """Lock the run folder (or output file) `target` until the current `command_scope` ends.
    `create`: make the folder first (`claimed`)."""
    scope = _SCOPE.get()
    if scope is None:
        raise RuntimeError("nas.runs.lock.hold() outside a command_scope()")
    stack, command = scope
    stack.enter_context(claimed(target, command) if create else run_lock(target, command))


@contextmanager
def claimed(folder: Path, command: str) -> Iterator[None]:
    """`folder` made (with its parents) and locked while inside; the folders made are removed again
    at the end if they are still empty (a command refused before it wrote leaves nothing behind)."""
    with _created(folder), run_lock(folder, command):
        yield


@contextmanager
def _created(folder: Path) -> Iterator[None]:
    """`folder` made (with its parents) for the time inside; the folders made are removed again if empty."""
    made = []
    for p in [folder, *folder.parents]:
        if p.exists() or p.is_symlink():
            break
        made.append(p)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {folder} cannot be created: {e.strerror or e}") from None
    if not folder.is_dir():
        raise UserError(f"--out {folder} exists and is not a folder")
    try:
        yield
    finally:
        for p in made:  # innermost first
            try:
                p.rmdir()
            except OSError:  # holds files (or was replaced): kept
                break
