"""One process per station: a replica directory (its journal, outbox, alerts and copy of the register) is locked as
a data directory is, and a station's name is held in the register while it runs (real PostgreSQL)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from island_helpers import go_offline, open_station
from pg import fresh_database
from waiting import wait_until

from benchmarks.linkcut import LinkProxy
from biometrics.datadir import DataDirLocked, lock_data_dir
from biometrics.register import StationInUse
from biometrics.service import CheckpointService, StoreLocation
from biometrics.types import Actor

OFFICER = Actor(role="officer", identity="CN=Siti,OU=officer")


@pytest.fixture
def register_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def island(tmp_path: Path, data: str, station: str, url: str, replica: Path) -> CheckpointService:
    """A station on ``url`` with its own data directory ``tmp_path/data`` and the replica directory ``replica``."""
    return CheckpointService.open(StoreLocation(tmp_path / data, key_dir=tmp_path / "keys", store_url=url,
                                                station=station, replica_dir=replica))


def test_a_second_service_on_the_same_replica_directory_is_refused(tmp_path: Path, register_url: str) -> None:
    replica = tmp_path / "replica"
    first = island(tmp_path, "data-a", "sikakap-port", register_url, replica)
    try:
        refusal = (rf"the replica directory {re.escape(str(replica))} is in use by another checkpoint-server "
                   rf"\(pid {os.getpid()}\); one server per replica directory")
        with pytest.raises(DataDirLocked, match=refusal):
            island(tmp_path, "data-b", "siberut-port", register_url, replica)
        lock_data_dir(tmp_path / "data-b").release()  # the refused service let go of its own data directory
    finally:
        first.close()
    island(tmp_path, "data-b", "siberut-port", register_url, replica).close()  # released at close


def test_a_replica_directory_that_is_the_data_directory_is_locked_once(tmp_path: Path, register_url: str) -> None:
    island(tmp_path, "data", "sikakap-port", register_url, tmp_path / "data").close()


def test_a_second_station_under_the_same_name_is_refused_at_start(tmp_path: Path, register_url: str) -> None:
    elsewhere = StoreLocation(tmp_path / "elsewhere", key_dir=tmp_path / "keys", store_url=register_url,
                              station="rokot-airport")  # its own data directory, the station's key ring
    first = open_station(tmp_path, "rokot-airport", register_url, replica=False)
    try:
        second = CheckpointService.open(elsewhere)
        try:
            with pytest.raises(StationInUse, match=rf"station 'rokot-airport' is already running on the register .*"
                                                   rf"held by 'checkpoint rokot-airport pid {os.getpid()} on "):
                second.start()
            assert not second.ready()
        finally:
            second.close()
        open_station(tmp_path, "tuapejat-port", register_url, replica=False).close()  # another name starts
    finally:
        first.close()
    again = CheckpointService.open(elsewhere)  # the name is free once the first station has closed
    try:
        again.start()
        assert again.ready()
    finally:
        again.close()


def test_a_shipping_failure_is_logged_once_at_error_and_an_unreachable_register_is_not(
        tmp_path: Path, register_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="biometrics.audit")
    with LinkProxy.to_url(register_url) as proxy:
        station = open_station(tmp_path, "rokot-airport", proxy.url(register_url), replica=False)
        try:
            chain = station.decision_log
            while chain.ship():
                pass
            go_offline(station, proxy)  # out of reach: deferred, not an error
            station.list_alerts(actor=OFFICER)
            wait_until(lambda: any(r.name == "biometrics.audit" and "cannot be reached" in r.getMessage()
                                   for r in caplog.records), timeout=30, message="a shipping deferred")
            proxy.restore()
            wait_until(lambda: chain.pending() == 0, timeout=30, message="shipped once the register is back")
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
            # another process wrote the station's next record into the register: the chain forks there
            seq = chain.storage.audit_rows(-1, 1_000_000)[-1][0] + 1
            with psycopg.connect(register_url, autocommit=True) as conn:
                conn.execute("INSERT INTO audit(station, seq, type, hash, entry) VALUES (%s, %s, 'decision', 'other', "
                             "'{}')", ("rokot-airport", seq))
            station.list_alerts(actor=OFFICER)  # journalled, then shipped in the background: refused
            wait_until(lambda: sum("two processes" in r.getMessage() for r in caplog.records) >= 3, timeout=30,
                       message="the shipper tried three times")
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1, [r.getMessage() for r in errors]
            assert "'rokot-airport'" in errors[0].getMessage() and "two processes" in errors[0].getMessage()
        finally:
            station.close()


def test_a_station_whose_name_lock_session_was_ended_claims_it_again_or_refuses_changes(
        tmp_path: Path, register_url: str) -> None:
    """Nothing watches the session that holds a station's name: an operator's pg_terminate_backend frees it while
    the station serves. The station's next change claims it again; if another process took it meanwhile, the
    change is refused (UNAVAILABLE) and the chain does not fork."""
    from helpers import face

    from biometrics.register import StationNameTaken
    from biometrics.types import Modality, Sample, SubjectInfo

    megawati = Sample(Modality.FACE, face("Megawati_Sukarnoputri_0001.jpg"))
    kofi = Sample(Modality.FACE, face("Kofi_Annan_0001.jpg"))

    def end_lock_session(station: CheckpointService) -> None:
        pid = station.storage._station_lock.info.backend_pid  # type: ignore[attr-defined]
        with psycopg.connect(register_url, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]

    a = open_station(tmp_path, "rokot-airport", register_url, replica=False)
    try:
        end_lock_session(a)  # nobody took the name: the next change claims it again
        assert a.enrol("A1000001", SubjectInfo(name="Megawati"), [megawati], actor=OFFICER).enrolled
        other = CheckpointService.open(StoreLocation(tmp_path / "other", key_dir=tmp_path / "keys",
                                                     store_url=register_url, station="rokot-airport"))
        try:
            with pytest.raises(StationInUse):  # the change claimed it again: a second start is still refused
                other.start(retry_s=0.2, poll_s=0.3)
        finally:
            other.close()
        end_lock_session(a)
        b = CheckpointService.open(StoreLocation(tmp_path / "b", key_dir=tmp_path / "keys", store_url=register_url,
                                                 station="rokot-airport"))
        try:
            b.start(retry_s=0.2, poll_s=0.3)  # the name was free: b takes it
            wait_until(b.ready, timeout=30, message="b is ready")
            for _ in range(2):  # and again: a refused claim leaves the station refusing, never unchecked
                with pytest.raises(StationNameTaken, match="under this station's name"):
                    a.enrol("K5000005", SubjectInfo(name="Kofi"), [kofi], actor=OFFICER)
            assert not a.holds("K5000005")
            assert a.storage.subject_info("K5000005") is None, "nothing of the refused change in the register"
        finally:
            b.close()
    finally:
        a.close()


def test_two_threads_claiming_a_lost_name_at_once_both_hold_it(tmp_path: Path, register_url: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """After the session holding a station's name is lost, the listener's reclaim and a change's check can claim it
    at once: each opened a session, and the second's lock attempt, refused by the first's, read as another process
    holding the name (StationInUse: the change refused). One claim at a time: both find the name held by this
    process. (Seen as a rare failure of test_register_restore, whose restore ends every session.)"""
    import contextlib
    import threading

    from biometrics import register as register_module

    a = open_station(tmp_path, "rokot-airport", register_url, replica=False)
    try:
        store = a.storage
        pid = store._station_lock.info.backend_pid  # type: ignore[attr-defined]
        with psycopg.connect(register_url, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
        real_connect = psycopg.connect
        both_connected = threading.Barrier(2, timeout=2)

        def connect(*args, **kwargs):  # the two claims' new sessions both open before either locks the name
            conn = real_connect(*args, **kwargs)
            if kwargs.get("options") == register_module._LOCK_SESSION_OPTIONS:
                with contextlib.suppress(threading.BrokenBarrierError):
                    both_connected.wait()
            return conn

        monkeypatch.setattr(register_module.psycopg, "connect", connect)
        errors: list[BaseException] = []

        def claim() -> None:
            try:
                store.claim_station()  # type: ignore[attr-defined]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=claim) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        monkeypatch.undo()
        other = CheckpointService.open(StoreLocation(tmp_path / "other", key_dir=tmp_path / "keys",
                                                     store_url=register_url, station="rokot-airport"))
        try:
            with pytest.raises(StationInUse):  # the name is held (by this station): a second start is refused
                other.start(retry_s=0.2, poll_s=0.3)
        finally:
            other.close()
    finally:
        a.close()
