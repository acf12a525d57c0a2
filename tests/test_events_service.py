"""The service records one decision event per Verify and Identify, with its audit record, without personal data;
feedback once per decision; a station on a register keeps its events while the register is away."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import face
from pg import fresh_database
from waiting import wait_until

from benchmarks.linkcut import LinkProxy
from biometrics.attempts import AttemptsExhausted
from biometrics.crypto import KeyRing
from biometrics.errors import InvalidSample, SubjectNotFound
from biometrics.event_schema import event_tables
from biometrics.event_store import SqlEventStore, open_event_store, pending_events, pending_ratings
from biometrics.events import (
    RATING_WINDOW,
    EventNotFound,
    FeedbackRefused,
    InvalidRating,
    RatingWindowClosed,
    local_text,
)
from biometrics.service import CheckpointService, ServiceConfig, StoreLocation
from biometrics.types import Actor, Modality, Sample, SubjectInfo

EVENT_TABLES = ("decision_events", "event_nationality", "rating_marks", "rating_deltas", "rating_shipments",
                "rating_batches", "event_lanes", "event_stations", "agg_hourly", "agg_monthly_arrivals",
                "agg_monthly_satisfaction")
SUBJECTS = {  # document number -> (personal data, reference image)
    "P1234567": (SubjectInfo(name="Megawati Sukarnoputri", nationality="IDN", date_of_birth="1947-01-23"),
                 "Megawati_Sukarnoputri_0001.jpg"),
    "Q7654321": (SubjectInfo(name="Kofi Annan", nationality="GHA", date_of_birth="1938-04-08", watchlist=True),
                 "Kofi_Annan_0001.jpg"),
}
ARRIVAL_KIOSK = Actor(role="kiosk", identity="CN=kiosk-arr,OU=kiosk,O=Checkpoint",
                      extra={"common_name": "kiosk-arr"})
DEPARTURE_KIOSK = Actor(role="kiosk", identity="CN=kiosk-dep,OU=kiosk,O=Checkpoint",
                        extra={"common_name": "kiosk-dep"})
OFFICER = Actor(role="officer", identity="CN=Siti Rahma,OU=officer,O=Checkpoint",
                extra={"common_name": "Siti Rahma"})


def sample(name: str) -> Sample:
    return Sample(Modality.FACE, face(name))


def open_service(tmp_path: Path, **config: object) -> CheckpointService:
    return CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys", station="rokot-airport"),
                                  config=ServiceConfig(lanes={"kiosk-dep": "departure"}, **config))  # type: ignore


@pytest.fixture
def service(tmp_path: Path) -> Iterator[CheckpointService]:
    s = open_service(tmp_path)
    for subject_id, (info, image) in SUBJECTS.items():
        assert s.enrol(subject_id, info, [sample(image)], actor=OFFICER).enrolled
    yield s
    s.close()


def table_rows(store: SqlEventStore) -> dict[str, list[tuple]]:
    with store.backend._read() as view:
        return {t: [tuple(r) for r in view.execute(f"SELECT * FROM {t}").fetchall()] for t in EVENT_TABLES}


def test_each_decision_records_one_event_with_its_audit_record(service: CheckpointService, tmp_path: Path) -> None:
    genuine = service.verify("P1234567", [sample("Megawati_Sukarnoputri_0002.jpg")], actor=ARRIVAL_KIOSK)
    watchlisted = service.verify("Q7654321", [sample("Kofi_Annan_0004.jpg")], actor=ARRIVAL_KIOSK)
    impostor = service.verify("P1234567", [sample("Hans_Blix_0001.jpg")], actor=DEPARTURE_KIOSK,
                              document_nationality="swe")
    identified = service.identify([sample("Megawati_Sukarnoputri_0004.jpg")], actor=OFFICER)
    stranger = service.identify([sample("Hans_Blix_0001.jpg")], actor=ARRIVAL_KIOSK, document_nationality="AUS")
    with pytest.raises(SubjectNotFound):
        service.verify("Z0000000", [sample("Hans_Blix_0001.jpg")], actor=ARRIVAL_KIOSK, document_nationality="NZL")
    with pytest.raises(InvalidSample, match="three-letter"):
        service.verify("P1234567", [sample("Hans_Blix_0001.jpg")], actor=ARRIVAL_KIOSK, document_nationality="X1")
    assert genuine.match and watchlisted.match and watchlisted.watchlist and not impostor.match
    assert identified.candidates and not stranger.candidates
    results = (genuine, watchlisted, impostor, identified, stranger)
    ids = [r.feedback_id for r in results]
    assert len(set(ids)) == 5 and not {r.decision_id for r in results} & set(ids)

    events = open_event_store(tmp_path / "data")  # read-only, beside the running service, without the key ring
    try:
        rows = table_rows(events)
        by_id = {r[1]: r for r in rows["decision_events"]}
        assert set(ids) <= set(by_id) and len(by_id) == 7  # the two refusals are recorded as errors
        # (lane, direction, category, outcome)
        assert [by_id[i][4:8] for i in ids] == [
            ("kiosk-arr", "arrival", "citizen", "proceed"),  # the enrolled subject's nationality: IDN
            ("kiosk-arr", "arrival", "foreign", "see_officer"),  # a watchlist hit is published as see_officer
            ("kiosk-dep", "departure", "foreign", "see_officer"),  # the lane map; the document's nationality
            ("desk", "arrival", "unknown", "proceed"),  # an officer is not named; no document: unknown
            ("kiosk-arr", "arrival", "foreign", "see_officer"),
        ]
        errors = [r for r in rows["decision_events"] if r[7] == "error"]
        assert len(errors) == 2 and all(r[3] == "rokot-airport" for r in errors)
        assert all(r[9] in ("low", "medium", "high") for r in by_id.values() if r[7] != "error")
        assert all(r[10].startswith("face:") and r[11].startswith("face:") for r in by_id.values())
        assert sorted(n for _, _, n in rows["event_nationality"]) == ["AUS", "GHA", "IDN", "NZL"]  # arrivals only
        today = datetime.now(UTC).date()
        hourly = events.hourly(today - timedelta(days=1), today + timedelta(days=1))
        assert sum(r.count for r in hourly) == 7
        assert {(d, lane) for _, _, d, lane in rows["event_lanes"]} == {
            ("arrival", "kiosk-arr"), ("arrival", "desk"), ("departure", "kiosk-dep")}
        for r in hourly:
            assert r.lanes_active == sum(1 for h, _, d, _ in rows["event_lanes"]
                                         if (h, d) == (r.hour.strftime("%Y-%m-%dT%H"), r.direction))
        arrivals = {r.nationality: r.count for r in events.monthly_arrivals(today, today)}
        assert arrivals == {"IDN": 1, "GHA": 1, "AUS": 1, "NZL": 1, "XXX": 2}  # XXX: the unknown nationalities
    finally:
        events.close()
    # The audit chain never names an event id: a rating cannot be looked up in it by its id (it can be tied to
    # the decision's subject by the events' order, though: test_a_rating_cannot_be_tied_..., a known link).
    chain = "\n".join(service.alert_store.audit_entries())
    assert chain and not any(i in chain for i in ids)


def test_a_kiosk_transaction_publishes_one_event_however_many_calls(service: CheckpointService,
                                                                     tmp_path: Path) -> None:
    """A call before the last that is not accepted is a step (audited, no event, no feedback id); the call that
    ends the transaction, accepted or the last, is published."""
    impostor, genuine = sample("Hans_Blix_0001.jpg"), sample("Megawati_Sukarnoputri_0002.jpg")
    step = service.verify("P1234567", [impostor], actor=ARRIVAL_KIOSK, attempts=2, attempt=1)
    retried = service.verify("P1234567", [genuine], actor=ARRIVAL_KIOSK, attempts=2, attempt=2)
    at_once = service.verify("P1234567", [genuine], actor=ARRIVAL_KIOSK, attempts=3, attempt=1)
    last = service.verify("P1234567", [impostor], actor=ARRIVAL_KIOSK, attempts=2, attempt=2)
    # 0: taken as the last; by the station's count the second call of the transaction `last` ended (the kiosk
    # declared it its last), which is published once
    unnumbered = service.verify("P1234567", [impostor], actor=ARRIVAL_KIOSK, attempts=2)
    assert not step.match and retried.match and at_once.match and not last.match and not unnumbered.match
    assert step.feedback_id == unnumbered.feedback_id == "" and all(r.feedback_id for r in (retried, at_once, last))
    with pytest.raises(InvalidSample, match="attempt 3 of a transaction of 2"):
        service.verify("P1234567", [genuine], actor=ARRIVAL_KIOSK, attempts=2, attempt=3)
    events = open_event_store(tmp_path / "data")
    try:
        outcomes = {r[1]: r[7] for r in table_rows(events)["decision_events"] if r[7] != "error"}
    finally:
        events.close()
    assert len(outcomes) == 3  # the step published nothing (enrolments publish no decision event)
    assert [outcomes[r.feedback_id] for r in (retried, at_once, last)] == ["proceed", "proceed", "see_officer"]
    chain = [json.loads(e) for e in service.alert_store.audit_entries()]
    steps = [e["fields"] for e in chain if e.get("kind") == "verify" and e["fields"].get("attempts")]
    assert [(f["attempt"], f["attempts"], f["match"]) for f in steps] == [
        (1, 2, False), (2, 2, True), (1, 3, True), (2, 2, False), (0, 2, False)]  # every call audited


def published(tmp_path: Path) -> list[str]:
    """The outcomes of the station's decision events, in order."""
    events = open_event_store(tmp_path / "data")
    try:
        with events.backend._read() as view:
            return [r[0] for r in view.execute("SELECT outcome FROM decision_events ORDER BY n").fetchall()]
    finally:
        events.close()


def test_a_kiosk_that_declares_every_call_its_first_cannot_keep_a_failed_transaction_off_the_portal(
        service: CheckpointService, tmp_path: Path) -> None:
    """Review: the step was decided by the kiosk's declared ``attempt``; a kiosk sending attempts=3, attempt=1 on
    every call had every no-match taken for a step, and its fourth call refused outside the error event: a failed
    transaction was never published. Now the station's count ends it: published once, as see_officer."""
    impostor = sample("Hans_Blix_0001.jpg")
    before = published(tmp_path)
    answers = [service.verify("P1234567", [impostor], actor=ARRIVAL_KIOSK, attempts=3, attempt=1) for _ in range(3)]
    assert not any(a.match for a in answers)
    assert [bool(a.feedback_id) for a in answers] == [False, False, True]  # the third call ends it
    for _ in range(2):  # refused, before a capture (the servicer asks first) and in the call itself
        with pytest.raises(AttemptsExhausted):
            service.check_attempts_left("P1234567", actor=ARRIVAL_KIOSK)
        with pytest.raises(AttemptsExhausted):
            service.verify("P1234567", [impostor], actor=ARRIVAL_KIOSK, attempts=3, attempt=1)
    assert published(tmp_path)[len(before):] == ["see_officer"]


@pytest.mark.parametrize("second", ["Hans_Blix_0001.jpg", "Megawati_Sukarnoputri_0002.jpg"])
def test_an_honest_two_attempt_transaction_publishes_one_event(service: CheckpointService, tmp_path: Path,
                                                               second: str) -> None:
    before = published(tmp_path)
    first = service.verify("P1234567", [sample("Hans_Blix_0001.jpg")], actor=ARRIVAL_KIOSK, attempts=2, attempt=1)
    last = service.verify("P1234567", [sample(second)], actor=ARRIVAL_KIOSK, attempts=2, attempt=2)
    assert not first.match and first.feedback_id == "" and last.feedback_id
    assert published(tmp_path)[len(before):] == ["proceed" if last.match else "see_officer"]
    if not last.match:  # the traveller tries again at once: refused, and the transaction is not published twice
        with pytest.raises(AttemptsExhausted):
            service.check_attempts_left("P1234567", actor=ARRIVAL_KIOSK)
        assert len(published(tmp_path)) == len(before) + 1


def test_a_kiosk_transaction_ended_by_a_failed_capture_is_published_once(service: CheckpointService,
                                                                         tmp_path: Path) -> None:
    """A call that fails before its score ends, on the portal, a transaction whose earlier call published nothing,
    by the station's count (the kiosk declared every call its first), and only once."""
    before = published(tmp_path)
    service.verify("P1234567", [sample("Hans_Blix_0001.jpg")], actor=ARRIVAL_KIOSK, attempts=3, attempt=1)
    for _ in range(2):
        service.verify_capture_failed("P1234567", 1, ARRIVAL_KIOSK, 0.0, {Modality.FACE}, "")
    assert published(tmp_path)[len(before):] == ["error"]
    later = service.verify("P1234567", [sample("Hans_Blix_0001.jpg")], actor=ARRIVAL_KIOSK, attempts=3, attempt=3)
    assert later.feedback_id == "" and published(tmp_path)[len(before):] == ["error"]


def test_the_station_counts_a_kiosk_transaction_itself(service: CheckpointService) -> None:
    """A kiosk that declares one attempt on every call gets one scored call per transaction; the refusal is its
    own error; an officer at a desk is not counted; a later call takes its transaction's N, not its own."""
    impostor, genuine = sample("Hans_Blix_0001.jpg"), sample("Megawati_Sukarnoputri_0002.jpg")
    assert not service.verify("P1234567", [impostor], actor=ARRIVAL_KIOSK).match
    with pytest.raises(AttemptsExhausted, match="see an officer"):
        service.verify("P1234567", [genuine], actor=ARRIVAL_KIOSK)
    with pytest.raises(AttemptsExhausted):  # another kiosk of the station: the same document's transaction
        service.verify("P1234567", [genuine], actor=DEPARTURE_KIOSK)
    assert service.verify("P1234567", [genuine], actor=OFFICER).match  # the officer sees the traveller
    officer_two = service.verify("Q7654321", [sample("Kofi_Annan_0004.jpg")], actor=OFFICER, attempts=2)
    first = service.verify("Q7654321", [sample("Kofi_Annan_0004.jpg")], actor=ARRIVAL_KIOSK, attempts=2, attempt=1)
    declared_one = service.verify("Q7654321", [sample("Kofi_Annan_0004.jpg")], actor=ARRIVAL_KIOSK)
    assert first.score == declared_one.score == pytest.approx(officer_two.score)  # corrected as one of two
    with pytest.raises(AttemptsExhausted):
        service.verify("Q7654321", [sample("Kofi_Annan_0004.jpg")], actor=ARRIVAL_KIOSK, attempts=3)
    chain = [json.loads(e) for e in service.alert_store.audit_entries()]
    calls = [e["fields"].get("call") for e in chain if e.get("kind") == "verify"]
    assert calls == [1, None, None, 1, 2]  # the station's count of each kiosk call; officers' calls uncounted


def test_a_watchlisted_traveller_asked_again_raises_one_alert(service: CheckpointService) -> None:
    calls = [service.verify("Q7654321", [sample("Kofi_Annan_0004.jpg")], actor=ARRIVAL_KIOSK, attempts=2,
                            attempt=n) for n in (1, 2)]
    assert all(c.match and c.watchlist for c in calls)  # the kiosk shows SEE OFFICER both times
    alerts = service.list_alerts(actor=OFFICER)
    assert [(a.kind, a.decision_id) for a in alerts] == [("watchlist_verify", calls[0].decision_id)]
    service.verify("Q7654321", [sample("Kofi_Annan_0004.jpg")], actor=OFFICER)  # an officer's call: its own alert
    assert len(service.list_alerts(actor=OFFICER)) == 2


def test_events_carry_no_personal_data(service: CheckpointService, tmp_path: Path) -> None:
    decisions = [service.verify("P1234567", [sample("Megawati_Sukarnoputri_0002.jpg")], actor=ARRIVAL_KIOSK),
                 service.verify("Q7654321", [sample("Kofi_Annan_0004.jpg")], actor=OFFICER),
                 service.identify([sample("Kofi_Annan_0002.jpg")], actor=DEPARTURE_KIOSK)]
    service.rate_decision(decisions[0].feedback_id, 4)
    ring = KeyRing.load(tmp_path / "keys" / "keyring.json")
    secrets = [*SUBJECTS, *(info.name for info, _ in SUBJECTS.values()),
               *(info.date_of_birth for info, _ in SUBJECTS.values()),
               *(ring.pseudonym(s) for s in SUBJECTS), *(d.decision_id for d in decisions),
               "Siti Rahma", "CN=", "kiosk-dep,OU"]
    events = open_event_store(tmp_path / "data")
    try:
        dump = json.dumps(table_rows(events), default=str)
    finally:
        events.close()
    assert "kiosk-arr" in dump and "IDN" in dump  # the dump holds what it should
    found = [s for s in secrets if s.lower() in dump.lower()]
    assert found == []


def test_feedback_once_per_decision(service: CheckpointService, tmp_path: Path) -> None:
    first = service.verify("P1234567", [sample("Megawati_Sukarnoputri_0002.jpg")], actor=ARRIVAL_KIOSK)
    second = service.verify("P1234567", [sample("Megawati_Sukarnoputri_0004.jpg")], actor=ARRIVAL_KIOSK)
    service.rate_decision(first.feedback_id, 3)
    with pytest.raises(FeedbackRefused, match="rated already"):
        service.rate_decision(first.feedback_id, 1)
    with pytest.raises(EventNotFound):
        service.rate_decision("f" * 32, 2)
    with pytest.raises(InvalidSample, match="32 hexadecimal"):
        service.rate_decision(first.decision_id[:10], 2)
    with pytest.raises(InvalidRating):
        service.rate_decision(second.feedback_id, 5)
    service.rate_decision(second.feedback_id, 1)
    events = open_event_store(tmp_path / "data")
    try:
        today = datetime.now(UTC).date()
        (row,) = events.monthly_satisfaction(today - timedelta(days=1), today + timedelta(days=1))
        assert row.counts == (1, 0, 1, 0) and row.station == "rokot-airport"
        rows = table_rows(events)
        assert sorted(r[0] for r in rows["rating_marks"]) == sorted([first.feedback_id, second.feedback_id])
        assert rows["rating_deltas"] == []  # a single station ships nothing
    finally:
        events.close()


def _decided_ago(service: CheckpointService, feedback_id: str, minutes: int) -> None:
    """Move a decision's event back in time, as if it had been made ``minutes`` ago (the window is counted on
    the event's minute)."""
    minute = (datetime.now(UTC) - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M")
    with service.alert_store.transaction() as tx:
        tx.execute("UPDATE decision_events SET minute = ? WHERE event_id = ?", (minute, feedback_id))


def test_a_rating_after_the_window_is_refused_and_the_marks_are_purged(service: CheckpointService,
                                                                        tmp_path: Path) -> None:
    late = service.verify("P1234567", [sample("Megawati_Sukarnoputri_0002.jpg")], actor=ARRIVAL_KIOSK)
    rated = service.verify("P1234567", [sample("Megawati_Sukarnoputri_0004.jpg")], actor=ARRIVAL_KIOSK)
    fresh = service.verify("Q7654321", [sample("Kofi_Annan_0004.jpg")], actor=ARRIVAL_KIOSK)
    window = int(RATING_WINDOW.total_seconds() // 60)
    _decided_ago(service, late.feedback_id, window + 1)
    with pytest.raises(RatingWindowClosed, match="can no longer be rated"):
        service.rate_decision(late.feedback_id, 4)
    _decided_ago(service, rated.feedback_id, window - 2)  # still inside the window
    service.rate_decision(rated.feedback_id, 2)
    service.rate_decision(fresh.feedback_id, 3)
    assert service.events is not None
    assert service.events.store.purge_marks() == 0  # both inside their window
    _decided_ago(service, rated.feedback_id, window + 1)
    with pytest.raises(RatingWindowClosed):  # refused on the event's minute, the mark still there or not
        service.rate_decision(rated.feedback_id, 1)
    assert service.events.store.purge_marks() == 1
    wal = tmp_path / "data" / "checkpoint.db-wal"  # truncated as after an erasure: no frame keeps the mark's page
    assert not wal.exists() or rated.feedback_id.encode() not in wal.read_bytes()
    with pytest.raises(RatingWindowClosed):  # and without its mark, still refused, never counted again
        service.rate_decision(rated.feedback_id, 1)
    with pytest.raises(FeedbackRefused):
        service.rate_decision(fresh.feedback_id, 4)
    events = open_event_store(tmp_path / "data")
    try:
        today = datetime.now(UTC).date()
        (row,) = events.monthly_satisfaction(today - timedelta(days=1), today + timedelta(days=1))
        assert row.counts == (0, 1, 1, 0)
        # No table holds the event id of a decision rated once its window has passed, but the events' own.
        with events.backend._read() as view:
            tables = [r[0] for r in view.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()]
            holding = set()
            for table in tables:
                if table in ("decision_events", "event_nationality"):  # every event, rated or not
                    continue
                columns = [r[1] for r in view.execute(f"PRAGMA table_info({table})").fetchall()]
                for column in columns:
                    if view.execute(f"SELECT 1 FROM {table} WHERE CAST({column} AS TEXT) LIKE ?",
                                    (f"%{rated.feedback_id}%",)).fetchone():
                        holding.add(f"{table}.{column}")
        assert holding == set()
        assert [r[0] for r in table_rows(events)["rating_marks"]] == [fresh.feedback_id]
    finally:
        events.close()


def test_a_station_of_schema_6_is_migrated_to_counters_at_its_start(tmp_path: Path) -> None:
    """The service's own store (a single station) at version 6, with a rating kept per decision: at the start the
    rating becomes a count of its month, the decision stays marked (inside its window), the deltas the migration
    made are discarded (a single station ships nothing) and the ratings' rows are gone."""
    s = open_service(tmp_path)
    try:
        info, image = SUBJECTS["P1234567"]
        s.enrol("P1234567", info, [sample(image)])
        rated, unrated = (s.verify("P1234567", [sample("Megawati_Sukarnoputri_0002.jpg")], actor=ARRIVAL_KIOSK)
                          for _ in range(2))
    finally:
        s.close()
    now = datetime.now(UTC)
    db = sqlite3.connect(tmp_path / "data" / "checkpoint.db")
    try:
        with db:  # back to version 6, the rating stored as version 6 stored it
            for table in ("agg_monthly_satisfaction", "rating_marks", "rating_deltas", "rating_shipments",
                          "rating_batches"):
                db.execute(f"DROP TABLE {table}")
            db.executescript(event_tables("sqlite"))
            db.execute("INSERT INTO event_feedback(event_id, rating, minute) VALUES (?, 2, ?)",
                       (rated.feedback_id, now.strftime("%Y-%m-%dT%H:%M")))
            db.execute("INSERT INTO agg_daily_satisfaction(day, station, r2) VALUES (?, 'rokot-airport', 1)",
                       (local_text(now)[:10],))
            db.execute("PRAGMA user_version = 6")
    finally:
        db.close()
    s = open_service(tmp_path)
    try:
        assert s.storage.schema_version() == 7
        with pytest.raises(FeedbackRefused):
            s.rate_decision(rated.feedback_id, 4)
        s.rate_decision(unrated.feedback_id, 4)
        events = open_event_store(tmp_path / "data")
        try:
            today = datetime.now(UTC).date()
            (row,) = events.monthly_satisfaction(today, today)
            assert row.counts == (0, 1, 0, 1)
            rows = table_rows(events)
            assert sorted(r[0] for r in rows["rating_marks"]) == sorted([rated.feedback_id, unrated.feedback_id])
            assert rows["rating_deltas"] == [] and rows["rating_shipments"] == []
            with events.backend._read() as view:
                tables = {r[0] for r in view.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            assert not {"event_feedback", "agg_daily_satisfaction"} & tables
        finally:
            events.close()
        assert s.storage.erasures_in_wal() == 0  # the WAL truncated after the migration dropped the rows
    finally:
        s.close()


def test_recording_can_be_switched_off(tmp_path: Path) -> None:
    s = open_service(tmp_path, record_events=False)
    try:
        info, image = SUBJECTS["P1234567"]
        s.enrol("P1234567", info, [sample(image)])
        result = s.verify("P1234567", [sample("Megawati_Sukarnoputri_0002.jpg")], actor=ARRIVAL_KIOSK)
        assert result.match and result.feedback_id == ""
        with pytest.raises(EventNotFound, match="does not record"):
            s.rate_decision("a" * 32, 3)
        events = open_event_store(tmp_path / "data")
        try:
            assert all(rows == [] for rows in table_rows(events).values())
        finally:
            events.close()
    finally:
        s.close()


@pytest.mark.slow
def test_a_station_keeps_its_events_while_the_register_is_away_and_ships_them_later(tmp_path: Path) -> None:
    with fresh_database() as url, LinkProxy.to_url(url) as proxy:
        island = CheckpointService.open(StoreLocation(tmp_path / "siberut", key_dir=tmp_path / "keys",
                                                      store_url=proxy.url(url), station="siberut-port"),
                                        config=ServiceConfig(lanes={"kiosk-dep": "departure"}))
        island.start(retry_s=0.2, poll_s=0.5)
        register = open_event_store(url)  # the register, read directly (not through the cut link)
        today = datetime.now(UTC).date()

        def in_register() -> int:
            return sum(r.count for r in register.hourly(today - timedelta(days=1), today + timedelta(days=1)))

        try:
            info, image = SUBJECTS["P1234567"]
            assert island.enrol("P1234567", info, [sample(image)]).enrolled
            first = island.verify("P1234567", [sample("Megawati_Sukarnoputri_0002.jpg")], actor=ARRIVAL_KIOSK)
            wait_until(lambda: in_register() == 1, timeout=20, message="the first event reached the register")
            proxy.cut()
            wait_until(lambda: not island.sync_status()["register_connected"], timeout=10,
                       message="the station noticed the cut")
            away = [island.verify("P1234567", [sample("Megawati_Sukarnoputri_0004.jpg")], actor=DEPARTURE_KIOSK,
                                  document_nationality="IDN") for _ in range(3)]
            island.rate_decision(away[0].feedback_id, 4)  # rated while the register is away
            island.rate_decision(first.feedback_id, 2)
            assert island.events is not None and pending_events(island.events.store) == 3
            assert pending_ratings(island.events.store) == 2  # as counters in the journal, until shipped
            assert in_register() == 1
            proxy.restore()
            wait_until(lambda: in_register() == 4, timeout=30, message="the journal's events reached the register")
            wait_until(lambda: sum(r.n for r in register.monthly_satisfaction(today - timedelta(days=1),
                                                                             today + timedelta(days=1))) == 2,
                       timeout=30, message="the ratings reached the register")
            wait_until(lambda: pending_ratings(island.events.store) == 0, timeout=10,  # type: ignore[union-attr]
                       message="the journal's shipment deleted")
            rows = register.hourly(today - timedelta(days=1), today + timedelta(days=1))
            assert {(r.station, r.direction, r.count) for r in rows} == {("siberut-port", "arrival", 1),
                                                                       ("siberut-port", "departure", 3)}
            with pytest.raises(FeedbackRefused):  # the station knows it was rated (the register keeps no marks)
                island.rate_decision(away[0].feedback_id, 1)
            assert table_rows(register)["rating_marks"] == []
            wait_until(lambda: table_rows(register)["rating_batches"] == [], timeout=10,  # settled: forgotten
                       message="the register forgot the settled shipment's id")
            # The register's copies carry no personal data either.
            ring = KeyRing.load(tmp_path / "keys" / "keyring.json")
            dump = json.dumps(table_rows(register), default=str)
            assert "kiosk-dep" in dump
            assert [s for s in ("P1234567", info.name, info.date_of_birth, ring.pseudonym("P1234567"),
                                first.decision_id, *(a.decision_id for a in away)) if s in dump] == []
        finally:
            register.close()
            island.close()


def test_a_traveller_who_walks_away_after_a_failed_first_attempt_is_published_when_the_window_passes(
        service: CheckpointService, tmp_path: Path) -> None:
    """A first call that is not accepted is a step (the kiosk is to call again) and publishes nothing; if no
    later call comes within the window (the traveller went to an officer), the transaction is published then,
    once, as see_officer; one that another call ends is not published twice; open ones are published at close."""
    clock = {"now": 1000.0}
    service.attempt_ledger._clock = lambda: clock["now"]
    before = published(tmp_path)
    first = service.verify("P1234567", [sample("Hans_Blix_0001.jpg")], actor=ARRIVAL_KIOSK, attempts=2, attempt=1)
    assert not first.match and first.feedback_id == ""
    assert service.publish_ended_transactions() == 0 and published(tmp_path) == before, "within the window"
    clock["now"] += service.attempt_ledger.window_seconds + 1
    assert service.publish_ended_transactions() == 1
    assert published(tmp_path)[len(before):] == ["see_officer"]
    assert service.publish_ended_transactions() == 0, "once"
    # a transaction that its second call ends publishes that call's event only
    service.verify("Q7654321", [sample("Hans_Blix_0001.jpg")], actor=ARRIVAL_KIOSK, attempts=2, attempt=1)
    service.verify("Q7654321", [sample("Hans_Blix_0001.jpg")], actor=ARRIVAL_KIOSK, attempts=2, attempt=2)
    clock["now"] += service.attempt_ledger.window_seconds + 1
    assert service.publish_ended_transactions() == 0
    assert published(tmp_path)[len(before):] == ["see_officer", "see_officer"]
    # one still open when the station stops
    service.verify("P1234567", [sample("Hans_Blix_0001.jpg")], actor=ARRIVAL_KIOSK, attempts=2, attempt=1)
    assert service.publish_ended_transactions(all_open=True) == 1
    assert published(tmp_path)[len(before):] == ["see_officer"] * 3


def _order_join(store: SqlEventStore, audit: list[str]) -> dict[str, int]:
    """The review's join, as anyone reading the store and the audit chain could make it (a DB administrator, a
    backup, the portal's host): the events in the order they were written, zipped with the published decisions
    of the chain in its order (the event is written in its audit record's transaction), give each event id its
    subject; any table holding a rating beside an event id then gives each rating its subject."""
    decisions = [e["fields"]["subject_ref"] for e in map(json.loads, audit) if e.get("kind") == "verify"]
    with store.backend._read() as view:
        order = [r[0] for r in view.execute("SELECT event_id FROM decision_events ORDER BY n").fetchall()]
        subject_of = dict(zip(order, decisions, strict=False))
        recovered: dict[str, int] = {}
        tables = [r[0] for r in view.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()]
        for table in tables:  # every table that holds a rating beside an event id
            columns = {r[1] for r in view.execute(f"PRAGMA table_info({table})").fetchall()}
            if {"event_id", "rating"} <= columns:
                for event_id, rating in view.execute(f"SELECT event_id, rating FROM {table}").fetchall():
                    recovered[subject_of[event_id]] = int(rating)
    return recovered


def test_a_rating_cannot_be_tied_to_its_subject_by_the_order_of_the_events(service: CheckpointService,
                                                                           tmp_path: Path) -> None:
    first = service.verify("P1234567", [sample("Megawati_Sukarnoputri_0002.jpg")], actor=ARRIVAL_KIOSK)
    second = service.verify("Q7654321", [sample("Kofi_Annan_0004.jpg")], actor=ARRIVAL_KIOSK)
    service.rate_decision(first.feedback_id, 4)
    service.rate_decision(second.feedback_id, 1)
    truth = {service._ref("P1234567"): 4, service._ref("Q7654321"): 1}
    events = open_event_store(tmp_path / "data")
    try:
        recovered = _order_join(events, list(service.alert_store.audit_entries()))
    finally:
        events.close()
    assert not recovered.items() & truth.items()
