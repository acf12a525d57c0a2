"""A station on a shared register exports two signed heads: ``station-<name>.journal.json`` once a checkpoint is in
its local journal, ``station-<name>.json`` once the register holds it. So ``checkpoint-audit verify --store`` does not
call an honest station TAMPERED when its link was down at shutdown (records signed in the journal, not yet shipped:
a distinct outcome, exit 3), while records deleted from the register's copy after they were shipped still are; and
the journal itself (``--data-dir`` holding ``journal.db``) is checked against both heads (real PostgreSQL, real
SQLite, real keys; the link's failure is the register's own RegisterUnavailable)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from pg import fresh_database

from biometrics.audit import (
    AuditChain,
    anchor_path,
    canonical,
    entry_hash,
    load_or_create_signing_key,
    read_head_seq,
)
from biometrics.crypto import KeyRing
from biometrics.errors import RegisterUnavailable
from biometrics.register import RegisterStorage
from biometrics.storage import Storage
from biometrics.types import Actor
from verify import audit_cli

STATION = "pelabuhan"
KIOSK = Actor(role="kiosk", identity="CN=kiosk-1")


@dataclass
class Station:
    url: str
    data: Path
    keys: Path
    chain: AuditChain

    def record(self, n: int) -> None:
        for _ in range(n):
            with self.chain.transaction() as tx:  # a decision that changes nothing: the journal first
                self.chain.record(tx, "verify", KIOSK, "d" * 32, match=True, score=5.5, threshold=3.0)

    def verify(self, capsys: pytest.CaptureFixture[str], *where: str) -> tuple[int, str]:
        code = audit_cli.main(["verify", *where, "--key-dir", str(self.keys)])
        return code, capsys.readouterr().out

    def register(self, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
        return self.verify(capsys, "--store", self.url, "--station", STATION)

    def journal(self, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
        return self.verify(capsys, "--data-dir", str(self.data))


def link_down(register: RegisterStorage) -> None:
    def refused(rows: object) -> None:
        raise RegisterUnavailable("the register cannot be reached just now")
    register.ship_audit = refused  # type: ignore[method-assign]


def link_up(register: RegisterStorage) -> None:
    register.__dict__.pop("ship_audit", None)


@pytest.fixture
def station(tmp_path: Path) -> Iterator[Station]:
    """A station whose first records (0, 1 and the checkpoint at 2) were shipped; then its link went down, it made
    one more decision (3) and shut down (the shutdown checkpoint at 4 signed in its journal, not shipped)."""
    with fresh_database() as url:
        ring, keys, data = KeyRing.generate(), tmp_path / "keys", tmp_path / "data"
        journal = Storage(data / "journal.db", ring, station=STATION)
        register = RegisterStorage(url, ring, station=STATION)
        register.open()
        chain = AuditChain(journal, load_or_create_signing_key(keys), anchor=anchor_path(keys, f"station-{STATION}"),
                           register=register, station=STATION)
        st = Station(url, data, keys, chain)
        st.record(2)
        chain.checkpoint("periodic")
        assert chain.ship() == 3 and chain.pending() == 0
        link_down(register)
        st.record(1)
        chain.close()  # the shutdown checkpoint; shipping it fails: kept in the journal
        assert chain.pending() == 2
        try:
            yield st
        finally:
            link_up(register)
            journal.close()
            register.close()


def test_records_signed_but_not_yet_shipped_are_not_tampering(
        station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    keys = station.keys / "audit-heads"
    assert read_head_seq(keys / f"station-{STATION}.json") == 2, "the register's head: what it holds"
    assert read_head_seq(keys / f"station-{STATION}.journal.json") == 4, "the journal's head"
    code, out = station.register(capsys)
    assert code == audit_cli.EXIT_NOT_SHIPPED == 3 and "TAMPERED" not in out, out
    assert out.startswith(f"NOT YET SHIPPED {STATION}@") and "2 record(s) signed but not yet in the register" in out
    assert "verify the station's journal" in out and "holds the signed head at seq 2" in out, out
    code, out = station.journal(capsys)  # the journal proves them
    assert code == 0 and "5 records" in out and "holds the signed head at seq 4" in out, out

    link_up(station.chain.register)  # the link is back: the next start ships them
    assert station.chain.ship() == 2
    assert read_head_seq(keys / f"station-{STATION}.json") == 4
    code, out = station.register(capsys)
    assert code == 0 and out.startswith("OK") and "holds the signed head at seq 4" in out, out


def test_shipped_records_deleted_from_the_register_are_tampered_even_with_a_tail_not_shipped(
        station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    with psycopg.connect(station.url, autocommit=True) as conn:  # records 1 and 2 (its checkpoint) were shipped
        conn.execute("DELETE FROM audit WHERE station = %s AND seq >= 1", (STATION,))
    code, out = station.register(capsys)
    assert code == 1 and out.startswith("TAMPERED") and "proves records through seq 2" in out, out
    assert "not yet in the register" not in out, out


def test_shipped_records_deleted_from_the_register_once_all_were_shipped_are_tampered(
        station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    link_up(station.chain.register)
    assert station.chain.ship() == 2
    assert station.register(capsys)[0] == 0
    with psycopg.connect(station.url, autocommit=True) as conn:
        conn.execute("DELETE FROM audit WHERE station = %s AND seq >= 3", (STATION,))
    code, out = station.register(capsys)
    assert code == 1 and out.startswith("TAMPERED") and "proves records through seq 4" in out, out


def test_a_register_copy_that_is_not_the_journals_where_both_hold_records_is_tampered(
        station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    """Only the journal's head left (the register's removed), and the register's copy re-signed from seq 4 by whoever
    holds the key: a record there that is not the journal head's is the copy replaced, not records not shipped."""
    link_up(station.chain.register)
    assert station.chain.ship() == 2
    (station.keys / "audit-heads" / f"station-{STATION}.json").unlink()
    with psycopg.connect(station.url, autocommit=True) as conn:
        [(text,)] = conn.execute("SELECT entry FROM audit WHERE station = %s AND seq = 4", (STATION,)).fetchall()
        forged = {k: v for k, v in json.loads(text).items() if k not in ("hash", "signature")}
        forged["time"] = "2020-01-01T00:00:00.000000+00:00"
        forged["signature"] = station.chain.signing_key.sign(canonical(forged)).hex()
        forged["hash"] = entry_hash(forged)
        conn.execute("UPDATE audit SET entry = %s, hash = %s WHERE station = %s AND seq = 4",
                     (canonical(forged).decode(), forged["hash"], STATION))
    code, out = station.register(capsys)
    assert code == 1 and out.startswith("TAMPERED") and "rewritten: the record at seq 4" in out, out


def test_the_journal_is_verified_against_its_own_head(station: Station, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(station.data / "journal.db") as db:  # the tail not shipped, cut from the journal
        db.execute("DELETE FROM audit WHERE seq >= 3")
    code, out = station.journal(capsys)
    assert code == 1 and out.startswith(f"TAMPERED {STATION}@") and "proves records through seq 4" in out, out
