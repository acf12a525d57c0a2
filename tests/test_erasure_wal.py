"""An erasure leaves no copy of the erased rows in the SQLite WAL or the database file, even when a reader beside the
server (the portal, checkpoint-audit, a backup) held a snapshot when the erasure tried to truncate the WAL: the
truncation stays pending (in ``meta``) and is retried after the next write, at close and at the next open."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from island_helpers import KOFI, MEGAWATI

from biometrics.crypto import KeyRing
from biometrics.service import CheckpointService, StoreLocation
from biometrics.storage import Storage
from biometrics.types import Actor, SubjectInfo

OFFICER = Actor(role="officer", identity="CN=Siti,OU=officer")
ERASED = "P1234567"
WAL_PENDING = "erasures_in_wal"  # the meta entry that keeps a pending truncation across a restart


def open_station(tmp_path: Path) -> CheckpointService:
    """A station on SQLite with two subjects enrolled (``ERASED`` and a Kofi kept), its WAL checkpointed into the
    database file (so the rows to erase are in the file, as on a station that has run a while)."""
    service = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"))
    try:
        assert service.enrol(ERASED, SubjectInfo(name="Megawati", watchlist=True), [MEGAWATI], actor=OFFICER).enrolled
        assert service.enrol("K5000005", SubjectInfo(name="Kofi"), [KOFI], actor=OFFICER).enrolled
        with contextlib.closing(sqlite3.connect(tmp_path / "data" / "checkpoint.db")) as db:
            assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    except BaseException:
        service.close()
        raise
    return service


@pytest.fixture
def station(tmp_path: Path) -> Iterator[CheckpointService]:
    """:func:`open_station`, closed afterwards."""
    service = open_station(tmp_path)
    try:
        yield service
    finally:
        service.close()


def sealed_of(db_path: Path, subject_id: str, ring: KeyRing) -> list[bytes]:
    """32 bytes from the middle of each sealed blob of the subject (its row and its templates)."""
    ref = ring.pseudonym(subject_id)
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        rows = db.execute("SELECT sealed FROM subjects WHERE ref = ? UNION ALL SELECT sealed FROM templates "
                          "WHERE ref = ?", (ref, ref)).fetchall()
    assert len(rows) == 2, "the subject's row and its face template"
    return [bytes(r[0])[20:52] for r in rows]


def left_on_disk(db_path: Path, blobs: list[bytes]) -> dict[str, int]:
    """How many of ``blobs`` each of the database file and its WAL holds, as bytes on disk."""
    found = {}
    for suffix in ("", "-wal"):
        path = db_path.with_name(db_path.name + suffix)
        raw = path.read_bytes() if path.exists() else b""
        found[path.name] = sum(b in raw for b in blobs)
    return found


def hold_snapshot(db_path: Path) -> sqlite3.Connection:
    """A read-only connection beside the server (as the portal opens one) holding a read snapshot."""
    reader = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM audit").fetchone()
    return reader


def test_an_erasure_a_reader_kept_in_the_wal_leaves_it_after_the_next_write(
        station: CheckpointService, tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "checkpoint.db"
    blobs = sealed_of(db_path, ERASED, station.storage.keyring)
    assert sum(left_on_disk(db_path, blobs).values()) == 2, "the rows to erase are in the database file"
    station.storage.WAL_RETRY_S = 0.0  # retry after the very next write
    reader = hold_snapshot(db_path)
    try:
        station.delete_subject(ERASED, "erasure request", actor=OFFICER)
        assert sum(left_on_disk(db_path, blobs).values()) > 0, "the reader's snapshot kept the rows on disk"
        started = time.monotonic()
        station.list_alerts(actor=OFFICER)  # a write (its audit record) while the reader still holds
        assert time.monotonic() - started < 2.0, "a retry does not wait for the reader"
        reader.execute("COMMIT")  # the reader's snapshot ends; its connection stays open, as the portal's does
        station.list_alerts(actor=OFFICER)
        assert left_on_disk(db_path, blobs) == {"checkpoint.db": 0, "checkpoint.db-wal": 0}
        assert station.sync_status()["erasures_in_wal"] == 0
        assert reader.execute("SELECT value FROM meta WHERE name = ?", (WAL_PENDING,)).fetchone() is None
    finally:
        reader.close()


def test_an_erasure_a_reader_kept_in_the_wal_leaves_it_at_close(tmp_path: Path) -> None:
    station = open_station(tmp_path)
    db_path = tmp_path / "data" / "checkpoint.db"
    blobs = sealed_of(db_path, ERASED, station.storage.keyring)
    reader = hold_snapshot(db_path)
    closed = False
    try:
        station.delete_subject(ERASED, "erasure request", actor=OFFICER)
        reader.execute("COMMIT")  # idle, still connected: the server's close is not the file's last connection
        assert sum(left_on_disk(db_path, blobs).values()) > 0
        station.close()
        closed = True
        assert left_on_disk(db_path, blobs) == {"checkpoint.db": 0, "checkpoint.db-wal": 0}
    finally:
        reader.close()
        if not closed:
            station.close()


def test_an_erasure_still_in_the_wal_at_close_is_truncated_at_the_next_open(tmp_path: Path) -> None:
    station = open_station(tmp_path)
    db_path = tmp_path / "data" / "checkpoint.db"
    ring = station.storage.keyring
    blobs = sealed_of(db_path, ERASED, ring)
    reader = hold_snapshot(db_path)
    closed = False
    try:
        station.delete_subject(ERASED, "erasure request", actor=OFFICER)
        station.storage.CLOSE_WAIT_MS = 0
        station.close()  # the reader still holds its snapshot: the close cannot truncate
        closed = True
        assert sum(left_on_disk(db_path, blobs).values()) > 0
        reader.execute("COMMIT")
        again = Storage(db_path, ring)
        try:
            assert left_on_disk(db_path, blobs) == {"checkpoint.db": 0, "checkpoint.db-wal": 0}
            assert again.erasures_in_wal() == 0
        finally:
            again.close()
    finally:
        reader.close()
        if not closed:
            station.close()


def test_the_erasures_waiting_for_a_reader_are_counted_in_the_status_and_kept_in_meta(
        station: CheckpointService, tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "checkpoint.db"
    station.storage.WAL_RETRY_S = 0.0
    reader = hold_snapshot(db_path)
    try:
        assert station.sync_status()["erasures_in_wal"] == 0
        station.delete_subject(ERASED, "erasure request", actor=OFFICER)
        station.delete_subject("K5000005", "erasure request", actor=OFFICER)
        assert station.sync_status()["erasures_in_wal"] == 2
        reader.execute("COMMIT")
        assert reader.execute("SELECT value FROM meta WHERE name = ?", (WAL_PENDING,)).fetchone() == ("2",)
        station.list_alerts(actor=OFFICER)
        assert station.sync_status()["erasures_in_wal"] == 0
    finally:
        reader.close()
