"""An island's own offline erasure, uploaded, never takes away the enrolment of the same document it made after it
(an officer erased the subject, then enrolled the document again, both at the island while its link was down):
the erasure precedes the re-enrolment in the station's own order, so its change in the register leaves the
island's provisional copy in place, in memory and in the replica, whatever becomes of the re-enrolment's upload
(stored, cut off by the link, held for review). An erasure made elsewhere after the re-enrolment still wins.
Real faces, real PostgreSQL, the island's link cut by a real TCP proxy (:mod:`benchmarks.linkcut`)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from island_helpers import KOFI, KOFI_2, MEGAWATI, MEGAWATI_2, go_offline, open_station
from pg import fresh_database
from waiting import wait_until

from benchmarks.linkcut import LinkProxy
from biometrics.crypto import KeyRing
from biometrics.errors import RegisterUnavailable, SubjectExists, SubjectNotFound
from biometrics.replica import OutboxEntry
from biometrics.service import CheckpointService
from biometrics.types import Actor, SubjectInfo

pytestmark = pytest.mark.slow

A1 = "A1000001"
OFFICER = Actor(role="officer", identity="CN=Siti,OU=officer")
KIOSK = Actor(role="kiosk", identity="CN=kiosk-arr,OU=kiosk", extra={"common_name": "kiosk-arr"})


@pytest.fixture
def link() -> Iterator[tuple[str, LinkProxy]]:
    """(the register's URL, a proxy to it whose link the test cuts)."""
    with fresh_database() as url, LinkProxy.to_url(url) as proxy:
        yield url, proxy


@pytest.fixture
def stations(tmp_path: Path, link: tuple[str, LinkProxy]) -> Iterator[tuple[CheckpointService, CheckpointService]]:
    """(station "central" on the register, island "siberut" through the link proxy); both closed afterwards."""
    url, proxy = link
    central = open_station(tmp_path, "central", url, replica=False)
    island = open_station(tmp_path, "siberut", proxy.url(url), replica=True)
    try:
        yield central, island
    finally:
        island.close()
        central.close()


def erased_and_enrolled_again(central: CheckpointService, island: CheckpointService, proxy: LinkProxy,
                              **enrol: Any) -> None:
    """The register holds Megawati under A1; offline, the island's officer erases her, then enrols A1 again
    (Megawati's other photo unless ``enrol`` says otherwise): acknowledged as provisional."""
    assert central.enrol(A1, SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
    wait_until(lambda: island.holds(A1), timeout=10, message="the island has the register")
    go_offline(island, proxy)
    island.delete_subject(A1, "erasure request at the port")
    assert not island.holds(A1)
    samples = enrol.pop("samples", [MEGAWATI_2])
    info = SubjectInfo(name=enrol.pop("name", "Megawati, enrolled again"), watchlist=enrol.pop("watchlist", False))
    assert island.enrol(A1, info, samples, **enrol).provisional
    assert island.holds(A1) and island.sync_status()["outbox_pending"] == 2


def erasure_uploaded_then(island: CheckpointService, proxy: LinkProxy, monkeypatch: pytest.MonkeyPatch,
                          what: str = "cut") -> None:
    """The link returns, the drain uploads the erasure, then (after the catch-up that applied the erasure's change)
    the re-enrolment's upload ends with ``what``: "cut", the link drops; "failed", a fault sets it aside as failed
    (retried at the next start), and the link is cut after. The drain's own upload is put back afterwards."""
    assert island.island is not None
    real = island.island._upload_enrolment

    def upload(tx: object, entry: OutboxEntry) -> tuple[str, int | None]:
        if what == "failed":
            raise ValueError("a fault in this one upload")
        proxy.cut()
        raise RegisterUnavailable("the link dropped")

    monkeypatch.setattr(island.island, "_upload_enrolment", upload)
    proxy.restore()
    wait_until(lambda: island.sync_status()["outbox_pending"] == 0 if what == "failed" else (
        island.sync_status()["outbox_pending"] == 1 and not island.sync_status()["register_connected"]),
        timeout=30, message=f"the erasure uploaded, the re-enrolment {what}")
    if what == "failed":
        assert island.sync_status()["outbox_failed"] == 1
        go_offline(island, proxy)
    monkeypatch.setattr(island.island, "_upload_enrolment", real)


def outbox(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    """The island's outbox rows, oldest first (payloads opened with the tests' key ring)."""
    ring = KeyRing.load(tmp_path / "keys" / "keyring.json")
    db = sqlite3.connect(tmp_path / name / "replica" / "replica.db")
    try:
        rows = db.execute("SELECT upload_id, kind, state, outcome, sealed FROM outbox ORDER BY n").fetchall()
        return [{"upload_id": u, "kind": k, "state": s, "outcome": o,
                 "payload": json.loads(ring.open(bytes(sealed), f"outbox|{u}".encode()))}
                for u, k, s, o, sealed in rows]
    finally:
        db.close()


def local_copy(island: CheckpointService, subject_id: str) -> str | None:
    """The name under which the island's replica holds ``subject_id`` (None: not held)."""
    assert island.island is not None and island.island.replica is not None
    held = island.island.replica.local.load_subject(island.storage.keyring.pseudonym(subject_id))
    return None if held is None else held[0].info.name


def test_the_re_enrolment_is_held_while_it_is_uploaded_after_the_erasure(
        stations: tuple[CheckpointService, CheckpointService], link: tuple[str, LinkProxy],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The drain uploads the erasure, catches up (its change arrives) and uploads the re-enrolment: at no point
    does the island stop holding the traveller it acknowledged, in memory or in its replica; the alert its kiosk
    raised on the re-enrolment (a watchlist hit) is not erased with the earlier subject."""
    central, island = stations
    erased_and_enrolled_again(central, island, link[1], watchlist=True)
    assert island.verify(A1, [MEGAWATI], actor=KIOSK).watchlist
    assert [a.subject_id for a in island.list_alerts(actor=OFFICER)] == [A1]
    assert island.island is not None
    real = island.island._upload_enrolment
    seen: list[tuple[bool, str | None]] = []

    def watched(tx: object, entry: OutboxEntry) -> tuple[str, int | None]:
        seen.append((island.holds(A1), local_copy(island, A1)))  # after the catch-up that applied the erasure
        return real(tx, entry)

    monkeypatch.setattr(island.island, "_upload_enrolment", watched)
    link[1].restore()
    wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=30, message="the outbox drained")
    assert seen == [(True, "Megawati, enrolled again")], "the erasure's change left the later enrolment in place"
    info = central.storage.subject_info(A1)
    assert info is not None and info.name == "Megawati, enrolled again"
    wait_until(lambda: central.holds(A1), timeout=10, message="the office follows")
    assert [a.subject_id for a in island.list_alerts(actor=OFFICER)] == [A1], "raised on the later enrolment"
    assert island.holds(A1) and island.verify(A1, [MEGAWATI]).match
    assert [e["state"] for e in outbox(tmp_path, "siberut")] == ["erased", "stored"]


@pytest.mark.parametrize("what", ["cut", "failed"])
def test_a_re_enrolment_not_uploaded_after_the_erasure_leaves_the_traveller_enrolled(
        tmp_path: Path, link: tuple[str, LinkProxy], monkeypatch: pytest.MonkeyPatch, what: str) -> None:
    """The erasure is uploaded, the re-enrolment is not (the link drops; or a fault sets it aside as failed): the
    island still holds A1 (Verify answers, a second enrolment of A1 is refused, offline), after a restart too; at
    the next drain the re-enrolment is stored, once, and reviewed against nothing."""
    url, proxy = link
    central = open_station(tmp_path, "central", url, replica=False)
    island = open_station(tmp_path, "siberut", proxy.url(url), replica=True)
    try:
        erased_and_enrolled_again(central, island, proxy)
        erasure_uploaded_then(island, proxy, monkeypatch, what)
        assert central.storage.subject_info(A1) is None, "the register erased the enrolment the island saw"
        assert island.holds(A1) and local_copy(island, A1) == "Megawati, enrolled again"
        assert island.sync_status()["provisional"] == 1
        assert island.verify(A1, [MEGAWATI]).match
        with pytest.raises(SubjectExists):
            island.enrol(A1, SubjectInfo(name="Megawati, a third time"), [MEGAWATI])
    finally:
        island.close()
    island = open_station(tmp_path, "siberut", proxy.url(url), replica=True)  # restarted, the link still cut
    try:
        assert island.holds(A1) and island.sync_status()["provisional"] == 1
        proxy.restore()
        wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=30, message="the outbox drained")
        info = central.storage.subject_info(A1)
        assert info is not None and info.name == "Megawati, enrolled again"
        assert central.list_reviews() == [], "not held for review against itself"
        wait_until(lambda: island.sync_status()["provisional"] == 0, timeout=10, message="settled")
        assert island.holds(A1) and island.verify(A1, [MEGAWATI]).match
        assert [e["state"] for e in outbox(tmp_path, "siberut")] == ["erased", "stored"]
    finally:
        island.close()
        central.close()


def test_a_re_enrolment_held_for_review_stays_at_the_island_until_an_officer_resolves_it(
        tmp_path: Path, link: tuple[str, LinkProxy]) -> None:
    """The re-enrolment goes to review (a possible duplicate of someone else in the register): the island keeps it,
    provisional and in review (its kiosks send the traveller to an officer), after a restart too; the officer's
    resolution reaches it as for any other review."""
    url, proxy = link
    central = open_station(tmp_path, "central", url, replica=False)
    island = open_station(tmp_path, "siberut", proxy.url(url), replica=True)
    try:
        assert central.enrol("K5000005", SubjectInfo(name="Kofi"), [KOFI]).enrolled
        erased_and_enrolled_again(central, island, proxy, samples=[KOFI_2], name="Kofi's double under A1",
                                  allow_duplicate=True, override_reason="officer checked: two people")
        proxy.restore()
        wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=30, message="the outbox drained")
        (review,) = central.list_reviews()
        assert review.subject_id == A1 and [c.subject_id for c in review.candidates] == ["K5000005"]
        assert island.holds(A1) and local_copy(island, A1) == "Kofi's double under A1"
        assert island.sync_status()["provisional"] == 1
        assert island.verify(A1, [KOFI]).in_review, "in review: the kiosk sends the traveller to an officer"
        assert [e["state"] for e in outbox(tmp_path, "siberut")] == ["erased", "review"]
        ref = island.storage.keyring.pseudonym(A1)
        assert island.island is not None and island.island.replica is not None
        assert [f for _, f, refs, _ in island.island.replica.local.audit_texts() if ref in refs.split()] == \
            ["override_reason"], "the officer's reason for the re-enrolment is not erased with the earlier subject"
        go_offline(island, proxy)
    finally:
        island.close()
    island = open_station(tmp_path, "siberut", proxy.url(url), replica=True)  # restarted, the link still cut
    try:
        assert island.holds(A1) and island.sync_status()["provisional"] == 1
        assert island.island is not None and island.island.in_review(A1)
        proxy.restore()
        wait_until(lambda: island.sync_status()["register_connected"], timeout=15, message="online again")
        central.resolve_review(review.review_id, "keep_both", "two people: checked at the desk")
        wait_until(lambda: island.sync_status()["provisional"] == 0, timeout=10, message="settled at the island")
        assert island.holds(A1) and not island.verify(A1, [KOFI]).in_review
        info = central.storage.subject_info(A1)
        assert info is not None and info.name == "Kofi's double under A1"
    finally:
        island.close()
        central.close()


def test_an_erasure_made_elsewhere_after_the_re_enrolment_still_erases_it(
        stations: tuple[CheckpointService, CheckpointService], link: tuple[str, LinkProxy],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The island's own erasure is in the register and its re-enrolment still queued when the office erases A1
    (an erasure recorded against the document, the register holding nothing of it): that erasure came after the
    re-enrolment was made, knowing nothing of it, and wins as documented: the island drops its copy and the
    upload is refused, never stored nor reviewed."""
    central, island = stations
    url, proxy = link
    erased_and_enrolled_again(central, island, proxy)
    erasure_uploaded_then(island, proxy, monkeypatch)
    assert island.holds(A1), "its own erasure left the re-enrolment in place"
    with pytest.raises(SubjectNotFound):  # the register holds nothing of A1: recorded against the document
        central.delete_subject(A1, "erasure request at the office")
    proxy.restore()
    wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=30, message="the outbox drained")
    assert not island.holds(A1) and local_copy(island, A1) is None
    assert island.sync_status()["provisional"] == 0
    assert central.storage.subject_info(A1) is None and central.list_reviews() == []
    erasure, enrolment = outbox(tmp_path, "siberut")
    assert (erasure["state"], enrolment["state"], enrolment["payload"]) == ("erased", "erased", {})
    with psycopg.connect(url) as conn:
        outcomes = dict(conn.execute("SELECT upload_id, outcome FROM uploads").fetchall())
    assert outcomes == {erasure["upload_id"]: "erased", enrolment["upload_id"]: "refused"}


def test_an_erasure_elsewhere_applied_in_the_same_page_as_the_islands_own_still_erases(
        stations: tuple[CheckpointService, CheckpointService], link: tuple[str, LinkProxy],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The island's own erasure and the office's later one reach the island in one catch-up page (the one before
    the re-enrolment's upload): the first leaves the copy, the second takes it away, and the upload is refused."""
    central, island = stations
    _, proxy = link
    erased_and_enrolled_again(central, island, proxy)
    assert island.island is not None and island._listener is not None
    island._listener.stop()  # nothing applies the island's own erasure before the drain's next catch-up
    real_upload, real_keeps, pages = island.island._upload, island.island.keeps, []

    def upload(entry: OutboxEntry) -> tuple[str, str]:
        if entry.kind == "enrol":  # the erasure is in the register; the office erases A1 too (nothing held)
            with pytest.raises(SubjectNotFound):
                central.delete_subject(A1, "erasure request at the office")
        return real_upload(entry)

    def keeps(changes: list[Any]) -> frozenset[int]:
        kept = real_keeps(changes)
        pages.append(([c.kind for c in changes], len(kept)))
        return kept

    monkeypatch.setattr(island.island, "_upload", upload)
    monkeypatch.setattr(island.gallery, "keeps", keeps)
    proxy.restore()
    island.sync()
    assert pages == [(["erased", "erased"], 1)], "one page: the island's own erasure kept, the office's not"
    assert not island.holds(A1) and local_copy(island, A1) is None
    assert island.sync_status()["provisional"] == 0 and island.sync_status()["outbox_pending"] == 0
    assert central.storage.subject_info(A1) is None and central.list_reviews() == []
    assert [e["state"] for e in outbox(tmp_path, "siberut")] == ["erased", "erased"]
