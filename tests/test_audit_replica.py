"""``checkpoint-audit --replica DIR`` reads an island's store: the island's audit chain and the texts of its
officers' offline overrides live in ``DIR/replica.db`` (not in a ``checkpoint.db``), and an auditor verifies the
chain against the island's signed head, reads the text, and finds it altered, deleted, or erased with its subject
(real SQLite, real PostgreSQL, real keys, the island's link cut by a real TCP proxy)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from island_helpers import KOFI, KOFI_2, MEGAWATI, MEGAWATI_2, go_offline, office_and_island
from pg import fresh_database
from waiting import wait_until

from benchmarks.linkcut import LinkProxy
from biometrics.crypto import KeyRing
from biometrics.service import CheckpointService
from biometrics.storage import audit_text_aad
from biometrics.types import Actor, SubjectInfo
from verify import audit_cli

pytestmark = pytest.mark.slow

OFFICER = Actor(role="officer", identity="CN=Siti,OU=officer")
#: What the island's officer writes when keeping an enrolment offline despite a possible duplicate.
REASON = "cousin of the fisherman enrolled at the office, both seen at the Siberut desk"
ERASURE = "erasure request of the data subject, form 12"

Stations = tuple[CheckpointService, CheckpointService, LinkProxy]


@pytest.fixture
def register_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@contextmanager
def island_with_override(tmp_path: Path, url: str) -> Iterator[Stations]:
    """(office "central", island "siberut" offline, the island's link) on the register at ``url``: K5000005
    enrolled at the office and known at the island, then, offline, K4000004 (the same man) kept by the island's
    officer with :data:`REASON`. Both stations are closed when the block ends (a shutdown checkpoint exports the
    island's head)."""
    with office_and_island(tmp_path, url) as (central, island, proxy):
        assert central.enrol("K5000005", SubjectInfo(name="Kofi at the office"), [KOFI], actor=OFFICER).enrolled
        wait_until(lambda: island.holds("K5000005"), timeout=15, message="the island knows K5000005")
        go_offline(island, proxy)
        kept = island.enrol("K4000004", SubjectInfo(name="Kofi at Siberut"), [KOFI_2], actor=OFFICER,
                            allow_duplicate=True, override_reason=REASON)
        assert kept.provisional and [c.subject_id for c in kept.possible_duplicates] == ["K5000005"]
        yield central, island, proxy


def replica_dir(tmp_path: Path) -> Path:
    return tmp_path / "siberut" / "replica"


def audit(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> tuple[int, str]:
    """``checkpoint-audit COMMAND --replica <the island's replica directory> ...`` with the tests' keys: (exit code,
    standard output and error)."""
    code = audit_cli.main([args[0], "--replica", str(replica_dir(tmp_path)), "--key-dir", str(tmp_path / "keys"),
                           *args[1:]])
    out = capsys.readouterr()
    return code, out.out + out.err


def island_texts(tmp_path: Path) -> list[tuple[int, str, bytes]]:
    with sqlite3.connect(replica_dir(tmp_path) / "replica.db") as db:
        return db.execute("SELECT seq, field, sealed FROM audit_texts WHERE station = 'siberut'").fetchall()


def test_verify_show_and_export_read_the_islands_chain_and_its_officers_text(
        tmp_path: Path, register_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with island_with_override(tmp_path, register_url):
        assert (replica_dir(tmp_path) / "LOCK").exists()
        code, out = audit(capsys, tmp_path, "verify")  # beside the running island, which holds DIR/LOCK
        assert code == 0 and out.startswith("OK siberut@") and "1 match their commitments" in out, out
        code, out = audit(capsys, tmp_path, "show", "--kind", "enrol")
        assert code == 0 and f"override_reason={json.dumps(REASON)}" in out, out

    code, out = audit(capsys, tmp_path, "verify")
    assert code == 0 and "holds the signed head at seq" in out and "1 match their commitments" in out, out
    assert audit(capsys, tmp_path, "verify", "--station", "siberut")[0] == 0
    export = tmp_path / "island.jsonl"
    assert audit(capsys, tmp_path, "export", "--out", str(export))[0] == 0
    [exported] = [json.loads(line) for line in export.read_text().splitlines() if "override_reason_sha256" in line]
    assert exported["station"] == "siberut" and exported["officer_texts"]["override_reason"]["text"] == REASON
    assert audit_cli.main(["verify", "--log", str(export), "--key-dir", str(tmp_path / "keys")]) == 0
    assert "1 match their commitments" in capsys.readouterr().out

    code, out = audit(capsys, tmp_path, "verify", "--station", "lombok")
    assert code == 2 and "holds no chain of station 'lombok', only that of 'siberut'" in out, out
    code = audit_cli.main(["show", "--data-dir", str(replica_dir(tmp_path)), "--key-dir", str(tmp_path / "keys")])
    assert code == 2 and f"--replica {replica_dir(tmp_path)}" in capsys.readouterr().err, "pointed to --replica"


def test_a_text_altered_or_deleted_in_replica_db_is_tampered(
        tmp_path: Path, register_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with island_with_override(tmp_path, register_url):
        pass
    db_path = replica_dir(tmp_path) / "replica.db"
    [(seq, field, sealed)] = island_texts(tmp_path)
    ring = KeyRing.load(tmp_path / "keys" / "keyring.json")
    salt = json.loads(ring.open(sealed, audit_text_aad("siberut", seq, field)))["salt"]
    assert audit(capsys, tmp_path, "verify")[0] == 0

    # altered: another text sealed properly for the record (whoever holds the key ring), same salt
    other = ring.seal(json.dumps({"salt": salt, "text": "nothing to see"}).encode(),
                      audit_text_aad("siberut", seq, field))
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE audit_texts SET sealed = ? WHERE seq = ?", (other, seq))
    code, out = audit(capsys, tmp_path, "verify")
    assert code == 1 and out.startswith("TAMPERED siberut@") and "does not match the commitment" in out, out

    # deleted behind the island's back: no erasure of a subject it concerns is recorded
    with sqlite3.connect(db_path) as db:
        db.execute("DELETE FROM audit_texts")
    code, out = audit(capsys, tmp_path, "verify")
    assert code == 1 and "is missing, and no erasure of a subject it concerns is recorded" in out, out
    assert "add --store URL" in out, out


def test_an_offline_erasure_of_the_subject_makes_the_missing_text_count_as_erased(
        tmp_path: Path, register_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with island_with_override(tmp_path, register_url) as (_, island, _):
        island.delete_subject("K4000004", ERASURE, actor=OFFICER)  # still offline
        assert island_texts(tmp_path) == []
    code, out = audit(capsys, tmp_path, "verify")
    assert code == 0 and "officers' texts: 0 match their commitments, 1 erased" in out, out
    code, out = audit(capsys, tmp_path, "show")
    assert code == 0 and "override_reason=(erased)" in out and REASON not in out, out
    assert ERASURE in out, "the erasure's own reason stays in clear"


def test_a_station_column_renamed_in_replica_db_is_suspect(
        tmp_path: Path, register_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with island_with_override(tmp_path, register_url):
        pass
    with sqlite3.connect(replica_dir(tmp_path) / "replica.db") as db:  # so that station-siberut.json is not its head
        db.execute("UPDATE audit SET station = 'elsewhere'")
    code, out = audit(capsys, tmp_path, "verify")
    assert code == 1 and out.startswith("SUSPECT elsewhere@") and "names station 'siberut'" in out, out


def test_the_registers_erasure_counts_with_store_and_an_online_text_is_the_registers(
        tmp_path: Path, register_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with island_with_override(tmp_path, register_url) as (central, island, proxy):
        proxy.restore()
        wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=60, message="the outbox drained")
        central.delete_subject("K5000005", ERASURE, actor=OFFICER)  # the duplicate the island's text is about
        wait_until(lambda: island_texts(tmp_path) == [], timeout=15, message="the erasure reached the island")
        # online, the island's override is written in the register's transaction: its text is the register's
        assert central.enrol("P1234567", SubjectInfo(name="Megawati"), [MEGAWATI], actor=OFFICER).enrolled
        wait_until(lambda: island.holds("P1234567"), timeout=15, message="the island knows P1234567")
        online = island.enrol("Q7654321", SubjectInfo(name="Megawati's twin"), [MEGAWATI_2], actor=OFFICER,
                              allow_duplicate=True, override_reason="twin sister, met both at the desk")
        assert online.enrolled and not online.provisional
    code, out = audit(capsys, tmp_path, "verify")
    assert code == 1 and "no erasure of a subject it concerns is recorded" in out and "add --store URL" in out, out
    code, out = audit(capsys, tmp_path, "verify", "--store", register_url)
    assert code == 0 and "officers' texts: 0 match their commitments, 1 erased, 1 kept by the register" in out, out
    code, out = audit(capsys, tmp_path, "show", "--kind", "enrol", "--store", register_url)
    assert code == 0 and "override_reason=(erased)" in out and "(kept by the register, or erased there)" in out, out
