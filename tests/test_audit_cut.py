"""A chain cut on disk is not papered over by a restart, nor hidden by a changed store id.

Each test starts from a real SQLite store that enrolled, verified and erased a little and stopped (its chain
closed by a signed checkpoint, its head exported to ``KEY_DIR/audit-heads/<store id>.json``), cuts or alters
it with sqlite3 as an intruder with write access to the data directory would, then opens it again the way the
server does (``CheckpointService.open``) and runs ``checkpoint-audit verify``.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import face

from biometrics.audit import AuditChain, HeadNotHeld, load_or_create_signing_key
from biometrics.crypto import KeyRing
from biometrics.service import CheckpointService, StoreLocation
from biometrics.storage import Storage, read_audit, read_store_id
from biometrics.types import Actor, Modality, Sample, SubjectInfo
from verify import audit_cli

OFFICER = Actor(role="officer", identity="CN=Siti,OU=officer")
KIOSK = Actor(role="kiosk", identity="CN=kiosk-arr,OU=kiosk")
CHECKPOINT_EVERY = 4


def sample(name: str) -> Sample:
    """A face sample from tests/data/faces."""
    return Sample(Modality.FACE, face(name))


@dataclass(frozen=True)
class Station:
    """A stopped station: its data directory and its key directory (with the exported head)."""

    data: Path
    keys: Path

    @property
    def db(self) -> Path:
        """The store file."""
        return self.data / "checkpoint.db"

    @property
    def head(self) -> Path:
        """The head exported for this store by default."""
        return self.keys / "audit-heads" / f"{read_store_id(self.db)}.json"

    def entries(self) -> list[dict]:
        """The chain, as stored."""
        return [json.loads(e) for e in read_audit(self.db)]

    def open(self) -> CheckpointService:
        """Open the store the way checkpoint-server does."""
        return CheckpointService.open(StoreLocation(self.data, key_dir=self.keys), checkpoint_every=CHECKPOINT_EVERY)

    def verify(self, *extra: str) -> int:
        """``checkpoint-audit verify`` on this station's store and key directory."""
        return audit_cli.main(["verify", "--data-dir", str(self.data), "--key-dir", str(self.keys), *extra])

    def sql(self, *statements: tuple[str, tuple]) -> None:
        """Change the store behind the service's back."""
        with sqlite3.connect(self.db) as db:
            for sql, params in statements:
                db.execute(sql, params)
        db.close()


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Station:
    """A station that enrolled two travellers, verified one, erased the other, and stopped."""
    root = tmp_path_factory.mktemp("cut")
    station = Station(root / "data", root / "keys")
    s = station.open()
    try:
        s.enrol("P1234567", SubjectInfo(name="Megawati Sukarnoputri"), [sample("Megawati_Sukarnoputri_0001.jpg")],
                actor=OFFICER)
        s.enrol("Q7654321", SubjectInfo(name="Kofi Annan"), [sample("Kofi_Annan_0001.jpg")], actor=OFFICER)
        s.verify("P1234567", [sample("Megawati_Sukarnoputri_0002.jpg")], actor=KIOSK)
        s.verify("Q7654321", [sample("Kofi_Annan_0004.jpg")], actor=KIOSK)
        s.delete_subject("Q7654321", "erasure request", actor=OFFICER)
        s.verify("P1234567", [sample("Megawati_Sukarnoputri_0004.jpg")], actor=KIOSK)
    finally:
        s.close()
    return station


@pytest.fixture
def station(stopped: Station, tmp_path: Path) -> Station:
    """A copy of the stopped station (data and keys) for one test to cut."""
    copy = Station(tmp_path / "data", tmp_path / "keys")
    shutil.copytree(stopped.data, copy.data)
    shutil.copytree(stopped.keys, copy.keys)
    return copy


def restart_and_verify(station: Station, subject: str | None = "P1234567") -> None:
    """What an ordinary day does: the server starts, answers one Verify (an Identify on a store that does not
    hold ``subject``), stops."""
    s = station.open()
    try:
        if subject is None:
            s.identify([sample("Megawati_Sukarnoputri_0002.jpg")], actor=KIOSK)
        else:
            s.verify(subject, [sample("Megawati_Sukarnoputri_0002.jpg")], actor=KIOSK)
    finally:
        s.close()


def delete_record_seq(station: Station) -> int:
    """The seq of the erasure's record."""
    return next(e["seq"] for e in station.entries() if e.get("kind") == "delete")


# -- the restart attack -----------------------------------------------------------------------------


def test_the_untouched_store_verifies_and_reopens(station: Station) -> None:
    entries = station.entries()
    assert entries[-1]["type"] == "checkpoint" and entries[-1]["reason"] == "shutdown"
    assert json.loads(station.head.read_text())["seq"] == entries[-1]["seq"], "the head is the chain's last record"
    assert station.verify() == 0
    restart_and_verify(station)
    restart_and_verify(station)
    assert station.verify() == 0


def test_a_chain_cut_before_an_erasure_is_refused_at_start_and_its_head_kept(
        station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    cut_from = delete_record_seq(station)
    head_before = station.head.read_bytes()
    head_seq = json.loads(head_before)["seq"]
    station.sql(("DELETE FROM audit WHERE seq >= ?", (cut_from,)))
    assert station.verify() == 1
    assert "TAMPERED" in capsys.readouterr().out
    with pytest.raises(HeadNotHeld, match=f"truncated: the chain has no record at seq {head_seq}"):
        restart_and_verify(station)
    assert station.head.read_bytes() == head_before, "the evidence is not overwritten"
    assert max(e["seq"] for e in station.entries()) == cut_from - 1, "nothing was appended"
    assert station.verify() == 1, "still found cut after the refused restart"
    assert "truncated" in capsys.readouterr().out
    with pytest.raises(HeadNotHeld):  # the data directory was released: refused the same way, not 'locked'
        station.open()


def test_a_chain_cut_to_nothing_is_refused(station: Station) -> None:
    station.sql(("DELETE FROM audit", ()))
    with pytest.raises(HeadNotHeld, match="truncated"):
        station.open()


def test_a_chain_replaced_from_before_its_head_is_refused(station: Station) -> None:
    """Cut, then made as long as before with other records (here by someone who holds the signing key)."""
    entries = station.entries()
    station.sql(("DELETE FROM audit WHERE seq >= ?", (delete_record_seq(station),)))
    storage = Storage(station.db, KeyRing.load(station.keys / "keyring.json"))
    chain = AuditChain(storage, load_or_create_signing_key(station.keys), checkpoint_every=CHECKPOINT_EVERY)
    while storage.audit_count() < len(entries):
        with chain.transaction() as tx:
            chain.record(tx, "verify", KIOSK, uuid.uuid4().hex, match=True, score=9.0, threshold=3.0)
    storage.close()
    with pytest.raises(HeadNotHeld, match=f"rewritten: the record at seq {entries[-1]['seq']}"):
        station.open()


@pytest.mark.server
def test_the_server_refuses_a_cut_store_with_a_message_and_exit_2(station: Station) -> None:
    station.sql(("DELETE FROM audit WHERE seq >= ?", (delete_record_seq(station),)))
    done = subprocess.run([sys.executable, "-m", "verify.server", "--plaintext", "--workers", "0",
                           "--listen", "127.0.0.1:0", "--data-dir", str(station.data), "--key-dir", str(station.keys)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "does not hold its signed head" in done.stderr and "truncated" in done.stderr
    assert "Traceback" not in done.stderr


# -- the store id attack ----------------------------------------------------------------------------


def test_a_changed_store_id_is_suspect_to_verify_and_refused_at_start(
        station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    kept = station.head
    station.sql(("DELETE FROM audit WHERE seq >= ?", (delete_record_seq(station),)),
                ("UPDATE meta SET value = ? WHERE name = 'store_id'", (uuid.uuid4().hex,)))
    assert station.verify() == 1, "not 'no signed head to compare'"
    out = capsys.readouterr().out
    assert "SUSPECT" in out and "no signed head for this store" in out and kept.name in out
    with pytest.raises(HeadNotHeld, match="store id may have been changed"):
        restart_and_verify(station)
    assert not station.head.exists(), "no head was exported for the new id"
    assert station.verify() == 1, "still suspect after the refused restart"
    assert station.verify("--expected-head", str(kept)) == 1, "the head named explicitly finds the cut"
    assert "truncated" in capsys.readouterr().out


def test_a_changed_store_id_without_a_cut_verifies_against_the_head_named(station: Station) -> None:
    kept = station.head
    station.sql(("UPDATE meta SET value = ? WHERE name = 'store_id'", (uuid.uuid4().hex,)))
    assert station.verify() == 1
    assert station.verify("--expected-head", str(kept)) == 0
    assert station.verify("--expected-head", str(kept), "--min-records", "1000") == 1


@pytest.mark.parametrize("store_id", ["../../elsewhere", "ABC", None])
def test_a_malformed_or_removed_store_id_is_refused(station: Station, store_id: str | None) -> None:
    if store_id is None:  # the store gets a new id when it is opened
        station.sql(("DELETE FROM meta WHERE name = 'store_id'", ()))
    else:
        station.sql(("UPDATE meta SET value = ? WHERE name = 'store_id'", (store_id,)))
    assert station.verify() == 1
    with pytest.raises(HeadNotHeld):
        station.open()


# -- what legitimately happens still opens ------------------------------------------------------------


def test_a_new_store_beside_the_heads_of_another_opens(station: Station, tmp_path: Path) -> None:
    """A data directory started afresh with a key directory that already holds another store's head."""
    fresh = Station(tmp_path / "fresh-data", station.keys)
    restart_and_verify(fresh, None)
    assert fresh.head.exists() and fresh.head != station.head
    restart_and_verify(fresh, None)
    assert fresh.verify() == 0 and station.verify() == 0


def test_a_chain_ahead_of_its_head_opens(station: Station) -> None:
    """Records chained after the last export (a crash before the next checkpoint) are not a cut."""
    head_seq = json.loads(station.head.read_text())["seq"]
    storage = Storage(station.db, KeyRing.load(station.keys / "keyring.json"))
    chain = AuditChain(storage, load_or_create_signing_key(station.keys), checkpoint_every=1000)  # no anchor
    with chain.transaction() as tx:
        chain.record(tx, "verify", KIOSK, uuid.uuid4().hex, match=True, score=9.0, threshold=3.0)
    storage.close()
    restart_and_verify(station)
    assert json.loads(station.head.read_text())["seq"] > head_seq + 1
    assert station.verify() == 0


def test_a_cut_store_opens_once_the_operator_sets_its_head_aside(station: Station) -> None:
    """The way out the refusal names: a backup restored on purpose, its newer head kept as evidence."""
    station.sql(("DELETE FROM audit WHERE seq >= ?", (delete_record_seq(station),)))
    with pytest.raises(HeadNotHeld):
        station.open()
    retired = station.keys / "audit-heads" / "retired"
    retired.mkdir()
    kept = station.head.rename(retired / station.head.name)
    restart_and_verify(station)
    assert station.verify() == 0
    assert station.verify("--expected-head", str(kept)) == 1


def test_an_older_log_with_a_torn_line_is_still_imported_and_reopens(tmp_path: Path, stopped: Station) -> None:
    """The recovery path: a JSON-lines log of an older version is imported (torn line set aside, a recovery
    record naming it), in a key directory that holds another store's head; the store then reopens."""
    keys = tmp_path / "keys"
    shutil.copytree(stopped.keys, keys)
    scratch = Storage(tmp_path / "scratch.db", KeyRing.generate())
    chain = AuditChain(scratch, load_or_create_signing_key(keys), checkpoint_every=2)
    for n in range(5):
        with chain.transaction() as tx:
            chain.record(tx, "verify", KIOSK, f"{n:032d}", match=bool(n % 2), score=float(n), threshold=3.0)
    lines = [json.dumps(json.loads(e), sort_keys=True).encode() + b"\n" for e in scratch.audit_entries()]
    scratch.close()
    station = Station(tmp_path / "data", keys)
    legacy = station.data / "audit" / "audit.jsonl"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"".join(lines[:3]) + b'{"seq": 3, "ty\n' + b"".join(lines[3:]))
    restart_and_verify(station, None)
    kinds = [e.get("kind") for e in station.entries()]
    assert "recovery" in kinds and kinds[-1] is None, "imported, recovery recorded, then used and closed"
    restart_and_verify(station, None)
    assert station.verify() == 0


def test_a_store_emptied_of_its_chain_under_a_new_id_is_not_new(station: Station) -> None:
    """Its subjects are still there: the store was not started afresh, its evidence was removed."""
    station.sql(("DELETE FROM audit", ()), ("DELETE FROM changes", ()),
                ("UPDATE meta SET value = ? WHERE name = 'store_id'", (uuid.uuid4().hex,)))
    assert station.verify() == 1
    with pytest.raises(HeadNotHeld, match="store id may have been changed"):
        station.open()
