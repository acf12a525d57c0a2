"""The same storage behaviour on both back ends: the embedded SQLite file and the PostgreSQL register."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg import fresh_database

from biometrics.crypto import KeyRing
from biometrics.errors import SubjectExists, SubjectNotFound
from biometrics.register import RegisterStorage
from biometrics.storage import (
    CHANGE_ENROLLED,
    CHANGE_ERASED,
    KeyRingMismatch,
    SchemaTooNew,
    SealedStore,
    Storage,
    StoredTemplate,
)
from biometrics.types import Alert, Modality, SubjectInfo

TEMPLATES = [StoredTemplate(Modality.FACE, 0, 61.0, b"\x01" * 258),
             StoredTemplate(Modality.FINGERPRINT, 2, 55.0, b"\x02" * 100)]


def open_store(kind: str, where: Path | str, ring: KeyRing) -> SealedStore:
    if kind == "sqlite":
        return Storage(Path(where) / "checkpoint.db", ring, station="rokot-airport")
    store = RegisterStorage(str(where), ring, station="rokot-airport")
    store.open()
    return store


@pytest.fixture(params=["sqlite", "postgresql"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path | str]]:
    """(back end, where): a temporary directory, or a database of this run's own."""
    if request.param == "sqlite":
        yield "sqlite", tmp_path
    else:
        with fresh_database() as url:
            yield "postgresql", url


@pytest.fixture
def store(place: tuple[str, Path | str]) -> Iterator[SealedStore]:
    kind, where = place
    s = open_store(kind, where, KeyRing.generate())
    yield s
    s.close()


def test_a_subject_round_trips_sealed_and_leaves_a_change(store: SealedStore) -> None:
    info = SubjectInfo(name="Siti Rahma", nationality="IDN", date_of_birth="1990-05-01", watchlist=True)
    with store.transaction() as tx:
        store.lock_register(tx)
        ref, seq, _ = store.insert_subject(tx, "P1234567", info, TEMPLATES)
    assert ref == store.keyring.pseudonym("P1234567") and seq == 1
    record = store.get_subject("P1234567")
    assert record.info == info and sorted(t.finger for t in record.templates) == [0, 2]
    loaded = store.load_subject(ref)
    assert loaded is not None and sorted(t.data for t in loaded[1]) == sorted(t.data for t in TEMPLATES)
    snapshot, head = store.snapshot()
    assert head == 1 and [(r, rec.subject_id) for r, rec, _ in snapshot] == [(ref, "P1234567")]
    with pytest.raises(SubjectExists), store.transaction() as tx:
        store.insert_subject(tx, "P1234567", info, [])
    assert store.head_seq() == 1, "the refused insert left no change behind"
    assert store.delete_subject("P1234567")
    assert not store.delete_subject("P1234567")
    with pytest.raises(SubjectNotFound):
        store.get_subject("P1234567")
    assert [(c.seq, c.kind, c.ref) for c in store.changes_since(0)] == [(1, CHANGE_ENROLLED, ref),
                                                                         (2, CHANGE_ERASED, ref)]
    assert store.changes_since(1)[0].seq == 2 and store.count() == (0, 0)


def test_a_rolled_back_transaction_leaves_nothing(store: SealedStore) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        store.insert_subject(tx, "P1", SubjectInfo(name="x"), TEMPLATES)
        store.append_audit(tx, 0, "decision", "h" * 64, "{}")
        raise RuntimeError("the audit record could not be written")
    assert store.count() == (0, 0) and store.head_seq() == 0 and store.audit_count() == 0


def test_the_audit_table_keeps_one_chain_per_station_with_unique_seqs(store: SealedStore) -> None:
    with store.transaction() as tx:
        assert store.audit_tail(tx) == (-1, "", -1)
        store.append_audit(tx, 0, "decision", "a" * 64, json.dumps({"seq": 0}))
        store.append_audit(tx, 1, "checkpoint", "b" * 64, json.dumps({"seq": 1}))
        assert store.audit_tail(tx) == (1, "b" * 64, 1)
    with pytest.raises(Exception), store.transaction() as tx:  # noqa: B017 (sqlite3 or psycopg IntegrityError)
        store.append_audit(tx, 1, "decision", "c" * 64, "{}")
    assert [json.loads(e)["seq"] for e in store.audit_entries()] == [0, 1]
    assert list(store.audit_entries(station="tuapejat-port")) == []


def test_alerts_are_sealed_and_listed_newest_first(store: SealedStore) -> None:
    with store.transaction() as tx:
        for n in range(3):
            store.insert_alert(tx, Alert(f"a{n}", f"2026-11-30T10:0{n}:00", "watchlist_verify", f"d{n}", "P1",
                                         7.0 + n, "CN=kiosk-01"))
    assert [a.alert_id for a in store.list_alerts(2)] == ["a2", "a1"]
    assert store.key_usage() == {store.keyring.active: 3}


def test_rotation_reseals_every_row(store: SealedStore) -> None:
    store.add_subject("P1", SubjectInfo(name="x"), TEMPLATES)
    old = store.keyring.active
    store.keyring.add_key()
    assert store.key_usage() == {old: 3}
    while store.reseal(batch=2):
        pass
    assert store.key_usage() == {store.keyring.active: 3}
    assert store.get_subject("P1").info.name == "x"


def test_a_store_refuses_another_key_ring_and_a_newer_schema(place: tuple[str, Path | str]) -> None:
    kind, where = place
    ring = KeyRing.generate()
    first = open_store(kind, where, ring)
    first.add_subject("P1", SubjectInfo(name="x"), [])
    first.close()
    with pytest.raises(KeyRingMismatch):
        open_store(kind, where, KeyRing.generate())
    again = open_store(kind, where, ring)  # migrations are idempotent: opening twice changes nothing
    assert again.count() == (1, 0)
    if kind == "sqlite":
        again._db.execute("PRAGMA user_version = 99")  # type: ignore[attr-defined]
    else:
        with again.transaction() as tx:
            tx.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    again.close()
    with pytest.raises(SchemaTooNew, match="99"):
        open_store(kind, where, ring)
