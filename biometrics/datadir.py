"""One server per data directory: an exclusive lock held for the server's lifetime.

Two servers on one data directory would hold two galleries, run duplicate searches that miss each other's
enrolments, and fork the audit chain. :func:`lock_data_dir` takes an exclusive ``flock`` on
``DATA_DIR/LOCK`` (released by the kernel when the process dies, even by SIGKILL, so a crash never leaves a
stale lock) and writes the holder's pid into it for the message a second server prints. An island station's
replica directory (``--replica DIR``: its journal, outbox, alerts and copy of the register in ``DIR/replica.db``)
is locked the same way (:func:`lock_station_dirs`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from pathlib import Path

LOCK_NAME = "LOCK"
log = logging.getLogger(__name__)


class DataDirLocked(Exception):
    """Another process holds the data directory."""


class DataDirUnusable(Exception):
    """This process cannot read and write a data directory, or one of the files in it."""


#: The files of a data (or replica) directory a server opens for writing.
STORE_FILES = (*(f"{name}{suffix}" for name in ("checkpoint.db", "journal.db", "replica.db")
                 for suffix in ("", "-wal", "-shm")), LOCK_NAME)


def describe(path: Path) -> str:
    """``path`` with its owner and mode, for a message about its permissions."""
    try:
        st = path.stat()
    except OSError as exc:
        return f"{path} ({exc.strerror or exc})"
    return f"{path} (owner uid {st.st_uid}, mode {st.st_mode & 0o7777:o})"


def check_usable(folder: Path, what: str = "data directory") -> None:
    """Raise :class:`DataDirUnusable` naming ``folder`` or each of its :data:`STORE_FILES` that this process cannot
    read and write, with owner and mode (tried, not guessed from the mode bits: a root server without
    CAP_DAC_OVERRIDE is held to them too). A folder that does not exist yet is created later, and passes.

    Without it a server started on a directory another user owns, or on a read-only database, stopped with a
    sqlite3 traceback (or a "permission denied" naming a key file that does not exist), and a read-only
    ``-shm`` file left by that failed start kept failing the next starts after the database was mended."""
    try:
        if not folder.exists():
            return
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DataDirUnusable(
            f"this server (uid {os.getuid()}) cannot write the {what} {describe(folder)}: {exc.strerror or exc}; "
            "run it as the directory's owner, or give it a directory it owns") from None
    unusable = []
    for name in STORE_FILES:
        path = folder / name
        try:
            os.close(os.open(path, os.O_RDWR))
        except FileNotFoundError:
            continue
        except OSError as exc:
            unusable.append(f"{describe(path)}: {exc.strerror or exc}")
    if unusable:
        raise DataDirUnusable(
            f"this server (uid {os.getuid()}) cannot read and write these files of the {what} {folder}: "
            f"{'; '.join(unusable)}. Give them back to the server's user with mode 600 (a -wal or -shm file left "
            "by a failed start may be deleted when no server runs)")


class DataDirLock:
    """An exclusive lock on a data directory (or another directory one server owns, named ``what`` in the
    message); :meth:`release` (or process exit) frees it."""

    def __init__(self, data_dir: Path, what: str = "data directory") -> None:
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
                f"the {what} {data_dir} is in use by another checkpoint-server (pid {holder}); "
                f"one server per {what} (two would fork the gallery and the audit chain)") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Free the lock (idempotent)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def lock_data_dir(data_dir: Path, what: str = "data directory") -> DataDirLock:
    """Make the data directory private (:func:`make_private`), then take its exclusive lock, or raise
    :class:`DataDirLocked` (naming the directory as ``what``)."""
    make_private(data_dir)
    return DataDirLock(data_dir, what)


def lock_station_dirs(data_dir: Path, replica_dir: Path | None = None) -> list[DataDirLock]:
    """Lock the data directory and, if given and another directory, the replica directory (each made private);
    the locks, to release at close. Raises :class:`DataDirLocked` holding none of them."""
    locks = [lock_data_dir(data_dir)]
    if replica_dir is not None:
        if replica_dir.expanduser().resolve() == data_dir.expanduser().resolve():
            return locks  # one directory, locked once
        try:
            locks.append(lock_data_dir(replica_dir, "replica directory"))
        except BaseException:
            locks[0].release()
            raise
    return locks


def make_private(folder: Path) -> None:
    """Create ``folder`` readable by its owner only (0700), or tighten an existing one that group or others could
    enter: it holds sealed personal data, and beside it, in clear, pseudonyms, the change log, the audit chain
    and the decision events; other local users have no business reading any of it."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = folder.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s was open to other users (mode %o): now 0700", folder, mode)
        os.chmod(folder, 0o700)


def fsync_dir(folder: Path) -> None:
    """``fsync`` the directory ``folder``, so that a file created or renamed in it is still there after a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``path`` whole or not at all, mode 0600, durably: a temporary file beside it, ``fsync``, rename (or,
    when ``exclusive``, a link that refuses an existing ``path`` with :class:`FileExistsError`), ``fsync`` of the
    directory. Without the last step a crash can bring back the file's previous version (a key ring before its
    rotation, an audit head before its checkpoint) after the rows written since depend on the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp's mode is 0600
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
