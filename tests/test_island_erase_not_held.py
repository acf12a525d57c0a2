"""An erasure asked for at an island working offline, of a document the island does not hold (the register may
have enrolled it after the link dropped): queued with its audit record, the officer told it is queued (never "not
enrolled"), and uploaded it erases the enrolment of that document the register held when it was asked, never one
made after. Real faces, real PostgreSQL, the island's link cut by a real TCP proxy (:mod:`benchmarks.linkcut`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
import pytest
from island_helpers import KOFI, MEGAWATI, MEGAWATI_2, go_offline, office_and_island, open_station
from pg import fresh_database
from waiting import wait_until

from benchmarks.linkcut import LinkProxy
from biometrics.errors import SubjectNotFound
from biometrics.replica import OUTBOX_ERASED, OUTBOX_SUPERSEDED
from biometrics.service import CheckpointService
from biometrics.types import Actor, SubjectInfo

pytestmark = pytest.mark.slow

A1 = "A1000001"
OFFICER = Actor(role="officer", identity="CN=Siti,OU=officer")
KIOSK = Actor(role="kiosk", identity="CN=kiosk-arr,OU=kiosk", extra={"common_name": "kiosk-arr"})
Linked = tuple[CheckpointService, LinkProxy]


def records(station: CheckpointService, kind: str) -> list[dict]:
    """The station's own audit records of ``kind``."""
    assert station.decision_log is not None
    entries = (json.loads(e) for _, _, _, e in station.decision_log.storage.audit_rows(-1, 100_000))
    return [e for e in entries if e.get("kind") == kind]


def ask_offline(island: CheckpointService) -> None:
    """The island's officer asks, offline, to erase A1, which the island does not hold: told it is queued."""
    with pytest.raises(SubjectNotFound) as refused:
        island.delete_subject(A1, "erasure request of the traveller at the port", actor=OFFICER)
    said = str(refused.value)
    assert "offline" in said and "queued" in said and "No subject is enrolled" not in said
    assert island.sync_status()["outbox_pending"] == 1
    assert records(island, "delete")[-1]["fields"]["outcome"] == "queued_not_held"


def asked_and_uploaded(central: CheckpointService, island: CheckpointService, proxy: LinkProxy,
                       enrolled: str) -> str:
    """The island's officer asks, offline, to erase A1 (:func:`ask_offline`), which the office enrols (Megawati)
    ``enrolled`` "before" or "after" the request, or "never"; the link returns and the outbox drains. Returns the
    outcome of the island's audit record of the upload."""
    go_offline(island, proxy)
    for when in ("before", "after"):
        if when == "after":
            ask_offline(island)
        if enrolled == when:
            assert central.enrol(A1, SubjectInfo(name="Megawati"), [MEGAWATI], actor=OFFICER).enrolled
    proxy.restore()
    wait_until(lambda: island.sync_status()["register_connected"] and island.sync_status()["outbox_pending"] == 0,
               timeout=30, message="the island drained its outbox")
    return str(records(island, "delete_upload")[-1]["fields"]["outcome"])


def test_an_offline_erasure_of_a_document_enrolled_at_the_register_meanwhile_erases_it(tmp_path: Path) -> None:
    with fresh_database() as url, office_and_island(tmp_path, url) as (central, island, proxy):
        assert asked_and_uploaded(central, island, proxy, "before") == "erased"
        wait_until(lambda: not island.holds(A1), timeout=15, message="the erasure reached the island")
        assert central.storage.subject_info(A1) is None  # the register; the office's gallery follows its log
        wait_until(lambda: not central.holds(A1), timeout=15, message="the office applied the erasure")
        with pytest.raises(SubjectNotFound):
            island.verify(A1, [MEGAWATI_2], actor=KIOSK)
        assert [e.state for e in island.island.replica.entries((OUTBOX_ERASED,))] == [OUTBOX_ERASED]


def test_an_offline_erasure_never_erases_an_enrolment_made_after_it(tmp_path: Path) -> None:
    with fresh_database() as url, office_and_island(tmp_path, url) as (central, island, proxy):
        assert asked_and_uploaded(central, island, proxy, "after") == "superseded"
        wait_until(lambda: island.holds(A1), timeout=15, message="the island follows the register")
        assert central.storage.subject_info(A1) is not None
        assert island.verify(A1, [MEGAWATI_2], actor=KIOSK).match
        assert [e.state for e in island.island.replica.entries((OUTBOX_SUPERSEDED,))] == [OUTBOX_SUPERSEDED]


def test_an_offline_erasure_of_a_document_the_register_never_held_is_recorded_against_it(tmp_path: Path) -> None:
    with fresh_database() as url, office_and_island(tmp_path, url) as (central, island, proxy):
        assert asked_and_uploaded(central, island, proxy, "never") == "recorded_against_document"
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT kind FROM changes WHERE ref = %s", (island.storage.keyring.pseudonym(A1),)
                                ).fetchall() == [("erased",)]


@contextmanager
def islands(tmp_path: Path, url: str, *names: str) -> Iterator[tuple[CheckpointService, list[Linked]]]:
    """(station "central" on the register at ``url``, [(island, its link proxy) for each of ``names``, online])."""
    with ExitStack() as stack:
        central = open_station(tmp_path, "central", url, replica=False)
        stack.callback(central.close)
        linked = []
        for name in names:
            proxy = stack.enter_context(LinkProxy.to_url(url))
            island = open_station(tmp_path, name, proxy.url(url), replica=True)
            stack.callback(island.close)
            wait_until(lambda i=island: i.sync_status()["register_connected"], timeout=15, message=f"{name} online")
            linked.append((island, proxy))
        yield central, linked


def drained(island: CheckpointService) -> None:
    wait_until(lambda: island.sync_status()["register_connected"] and island.sync_status()["outbox_pending"] == 0,
               timeout=30, message="the island drained its outbox")


@pytest.mark.parametrize("missed", [False, True])
def test_an_offline_erasure_that_closes_a_review_withdraws_that_islands_copy_and_no_later_one(
        tmp_path: Path, missed: bool) -> None:
    """Island B's offline enrolment of A1 waits for review; offline island A is asked to erase A1 (not held);
    island C enrols A1 offline after the request, its upload waits for review too. A's erasure uploaded: B's
    review is closed and B withdraws its copy (Verify NOT_FOUND there); C's review and copy stay. ``missed``: B
    follows the change log without its withdrawals (as an older version that died between two commits did): its
    next drain withdraws the copy, from the review's state."""
    with fresh_database() as url, islands(tmp_path, url, "siberut", "sikakap", "mentawai") as (central, linked):
        (island_a, proxy_a), (island_b, proxy_b), (island_c, proxy_c) = linked
        for island, proxy in linked:
            go_offline(island, proxy)
        assert central.enrol("K5000005", SubjectInfo(name="Megawati at the office"), [MEGAWATI]).enrolled
        assert island_b.enrol(A1, SubjectInfo(name="Megawati at Sikakap"), [MEGAWATI_2]).provisional
        proxy_b.restore()
        drained(island_b)
        assert [r.station for r in central.list_reviews()] == ["sikakap"], "B's upload: a possible duplicate"
        ask_offline(island_a)
        assert island_c.enrol(A1, SubjectInfo(name="Kofi at Mentawai"), [KOFI]).provisional
        proxy_c.restore()
        drained(island_c)
        assert sorted(r.station for r in central.list_reviews()) == ["mentawai", "sikakap"]
        if missed:
            replica, real_follow = island_b.island.replica, island_b.island.replica.follow
            replica.follow = lambda changes, generation="", kept=frozenset(), **_: real_follow(  # type: ignore
                changes, generation, kept)
        proxy_a.restore()
        drained(island_a)
        if missed:
            head = central.storage.head_seq()
            wait_until(lambda: island_b.sync_status()["applied_seq"] >= head, timeout=15, message="B caught up")
            island_b.island.drain()  # (or the drain after a catch-up got there first)
        wait_until(lambda: not island_b.holds(A1), timeout=15, message="B withdrew its copy")
        with pytest.raises(SubjectNotFound):
            island_b.verify(A1, [MEGAWATI_2], actor=KIOSK)
        assert island_b.sync_status()["provisional"] == 0
        assert [r.station for r in central.list_reviews()] == ["mentawai"], "C's review waits for its officer"
        assert island_c.holds(A1) and island_c.sync_status()["provisional"] == 1
        assert not central.holds(A1)


@pytest.mark.parametrize("enrolled", ["before", "after"])
def test_an_offline_erasure_compares_when_the_other_island_enrolled_offline_not_when_it_uploaded(
        tmp_path: Path, enrolled: str) -> None:
    """Islands A and B offline: B enrols A1 offline ``enrolled`` A's officer is asked to erase it (A does not hold
    it). Made before, B's enrolment is erased though B's link returns first (its upload is later than the
    request); made after, it is kept though A's link returns first (the erasure recorded against the document
    neither drops B's copy nor refuses its upload)."""
    with fresh_database() as url, islands(tmp_path, url, "siberut", "sikakap") as (central, linked):
        (island_a, proxy_a), (island_b, proxy_b) = linked
        for island, proxy in linked:
            go_offline(island, proxy)
        if enrolled == "after":
            ask_offline(island_a)
        assert island_b.enrol(A1, SubjectInfo(name="Megawati at Sikakap"), [MEGAWATI]).provisional
        if enrolled == "before":
            ask_offline(island_a)
        order = [(island_b, proxy_b), (island_a, proxy_a)] if enrolled == "before" else linked
        for island, proxy in order:
            proxy.restore()
            drained(island)
        if enrolled == "before":
            assert str(records(island_a, "delete_upload")[-1]["fields"]["outcome"]) == "erased"
            wait_until(lambda: not island_b.holds(A1), timeout=15, message="the erasure reached B")
            assert central.storage.subject_info(A1) is None  # the register; the office's gallery follows its log:
            wait_until(lambda: not central.holds(A1), timeout=15, message="the office applied the erasure")
            with pytest.raises(SubjectNotFound):
                island_b.verify(A1, [MEGAWATI_2], actor=KIOSK)
        else:
            assert [e["fields"]["outcome"] for e in records(island_b, "enrol_upload")] == ["stored"]
            wait_until(lambda: central.holds(A1), timeout=15, message="the register holds B's enrolment")
            assert island_b.verify(A1, [MEGAWATI_2], actor=KIOSK).match
            wait_until(lambda: island_a.holds(A1), timeout=15, message="A follows the register")
