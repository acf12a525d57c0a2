"""Reviews of island uploads against what the register does meanwhile: a document number waiting for an officer
is claimed (no other enrolment takes it, and withdrawing the upload never withdraws another subject)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from island_helpers import KOFI, KOFI_2, MEGAWATI, MEGAWATI_2, go_offline, open_station, sample
from pg import fresh_database
from waiting import wait_until

from benchmarks.linkcut import LinkProxy
from biometrics.decisions import PROCEED, SEE_OFFICER, SEE_OFFICER_MESSAGE, verification_outcome
from biometrics.errors import ReviewConflict, ReviewReturned, SubjectExists, SubjectNotFound
from biometrics.replica import OUTBOX_REJECTED, OUTBOX_REVIEW, OUTBOX_STORED
from biometrics.service import CheckpointService
from biometrics.types import Actor, Review, SubjectInfo

pytestmark = pytest.mark.slow

KOFI_3 = sample("Kofi_Annan_0002.jpg")


@pytest.fixture
def register() -> Iterator[str]:
    """The URL of a fresh register."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def stations(tmp_path: Path, register: str) -> Iterator[tuple[CheckpointService, CheckpointService, LinkProxy]]:
    """(the central office, an island station, the island's link)."""
    with LinkProxy.to_url(register) as proxy:
        central = open_station(tmp_path, "central-office", register, replica=False)
        island = open_station(tmp_path, "siberut-port", proxy.url(register), replica=True)
        try:
            yield central, island, proxy
        finally:
            island.close()
            central.close()


def drained(island: CheckpointService) -> None:
    wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=60, message="the outbox drained")


def kofi_in_review(central: CheckpointService, island: CheckpointService, proxy: LinkProxy, *,
                   watchlist: bool = False) -> Review:
    """Kofi enrolled offline at the island as K4000004 while the office enrols him as K5000005: the island's
    upload waits for an officer, K5000005 its candidate."""
    go_offline(island, proxy)
    assert island.enrol("K4000004", SubjectInfo(name="Kofi at Siberut"), [KOFI_2]).provisional
    assert central.enrol("K5000005", SubjectInfo(name="Kofi at the office", watchlist=watchlist), [KOFI]).enrolled
    proxy.restore()
    drained(island)
    (review,) = central.list_reviews()
    assert review.subject_id == "K4000004" and [c.subject_id for c in review.candidates] == ["K5000005"]
    return review


def outbox(island: CheckpointService, subject_id: str) -> tuple[str, str]:
    """(state, outcome) of the island's uploaded enrolment of ``subject_id``."""
    ref = island.storage.keyring.pseudonym(subject_id)
    (entry,) = [e for e in island.island.replica.entries((OUTBOX_STORED, OUTBOX_REVIEW, OUTBOX_REJECTED))
                if e.ref == ref]
    return entry.state, entry.outcome


def test_a_document_number_waiting_for_review_is_not_enrolled_online(
        stations: tuple[CheckpointService, CheckpointService, LinkProxy]) -> None:
    central, island, proxy = stations
    review = kofi_in_review(central, island, proxy)

    # Another traveller presented under that document number at the office: refused, not stored.
    with pytest.raises(SubjectExists, match="waits for an officer's review"):
        central.enrol("K4000004", SubjectInfo(name="Megawati"), [MEGAWATI])
    assert not central.holds("K4000004")

    central.resolve_review(review.review_id, "reject", "not the traveller of this document")
    wait_until(lambda: not island.holds("K4000004") and island.sync_status()["provisional"] == 0, timeout=10,
               message="the island withdrew its copy")
    assert outbox(island, "K4000004") == (OUTBOX_REJECTED, "rejected at review")
    # The number is free again; the office's enrolment reaches every station and stays there.
    assert central.enrol("K4000004", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
    wait_until(lambda: island.holds("K4000004"), timeout=10, message="the island has the office's subject")
    assert central.verify("K4000004", [MEGAWATI_2]).match
    assert island.verify("K4000004", [MEGAWATI_2]).match


Islands = tuple[CheckpointService, tuple[CheckpointService, LinkProxy], tuple[CheckpointService, LinkProxy]]


@pytest.fixture
def both_in_review(tmp_path: Path, register: str) -> Iterator[Islands]:
    """(the central office, (island A, its link), (island B, its link)): both islands enrolled K4000004 offline
    (Kofi at A, Megawati at B) while the office enrolled Kofi as K5000005; both uploads wait for an officer (A's a
    possible duplicate, B's behind A's claim on the number)."""
    with LinkProxy.to_url(register) as proxy_a, LinkProxy.to_url(register) as proxy_b:
        central = open_station(tmp_path, "central-office", register, replica=False)
        island_a = open_station(tmp_path, "siberut-port", proxy_a.url(register), replica=True)
        island_b = open_station(tmp_path, "sikakap-port", proxy_b.url(register), replica=True)
        try:
            go_offline(island_a, proxy_a)
            go_offline(island_b, proxy_b)
            assert island_a.enrol("K4000004", SubjectInfo(name="Kofi at Siberut"), [KOFI_2]).provisional
            assert island_b.enrol("K4000004", SubjectInfo(name="Megawati at Sikakap"), [MEGAWATI]).provisional
            assert central.enrol("K5000005", SubjectInfo(name="Kofi at the office"), [KOFI]).enrolled
            proxy_a.restore()
            drained(island_a)
            proxy_b.restore()
            drained(island_b)
            yield central, (island_a, proxy_a), (island_b, proxy_b)
        finally:
            island_b.close()
            island_a.close()
            central.close()


def test_withdrawing_one_upload_never_withdraws_another_subject_under_its_number(both_in_review: Islands
                                                                                 ) -> None:
    """Two islands enrol one document number offline (two travellers): the second upload waits for an officer
    too; rejecting one upload withdraws that upload alone, wherever the number is held."""
    central, (island_a, _), (island_b, _) = both_in_review
    reviews = {r.station: r for r in central.list_reviews()}
    assert set(reviews) == {"siberut-port", "sikakap-port"}, "B's upload is not stored over A's review"
    assert not central.holds("K4000004")

    central.resolve_review(reviews["siberut-port"].review_id, "reject", "not the holder of that document")
    wait_until(lambda: not island_a.holds("K4000004") and island_a.sync_status()["provisional"] == 0,
               timeout=10, message="A withdrew its copy")
    assert outbox(island_a, "K4000004") == (OUTBOX_REJECTED, "rejected at review")
    # B's copy and its review are untouched by A's withdrawal.
    assert island_b.holds("K4000004") and island_b.sync_status()["provisional"] == 1
    assert outbox(island_b, "K4000004") == (OUTBOX_REVIEW, "review")

    central.resolve_review(reviews["sikakap-port"].review_id, "keep_both", "two people: the other holds that document")
    for station in (central, island_a, island_b):
        wait_until(lambda s=station: s.holds("K4000004"), timeout=10, message="K4000004 everywhere")
        assert station.verify("K4000004", [MEGAWATI_2]).match
    wait_until(lambda: outbox(island_b, "K4000004") == (OUTBOX_STORED, "kept at review"), timeout=10,
               message="B's entry settled as kept")
    assert outbox(island_a, "K4000004") == (OUTBOX_REJECTED, "rejected at review"), \
        "B's enrolment under the number is not A's entry being kept"
    assert island_a.sync_status()["provisional"] == 0 and island_b.sync_status()["provisional"] == 0


@pytest.mark.parametrize("resolution", ["reject", "link"])
def test_a_review_whose_number_the_register_took_is_never_withdrawn_from_it(tmp_path: Path, register: str,
                                                                          resolution: str) -> None:
    """The office enrolled the number while the island's upload was still waiting to be sent: the upload waits for
    an officer, keep both is refused, and rejecting it (or linking it to the holder: the same person) leaves the
    office's subject everywhere, also when the island restarted meanwhile (its copy of the number is the
    register's, not its own provisional one); the upload is never counted as kept, since nothing was stored."""
    with LinkProxy.to_url(register) as proxy:
        central = open_station(tmp_path, "central-office", register, replica=False)
        island = open_station(tmp_path, "siberut-port", proxy.url(register), replica=True)
        try:
            go_offline(island, proxy)
            assert island.enrol("K4000004", SubjectInfo(name="Kofi at Siberut"), [KOFI_2]).provisional
            assert central.enrol("K4000004", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
            proxy.restore()
            drained(island)
            island.close()
            island = open_station(tmp_path, "siberut-port", proxy.url(register), replica=True)
            assert island.sync_status()["provisional"] == 0, "the copy held is the register's"
            kiosk = Actor(role="kiosk", identity="kiosk-1")
            assert verification_outcome(island.verify("K4000004", [MEGAWATI_2], actor=kiosk)).decision == PROCEED

            (review,) = central.list_reviews()
            with pytest.raises(ReviewConflict, match="enrolled in the register already"):
                central.resolve_review(review.review_id, "keep_both", "two people")
            central.resolve_review(review.review_id, resolution, "the number is Megawati's")
            wait_until(lambda: outbox(island, "K4000004")[0] == OUTBOX_REJECTED, timeout=10,
                       message="the island's entry rejected")
            uploads = {e.upload_id for e in island.island.replica.entries((OUTBOX_REJECTED,))}
            assert uploads and not central.island.reviews.kept(uploads), "nothing stored: not kept"
            for station in (central, island):
                assert station.holds("K4000004") and station.verify("K4000004", [MEGAWATI_2]).match
            assert central.storage.get_subject("K4000004").info.name == "Megawati"
        finally:
            island.close()
            central.close()


def test_an_enrolment_made_while_a_review_waits_is_searched_against_it(
        stations: tuple[CheckpointService, CheckpointService, LinkProxy]) -> None:
    """Pending reviews are in no gallery: the office's enrolment searches them too, and a review is searched again
    when it is resolved, so one person never ends with two identities no officer was shown side by side."""
    central, island, proxy = stations
    review = kofi_in_review(central, island, proxy)
    central.delete_subject("K5000005", "erasure request")  # the review's only candidate leaves it
    assert not central.list_reviews()[0].candidates

    # The same man at the office under a third document: held, the review named as his possible duplicate.
    held = central.enrol("K6000006", SubjectInfo(name="Kofi"), [KOFI_3])
    assert not held.enrolled and [c.subject_id for c in held.possible_duplicates] == ["K4000004"]
    assert central.enrol("K6000006", SubjectInfo(name="Kofi"), [KOFI_3], allow_duplicate=True,
                         override_reason="the desk overrode it").enrolled

    # Resolving the review searches it again: K6000006 was never shown with it, so it is not resolved.
    with pytest.raises(ReviewReturned, match="K6000006"):
        central.resolve_review(review.review_id, "keep_both", "no candidate left: a new person")
    assert not central.holds("K4000004")
    (again,) = central.list_reviews()
    assert again.review_id == review.review_id and [c.subject_id for c in again.candidates] == ["K6000006"]

    central.resolve_review(review.review_id, "link", "one man, two documents: checked at the desk")
    wait_until(lambda: central.holds("K4000004") and island.sync_status()["provisional"] == 0, timeout=10,
               message="the linked enrolment reached every station")
    ring = central.storage.keyring
    assert central.island.reviews.linked(ring.pseudonym("K4000004")) == {ring.pseudonym("K6000006")}


def test_an_upload_is_searched_against_the_reviews_waiting(
        stations: tuple[CheckpointService, CheckpointService, LinkProxy]) -> None:
    central, island, proxy = stations
    kofi_in_review(central, island, proxy)
    central.delete_subject("K5000005", "erasure request")
    go_offline(island, proxy)
    # The island's desk overrides its own possible duplicate (its provisional K4000004) offline.
    assert island.enrol("K7000007", SubjectInfo(name="Kofi"), [KOFI_3], allow_duplicate=True,
                        override_reason="the traveller insists").provisional
    proxy.restore()
    drained(island)
    waiting = {r.subject_id: [c.subject_id for c in r.candidates] for r in central.list_reviews()}
    assert waiting == {"K4000004": [], "K7000007": ["K4000004"]}, "the upload waits, the review its candidate"
    assert not central.holds("K7000007")


def test_an_island_kiosk_sends_a_traveller_whose_enrolment_is_in_review_to_an_officer(
        stations: tuple[CheckpointService, CheckpointService, LinkProxy]) -> None:
    """The island's enrolment waits for review as a possible duplicate of a watchlisted person: its kiosks no longer
    let the traveller through on it (the same answer as any other SEE_OFFICER), and the decision is audited."""
    central, island, proxy = stations
    review = kofi_in_review(central, island, proxy, watchlist=True)
    kiosk = Actor(role="kiosk", identity="kiosk-1")
    seen = island.verify("K4000004", [KOFI_3], actor=kiosk)
    assert seen.match and verification_outcome(seen).decision == SEE_OFFICER, "not PROCEED on an unsettled identity"
    assert seen.in_review
    assert verification_outcome(seen).message == SEE_OFFICER_MESSAGE
    (audited,) = [e for e in map(json.loads, island.alert_store.audit_entries())
                  if e.get("decision_id") == seen.decision_id]
    assert audited["fields"]["in_review"] is True and audited["fields"]["match"] is True

    central.resolve_review(review.review_id, "keep_both", "two people: checked at the desk")
    wait_until(lambda: island.sync_status()["provisional"] == 0, timeout=10, message="settled at the island")
    after = island.verify("K4000004", [KOFI_3], actor=Actor(role="officer", identity="desk-1"))  # kiosk: used up
    assert not after.in_review and verification_outcome(after).decision == PROCEED


def test_an_offline_erasure_closes_its_own_review_never_another_islands(both_in_review: Islands) -> None:
    """Two islands' uploads of one document number wait for an officer; the first island erases its enrolment
    offline: its upload's review closes, the other island's review, copy and entry are untouched."""
    central, (island_a, proxy_a), (island_b, _) = both_in_review
    assert {r.station for r in central.list_reviews()} == {"siberut-port", "sikakap-port"}

    go_offline(island_a, proxy_a)
    island_a.delete_subject("K4000004", "erasure request")
    proxy_a.restore()
    drained(island_a)
    wait_until(lambda: {r.station for r in central.list_reviews()} == {"sikakap-port"}, timeout=10,
               message="A's review closed")
    assert island_b.holds("K4000004") and island_b.sync_status()["provisional"] == 1
    assert outbox(island_b, "K4000004") == (OUTBOX_REVIEW, "review")
    (review,) = central.list_reviews()
    central.resolve_review(review.review_id, "keep_both", "two people: the other holds that document")
    for station in (central, island_b):
        wait_until(lambda s=station: s.holds("K4000004"), timeout=10, message="B's enrolment stored")
        assert station.verify("K4000004", [MEGAWATI_2]).match


@pytest.mark.parametrize("resolution", ["reject", "keep_both"])
def test_a_review_resolved_while_the_island_missed_its_upload_settlement_reaches_the_island(
        stations: tuple[CheckpointService, CheckpointService, LinkProxy], monkeypatch: pytest.MonkeyPatch,
        resolution: str) -> None:
    """The register takes the island's upload into review, and the island's link drops before it settles its
    entry; an officer resolves the review meanwhile. Back online, the island catches up (its entry still pending,
    the change hook passes over it), then its drain recognises the upload: it takes the resolution, not the
    upload's first outcome: rejected, the island's copy leaves; kept, it is provisional no more."""
    central, island, proxy = stations
    go_offline(island, proxy)
    assert island.enrol("K4000004", SubjectInfo(name="Kofi at Siberut"), [KOFI_2]).provisional
    assert central.enrol("K5000005", SubjectInfo(name="Kofi at the office"), [KOFI]).enrolled
    replica = island.island.replica
    real_settle, calls = replica.settle, []

    def link_drops_before_the_settlement(*args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            proxy.cut()
            raise RuntimeError("the link dropped between the register's commit and the island's settlement")
        real_settle(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(replica, "settle", link_drops_before_the_settlement)
    proxy.restore()
    wait_until(lambda: calls, timeout=30, message="the upload reached the register")
    wait_until(lambda: not island.sync_status()["register_connected"], timeout=15, message="the island is offline")
    (review,) = central.list_reviews()
    central.resolve_review(review.review_id, resolution, "decided at the office while the island was away")
    proxy.restore()
    wait_until(lambda: island.sync_status()["outbox_pending"] == 0 and island.sync_status()["provisional"] == 0,
               timeout=30, message="the island took the resolution")
    if resolution == "reject":
        assert not island.holds("K4000004") and outbox(island, "K4000004")[0] == OUTBOX_REJECTED
    else:
        assert island.holds("K4000004") and central.holds("K4000004")
        assert outbox(island, "K4000004")[0] == OUTBOX_STORED and not island.island.in_review("K4000004")



def rejected_as_the_island_dies(tmp_path: Path, register: str, with_withdrawals: bool) -> None:
    """Kofi's upload in review (:func:`kofi_in_review`) is rejected at the office; its ``withdrawn`` change reaches
    the island, whose process dies (a power cut: simulated by failing the change hook for good) right after its
    copy has followed the page (``with_withdrawals``: as this version follows it; else without the page's
    withdrawals, as an older version committed them apart). Restarted, the island no longer holds the rejected
    enrolment: its entry is rejected and Verify answers NOT_FOUND."""
    with LinkProxy.to_url(register) as proxy:
        central = open_station(tmp_path, "central-office", register, replica=False)
        island = open_station(tmp_path, "siberut-port", proxy.url(register), replica=True)
        try:
            review = kofi_in_review(central, island, proxy)
            replica, cuts = island.island.replica, []
            real_follow = replica.follow

            def power_cut_after_the_page(changes: object, generation: str = "", kept: object = frozenset(),
                                         **withdrawals: object) -> object:
                real_follow(changes, generation, kept, **(withdrawals if with_withdrawals else {}))  # type: ignore
                cuts.append(1)
                raise RuntimeError("power cut right after the copy followed the page")

            replica.follow = power_cut_after_the_page  # type: ignore[method-assign]
            central.resolve_review(review.review_id, "reject", "same traveller, second passport fraudulent")
            wait_until(lambda: cuts, timeout=15, message="the island followed the withdrawal")
        finally:
            island.close()
        island = open_station(tmp_path, "siberut-port", proxy.url(register), replica=True)  # restarted
        try:
            wait_until(lambda: not island.holds("K4000004"), timeout=15, message="the rejected copy left")
            assert outbox(island, "K4000004")[0] == OUTBOX_REJECTED and island.sync_status()["provisional"] == 0
            with pytest.raises(SubjectNotFound):
                island.verify("K4000004", [KOFI_3])
        finally:
            island.close()
            central.close()


def test_a_withdrawal_survives_a_crash_right_after_the_island_follows_it(tmp_path: Path, register: str) -> None:
    """The withdrawal commits with the copy's move past it (before, the copy committed first, and a crash in
    between left the rejected enrolment at the island, verified, for good)."""
    rejected_as_the_island_dies(tmp_path, register, with_withdrawals=True)


def test_a_withdrawal_an_older_island_lost_in_a_crash_is_made_at_its_next_drain(tmp_path: Path,
                                                                               register: str) -> None:
    """An island of an older version that died between its copy's commit and the withdrawal: restarted, its first
    drain reads the register's review of each upload it still holds under review, and withdraws the rejected one."""
    rejected_as_the_island_dies(tmp_path, register, with_withdrawals=False)
