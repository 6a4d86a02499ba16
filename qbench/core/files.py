"""Files qbench writes for others to read: whole or not at all (atomic replacement), under an
exclusive lock when several commands may write, stamped with the time in UTC."""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qbench.core.task import DataError


class Busy(DataError):
    """Another command holds the lock; the message names it."""


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


@contextlib.contextmanager
def locked(path: Path, what: str, *, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on `path` (released when the process ends, whatever happens).
    Without `wait`, a held lock is a Busy error naming the holder."""
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = (os.pread(handle, 4096, 0).decode("utf-8", "replace").strip()
                      or "another process")
            raise Busy(f"{what} is in use by {holder}; wait for it to finish, or pass "
                                f"--wait to queue behind it") from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, (f"pid {os.getpid()} on {socket.gethostname()} since {now()}: "
                           f"{' '.join(sys.argv)}").encode(), 0)
        yield
    finally:
        os.close(handle)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a kill never leaves a half-written file)."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Replace `path` with what `write` puts in a temporary file of its own beside it (a kill
    never leaves half a file, and two writers never share one)."""
    try:
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:   # a full or read-only disk says which file it was writing
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        os.fchmod(handle, 0o644)   # mkstemp makes 0600: results are shared files
        os.close(handle)
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
