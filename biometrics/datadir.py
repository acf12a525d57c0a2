"""One server per data directory: an exclusive lock held for the server's lifetime.

Two servers on one data directory would hold two galleries, run duplicate searches that miss each other's
enrolments, and fork the audit chain. :func:`lock_data_dir` takes an exclusive ``flock`` on
``DATA_DIR/LOCK`` (released by the kernel when the process dies, even by SIGKILL, so a crash never leaves a
stale lock) and writes the holder's pid into it for the message a second server prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_NAME = "LOCK"


class DataDirLocked(Exception):
    """Another process holds the data directory."""


class DataDirLock:
    """An exclusive lock on a data directory; :meth:`release` (or process exit) frees it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            self._fd = None
            raise DataDirLocked(
                f"the data directory {data_dir} is in use by another checkpoint-server (pid {holder}); "
                "one server per data directory (two would fork the gallery and the audit chain)") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Free the lock (idempotent)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def lock_data_dir(data_dir: Path) -> DataDirLock:
    """Take the data directory's exclusive lock, or raise :class:`DataDirLocked`."""
    return DataDirLock(data_dir)
