"""An island station keeps working when its link to the register drops (a real TCP proxy cuts it), and syncs when
it returns: provisional enrolments uploaded once each, duplicates queued for an officer, erasures both ways."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from island_helpers import HANS, KOFI, KOFI_2, MEGAWATI, MEGAWATI_2, go_offline, open_station
from pg import fresh_database
from waiting import wait_until

from benchmarks.linkcut import LinkProxy
from biometrics.errors import OfflineLimitReached
from biometrics.island import OfflinePolicy
from biometrics.replica import OUTBOX_REVIEW, OUTBOX_STORED
from biometrics.types import SubjectInfo

pytestmark = pytest.mark.slow


@pytest.fixture
def link(tmp_path: Path) -> Iterator[tuple[str, LinkProxy]]:
    """(the register's URL, a proxy to it whose link the test cuts)."""
    with fresh_database() as url, LinkProxy.to_url(url) as proxy:
        yield url, proxy


def island_url(link: tuple[str, LinkProxy]) -> str:
    url, proxy = link
    return proxy.url(url)


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
    island = open_station(tmp_path, "sikakap-port", island_url(link), replica=True)
    try:
        go_offline(island, proxy)
        assert island.enrol("H3000003", SubjectInfo(name="Hans"), [HANS]).provisional
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
    island = open_station(tmp_path, "siberut-port", island_url(link), replica=True)
    assert island.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
    go_offline(island, proxy)
    assert island.enrol("H3000003", SubjectInfo(name="Hans"), [HANS]).provisional
    island.close()
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
