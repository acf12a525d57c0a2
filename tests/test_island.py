"""An island station keeps working when its link to the register drops (a real TCP proxy cuts it), and syncs when
it returns: provisional enrolments uploaded once each, duplicates queued for an officer, erasures both ways."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

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
from pg import fresh_database
from waiting import wait_until

from benchmarks.linkcut import LinkProxy
from biometrics.errors import OfflineLimitReached, RegisterUnavailable, SubjectExists
from biometrics.island import Island, OfflinePolicy
from biometrics.replica import OUTBOX_REVIEW, OUTBOX_STORED, OutboxEntry
from biometrics.service import CheckpointService
from biometrics.types import Sample, SubjectInfo

pytestmark = pytest.mark.slow


@pytest.fixture
def link(tmp_path: Path) -> Iterator[tuple[str, LinkProxy]]:
    """(the register's URL, a proxy to it whose link the test cuts)."""
    with fresh_database() as url, LinkProxy.to_url(url) as proxy:
        yield url, proxy


def island_url(link: tuple[str, LinkProxy]) -> str:
    url, proxy = link
    return proxy.url(url)


def offline_island(tmp_path: Path, link: tuple[str, LinkProxy], name: str, **people: Sample) -> CheckpointService:
    """Island ``name``, its link cut, with ``people`` (document number=face) enrolled provisionally."""
    island = open_station(tmp_path, name, island_url(link), replica=True)
    go_offline(island, link[1])
    for document, face in people.items():
        assert island.enrol(document, SubjectInfo(name=document), [face]).provisional
    return island


def test_offline_work_is_uploaded_once_and_duplicates_wait_for_an_officer(
        tmp_path: Path, link: tuple[str, LinkProxy]) -> None:
    url, proxy = link
    central = open_station(tmp_path, "central-office", url, replica=False)
    island = open_station(tmp_path, "siberut-port", island_url(link), replica=True)
    try:
        assert central.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
        wait_until(lambda: island.holds("A1000001"), timeout=10, message="the island has the register")
        go_offline(island, proxy)

        verified = island.verify("A1000001", [MEGAWATI_2])
        assert verified.match and verified.register_as_of, "verification goes on, saying how old its view is"
        hans = island.enrol("H3000003", SubjectInfo(name="Hans"), [HANS])
        assert hans.enrolled and hans.provisional
        kofi_here = island.enrol("K4000004", SubjectInfo(name="Kofi at Siberut"), [KOFI_2])
        assert kofi_here.enrolled and kofi_here.provisional
        island.delete_subject("A1000001", "erasure request at the port")
        assert not island.holds("A1000001"), "an erasure leaves the station at once, offline or not"
        # Meanwhile the central office enrols the same Kofi under another document number.
        assert central.enrol("K5000005", SubjectInfo(name="Kofi at the office"), [KOFI]).enrolled
        assert island.sync_status()["outbox_pending"] == 3

        proxy.restore()
        wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=30, message="the outbox drained")
        wait_until(lambda: central.holds("H3000003") and not central.holds("A1000001"), timeout=10,
                   message="the central office has the island's enrolment and erasure")
        assert central.storage.count()[0] == 2, "Hans and the office's Kofi; the island's Kofi waits for review"
        ring = island.storage.keyring  # a settled entry keeps no payload (an enrolment: its subject id alone)
        states = {e.ref: e.state for e in island.island.replica.entries((OUTBOX_STORED, OUTBOX_REVIEW, "erased"))}
        assert states == {ring.pseudonym("H3000003"): OUTBOX_STORED, ring.pseudonym("K4000004"): OUTBOX_REVIEW,
                          ring.pseudonym("A1000001"): "erased"}

        (review,) = central.list_reviews()
        assert review.subject_id == "K4000004" and review.station == "siberut-port"
        assert [c.subject_id for c in review.candidates] == ["K5000005"]
        central.resolve_review(review.review_id, "link", "one person, two passports: checked at the desk")
        wait_until(lambda: central.holds("K4000004") and island.sync_status()["provisional"] == 0, timeout=10,
                   message="the linked enrolment reached every station, the island's copy no longer provisional")
        assert island.holds("K4000004") and island.holds("K5000005")
        assert not central.list_reviews()
    finally:
        island.close()
        central.close()


def test_a_drain_interrupted_after_the_register_committed_never_stores_twice(
        tmp_path: Path, link: tuple[str, LinkProxy], monkeypatch: pytest.MonkeyPatch) -> None:
    _, proxy = link
    island = offline_island(tmp_path, link, "sikakap-port", H3000003=HANS)
    try:
        replica = island.island.replica
        real_settle = replica.settle
        calls = {"n": 0}

        def crash_once(*args: object, **kwargs: object) -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("the station died between the register's commit and its own")
            real_settle(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(replica, "settle", crash_once)
        proxy.restore()
        wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=30, message="the outbox drained")
        assert calls["n"] >= 2, "the first settle failed and the upload was tried again"
        assert island.storage.count()[0] == 1, "the re-upload was recognised, not stored twice"
        assert island.island.last_drain.get("again") == 1
    finally:
        island.close()


def test_the_offline_budget_pauses_enrolment_not_verification(tmp_path: Path, link: tuple[str, LinkProxy]) -> None:
    _, proxy = link
    island = open_station(tmp_path, "tuapejat-port", island_url(link), replica=True,
                          policy=OfflinePolicy(max_pending=1))
    try:
        assert island.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
        go_offline(island, proxy)
        assert island.enrol("H3000003", SubjectInfo(name="Hans"), [HANS]).provisional
        with pytest.raises(OfflineLimitReached, match="1 enrolments or erasures already wait"):
            island.enrol("B2000002", SubjectInfo(name="Kofi"), [KOFI])
        assert island.verify("A1000001", [MEGAWATI_2]).match
    finally:
        island.close()


def test_a_station_restarted_while_offline_answers_from_its_replica(tmp_path: Path,
                                                                   link: tuple[str, LinkProxy]) -> None:
    _, proxy = link
    central = open_station(tmp_path, "central-office", link[0], replica=False)
    assert central.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
    central.close()
    offline_island(tmp_path, link, "siberut-port", H3000003=HANS).close()
    again = open_station(tmp_path, "siberut-port", island_url(link), replica=True)
    try:
        assert again.ready(), "ready at once, from the replica"
        assert again.verify("A1000001", [MEGAWATI_2]).match
        assert again.holds("H3000003") and again.sync_status()["provisional"] == 1
        proxy.restore()
        wait_until(lambda: again.sync_status()["outbox_pending"] == 0 and again.sync_status()["provisional"] == 0,
                   timeout=30, message="the provisional enrolment reached the register")
    finally:
        again.close()


def test_a_number_the_register_enrolled_meanwhile_goes_to_review_after_a_restart_and_blocks_nothing(
        tmp_path: Path, link: tuple[str, LinkProxy]) -> None:
    url, proxy = link
    central = open_station(tmp_path, "central-office", url, replica=False)
    assert central.enrol("C9000009", SubjectInfo(name="Kofi"), [KOFI]).enrolled
    island = open_station(tmp_path, "siberut-port", island_url(link), replica=True)
    try:
        assert island.holds("C9000009")
        go_offline(island, proxy)
        assert island.enrol("D1000001", SubjectInfo(name="Hans"), [HANS]).provisional
        assert island.enrol("M2000002", SubjectInfo(name="Megawati"), [MEGAWATI]).provisional
        # The same passport enrolled at the office while the island is offline.
        assert central.enrol("D1000001", SubjectInfo(name="Hans at the office"), [HANS]).enrolled
        island.island.drain = lambda: 0  # the island catches up, then stops before its drain...
        proxy.restore()
        wait_until(lambda: island.island.replica.register_seq() >= 2, timeout=30, message="the island caught up")
    finally:
        island.close()
    # ... and restarts as the server does (the register loaded in the background).
    again = open_station(tmp_path, "siberut-port", island_url(link), replica=True, background=True)
    try:
        wait_until(lambda: again.sync_status()["outbox_pending"] == 0, timeout=30, message="the outbox drained")
        assert central.storage.subject_info("M2000002") is not None, "the enrolment behind the taken number"
        (review,) = central.list_reviews()
        assert review.subject_id == "D1000001" and "D1000001" in [c.subject_id for c in review.candidates], \
            "the island's enrolment waits for an officer, searched against the register's holder of the number"
        assert central.storage.subject_info("D1000001") == SubjectInfo(name="Hans at the office")
        central.delete_subject("C9000009", "erasure request")
        wait_until(lambda: not again.holds("C9000009"), timeout=10, message="the central erasure reached the island")
    finally:
        again.close()
        central.close()


def test_an_erasure_of_a_failed_upload_that_reached_the_register_erases_it_there(
        tmp_path: Path, link: tuple[str, LinkProxy], monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload that fails after the register committed it (set aside as failed, though stored): erasing the
    subject offline cancels the entry and also queues an erasure naming that upload, which erases it there."""
    url, proxy = link
    central = open_station(tmp_path, "central-office", url, replica=False)
    island = offline_island(tmp_path, link, "sikakap-port", H3000003=HANS)
    try:
        real_upload = island.island._upload

        def fails_after_commit(entry: OutboxEntry) -> tuple[str, str]:
            real_upload(entry)
            raise OSError("disk full, after the register's commit")

        monkeypatch.setattr(island.island, "_upload", fails_after_commit)
        proxy.restore()
        wait_until(lambda: island.sync_status()["outbox_failed"] == 1, timeout=30, message="set aside as failed")
        assert central.storage.subject_info("H3000003") is not None, "stored in the register all the same"
        monkeypatch.setattr(island.island, "_upload", real_upload)
        go_offline(island, proxy)
        island.delete_subject("H3000003", "erasure request")
        proxy.restore()
        wait_until(lambda: central.storage.subject_info("H3000003") is None, timeout=30,
                   message="the erasure reached the register")
        wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=10, message="the outbox drained")
        # the catch-up before the drain brought back the register's copy; the erasure's change takes it away
        wait_until(lambda: not island.holds("H3000003"), timeout=10, message="the island follows the erasure")
        assert island.sync_status()["outbox_failed"] == 0
    finally:
        island.close()
        central.close()


def test_an_upload_that_fails_is_set_aside_audited_and_blocks_nothing(
        tmp_path: Path, link: tuple[str, LinkProxy], monkeypatch: pytest.MonkeyPatch) -> None:
    url, proxy = link
    central = open_station(tmp_path, "central-office", url, replica=False)
    island = offline_island(tmp_path, link, "sikakap-port", H3000003=HANS, M2000002=MEGAWATI)
    try:
        real_upload = island.island._upload_enrolment

        def broken_for_hans(tx: object, entry: OutboxEntry) -> str:
            if entry.payload["subject_id"] == "H3000003":
                raise ValueError("a fault in this one upload")
            return real_upload(tx, entry)

        monkeypatch.setattr(island.island, "_upload_enrolment", broken_for_hans)
        proxy.restore()
        wait_until(lambda: central.storage.subject_info("M2000002") is not None, timeout=30,
                   message="the entry behind the failed one uploaded")
        # the register commits before the island settles its outbox: wait for the island's own account
        wait_until(lambda: (lambda s: (s["outbox_pending"], s["outbox_failed"], s["provisional"]))(
            island.sync_status()) == (0, 1, 1), timeout=10, message="one entry set aside, the other settled")
        assert island.holds("H3000003") and central.storage.subject_info("H3000003") is None, "set aside, kept"
        audit = [json.loads(e) for e in island.island.replica.local.audit_entries()]
        assert [e["fields"]["outcome"] for e in audit if e["kind"] == "enrol_upload"] == ["failed", "stored"]
    finally:
        island.close()
    again = open_station(tmp_path, "sikakap-port", island_url(link), replica=True)
    try:
        wait_until(lambda: central.storage.subject_info("H3000003") is not None, timeout=30,
                   message="the failed upload retried at the start")
        wait_until(lambda: (again.sync_status()["outbox_failed"], again.sync_status()["provisional"]) == (0, 0),
                   timeout=10, message="the retried entry settled")
    finally:
        again.close()
        central.close()


def test_the_change_listener_starts_even_when_the_first_catch_up_fails(
        tmp_path: Path, link: tuple[str, LinkProxy], monkeypatch: pytest.MonkeyPatch) -> None:
    _, proxy = link
    offline_island(tmp_path, link, "siberut-port", H3000003=HANS).close()
    proxy.restore()
    real_drain, calls = Island.drain, {"n": 0}

    def fails_first(self: Island) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the first catch-up after the start failed")
        return real_drain(self)

    monkeypatch.setattr(Island, "drain", fails_first)
    again = open_station(tmp_path, "siberut-port", island_url(link), replica=True, background=True)
    try:
        wait_until(lambda: again.sync_status()["outbox_pending"] == 0, timeout=30,
                   message="the listener caught up and drained after the loader's failure")
        assert calls["n"] >= 2 and again.storage.subject_info("H3000003") is not None
    finally:
        again.close()


def test_an_enrolment_erased_offline_while_the_drain_waits_is_never_uploaded(
        tmp_path: Path, link: tuple[str, LinkProxy], monkeypatch: pytest.MonkeyPatch) -> None:
    _, proxy = link
    island = offline_island(tmp_path, link, "siberut-port", H3000003=HANS)
    try:
        replica = island.island.replica
        read_before_the_erasure = replica.entries()  # what the drain read before it waited for the write lock
        island.delete_subject("H3000003", "erasure request")  # offline: the pending enrolment is cancelled
        real_entries = replica.entries

        def stale_once(*args: object, **kwargs: object) -> list[OutboxEntry]:
            if not args and not kwargs and read_before_the_erasure:
                return [read_before_the_erasure.pop()]
            return real_entries(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(replica, "entries", stale_once)
        proxy.restore()
        wait_until(lambda: island.island.last_drain, timeout=30, message="the drain went over the stale entry")
        assert island.storage.subject_info("H3000003") is None, "the acknowledged erasure holds"
        assert [(e.state, e.outcome) for e in real_entries(("cancelled", "stored"))] == \
            [("cancelled", "erased before upload")]
    finally:
        island.close()


def test_an_online_enrolment_whose_commit_answer_is_lost_is_not_reviewed_against_itself(
        tmp_path: Path, link: tuple[str, LinkProxy], monkeypatch: pytest.MonkeyPatch) -> None:
    """The link drops during the register's COMMIT of an online enrolment: the register holds it, the station was
    never told. The station enrols it provisionally under the same upload; at the drain it is recognised (not
    stored twice, not held for an officer as a duplicate of itself), and the station's audit chain does not fork."""
    url, proxy = link
    island = open_station(tmp_path, "rokot-airport", island_url(link), replica=True)
    register = island.storage
    real = register.transaction
    lost = {"n": 0}
    enrolling = threading.get_ident()  # the station's background threads (shipping, sync) write too: not theirs

    @contextlib.contextmanager
    def commit_then_lose_the_answer() -> Iterator[object]:
        if lost["n"] or threading.get_ident() != enrolling:
            with real() as tx:
                yield tx
            return
        with island.gallery.apply_lock:  # the station's sync waits: the link is down before it can look
            with real() as tx:
                yield tx
            lost["n"] += 1
            proxy.cut()  # the link is down from the COMMIT on: the station's sync cannot learn of it either
        raise RegisterUnavailable("connection lost during COMMIT (test)")

    try:
        monkeypatch.setattr(register, "transaction", commit_then_lose_the_answer)
        hans = island.enrol("H3000003", SubjectInfo(name="Hans"), [HANS])
        monkeypatch.undo()
        assert lost["n"] == 1 and hans.enrolled and hans.provisional
        proxy.restore()
        wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=30, message="the outbox drained")
        assert island.island.last_drain.get("again") == 1, "recognised as the enrolment the register committed"
        assert island.storage.count()[0] == 1 and not island.list_reviews(), "stored once, no review of itself"
        wait_until(lambda: island.sync_status()["provisional"] == 0, timeout=10, message="provisional no more")
        assert island.verify("H3000003", [HANS]).match
        island.delete_subject("H3000003", "erasure request")  # the chain goes on: another change and its record
        chain_verifies(tmp_path, register_chain(tmp_path, url, "rokot-airport"))
    finally:
        island.close()


def test_an_online_enrolment_whose_lost_commit_the_sync_saw_first_is_answered_enrolled(
        tmp_path: Path, link: tuple[str, LinkProxy], monkeypatch: pytest.MonkeyPatch) -> None:
    """The other order of the race above: the register commits, the station's sync applies the change before the
    lost answer sends the enrolment offline. It is the enrolment itself (its template ids): answered enrolled, not
    "already enrolled" (as it was, seen in CI), and not provisional; nothing queued, nothing reviewed."""
    url, proxy = link
    island = open_station(tmp_path, "rokot-airport", island_url(link), replica=True)
    register = island.storage
    real = register.transaction
    lost = {"n": 0}
    enrolling = threading.get_ident()

    @contextlib.contextmanager
    def commit_sync_then_lose_the_answer() -> Iterator[object]:
        if lost["n"] or threading.get_ident() != enrolling:
            with real() as tx:
                yield tx
            return
        with real() as tx:
            yield tx
        lost["n"] += 1
        island.catch_up()  # what the listener does on the register's notification, before the answer is lost
        proxy.cut()
        raise RegisterUnavailable("connection lost during COMMIT (test)")

    try:
        monkeypatch.setattr(register, "transaction", commit_sync_then_lose_the_answer)
        hans = island.enrol("H3000003", SubjectInfo(name="Hans"), [HANS])
        monkeypatch.undo()
        assert lost["n"] == 1 and hans.enrolled and not hans.provisional
        assert island.sync_status()["outbox_pending"] == 0 and island.sync_status()["provisional"] == 0
        with pytest.raises(SubjectExists):  # a second enrolment of the number is still refused
            island.enrol("H3000003", SubjectInfo(name="Hans"), [HANS])
        proxy.restore()
        wait_until(lambda: island.sync_status()["register_connected"], timeout=30, message="the link is back")
        assert island.storage.count()[0] == 1 and not island.list_reviews(), "stored once, no review of itself"
        assert island.verify("H3000003", [HANS]).match
        island.delete_subject("H3000003", "erasure request")
        chain_verifies(tmp_path, register_chain(tmp_path, url, "rokot-airport"))
    finally:
        island.close()


def test_an_island_that_reaches_a_register_too_new_for_it_in_the_background_pauses_enrolment_once(
        tmp_path: Path, link: tuple[str, LinkProxy], caplog: pytest.LogCaptureFixture) -> None:
    """Started offline from its replica, the island first reaches the register after it was upgraded past this
    version: it does not load it, says so once at ERROR (not a traceback every retry), and refuses enrolments,
    which it could never upload; verification goes on from its copy."""
    import logging

    import psycopg

    url, proxy = link
    open_station(tmp_path, "sikakap-port", island_url(link), replica=True).close()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    proxy.cut()
    caplog.set_level(logging.ERROR)
    island = open_station(tmp_path, "sikakap-port", island_url(link), replica=True, background=True)
    try:
        proxy.restore()
        wait_until(lambda: island.sync_status()["register_refused"], timeout=30, message="the register refused it")
        time.sleep(1.5)  # several retries (every 0.2 s in these tests)
        said = [r for r in caplog.records if "the register refuses this station" in r.getMessage()]
        assert len(said) == 1 and not island.sync_status()["register_connected"]
        with pytest.raises(OfflineLimitReached, match="refuses this station"):
            island.enrol("H3000003", SubjectInfo(name="Hans"), [HANS])
    finally:
        island.close()
