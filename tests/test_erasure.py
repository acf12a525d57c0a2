"""Erasure on request leaves nothing of the subject but its pseudonym in the change log and the audit chain: not
in alerts, not in an island's outbox, not in the register's reviews or links (real SQLite, real PostgreSQL, a real
TCP proxy that cuts the island's link)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from island_helpers import HANS, KOFI, KOFI_2, MEGAWATI, MEGAWATI_2, go_offline, open_station
from pg import fresh_database
from waiting import wait_until

from benchmarks.linkcut import LinkProxy
from biometrics.crypto import KeyRing
from biometrics.errors import ReviewConflict
from biometrics.register import RegisterStorage, Reviews
from biometrics.service import CheckpointService, StoreLocation
from biometrics.storage import StoredTemplate
from biometrics.types import Actor, Alert, Modality, SubjectInfo

OFFICER = Actor(role="officer", identity="CN=Siti,OU=officer")
KIOSK = Actor(role="kiosk", identity="CN=kiosk-arr,OU=kiosk", extra={"common_name": "kiosk-arr"})


@pytest.fixture
def register_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


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


@pytest.mark.slow
def test_an_island_and_the_register_keep_no_payload_of_an_erased_or_settled_subject(
        tmp_path: Path, register_url: str) -> None:
    with LinkProxy.to_url(register_url) as proxy:
        central = open_station(tmp_path, "central", register_url, replica=False)
        island = open_station(tmp_path, "siberut", proxy.url(register_url), replica=True)
        try:
            wait_until(lambda: island.sync_status()["register_connected"], timeout=15, message="the island is online")
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
            (megawati,) = [e for e in outbox(tmp_path, "siberut") if e["state"] == "stored"]
            assert megawati["payload"] == {}, "an erased subject's settled outbox entry keeps nothing"

            central.resolve_review(review.review_id, "keep_both", "two people: checked at the desk")
            with psycopg.connect(register_url) as conn:
                assert conn.execute("SELECT state, length(sealed) FROM reviews").fetchall() == [("keep_both", 0)], \
                    "a resolved review keeps no document"
        finally:
            island.close()
            central.close()


def legacy_hash(payload: dict[str, Any]) -> str:
    """The content hash of an older version: plain SHA-256 of the canonical JSON (no key)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@pytest.mark.slow
def test_an_erasure_upload_hash_needs_the_key_and_an_older_versions_upload_is_still_recognised(
        tmp_path: Path, register_url: str) -> None:
    with LinkProxy.to_url(register_url) as proxy:
        central = open_station(tmp_path, "central", register_url, replica=False)
        island = open_station(tmp_path, "siberut", proxy.url(register_url), replica=True)
        try:
            for doc, image in (("A1000001", MEGAWATI), ("Q7654321", KOFI)):
                assert central.enrol(doc, SubjectInfo(name=doc), [image]).enrolled
            wait_until(lambda: island.holds("A1000001") and island.holds("Q7654321"), timeout=10,
                       message="the island has both subjects")
            go_offline(island, proxy)
            island.delete_subject("A1000001", "")
            island.delete_subject("Q7654321", "")
        finally:
            island.close()
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
        tmp_path: Path, register_url: str) -> None:
    with LinkProxy.to_url(register_url) as proxy:
        central = open_station(tmp_path, "central", register_url, replica=False)
        island = open_station(tmp_path, "siberut", proxy.url(register_url), replica=True)
        try:
            wait_until(lambda: island.sync_status()["register_connected"], timeout=15, message="the island is online")
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
        finally:
            island.close()
            central.close()
