"""The register restored from a backup (pg_dump, then pg_restore): its change log goes back and its sequence hands
out again numbers every station has applied. Each station notices (the log ends before its applied change, another
change holds that seq, or the register's generation changed), reloads from the register, and an island sends again
what the register lost of its uploads; nothing is skipped silently."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from island_helpers import (
    HANS,
    KOFI,
    KOFI_2,
    MEGAWATI,
    MEGAWATI_2,
    chain_verifies,
    go_offline,
    open_station,
    register_chain,
)
from pg import dump, fresh_database, restore
from waiting import wait_until

from benchmarks.linkcut import LinkProxy
from biometrics.errors import SubjectNotFound
from biometrics.replica import OUTBOX_STORED
from biometrics.service import CheckpointService
from biometrics.storage import GENERATION
from biometrics.types import SubjectInfo

pytestmark = pytest.mark.slow


def restores(station: CheckpointService) -> list[dict]:
    """The ``register_restored`` records of a station's journal."""
    assert station.decision_log is not None
    entries = (json.loads(e) for _, _, _, e in station.decision_log.storage.audit_rows(-1, 100_000))
    return [e for e in entries if e.get("kind") == "register_restored"]


def back_up_between_two_enrolments(tmp_path: Path, url: str, writer: CheckpointService,
                                   follower: CheckpointService) -> None:
    """``writer`` enrols A1000001, the register is backed up, ``writer`` enrols K5000005 (which the backup lacks);
    ``follower`` holds both."""
    assert writer.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
    wait_until(lambda: follower.holds("A1000001"), timeout=10, message="the follower has A1000001")
    dump(url, str(tmp_path / "register.dump"))
    assert writer.enrol("K5000005", SubjectInfo(name="Kofi"), [KOFI]).enrolled
    wait_until(lambda: follower.holds("K5000005"), timeout=10, message="the follower has K5000005")


def test_after_a_restore_every_station_reloads_and_follows_new_changes_erasures_included(tmp_path: Path) -> None:
    with fresh_database() as url:
        a = open_station(tmp_path, "rokot-airport", url, replica=False)
        b = open_station(tmp_path, "tuapejat-port", url, replica=False)
        try:
            back_up_between_two_enrolments(tmp_path, url, a, b)  # K5000005 is lost by the restore
            restore(url, str(tmp_path / "register.dump"))
            for s in (a, b):  # the log ends before their applied change: each reloads by itself
                wait_until(lambda s=s: not s.holds("K5000005") and restores(s), timeout=20,
                           message="the station reloaded from the restored register")
                with pytest.raises(SubjectNotFound):
                    s.verify("K5000005", [KOFI_2])
            a.delete_subject("A1000001", "erasure request")  # takes the change seq the lost enrolment had
            assert a.storage.subject_info("A1000001") is None
            for s in (a, b):
                wait_until(lambda s=s: not s.holds("A1000001"), timeout=10, message="the erasure reached a station")
            assert b.enrol("H3000003", SubjectInfo(name="Hans"), [HANS]).enrolled
            wait_until(lambda: a.holds("H3000003"), timeout=10, message="a new enrolment reached the other station")
            assert restores(a)[0]["fields"]["outcome"] == "reloaded"
            wait_until(lambda: a.sync_status()["audit_pending"] == 0, timeout=10, message="A's journal shipped")
        finally:
            b.close()
            a.close()
        # A's chain in the register lost its records after the backup; A shipped them again: it verifies whole.
        entries = register_chain(tmp_path, url, "rokot-airport")
        chain_verifies(tmp_path, entries)
        kinds = [json.loads(e).get("kind") for e in entries]
        assert kinds.count("enrol") == 2 and "delete" in kinds and "register_restored" in kinds


def uploaded_after_a_dump(tmp_path: Path, url: str, central: CheckpointService, island: CheckpointService,
                          proxy: LinkProxy, *, enrol: bool) -> None:
    """The office enrols E4000004, which the island holds; the register is dumped; offline, the island erases
    E4000004 (and, with ``enrol``, enrols X9000009); back online, its outbox drains."""
    assert central.enrol("E4000004", SubjectInfo(name="Kofi"), [KOFI]).enrolled
    wait_until(lambda: island.holds("E4000004"), timeout=10, message="the island has E4000004")
    dump(url, str(tmp_path / "register.dump"))
    go_offline(island, proxy)
    if enrol:
        assert island.enrol("X9000009", SubjectInfo(name="Megawati"), [MEGAWATI]).provisional
    island.delete_subject("E4000004", "erasure request")
    proxy.restore()
    wait_until(lambda: island.island.replica.pending_count() == 0 and central.holds("X9000009") == enrol
               and not central.holds("E4000004"), timeout=20, message="the outbox drained")


def test_an_island_uploads_again_what_the_restored_register_lost(tmp_path: Path) -> None:
    with fresh_database() as url, LinkProxy.to_url(url) as proxy:
        central = open_station(tmp_path, "central-office", url, replica=False)
        island = open_station(tmp_path, "sikakap-port", proxy.url(url), replica=True)
        try:
            uploaded_after_a_dump(tmp_path, url, central, island, proxy, enrol=True)
            replica = island.island.replica
            restore(url, str(tmp_path / "register.dump"))  # the register loses both uploads
            wait_until(lambda: restores(island), timeout=20, message="the island noticed the restore")
            wait_until(lambda: replica.pending_count() == 0 and central.holds("X9000009")
                       and not central.holds("E4000004"), timeout=20, message="the island sent both again")
            assert central.storage.subject_info("X9000009") is not None
            assert central.storage.subject_info("E4000004") is None
            assert restores(island)[0]["fields"]["count"] == 2
            assert {e.state for e in replica.entries((OUTBOX_STORED, "erased"))} == {OUTBOX_STORED, "erased"}
            assert central.verify("X9000009", [MEGAWATI_2]).match
            assert island.holds("X9000009") and not island.holds("E4000004")
            assert island.sync_status()["provisional"] == 0
        finally:
            island.close()
            central.close()


def test_the_documented_restore_sets_a_new_generation_which_every_station_follows(tmp_path: Path) -> None:
    with fresh_database() as url, psycopg.connect(url, autocommit=True) as conn:
        a = open_station(tmp_path, "rokot-airport", url, replica=False)
        a.close()  # a register made by an older version has no generation
        conn.execute("DELETE FROM meta WHERE name = %s", (GENERATION,))
        a = open_station(tmp_path, "rokot-airport", url, replica=False)
        try:
            generation = conn.execute("SELECT value FROM meta WHERE name = %s", (GENERATION,)).fetchone()
            assert generation is not None, "the upgraded register has a generation"
            assert a.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
            wait_until(lambda: a.sync_state.generation == generation[0], timeout=10,
                       message="the station follows the register's generation")
            assert not restores(a)
            # The restore step of docs/register.md, on a register restored to exactly where it was.
            conn.execute("UPDATE meta SET value = md5(random()::text || clock_timestamp()::text) "
                         "WHERE name = 'register_generation'")
            wait_until(lambda: restores(a), timeout=10, message="the station reloaded")
            assert "generation" in restores(a)[0]["fields"]["reason"]
            assert a.holds("A1000001") and a.verify("A1000001", [MEGAWATI_2]).match
        finally:
            a.close()


def test_a_station_away_during_the_restore_notices_another_change_at_its_applied_seq(tmp_path: Path) -> None:
    with fresh_database() as url:
        central = open_station(tmp_path, "central-office", url, replica=False)
        island = open_station(tmp_path, "sikakap-port", url, replica=True)
        try:
            back_up_between_two_enrolments(tmp_path, url, central, island)
            island.close()
            restore(url, str(tmp_path / "register.dump"))
            # central enrols again: the new change takes the seq the island applied (the lost K5000005's)
            assert central.enrol("H3000003", SubjectInfo(name="Hans"), [HANS]).enrolled
            assert central.applied_seq == island.applied_seq
            island = open_station(tmp_path, "sikakap-port", url, replica=True)  # from its copy: at that seq
            wait_until(lambda: island.holds("H3000003") and not island.holds("K5000005"), timeout=20,
                       message="the island reloaded")
            assert "is not the one this station applied" in restores(island)[0]["fields"]["reason"]
        finally:
            island.close()
            central.close()


def restored_as_the_island_dies(tmp_path: Path, url: str, proxy: LinkProxy) -> CheckpointService:
    """The island's erasure of E4000004 uploaded after a dump (:func:`uploaded_after_a_dump`), the register restored
    from the dump (it loses the erasure); the island notices, and its process dies (a power cut: simulated by
    failing for good) right after its copy was moved to the restored register. Returns the office's station (the
    island is closed)."""
    central = open_station(tmp_path, "central-office", url, replica=False)
    island = open_station(tmp_path, "sikakap-port", proxy.url(url), replica=True)
    try:
        uploaded_after_a_dump(tmp_path, url, central, island, proxy, enrol=False)
        replica, cuts = island.island.replica, []
        real_resync = replica.resync

        def power_cut_after_the_resync(*args: object, **kwargs: object) -> object:
            real_resync(*args, **kwargs)  # type: ignore[arg-type]
            cuts.append(1)
            raise RuntimeError("power cut right after the copy was moved to the restored register")

        replica.resync = power_cut_after_the_resync  # type: ignore[method-assign]
        wait_until(lambda: island.applied_seq == central.storage.head_seq(), timeout=10,
                   message="the island applied its erasure's change")  # else it could not notice the restore
        go_offline(island, proxy)  # the island sees the register restored whole, never half-way
        restore(url, str(tmp_path / "register.dump"))  # the register loses the erasure
        proxy.restore()
        wait_until(lambda: cuts, timeout=20, message="the island noticed the restore")
    except BaseException:
        central.close()
        raise
    finally:
        island.close()
    return central


def test_an_erasure_the_restored_register_lost_is_queued_again_even_if_the_island_dies_right_after(
        tmp_path: Path) -> None:
    """Restarted after dying right after its copy was moved to the restored register, the island no longer
    notices a restore (its copy is at the restored register), so the erasure must have been queued again in that
    same local transaction: it is uploaded, and the subject leaves the register and the island (before, the copy
    committed first and the erasure was settled for good)."""
    with fresh_database() as url, LinkProxy.to_url(url) as proxy:
        central = restored_as_the_island_dies(tmp_path, url, proxy)
        island = open_station(tmp_path, "sikakap-port", proxy.url(url), replica=True)  # restarted
        try:
            wait_until(lambda: island.island.replica.pending_count() == 0 and not central.holds("E4000004"),
                       timeout=20, message="the island sent the erasure again")
            assert central.storage.subject_info("E4000004") is None
            wait_until(lambda: not island.holds("E4000004"), timeout=10, message="the erasure reached the island")
        finally:
            island.close()
            central.close()
