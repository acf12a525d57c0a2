"""A rolling upgrade: a newer station migrates the shared register while an older one still runs (real
PostgreSQL). The older one must not write rows under the old layout into the migrated register (v5 re-keyed
the event aggregates from UTC to local time): its writes are refused, it says so once, and verification goes
on from memory."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from island_helpers import HANS, KOFI, KOFI_2, open_station
from pg import fresh_database
from waiting import wait_until

from biometrics.register import SCHEMA_VERSION
from biometrics.storage import SchemaTooNew
from biometrics.types import Actor, SubjectInfo

OFFICER = Actor(role="officer", identity="CN=Siti,OU=officer")


@pytest.fixture
def register_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def _count(url: str, sql: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return int(conn.execute(sql).fetchone()[0])  # type: ignore[index]


def test_a_station_older_than_the_register_it_writes_to_is_refused_and_says_so_once(
        tmp_path: Path, register_url: str, caplog: pytest.LogCaptureFixture) -> None:
    station = open_station(tmp_path, "rokot-airport", register_url, replica=False)
    try:
        assert station.enrol("K5000005", SubjectInfo(name="Kofi"), [KOFI], actor=OFFICER).enrolled
        assert station.verify("K5000005", [KOFI_2], actor=OFFICER).match
        wait_until(lambda: _count(register_url, "SELECT COUNT(*) FROM decision_events") == 1, timeout=30,
                   message="the decision's event shipped")
        assert station.sync_status()["register_refused"] == ""
        with psycopg.connect(register_url, autocommit=True) as admin:  # a newer station started: it migrated
            admin.execute("UPDATE meta SET value = %s WHERE name = 'schema_version'", (str(SCHEMA_VERSION + 1),))
        caplog.set_level(logging.DEBUG)
        subjects = _count(register_url, "SELECT COUNT(*) FROM subjects")
        with pytest.raises(SchemaTooNew, match="upgraded past this station's version"):
            station.enrol("H3000003", SubjectInfo(name="Hans"), [HANS], actor=OFFICER)
        assert _count(register_url, "SELECT COUNT(*) FROM subjects") == subjects  # nothing written
        assert "migrated to schema version" in station.sync_status()["register_refused"]
        # verification goes on from memory; its event and audit record stay in the station's journal
        assert station.verify("K5000005", [KOFI_2], actor=OFFICER).match
        wait_until(lambda: any("cannot ship its decision events" in r.getMessage() for r in caplog.records),
                   timeout=30, message="the refused shipping said")
        wait_until(lambda: any("cannot ship its audit records" in r.getMessage() for r in caplog.records),
                   timeout=30, message="the refused audit shipping said")
        time.sleep(2.5)  # several shipping rounds (every second)
        said = [r for r in caplog.records if r.levelno >= logging.ERROR and "cannot ship" in r.getMessage()]
        assert len(said) == 2, [r.getMessage() for r in said]  # once each, not at every retry
        assert _count(register_url, "SELECT COUNT(*) FROM decision_events") == 1
    finally:
        station.close()


def test_a_write_during_the_migration_waits_for_it_and_is_refused(tmp_path: Path, register_url: str) -> None:
    """A newer station migrating the register holds its migration lock until it commits, and writes its new
    version last; a write of the older station meanwhile read the old version and committed into the migrated
    register (a review). It now waits for the migration and is refused."""
    import threading

    from biometrics.register import LOCK_NAMESPACE, MIGRATION_LOCK

    station = open_station(tmp_path, "rokot-airport", register_url, replica=False)
    migrating, outcome = threading.Event(), []
    try:
        def migrate() -> None:
            with psycopg.connect(register_url) as newer, newer.transaction():
                newer.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_NAMESPACE, MIGRATION_LOCK))
                newer.execute("UPDATE meta SET value = %s WHERE name = 'schema_version'", (str(SCHEMA_VERSION + 1),))
                migrating.set()
                time.sleep(1.5)  # re-keying rows

        newer = threading.Thread(target=migrate)
        newer.start()
        assert migrating.wait(30)
        started = time.monotonic()
        try:
            station.enrol("H3000003", SubjectInfo(name="Hans"), [HANS], actor=OFFICER)
            outcome.append("stored")
        except SchemaTooNew:
            outcome.append("refused")
        waited = time.monotonic() - started
        newer.join()
        assert outcome == ["refused"] and waited > 0.5, (outcome, waited)
        assert _count(register_url, "SELECT COUNT(*) FROM subjects") == 0
    finally:
        station.close()
