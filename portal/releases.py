"""The durable log of the monthly nationality releases: each month released once, written once, never redrawn.

A release of differentially private counts may be published only once: a portal that drew new noise after a
restart would let a visitor average the draws (and would spend the month's epsilon again at every start).
:class:`ReleaseLog` keeps every release in the portal's state directory, one JSON file per month
(``nationality/YYYY-MM.json``): the month, every (station, nationality) with its released value or
``suppressed``, and the method with its parameters (method, epsilon, delta, threshold, base). A file is
written through a temporary file, ``fsync`` and ``rename`` (and an ``fsync`` of the directory), so it is
either whole or absent; an existing file is never written again. Several portal processes over one state
directory take an exclusive file lock (``nationality.lock``) while they release, and a process that finds
the month already on disk under the lock takes that release instead of drawing its own.

The files say which nationalities arrived in a month (the suppressed keys included), as the store's monthly
table does: the directory is created with mode 0700 and the files with 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from biometrics.datadir import atomic_write

SUBDIR = "nationality"
LOCK_NAME = "nationality.lock"
STORE_NAME = "store.json"
FORMAT = 1


class StateDirError(Exception):
    """The portal's state directory cannot be created, written or read (the portal must not start)."""


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/checkpoint-portal``, or ``~/.local/state/checkpoint-portal``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "checkpoint-portal"


@dataclass(frozen=True)
class ReleaseParameters:
    """How a month was released: the method and the parameters that matter for it."""

    method: str
    epsilon: float | None = None
    delta: float | None = None
    threshold: int | None = None
    base: int | None = None

    def same_policy(self, other: ReleaseParameters) -> bool:
        """True when both come from the same policy (the threshold follows from epsilon and delta)."""
        return (self.method, self.epsilon, self.delta, self.base) == (other.method, other.epsilon, other.delta,
                                                                     other.base)


@dataclass(frozen=True)
class MonthRelease:
    """One month's release as published: released values by (station, nationality), and the suppressed keys."""

    month: date
    parameters: ReleaseParameters
    values: dict[tuple[str, str], int]
    suppressed: frozenset[tuple[str, str]]
    released_at: str

    def to_json(self) -> dict[str, Any]:
        """The record written to disk."""
        p = self.parameters
        entries = [{"station": s, "nationality": n, "value": v} for (s, n), v in sorted(self.values.items())]
        entries += [{"station": s, "nationality": n, "value": "suppressed"} for s, n in sorted(self.suppressed)]
        return {"format": FORMAT, "month": self.month.strftime("%Y-%m"), "released_at": self.released_at,
                "method": p.method, "epsilon": p.epsilon, "delta": p.delta, "threshold": p.threshold,
                "base": p.base, "entries": entries}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> MonthRelease:
        """A record read from disk (:class:`ValueError` or :class:`KeyError` when it is not one)."""
        year, month = (int(x) for x in doc["month"].split("-"))
        values: dict[tuple[str, str], int] = {}
        suppressed: set[tuple[str, str]] = set()
        for e in doc["entries"]:
            key = (str(e["station"]), str(e["nationality"]))
            if e["value"] == "suppressed":
                suppressed.add(key)
            else:
                values[key] = int(e["value"])
        params = ReleaseParameters(str(doc["method"]), doc.get("epsilon"), doc.get("delta"), doc.get("threshold"),
                                   doc.get("base"))
        return cls(date(year, month, 1), params, values, frozenset(suppressed), str(doc.get("released_at", "")))


class ReleaseLog:
    """The releases in ``state_dir`` (read at construction); :class:`StateDirError` if it cannot be written."""

    def __init__(self, state_dir: Path | str, store: str | None = None):
        self.state_dir = Path(state_dir).expanduser()
        self.dir = self.state_dir / SUBDIR
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._write_probe()
        except OSError as exc:
            raise StateDirError(
                f"cannot write the state directory {self.state_dir} ({exc.strerror or exc}): the portal keeps its "
                "released nationality counts there so that a restart does not draw new noise; give a writable "
                "--state-dir") from exc
        if store is not None:
            self._claim(store)

    def _claim(self, store: str) -> None:
        """Tie the state directory to one store: another store's releases are not this store's figures."""
        manifest = self.state_dir / STORE_NAME
        with self._locked():
            if not manifest.exists():
                atomic_write(manifest, (json.dumps({"store": store}) + "\n").encode())
                return
            try:
                known = json.loads(manifest.read_text(encoding="utf-8"))["store"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise StateDirError(f"{manifest} cannot be read ({exc})") from exc
        if known != store:
            raise StateDirError(f"the state directory {self.state_dir} holds the releases of the store {known}, "
                                f"not of {store}: give each store its own --state-dir")

    def _write_probe(self) -> None:
        with self._locked():
            fd, name = tempfile.mkstemp(dir=self.dir, prefix=".probe-")
            try:
                os.write(fd, b"probe")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(name)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return state_lock(self.state_dir)

    def _path(self, month: date) -> Path:
        return self.dir / f"{month:%Y-%m}.json"

    def _read(self, path: Path) -> MonthRelease:
        try:
            return MonthRelease.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateDirError(f"the release file {path} cannot be read ({exc}): it is never redrawn; restore it "
                                "from a backup") from exc

    def load(self) -> dict[date, MonthRelease]:
        """Every release on disk, by month."""
        out = {}
        for path in sorted(self.dir.glob("????-??.json")):
            release = self._read(path)
            out[release.month] = release
        return out

    @contextlib.contextmanager
    def releasing(self, month: date) -> Iterator[MonthRelease | None]:
        """Under the lock: the month's release if one is on disk, else None (then :meth:`write` it)."""
        with self._locked():
            path = self._path(month)
            yield self._read(path) if path.exists() else None

    def write(self, release: MonthRelease) -> None:
        """Write a new month's release atomically (temp file, fsync, rename, fsync of the directory).

        Call inside :meth:`releasing`; a month already on disk is never written again (:class:`FileExistsError`).
        """
        path = self._path(release.month)
        if path.exists():
            raise FileExistsError(f"{path}: a month's release is written once")
        atomic_write(path, json.dumps(release.to_json(), ensure_ascii=False, indent=1).encode())


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """An exclusive lock on the releases of ``state_dir`` (between processes and threads alike)."""
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def now_text() -> str:
    """The release time as written in the log (UTC, seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")
