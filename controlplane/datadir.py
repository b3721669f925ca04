"""One control plane per data directory.

An embedded plane keeps its SQLite file and its nats-server's files in the data directory. A second plane
started on the same directory would share the database but start a NATS of its own: channel messages, wake-ups
and presence would split between the two without a word. So a plane that uses its data directory holds an
exclusive lock on `plane.lock` there for as long as it runs, and a second one refuses to start, naming the first.
The kernel releases the lock when the process ends, however it ends (SIGKILL included), so no stale lock stays.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = "plane.lock"


class DataDirInUse(OSError):
    """Another running control plane holds the data directory."""


class DataDirLock:
    """An exclusive hold on a data directory; `release()` (or process exit) lets it go."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the directory, or raise DataDirInUse naming the process that has it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DataDirInUse(
                f"data dir {self.data_dir.resolve()} is in use by another control plane{holder}: "
                "give each plane its own data dir, or run replicas on one PostgreSQL and NATS "
                "(--database-url, --nats-url)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # the holder's pid goes with the hold
        os.close(fd)  # closing the descriptor drops the lock


def _read_holder(fd: int) -> str:
    """' (pid N)' from the lock file's contents, when it names one."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip())
        return f" (pid {pid})"
    return ""
