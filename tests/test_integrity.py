"""A change and its audit record commit together; memory follows storage; keys never beside data; one server
per data directory; a store opens only with its own key ring and a schema it knows."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import face

from biometrics.crypto import KeyRing
from biometrics.datadir import DataDirLocked
from biometrics.errors import InvalidSample
from biometrics.keydir import KeyLocationError
from biometrics.service import CheckpointService, StoreLocation
from biometrics.storage import SCHEMA_VERSION, KeyRingMismatch, SchemaTooNew, Storage, read_audit
from biometrics.types import Modality, Sample, SubjectInfo
from verify import keys as keys_cli

MEGAWATI = Sample(Modality.FACE, face("Megawati_Sukarnoputri_0001.jpg"))
MEGAWATI_PROBE = Sample(Modality.FACE, face("Megawati_Sukarnoputri_0002.jpg"))
KOFI = Sample(Modality.FACE, face("Kofi_Annan_0001.jpg"))
KOFI_PROBE = Sample(Modality.FACE, face("Kofi_Annan_0004.jpg"))


def open_service(tmp_path: Path, **kwargs: object) -> CheckpointService:
    return CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"), **kwargs)


def audit_kinds(service: CheckpointService) -> list[str]:
    return [json.loads(e).get("kind", "checkpoint") for e in service.storage.audit_entries()]


def test_an_audit_failure_rolls_the_enrolment_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = open_service(tmp_path)
    try:
        def disk_full(*args: object) -> None:
            raise OSError("no space left on device")

        monkeypatch.setattr(service.storage, "append_audit", disk_full)
        with pytest.raises(OSError):
            service.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI])
        monkeypatch.undo()
        assert service.storage.count() == (0, 0), "an enrolment without its audit record was stored"
        assert service.gallery_size() == (0, 0)
        assert service.storage.head_seq() == 0, "a change-log entry survived the rollback"
        assert service.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
        assert audit_kinds(service) == ["enrol"]
    finally:
        service.close()


def test_a_failed_gallery_update_never_leaves_a_subject_that_verify_cannot_find(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = open_service(tmp_path)
    try:
        calls = {"n": 0}
        real_add = service.face_index.add

        def fails_once(*args: object, **kwargs: object) -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise MemoryError("the gallery could not grow")
            real_add(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(service.face_index, "add", fails_once)
        result = service.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI])
        assert result.enrolled, "the enrolment committed: it is acknowledged"
        assert service.verify("A1000001", [MEGAWATI_PROBE]).match, "memory caught up from the change log"
        assert audit_kinds(service)[0] == "enrol"
        assert service.applied_seq == service.storage.head_seq()
    finally:
        service.close()


def test_an_erasure_that_fails_in_memory_is_gone_before_the_next_search(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = open_service(tmp_path)
    try:
        assert service.enrol("B2000002", SubjectInfo(name="Kofi"), [KOFI]).enrolled
        real_remove = service.face_index.remove
        calls = {"n": 0}

        def fails_once(subject_id: str) -> int:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("interrupted")
            return real_remove(subject_id)

        monkeypatch.setattr(service.face_index, "remove", fails_once)
        service.delete_subject("B2000002", "erasure request")
        assert not service.identify([KOFI_PROBE]).candidates, "an erased subject was still found"
        assert service.gallery_size() == (0, 0)
    finally:
        service.close()


def test_an_override_needs_a_reason_and_a_read_is_audited(tmp_path: Path) -> None:
    service = open_service(tmp_path)
    try:
        assert service.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
        with pytest.raises(InvalidSample, match="override_reason"):
            service.enrol("A1000002", SubjectInfo(name="Megawati again"), [MEGAWATI_PROBE], allow_duplicate=True)
        held = service.enrol("A1000002", SubjectInfo(name="Megawati again"), [MEGAWATI_PROBE])
        assert not held.enrolled and [c.subject_id for c in held.possible_duplicates] == ["A1000001"]
        service.get_subject("A1000001")
        entries = [json.loads(e) for e in service.storage.audit_entries()]
        reads = [e for e in entries if e.get("kind") == "read_subject"]
        assert [r["fields"]["subject_ref"] for r in reads] == [service.storage.keyring.pseudonym("A1000001")]
    finally:
        service.close()


def test_a_second_service_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    first = open_service(tmp_path)
    try:
        with pytest.raises(DataDirLocked, match="in use by another checkpoint-server"):
            open_service(tmp_path)
    finally:
        first.close()
    open_service(tmp_path).close()  # released at close


@pytest.mark.server
def test_a_second_server_on_the_same_data_directory_exits_with_a_message(tmp_path: Path) -> None:
    from helpers import ServerProcess

    first = ServerProcess(tmp_path / "data", key_dir=tmp_path / "keys").start()
    try:
        second = subprocess.run(
            [sys.executable, "-m", "verify.server", "--plaintext", "--listen", "127.0.0.1:0", "--workers", "0",
             "--data-dir", str(tmp_path / "data"), "--key-dir", str(tmp_path / "keys")],
            capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"in use by another checkpoint-server (pid {first.proc.pid})" in second.stderr  # type: ignore[union-attr]
    finally:
        first.stop()


def test_keys_inside_the_data_directory_are_refused_unless_declared_a_development_setup(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with pytest.raises(KeyLocationError, match="inside the data directory"):
        CheckpointService.open(StoreLocation(data, key_dir=data / "keys"))
    with pytest.raises(KeyLocationError):
        CheckpointService.open(StoreLocation(data, key_dir=tmp_path / "keys", key_file=data / "ring.json"))
    dev = CheckpointService.open(StoreLocation(data, key_dir=data / "keys", dev_keys_in_data_dir=True))
    dev.close()
    # A data directory laid out by an older version (keys inside) is refused with the way out.
    with pytest.raises(KeyLocationError, match="mv "):
        CheckpointService.open(StoreLocation(data, key_dir=tmp_path / "elsewhere"))


def test_a_key_file_or_an_audit_anchor_inside_the_data_or_replica_directory_is_refused(tmp_path: Path) -> None:
    data, replica, keys = tmp_path / "data", tmp_path / "replica", tmp_path / "keys"
    with pytest.raises(KeyLocationError, match=r"audit anchor .*head\.json is inside the data directory"):
        CheckpointService.open(StoreLocation(data, key_dir=keys, anchor=data / "head.json"))
    register = "postgresql://postgres@127.0.0.1:5432/not-reached"  # refused before the register is reached
    on_register = {"store_url": register, "station": "sikakap-port", "replica_dir": replica}
    with pytest.raises(KeyLocationError, match=r"keys at .*ring\.json are inside the data directory .*replica"):
        CheckpointService.open(StoreLocation(data, key_dir=keys, key_file=replica / "ring.json", **on_register))
    with pytest.raises(KeyLocationError, match=r"audit anchor .*head\.json is inside the data directory .*replica"):
        CheckpointService.open(StoreLocation(data, key_dir=keys, anchor=replica / "head.json", **on_register))
    assert not (keys / "keyring.json").exists() and not (replica / "ring.json").exists(), "refused before any key"
    CheckpointService.open(StoreLocation(data, key_dir=keys, anchor=tmp_path / "anchor" / "head.json")).close()
    dev = StoreLocation(data, key_dir=keys, anchor=data / "head.json", dev_keys_in_data_dir=True)
    CheckpointService.open(dev).close()


def test_the_default_key_directory_is_outside_the_data_directory(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHECKPOINT_KEY_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    service = CheckpointService.open(tmp_path / "data")
    try:
        service.enrol("A1000001", SubjectInfo(name="Megawati Sukarnoputri"), [MEGAWATI])
    finally:
        service.close()
    keys = tmp_path / "config" / "checkpoint" / "keys"
    assert (keys / "keyring.json").exists() and (keys / "audit-signing.key").exists()
    assert not [p for p in (tmp_path / "data").rglob("*") if "key" in p.name.lower()]
    # What a copy of the data directory gives away: no name, and no row opens without the key directory.
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("checkpoint.db*"))
    assert b"Megawati" not in raw and b"A1000001" not in raw
    with pytest.raises(KeyRingMismatch):
        Storage(tmp_path / "data" / "checkpoint.db", KeyRing.generate())


def test_a_store_refuses_another_key_ring_and_a_newer_schema(tmp_path: Path) -> None:
    service = open_service(tmp_path)
    service.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI])
    service.close()
    db = tmp_path / "data" / "checkpoint.db"
    with pytest.raises(KeyRingMismatch, match="sealed under key ring"):
        Storage(db, KeyRing.generate())
    with sqlite3.connect(db) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaTooNew, match="schema version 99"):
        Storage(db, KeyRing.load(tmp_path / "keys" / "keyring.json"))


def test_migrations_are_idempotent_and_bring_an_old_store_up_to_date(tmp_path: Path) -> None:
    ring = KeyRing.generate()
    db = tmp_path / "checkpoint.db"
    with sqlite3.connect(db) as raw:  # the schema of the first version, before user_version was kept
        raw.executescript("CREATE TABLE subjects (ref TEXT PRIMARY KEY, sealed BLOB NOT NULL, created_at TEXT NOT "
                          "NULL); CREATE TABLE templates (template_id TEXT PRIMARY KEY, ref TEXT NOT NULL, modality "
                          "INTEGER NOT NULL, finger INTEGER NOT NULL, quality REAL NOT NULL, sealed BLOB NOT NULL, "
                          "created_at TEXT NOT NULL);")
    for _ in range(2):
        storage = Storage(db, ring)
        assert storage.schema_version() == SCHEMA_VERSION == 7
        storage.add_subject("A1", SubjectInfo(name="x"), []) if storage.count() == (0, 0) else None
        storage.close()
    storage = Storage(db, ring)
    assert storage.count() == (1, 0) and storage.head_seq() == 1
    storage.close()


def test_two_rotations_at_once_keep_both_keys(tmp_path: Path) -> None:
    service = open_service(tmp_path)
    service.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI])
    service.close()
    key_file = tmp_path / "keys" / "keyring.json"
    # Two operators' tools, each having read the ring before either wrote it.
    one = Storage(tmp_path / "data" / "checkpoint.db", KeyRing.load(key_file))
    two = Storage(tmp_path / "data" / "checkpoint.db", KeyRing.load(key_file))
    try:
        first, _ = keys_cli.rotate(key_file, one.keyring, one)
        second, _ = keys_cli.rotate(key_file, two.keyring, two)
    finally:
        one.close()
        two.close()
    ring = KeyRing.load(key_file)
    assert {first, second} <= set(ring.keys), "a concurrent rotation lost a key"
    assert ring.active == second
    reopened = open_service(tmp_path)
    try:
        assert reopened.verify("A1000001", [MEGAWATI_PROBE]).match
    finally:
        reopened.close()


def test_the_chain_verifies_after_every_kind_of_decision(tmp_path: Path) -> None:
    from biometrics.audit import load_public_key, verify_store

    service = open_service(tmp_path, checkpoint_every=3)
    try:
        service.enrol("A1000001", SubjectInfo(name="Megawati", watchlist=True), [MEGAWATI])
        service.verify("A1000001", [MEGAWATI_PROBE])
        service.identify([MEGAWATI_PROBE])
        assert [a.kind for a in service.list_alerts()] == ["watchlist_identify", "watchlist_verify"]
        service.delete_subject("A1000001", "erasure request")
    finally:
        service.close()
    report = verify_store(read_audit(tmp_path / "data" / "checkpoint.db"),
                          load_public_key(tmp_path / "keys" / "audit-signing.pub"))
    assert report.ok and report.decisions == 7 and report.signed_through == report.records - 1, report
