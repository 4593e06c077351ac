"""One runner at a time per virtual board directory.

A runner (`board run`, `board serve`, `board status`, `board init --force`, the scenarios) holds
an exclusive flock() on DIR/board.lock while it uses the flash; the file says who holds it
(pid, command, and the pty of a served board), for the refusal line of the next one. The kernel
drops the lock when its process ends, however it ends, so a lock left by a dead process never
blocks anyone. Within one process the lock is re-entrant (`run` holds it around each `boot`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

LOCK_FILE = "board.lock"
LOCK_TRIES = 25  # 0.5 s

_held: dict[str, int] = {}  # resolved directory -> nesting depth in this process


def holder(directory: str | os.PathLike) -> dict | None:
    """Who holds the lock, as its holder wrote it, or None when nobody does."""
    path = Path(directory) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(os.read(fd, 4096) or b"{}")
            except ValueError:
                return {}
        return None
    finally:
        os.close(fd)


def describe(info: dict) -> str:
    what = info.get("command", "another mpfota process")
    pid = info.get("pid")
    return f"`mpfota {what}` (pid {pid})" if pid else what


def _lock(fd: int) -> bool:
    # A few tries: a boot started by another thread of this process holds a copy of the lock
    # for the instant between its fork and its exec (a power-cut sweep boots boards in parallel).
    for _ in range(LOCK_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            time.sleep(0.02)
    return False


@contextlib.contextmanager
def hold(directory: str | os.PathLike, command: str, **details: str) -> Iterator[None]:
    """Hold the board's lock for the block; UserError naming the holder when it is taken."""
    key = str(Path(directory).resolve())
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path = Path(directory) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UserError(f"cannot lock {directory}: {exc.strerror or exc}") from None
    if not _lock(fd):
        os.close(fd)
        info = holder(directory) or {}
        line = f"{directory} is in use by {describe(info)}: stop it first"
        if info.get("pty"):
            line += (f", or ask the running board: mpremote connect {info['pty']} exec "
                     "\"from mpfota import status; print(status.status())\"")
        raise UserError(line) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "command": command, **details}).encode())
        _held[key] = 1
        yield
    finally:
        _held.pop(key, None)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)

