"""Erasure on request leaves nothing of the subject but its pseudonym in the change log and the audit chain: not
in alerts, not in an island's outbox, not in the register's reviews or links (real SQLite, real PostgreSQL, a real
TCP proxy that cuts the island's link)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from island_helpers import HANS, KOFI, KOFI_2, MEGAWATI, MEGAWATI_2, go_offline, open_station
from island_helpers import office_and_island as stations_of
from pg import fresh_database
from waiting import wait_until

from benchmarks.linkcut import LinkProxy
from biometrics.crypto import KeyRing
from biometrics.errors import InvalidSample, ReviewConflict, SubjectNotFound
from biometrics.register import MIGRATIONS, SCHEMA_VERSION, RegisterStorage, Reviews, read_register_audit
from biometrics.replica import content_hash
from biometrics.service import CheckpointService, StoreLocation
from biometrics.storage import StoredTemplate, now
from biometrics.types import Actor, Alert, Modality, SubjectInfo

OFFICER = Actor(role="officer", identity="CN=Siti,OU=officer")
KIOSK = Actor(role="kiosk", identity="CN=kiosk-arr,OU=kiosk", extra={"common_name": "kiosk-arr"})


@pytest.fixture
def register_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


OfficeAndIsland = tuple[CheckpointService, CheckpointService, LinkProxy]


@pytest.fixture
def office_and_island(tmp_path: Path, register_url: str) -> Iterator[OfficeAndIsland]:
    """(station "central" on the register, island "siberut" online through a link proxy, the proxy); both
    stations closed afterwards."""
    with stations_of(tmp_path, register_url) as stations:
        yield stations


def outbox(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    """The island's outbox rows, their payloads opened with the key ring."""
    ring = KeyRing.load(tmp_path / "keys" / "keyring.json")
    db = sqlite3.connect(tmp_path / name / "replica" / "replica.db")
    try:
        rows = db.execute("SELECT upload_id, kind, ref, content_hash, sealed, state, outcome FROM outbox ORDER BY n")
        return [{"upload_id": u, "kind": k, "ref": r, "content_hash": h, "state": s, "outcome": o,
                 "payload": json.loads(ring.open(bytes(sealed), f"outbox|{u}".encode()))}
                for u, k, r, h, sealed, s, o in rows.fetchall()]
    finally:
        db.close()


def test_an_erasure_deletes_the_alerts_naming_the_subject(tmp_path: Path) -> None:
    service = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"))
    try:
        service.enrol("P1234567", SubjectInfo(name="Megawati", watchlist=True), [MEGAWATI], actor=OFFICER)
        service.enrol("Q7654321", SubjectInfo(name="Kofi Annan", watchlist=True), [KOFI], actor=OFFICER)
        assert service.verify("Q7654321", [KOFI_2], actor=KIOSK).watchlist
        assert service.verify("P1234567", [MEGAWATI_2], actor=KIOSK).watchlist
        assert {a.subject_id for a in service.list_alerts(actor=OFFICER)} == {"P1234567", "Q7654321"}
        service.delete_subject("Q7654321", "erasure request", actor=OFFICER)
        assert [a.subject_id for a in service.list_alerts(actor=OFFICER)] == ["P1234567"]
    finally:
        service.close()


def test_a_reason_that_names_the_document_is_refused_since_the_audit_log_outlives_the_erasure(
        tmp_path: Path) -> None:
    service = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"))
    try:
        assert service.enrol("P1234567", SubjectInfo(name="Megawati"), [MEGAWATI], actor=OFFICER).enrolled
        with pytest.raises(InvalidSample, match="names a document number"):
            service.delete_subject("P1234567", "erasure request of p 1234567", actor=OFFICER)
        assert service.holds("P1234567"), "refused: nothing erased"
        with pytest.raises(InvalidSample, match="names a document number"):
            service.enrol("Q7654321", SubjectInfo(name="Megawati again"), [MEGAWATI_2], actor=OFFICER,
                          allow_duplicate=True, override_reason="Q7654321 is her second passport")
        assert not service.holds("Q7654321")
        service.delete_subject("P1234567", "erasure request of the data subject", actor=OFFICER)
        assert not service.holds("P1234567")
        chain = "\n".join(service.storage.audit_entries())
        assert "1234567" not in chain and "erasure request of the data subject" in chain
    finally:
        service.close()


def test_an_erasure_at_one_station_deletes_the_alerts_every_station_raised(tmp_path: Path, register_url: str) -> None:
    a, b = (open_station(tmp_path, "rokot-airport", register_url, replica=False),
            open_station(tmp_path, "tuapejat-port", register_url, replica=False))
    try:
        assert a.enrol("Q7654321", SubjectInfo(name="Kofi Annan", watchlist=True), [KOFI], actor=OFFICER).enrolled
        wait_until(lambda: b.holds("Q7654321"), timeout=10, message="the enrolment reached the second station")
        assert a.verify("Q7654321", [KOFI_2], actor=KIOSK).watchlist
        assert b.verify("Q7654321", [KOFI_2], actor=KIOSK).watchlist
        assert len(a.list_alerts(actor=OFFICER)) == len(b.list_alerts(actor=OFFICER)) == 1
        b.delete_subject("Q7654321", "erasure request", actor=OFFICER)
        assert b.list_alerts(actor=OFFICER) == []
        wait_until(lambda: not a.list_alerts(actor=OFFICER), timeout=10,
                   message="the alert the other station raised is gone with the subject")
    finally:
        a.close()
        b.close()


def test_the_register_store_erases_alerts_and_links(tmp_path: Path, register_url: str) -> None:
    ring = KeyRing.generate()
    register = RegisterStorage(register_url, ring, station="central")
    register.open()
    try:
        template = [StoredTemplate(Modality.FACE, 0, 0.9, b"\x01" * 64)]
        register.add_subject("Q7654321", SubjectInfo(name="Kofi Annan"), template)
        register.add_subject("K5000005", SubjectInfo(name="Kofi at the office"), template)
        with register.transaction() as tx:
            register.insert_alert(tx, Alert("a1", "2024-01-01T00:00:00+00:00", "watchlist_verify", "d1", "Q7654321",
                                            9.0, "CN=kiosk"))
            register.insert_alert(tx, Alert("a2", "2024-01-01T00:00:01+00:00", "watchlist_verify", "d2", "K5000005",
                                            9.0, "CN=kiosk"))
            Reviews(register).link(tx, ring.pseudonym("Q7654321"), ring.pseudonym("K5000005"))
        assert register.delete_subject("Q7654321")
        assert [a.subject_id for a in register.list_alerts()] == ["K5000005"]
        assert register._query("SELECT COUNT(*) FROM links")[0][0] == 0
    finally:
        register.close()


@contextmanager
def island_register(register_url: str) -> Iterator[tuple[RegisterStorage, Reviews, KeyRing, list[StoredTemplate]]]:
    """(the register at ``register_url`` opened as station "siberut", its reviews, a new key ring, a template)."""
    ring = KeyRing.generate()
    register = RegisterStorage(register_url, ring, station="siberut")
    register.open()
    try:
        yield register, Reviews(register), ring, [StoredTemplate(Modality.FACE, 0, 0.9, b"\x01" * 64)]
    finally:
        register.close()


def test_the_register_erases_the_enrolment_a_station_saw_or_uploaded_never_a_later_one(register_url: str) -> None:
    with island_register(register_url) as (register, reviews, ring, template):
        with register.transaction() as tx:
            register.lock_register(tx)
            _, seen, _ = register.insert_subject(tx, "A1000001", SubjectInfo(name="seen by the station"), template)
            _, own, _ = register.insert_subject(tx, "H3000003", SubjectInfo(name="its own upload"), template)
            reviews.record_upload(tx, "u-own", "enrol", "k1:a", "stored", own)
            reviews.record_upload(tx, "u-older", "enrol", "k1:b", "stored")  # an older version kept no change
            _, later, _ = register.insert_subject(tx, "Q7654321", SubjectInfo(name="enrolled later"), template)
            reviews.record_upload(tx, "u-review", "enrol", "k1:c", "review")
            reviews.add(tx, "u-review", ring.pseudonym("Q7654321"), {"subject_id": "Q7654321"})
        with register.transaction() as tx:
            register.lock_register(tx)
            assert register.erase_seen(tx, "A1000001", seen)[0] is not None, "enrolled at or before what it saw"
            assert register.erase_seen(tx, "H3000003", seen, "u-own")[0] is not None, "enrolled by its upload"
            assert register.erase_seen(tx, "Q7654321", seen, "u-older") == (None, later)
            assert register.erase_seen(tx, "Q7654321", seen, "u-review") == (None, later), "later: kept"
            assert register.erase_seen(tx, "Z9999999", seen) == (None, None), "nothing held"
        assert register.subject_info("Q7654321") is not None
        assert register.subject_info("A1000001") is None and register.subject_info("H3000003") is None
        assert register._query("SELECT upload_id, state FROM reviews") == [("u-review", "erased")], \
            "the review of the upload the station named is closed all the same"


def test_a_register_of_the_previous_schema_is_upgraded_and_keeps_its_upload_records(register_url: str) -> None:
    with psycopg.connect(register_url, autocommit=True) as conn:
        for _, script in MIGRATIONS[:3]:
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement)
        conn.execute("INSERT INTO meta(name, value) VALUES ('schema_version', '3')")
        conn.execute("INSERT INTO uploads(upload_id, station, kind, content_hash, outcome, at) "
                     "VALUES ('u1', 'siberut', 'enrol', 'k1:x', 'stored', '2026-11-30T10:00:00.000+00:00')")
    ring = KeyRing.generate()
    for _ in range(2):  # the migration is idempotent
        register = RegisterStorage(register_url, ring, station="central")
        register.open()
        try:
            assert register.schema_version() == SCHEMA_VERSION == 8
            with register.transaction() as tx:
                assert Reviews(register).upload_outcome(tx, "u1") == ("k1:x", "stored")
                assert Reviews(register).upload_seq(tx, "u1") is None, "an older upload names no change"
            assert ("changes_ref",) in register._query("SELECT indexname FROM pg_indexes WHERE tablename = 'changes'")
        finally:
            register.close()


@pytest.mark.slow
def test_an_island_and_the_register_keep_no_payload_of_an_erased_or_settled_subject(
        tmp_path: Path, register_url: str, office_and_island: OfficeAndIsland) -> None:
    central, island, proxy = office_and_island
    go_offline(island, proxy)
    assert central.enrol("K5000005", SubjectInfo(name="Kofi at the office"), [KOFI]).enrolled
    assert island.enrol("H3000003", SubjectInfo(name="Hans Blix"), [HANS]).provisional
    island.delete_subject("H3000003", "erasure request")
    assert island.enrol("P1234567", SubjectInfo(name="Megawati"), [MEGAWATI]).provisional
    assert island.enrol("K4000004", SubjectInfo(name="Kofi at Siberut"), [KOFI_2]).provisional
    (hans,) = [e for e in outbox(tmp_path, "siberut") if e["state"] == "cancelled"]
    assert hans["payload"] == {} and hans["content_hash"] == "", "a cancelled enrolment keeps nothing"

    proxy.restore()
    wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=30, message="the outbox drained")
    rows = {e["state"]: e for e in outbox(tmp_path, "siberut")}
    assert rows["stored"]["payload"] == {"subject_id": "P1234567"}, "uploaded: only the subject id stays"
    assert set(rows["review"]["payload"]) == {"subject_id", "template_ids"}  # ids: random, no personal data

    (review,) = central.list_reviews()
    assert [c.subject_id for c in review.candidates] == ["K5000005"]
    central.delete_subject("K5000005", "erasure request")
    (review,) = central.list_reviews()
    assert review.candidates == (), "an erased subject is no longer named as a review's candidate"

    central.delete_subject("P1234567", "erasure request")
    wait_until(lambda: not island.holds("P1234567"), timeout=10, message="the erasure reached the island")
    wait_until(lambda: [e["payload"] for e in outbox(tmp_path, "siberut") if e["state"] == "stored"] == [{}],
               timeout=10, message="an erased subject's settled outbox entry keeps nothing (the change hook runs "
               "once the gallery has applied the change)")

    central.resolve_review(review.review_id, "keep_both", "two people: checked at the desk")
    with psycopg.connect(register_url) as conn:
        assert conn.execute("SELECT state, length(sealed) FROM reviews").fetchall() == [("keep_both", 0)], \
            "a resolved review keeps no document"
        stored_by = conn.execute("SELECT u.seq FROM uploads u JOIN reviews r USING (upload_id)").fetchone()[0]
        assert stored_by == conn.execute("SELECT MAX(seq) FROM changes WHERE kind = 'enrolled'").fetchone()[0], \
            "the upload's record names the change that stored it at review (what an offline erasure may name)"


def erased_offline_and_stopped(tmp_path: Path, register_url: str, proxy: LinkProxy) -> CheckpointService:
    """Station "central" enrols A1000001 and Q7654321; island "siberut", its link cut, erases both and stops, its
    erasures queued. Returns central, open."""
    central = open_station(tmp_path, "central", register_url, replica=False)
    island = open_station(tmp_path, "siberut", proxy.url(register_url), replica=True)
    try:
        for doc, image in (("A1000001", MEGAWATI), ("Q7654321", KOFI)):
            assert central.enrol(doc, SubjectInfo(name=doc), [image]).enrolled
        wait_until(lambda: island.holds("A1000001") and island.holds("Q7654321"), timeout=10,
                   message="the island has both subjects")
        go_offline(island, proxy)
        island.delete_subject("A1000001", "erasure request")
        island.delete_subject("Q7654321", "erasure request")
    finally:
        island.close()
    return central


def legacy_hash(payload: dict[str, Any]) -> str:
    """The content hash of an older version: plain SHA-256 of the canonical JSON (no key)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@pytest.mark.slow
def test_an_erasure_upload_hash_needs_the_key_and_an_older_versions_upload_is_still_recognised(
        tmp_path: Path, register_url: str) -> None:
    with LinkProxy.to_url(register_url) as proxy:
        central = erased_offline_and_stopped(tmp_path, register_url, proxy)
        first, second = outbox(tmp_path, "siberut")
        plain = legacy_hash({"reason": "", "subject_id": "A1000001"})
        assert first["content_hash"].startswith("k1:") and first["content_hash"] != plain, \
            "the hash of an erasure cannot be recomputed from a guessed document number"

        # As an older version left it: plain hashes in the outbox, and the first erasure committed in the
        # register with its plain hash, the station gone before it settled the entry.
        db = sqlite3.connect(tmp_path / "siberut" / "replica" / "replica.db")
        with db:
            for row, doc in ((first, "A1000001"), (second, "Q7654321")):
                db.execute("UPDATE outbox SET content_hash = ? WHERE upload_id = ?",
                           (legacy_hash({"reason": "", "subject_id": doc}), row["upload_id"]))
        db.close()
        register = RegisterStorage(register_url, KeyRing.load(tmp_path / "keys" / "keyring.json"), station="siberut")
        register.open()
        try:
            with register.transaction() as tx:
                register.lock_register(tx)
                assert register.erase_subject(tx, "A1000001") is not None
                Reviews(register).record_upload(tx, first["upload_id"], "erase", plain, "erased")
        finally:
            register.close()

        island = open_station(tmp_path, "siberut", proxy.url(register_url), replica=True)
        try:
            proxy.restore()
            wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=30, message="the outbox drained")
            assert island.island.last_drain.get("again") == 1, "the older version's upload was recognised"
            wait_until(lambda: not central.holds("Q7654321"), timeout=10, message="the second erasure reached")
            rows = outbox(tmp_path, "siberut")
            with psycopg.connect(register_url) as conn:
                uploads = dict(conn.execute("SELECT upload_id, content_hash FROM uploads").fetchall())
            assert {r["upload_id"]: r["content_hash"] for r in rows} == uploads
            assert all(h.startswith("k1:") for h in uploads.values()), "no plain hash is left in either place"
            assert [r["state"] for r in rows] == ["erased", "erased"]
        finally:
            island.close()
            central.close()


@pytest.mark.slow
def test_a_subject_waiting_for_review_can_be_erased_online_or_offline_and_no_review_brings_it_back(
        tmp_path: Path, register_url: str, office_and_island: OfficeAndIsland) -> None:
    central, island, proxy = office_and_island
    go_offline(island, proxy)
    assert central.enrol("K5000005", SubjectInfo(name="Kofi at the office"), [KOFI]).enrolled
    assert central.enrol("A1000001", SubjectInfo(name="Megawati at the office"), [MEGAWATI]).enrolled
    assert island.enrol("K4000004", SubjectInfo(name="Kofi at Siberut"), [KOFI_2]).provisional
    assert island.enrol("M2000002", SubjectInfo(name="Megawati at Siberut"), [MEGAWATI_2]).provisional
    proxy.restore()
    wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=30, message="the outbox drained")
    reviews = {r.subject_id: r.review_id for r in central.list_reviews()}
    assert set(reviews) == {"K4000004", "M2000002"} and island.sync_status()["provisional"] == 2

    # Online: the erasure finds the subject in the adjudication queue, not NOT_FOUND.
    island.delete_subject("M2000002", "erasure request")
    assert not island.holds("M2000002")
    assert [r.subject_id for r in central.list_reviews()] == ["K4000004"]
    with pytest.raises(ReviewConflict):
        central.resolve_review(reviews["M2000002"], "keep_both", "two people")

    # Offline: the erasure is queued, and when it is uploaded the review goes with it.
    go_offline(island, proxy)
    island.delete_subject("K4000004", "erasure request")
    assert not island.holds("K4000004")
    proxy.restore()
    wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=30, message="the erasure uploaded")
    assert central.list_reviews() == []
    with pytest.raises(ReviewConflict):
        central.resolve_review(reviews["K4000004"], "keep_both", "two people")

    assert island.sync_status()["provisional"] == 0
    for doc in ("K4000004", "M2000002"):
        assert not central.holds(doc) and not island.holds(doc), doc
    with psycopg.connect(register_url) as conn:
        assert conn.execute("SELECT state, length(sealed) FROM reviews").fetchall() == [("erased", 0)] * 2
    erased = [e for e in outbox(tmp_path, "siberut") if e["kind"] == "enrol"]
    assert [(e["state"], e["payload"]) for e in erased] == [("cancelled", {})] * 2


def upload_outcomes(url: str) -> dict[str, str]:
    """upload id -> outcome, as the register recorded each upload."""
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT upload_id, outcome FROM uploads").fetchall())


def register_decisions(url: str, station: str, kind: str) -> list[dict[str, Any]]:
    """The fields of ``station``'s audit records of ``kind`` in the register, in order."""
    entries = (json.loads(e) for e in read_register_audit(url, station))
    return [e["fields"] for e in entries if e.get("kind") == kind]


@pytest.mark.slow
def test_an_offline_erasure_erases_the_enrolment_the_island_saw_never_a_later_re_enrolment(
        tmp_path: Path, register_url: str, office_and_island: OfficeAndIsland) -> None:
    central, island, proxy = office_and_island
    assert central.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
    assert central.enrol("Q7654321", SubjectInfo(name="Kofi Annan"), [KOFI]).enrolled
    wait_until(lambda: island.holds("A1000001") and island.holds("Q7654321"), timeout=10,
               message="the island has both subjects")
    go_offline(island, proxy)
    island.delete_subject("A1000001", "erasure request at the port")
    island.delete_subject("Q7654321", "erasure request at the port")
    # Meanwhile the office erases Megawati's record too, and later enrols her again: an acknowledged
    # enrolment made after the island's erasure, which the island never saw.
    central.delete_subject("A1000001", "erasure request at the office")
    assert central.enrol("A1000001", SubjectInfo(name="Megawati, enrolled again"), [MEGAWATI_2]).enrolled

    proxy.restore()
    wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=30, message="the outbox drained")
    info = central.storage.subject_info("A1000001")
    assert info is not None and info.name == "Megawati, enrolled again", "the later enrolment survives"
    assert central.storage.subject_info("Q7654321") is None, "the enrolment the island saw is erased"
    wait_until(lambda: island.holds("A1000001") and not central.holds("Q7654321"), timeout=10,
               message="every station holds the later enrolment and not the erased subject")

    ring = island.storage.keyring
    rows = {e["ref"]: e for e in outbox(tmp_path, "siberut")}
    megawati, kofi = rows[ring.pseudonym("A1000001")], rows[ring.pseudonym("Q7654321")]
    assert (megawati["state"], megawati["payload"]) == ("superseded", {}), "said so, and nothing kept"
    assert kofi["state"] == "erased"
    assert upload_outcomes(register_url) == {megawati["upload_id"]: "superseded", kofi["upload_id"]: "erased"}
    audited = {f["upload_id"]: f for f in register_decisions(register_url, "siberut", "delete_upload")}
    assert audited[megawati["upload_id"]]["outcome"] == "superseded"
    assert audited[kofi["upload_id"]]["outcome"] == "erased"
    assert island.island.last_drain["superseded"] == 1


@pytest.mark.slow
def test_an_erasure_queued_by_an_older_version_never_erases_a_later_re_enrolment(
        tmp_path: Path, register_url: str) -> None:
    with LinkProxy.to_url(register_url) as proxy:
        central = erased_offline_and_stopped(tmp_path, register_url, proxy)
        # As an older version wrote them: the erasure's payload names the document number alone.
        ring = KeyRing.load(tmp_path / "keys" / "keyring.json")
        db = sqlite3.connect(tmp_path / "siberut" / "replica" / "replica.db")
        with db:
            for row in outbox(tmp_path, "siberut"):
                old = {"subject_id": row["payload"]["subject_id"], "reason": ""}
                db.execute("UPDATE outbox SET sealed = ?, content_hash = ? WHERE upload_id = ?",
                           (ring.seal(json.dumps(old).encode(), f"outbox|{row['upload_id']}".encode()),
                            content_hash(ring, old), row["upload_id"]))
        db.close()
        central.delete_subject("A1000001", "erasure request at the office")
        assert central.enrol("A1000001", SubjectInfo(name="Megawati, enrolled again"), [MEGAWATI_2]).enrolled

        island = open_station(tmp_path, "siberut", proxy.url(register_url), replica=True)
        try:
            proxy.restore()
            wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=30, message="the outbox drained")
            assert central.storage.subject_info("A1000001") is not None, "the later enrolment survives"
            assert central.storage.subject_info("Q7654321") is None, "the older version's erasure is applied"
            assert sorted(upload_outcomes(register_url).values()) == ["erased", "superseded"]
        finally:
            island.close()
            central.close()


class Crash(BaseException):
    """The station's process dies here (not an Exception: nothing in the station catches it)."""


@pytest.mark.slow
def test_a_station_that_died_before_applying_an_erasure_drops_the_alerts_naming_it_when_it_starts(
        tmp_path: Path, register_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    a = open_station(tmp_path, "rokot-airport", register_url, replica=False)
    b = open_station(tmp_path, "tuapejat-port", register_url, replica=False)
    try:
        try:
            for doc, image, probe in (("Q7654321", KOFI, KOFI_2), ("P1234567", MEGAWATI, MEGAWATI_2),
                                      ("H3000003", HANS, HANS)):
                assert a.enrol(doc, SubjectInfo(name=doc, watchlist=True), [image], actor=OFFICER).enrolled
                assert a.verify(doc, [probe], actor=KIOSK).watchlist
            assert len(a.list_alerts(actor=OFFICER)) == 3
            # The register commits A's erasure of Kofi; A dies before it applies the erased change locally.
            a._listener.stop()

            def die(seq: int, apply: object) -> bool:
                raise Crash

            monkeypatch.setattr(a.gallery, "applied", die)
            with pytest.raises(Crash):
                a.delete_subject("Q7654321", "erasure request", actor=OFFICER)
        finally:
            a.close()
        # While A is down, B erases Megawati, and she is enrolled again: A's alert named the erased enrolment.
        b.delete_subject("P1234567", "erasure request", actor=OFFICER)
        assert b.enrol("P1234567", SubjectInfo(name="Megawati again", watchlist=True), [MEGAWATI_2]).enrolled

        a = open_station(tmp_path, "rokot-airport", register_url, replica=False)
        assert [x.subject_id for x in a.list_alerts(actor=OFFICER)] == ["H3000003"], \
            "the alerts naming erased enrolments are gone before the station answers"
        assert a.verify("P1234567", [MEGAWATI], actor=KIOSK).watchlist
        a.close()
        a = open_station(tmp_path, "rokot-airport", register_url, replica=False)
        assert sorted(x.subject_id for x in a.list_alerts(actor=OFFICER)) == ["H3000003", "P1234567"], \
            "an alert raised on the later enrolment survives a restart"
        a.close()

        # A journal written by an older version records no erasure applied to its alerts: at its first start the
        # station drops the alerts naming subjects the register no longer holds.
        journal = sqlite3.connect(tmp_path / "rokot-airport" / "data" / "journal.db")
        with journal:
            assert journal.execute("DELETE FROM meta WHERE name = 'alerts_register_seq'").rowcount == 1
        journal.close()
        b.delete_subject("H3000003", "erasure request", actor=OFFICER)
        a = open_station(tmp_path, "rokot-airport", register_url, replica=False)
        assert [x.subject_id for x in a.list_alerts(actor=OFFICER)] == ["P1234567"]
    finally:
        a.close()
        b.close()


@pytest.mark.slow
def test_a_change_hook_that_fails_is_replayed_until_the_alerts_are_gone(
        tmp_path: Path, register_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    a = open_station(tmp_path, "rokot-airport", register_url, replica=False)
    b = open_station(tmp_path, "tuapejat-port", register_url, replica=False)
    try:
        assert a.enrol("Q7654321", SubjectInfo(name="Kofi Annan", watchlist=True), [KOFI], actor=OFFICER).enrolled
        assert a.verify("Q7654321", [KOFI_2], actor=KIOSK).watchlist
        real = a.alert_store.erase_alerts
        calls = {"n": 0}

        def fail_once(*args: Any, **kwargs: Any) -> int:
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError("disk I/O error")
            return real(*args, **kwargs)

        monkeypatch.setattr(a.alert_store, "erase_alerts", fail_once)
        b.delete_subject("Q7654321", "erasure request", actor=OFFICER)
        wait_until(lambda: not a.holds("Q7654321"), timeout=10, message="the erasure reached the station")
        wait_until(lambda: not a.list_alerts(actor=OFFICER), timeout=10,
                   message="the failed alert deletion was replayed")
        assert calls["n"] >= 2
    finally:
        a.close()
        b.close()


@pytest.mark.slow
def test_an_erasure_at_the_register_refuses_the_enrolment_still_queued_at_an_island(
        tmp_path: Path, register_url: str, office_and_island: OfficeAndIsland) -> None:
    central, island, proxy = office_and_island
    go_offline(island, proxy)
    assert island.enrol("H3000003", SubjectInfo(name="Hans Blix"), [HANS]).provisional
    with pytest.raises(SubjectNotFound) as answer:
        central.delete_subject("H3000003", "erasure request at the office")

    proxy.restore()
    wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=30, message="the outbox drained")
    assert central.storage.subject_info("H3000003") is None, "the person the officer erased is not enrolled"
    assert not island.holds("H3000003") and island.sync_status()["provisional"] == 0
    (entry,) = outbox(tmp_path, "siberut")
    assert (entry["state"], entry["payload"]) == ("erased", {})
    assert upload_outcomes(register_url) == {entry["upload_id"]: "refused"}
    (audited,) = register_decisions(register_url, "siberut", "enrol_upload")
    assert audited["outcome"] == "refused_erased"
    assert "recorded" in str(answer.value), "the officer is told what the erasure did"

    # Once the island knows of the erasure, a new enrolment of the document is an enrolment like any other.
    go_offline(island, proxy)
    assert island.enrol("H3000003", SubjectInfo(name="Hans Blix, enrolled again"), [HANS]).provisional
    proxy.restore()
    wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=30, message="the outbox drained")
    assert central.storage.subject_info("H3000003") is not None


@pytest.mark.slow
def test_an_islands_own_erasure_never_refuses_its_later_enrolment_of_the_same_document(
        tmp_path: Path, register_url: str, office_and_island: OfficeAndIsland) -> None:
    central, island, proxy = office_and_island
    assert central.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
    wait_until(lambda: island.holds("A1000001"), timeout=10, message="the island has the subject")
    go_offline(island, proxy)
    island.delete_subject("A1000001", "erasure request at the port")
    assert island.enrol("A1000001", SubjectInfo(name="Megawati, enrolled again"), [MEGAWATI_2]).provisional
    proxy.restore()
    wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=30, message="the outbox drained")
    info = central.storage.subject_info("A1000001")
    assert info is not None and info.name == "Megawati, enrolled again"
    assert [e["state"] for e in outbox(tmp_path, "siberut")] == ["erased", "stored"]


def test_an_erasure_asked_offline_of_a_document_not_held_erases_what_the_register_held_then(
        register_url: str) -> None:
    """:meth:`RegisterStorage.erase_requested`: the subject enrolled before the request's time is erased, one
    enrolled after it kept; a review waiting since before it is closed, one uploaded after it left to its officer
    (nothing recorded); with nothing held the erasure is recorded against the document."""
    with island_register(register_url) as (register, reviews, ring, template):
        with register.transaction() as tx:
            register.lock_register(tx)
            register.insert_subject(tx, "A1000001", SubjectInfo(name="enrolled before the request"), template)
            reviews.add(tx, "u-before", ring.pseudonym("R2000002"), {"subject_id": "R2000002"})
            asked = now()
            time.sleep(0.01)
            _, later, _ = register.insert_subject(tx, "Q7654321", SubjectInfo(name="enrolled after it"), template)
            reviews.add(tx, "u-after", ring.pseudonym("S3000003"), {"subject_id": "S3000003"})
        with register.transaction() as tx:
            register.lock_register(tx)
            assert register.erase_requested(tx, "A1000001", asked, 0)[1:] == (None, False)
            assert register.erase_requested(tx, "Q7654321", asked, 0) == (None, later, False), "later: kept"
            assert register.erase_requested(tx, "R2000002", asked, 0)[1:] == (None, False), "its review closed"
            assert register.erase_requested(tx, "S3000003", asked, 0) == (None, None, False), "review after it"
            seq, kept, against = register.erase_requested(tx, "Z9999999", asked, 0)
            assert seq is not None and kept is None and against, "nothing held: recorded against the document"
        assert register.subject_info("A1000001") is None and register.subject_info("Q7654321") is not None
        assert dict(register._query("SELECT upload_id, state FROM reviews")) == {"u-before": "erased",
                                                                                  "u-after": "pending"}
        assert [k for (k,) in register._query("SELECT kind FROM changes WHERE ref = ?",
                                              (ring.pseudonym("Z9999999"),))] == ["erased"]


def test_an_erasure_asked_offline_tells_the_island_whose_review_it_closed_and_no_other(register_url: str) -> None:
    """Island B's upload of A1 waits for review; island A, offline, is asked to erase A1 (not held); island C's
    upload of A1, made after the request, waits too. A's erasure closes B's review and appends a withdrawal keyed
    by B's upload (B drops its copy), not an erasure of the pseudonym (C's copy and review stay)."""
    with island_register(register_url) as (register, reviews, ring, _):
        ref = ring.pseudonym("A1000001")
        with register.transaction() as tx:
            reviews.add(tx, "upload-b", ref, {"subject_id": "A1000001"})
        asked = now()
        time.sleep(0.01)
        with register.transaction() as tx:
            reviews.add(tx, "upload-c", ref, {"subject_id": "A1000001"})
        head = register.head_seq()
        with register.transaction() as tx:
            register.lock_register(tx)
            assert register.erase_requested(tx, "A1000001", asked, 0) == (None, None, False)
        assert [(c.kind, c.ref) for c in register.changes_since(head)] == [("withdrawn", "upload:upload-b")]
        assert dict(register._query("SELECT upload_id, state FROM reviews")) == {"upload-b": "erased",
                                                                                  "upload-c": "pending"}


@pytest.mark.parametrize("enrolled", ["before", "after"])
@pytest.mark.parametrize("first", ["enrolment", "erasure"])
def test_an_erasure_asked_offline_compares_the_time_the_enrolment_was_made_offline(
        register_url: str, enrolled: str, first: str) -> None:
    """Islands A and B both offline: B enrols A1 offline ``enrolled`` A's officer is asked to erase A1 (which A
    does not hold); ``first`` reaches the register first. Made before the request, B's enrolment is erased (stored
    first) or refused (uploaded after the erasure); made after it, it is kept either way: the time compared is
    when B made it (carried with its upload), never when its link returned."""
    with island_register(register_url) as (island_a, reviews_a, ring, template):
        island_b = RegisterStorage(register_url, ring, station="sikakap")
        island_b.open()
        try:
            ref, seen = ring.pseudonym("A1000001"), island_a.head_seq()
            times = {}
            for event in (("b", "a") if enrolled == "before" else ("a", "b")):
                times[event] = now()
                time.sleep(0.01)
            time.sleep(0.01)  # the links return later

            def upload_b() -> str:
                with island_b.transaction() as tx:
                    island_b.lock_register(tx)
                    if island_b.erased_after(tx, ref, seen, times["b"]) is not None:
                        Reviews(island_b).record_upload(tx, "upload-b", "enrol", "k1:b", "refused", None, times["b"])
                        return "refused"
                    _, seq, _ = island_b.insert_subject(tx, "A1000001", SubjectInfo(name="Megawati"), template)
                    Reviews(island_b).record_upload(tx, "upload-b", "enrol", "k1:b", "stored", seq, times["b"])
                    return "stored"

            def upload_a() -> str:
                with island_a.transaction() as tx:
                    island_a.lock_register(tx)
                    seq, kept, _ = island_a.erase_requested(tx, "A1000001", times["a"], seen)
                    reviews_a.record_upload(tx, "upload-a", "erase", "k1:a", "superseded" if kept else "erased",
                                            seq, times["a"])
                    return "superseded" if kept else "erased"

            outcomes = [upload_b(), upload_a()] if first == "enrolment" else [upload_a(), upload_b()]
            held = island_a.subject_info("A1000001") is not None
            if enrolled == "before":
                assert not held, f"the erasure slipped: {outcomes}"
                assert outcomes == (["stored", "erased"] if first == "enrolment" else ["erased", "refused"])
            else:
                assert held, f"a later enrolment was erased: {outcomes}"
                assert outcomes == (["stored", "superseded"] if first == "enrolment" else ["erased", "stored"])
        finally:
            island_b.close()


def test_a_review_of_an_enrolment_made_offline_before_the_request_is_closed_however_late_it_was_uploaded(
        register_url: str) -> None:
    """B enrolled A1 offline before A's officer was asked to erase it; B's link returned first and its upload waits
    for review (queued after the request): A's erasure closes it all the same, and B withdraws its copy."""
    with island_register(register_url) as (register, reviews, ring, _):
        ref = ring.pseudonym("A1000001")
        made = now()
        time.sleep(0.01)
        asked = now()
        time.sleep(0.01)
        with register.transaction() as tx:
            reviews.add(tx, "upload-b", ref, {"subject_id": "A1000001"})
            reviews.record_upload(tx, "upload-b", "enrol", "k1:b", "review", None, made)
        head = register.head_seq()
        with register.transaction() as tx:
            register.lock_register(tx)
            register.erase_requested(tx, "A1000001", asked, 0)
        assert register._query("SELECT state FROM reviews") == [("erased",)]
        assert ("withdrawn", "upload:upload-b") in [(c.kind, c.ref) for c in register.changes_since(head)]
