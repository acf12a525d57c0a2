"""The event store on both back ends: aggregates equal a recomputation from the events, feedback once only,
retention, read-only opening beside a writer, shipping a journal to the register."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from pg import fresh_database

from biometrics.crypto import KeyRing
from biometrics.event_schema import HISTOGRAM_COLUMNS
from biometrics.event_store import (
    BPS_PORTS,
    NoEventTables,
    ReadOnlyStore,
    SqlEventStore,
    SqliteFile,
    open_event_store,
    port_code,
    ship_events,
)
from biometrics.events import (
    ARRIVAL,
    CATEGORIES,
    DEPARTURE,
    OUTCOMES,
    QUALITY_BUCKETS,
    UNKNOWN_NATIONALITY,
    DecisionEvent,
    EventNotFound,
    FeedbackRefused,
    InvalidRating,
    category_of,
    histogram_bucket,
    local_text,
    percentile_ms,
)
from biometrics.register import RegisterStorage
from biometrics.storage import Storage

STATIONS = ("rokot-airport", "tuapejat-port", "siberut-port")
NATIONALITIES = ("IDN", "AUS", "USA", "DEU", "")
T0 = datetime(2026, 3, 30, 21, 0, tzinfo=UTC)  # the simulated days cross a month's end


def simulated(n: int, seed: int = 7, start: datetime = T0) -> list[DecisionEvent]:
    """``n`` events over about three days, every field varied (processing times across the buckets)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        nationality = rng.choice(NATIONALITIES)
        out.append(DecisionEvent(
            minute=start + timedelta(seconds=rng.randrange(3 * 86400)), station=rng.choice(STATIONS),
            lane=f"kiosk-{rng.randrange(4)}", direction=rng.choice((ARRIVAL, DEPARTURE)),
            category=category_of(nationality), outcome=rng.choice(OUTCOMES),
            processing_ms=rng.choice((12.0, 25.0, 180.0, 999.0, 1000.0, 1000.5, 4200.0, 45000.0)),
            quality=rng.choice(QUALITY_BUCKETS), model_version="dlib-resnet-v1", calibration_version="c1",
            nationality=nationality))
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def events(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlEventStore]:
    """A writable event store on each back end (opened as a simulation would, without a key ring)."""
    if request.param == "sqlite":
        store = open_event_store(tmp_path / "events.db", readonly=False, service_target_ms=1000)
        yield store
        store.close()
    else:
        with fresh_database() as url:
            store = open_event_store(url, readonly=False, service_target_ms=1000)
            yield store
            store.close()


def recompute_hourly(evs: list[DecisionEvent], target: float) -> dict[tuple[str, str, str], tuple]:
    rows: dict[tuple[str, str, str], list] = {}
    lanes: dict[tuple[str, str, str], set[str]] = {}
    for e in evs:
        key = (e.minute.strftime("%Y-%m-%dT%H"), e.station, e.direction)
        row = rows.setdefault(key, [0, 0, [0] * len(HISTOGRAM_COLUMNS)])
        row[0] += 1
        row[1] += e.processing_ms <= target
        row[2][histogram_bucket(e.processing_ms)] += 1
        lanes.setdefault(key, set()).add(e.lane)
    return {k: (v[0], v[1], len(lanes[k]), tuple(v[2])) for k, v in rows.items()}


def test_aggregates_equal_a_recomputation_from_the_events(events: SqlEventStore) -> None:
    evs = simulated(3000)
    ids = [events.record_decision(e) for e in evs[:200]]  # one at a time, as the service records them
    assert len(set(ids)) == 200 and all(len(i) == 32 for i in ids)
    assert events.record_decisions(evs[200:], batch=700) == 2800  # in batches, as a bulk load does
    got = {(r.hour.strftime("%Y-%m-%dT%H"), r.station, r.direction): (r.count, r.within_target, r.lanes_active,
                                                                      r.histogram)
           for r in events.hourly(date(2026, 3, 1), date(2026, 4, 30))}
    assert got == recompute_hourly(evs, 1000.0)
    arrivals = Counter((local_text(e.minute)[:7], e.station, e.nationality or UNKNOWN_NATIONALITY)
                       for e in evs if e.direction == ARRIVAL)  # the local (WIB) month of each arrival
    rows = events.monthly_arrivals(date(2026, 2, 1), date(2026, 5, 1))
    assert {(r.month.strftime("%Y-%m"), r.station, r.nationality): r.count for r in rows} == dict(arrivals)
    assert {r.port_code for r in rows} == {BPS_PORTS[s] for s in STATIONS}
    assert events.stations() == sorted(STATIONS)
    assert events.last_update() is not None


def test_readers_filter_by_day_and_station(events: SqlEventStore) -> None:
    evs = simulated(500)
    events.record_decisions(evs)
    day = date(2026, 3, 31)
    rows = events.hourly(day, day, station="siberut-port")
    expected = {k for k in recompute_hourly(evs, 1000) if k[0].startswith("2026-03-31") and k[1] == "siberut-port"}
    assert {(r.hour.strftime("%Y-%m-%dT%H"), r.station, r.direction) for r in rows} == expected
    assert all(r.hour.tzinfo is not None for r in rows)
    april = events.monthly_arrivals(date(2026, 4, 2), date(2026, 4, 2), station="rokot-airport")
    assert april and {(r.month, r.station) for r in april} == {(date(2026, 4, 1), "rokot-airport")}


def test_feedback_once_per_decision(events: SqlEventStore) -> None:
    evs = simulated(40)
    ids = [events.record_decision(e) for e in evs]
    when = datetime(2026, 4, 1, 9, 30, tzinfo=UTC)
    ratings = [1, 2, 3, 4, 4, 3, 3, 4, 2, 4]
    for event_id, rating in zip(ids, ratings, strict=False):
        events.record_feedback(event_id, rating, at=when)
    with pytest.raises(FeedbackRefused, match="rated already"):
        events.record_feedback(ids[0], 4, at=when)
    with pytest.raises(EventNotFound):
        events.record_feedback("0" * 32, 3)
    for bad in (0, 5, -1, True, 2.5, "3"):
        with pytest.raises(InvalidRating):
            events.record_feedback(ids[-1], bad)  # type: ignore[arg-type]
    rows = events.daily_satisfaction(date(2026, 4, 1), date(2026, 4, 1))
    by_station: dict[str, list[int]] = {}
    for event_id, rating in zip(ids, ratings, strict=False):
        station = evs[ids.index(event_id)].station
        by_station.setdefault(station, [0, 0, 0, 0])[rating - 1] += 1
    assert {r.station: list(r.counts) for r in rows} == by_station
    assert sum(r.n for r in rows) == 10 and sum(r.positive for r in rows) == 7
    assert all(r.day == date(2026, 4, 1) for r in rows)


def test_retention_folds_old_nationality_rows_and_keeps_the_monthly_counts(events: SqlEventStore) -> None:
    old = simulated(400, seed=1, start=datetime(2025, 11, 1, tzinfo=UTC))
    recent = simulated(400, seed=2, start=datetime(2026, 2, 20, tzinfo=UTC))
    events.record_decisions(old + recent)
    before = events.monthly_arrivals(date(2025, 1, 1), date(2026, 12, 31))
    now = datetime(2026, 3, 1, tzinfo=UTC)  # 90 days back: 2025-12-01

    def nationality_minutes() -> list[str]:
        with events.backend._read() as view:
            return [r[0] for r in view.execute("SELECT minute FROM event_nationality").fetchall()]

    held = nationality_minutes()
    expired = sum(1 for m in held if m < "2025-12-01T00:00")
    assert expired > 0
    assert events.fold_expired(now) == expired
    assert min(nationality_minutes()) >= "2025-12-01T00:00"
    assert len(nationality_minutes()) == len(held) - expired
    assert events.fold_expired(now) == 0  # idempotent
    assert events.monthly_arrivals(date(2025, 1, 1), date(2026, 12, 31)) == before


def test_only_arrivals_keep_a_nationality_row(events: SqlEventStore) -> None:
    evs = simulated(300)
    events.record_decisions(evs)
    with events.backend._read() as view:
        held = view.execute("SELECT COUNT(*) FROM event_nationality").fetchone()[0]
    assert held == sum(1 for e in evs if e.direction == ARRIVAL and e.nationality)


def test_a_bad_event_is_refused_and_nothing_of_its_batch_is_kept(events: SqlEventStore) -> None:
    good = simulated(10)
    bad = DecisionEvent(T0, "rokot-airport", "k", "sideways", CATEGORIES[0], OUTCOMES[0], 10.0, "high", "m", "c")
    with pytest.raises(ValueError, match="direction"):
        events.record_decisions([*good, bad])
    assert events.hourly(date(2026, 1, 1), date(2026, 12, 31)) == []


def test_a_reader_opens_beside_the_server_without_the_key_ring(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ring = KeyRing.generate()
    server_store = Storage(data_dir / "checkpoint.db", ring, station="rokot-airport")  # holds the file open
    writer = SqlEventStore(server_store)
    writer.record_decisions(simulated(50))
    reader = open_event_store(data_dir)  # the data directory, no key ring
    try:
        assert sum(r.count for r in reader.hourly(date(2026, 3, 1), date(2026, 4, 30))) == 50
        writer.record_decision(simulated(1, seed=9)[0])
        assert sum(r.count for r in reader.hourly(date(2026, 3, 1), date(2026, 4, 30))) == 51
        with pytest.raises(ReadOnlyStore):
            reader.record_decision(simulated(1)[0])
        with pytest.raises(sqlite3.OperationalError, match="readonly"), reader.backend.transaction() as tx:
            tx.execute("DELETE FROM agg_hourly")
    finally:
        reader.close()
        server_store.close()


def test_a_store_without_event_tables_is_named(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE subjects (ref TEXT)")
        db.execute("PRAGMA user_version = 3")
    with pytest.raises(NoEventTables, match="schema version 3"):
        SqliteFile(path)


def test_the_register_reads_read_only(tmp_path: Path) -> None:
    with fresh_database() as url:
        register = RegisterStorage(url, KeyRing.generate(), station="rokot-airport")
        register.open()  # the migration a station runs
        SqlEventStore(register).record_decisions(simulated(30))
        reader = open_event_store(url)
        try:
            assert sum(r.count for r in reader.hourly(date(2026, 3, 1), date(2026, 4, 30))) == 30
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), reader.backend.transaction() as tx:
                tx.execute("DELETE FROM agg_hourly")
        finally:
            reader.close()
            register.close()


def test_a_journal_ships_its_events_and_ratings_to_the_register_once(tmp_path: Path) -> None:
    journal = SqlEventStore(SqliteFile(tmp_path / "journal.db", readonly=False), journal=True, owns_backend=True)
    evs = simulated(700)
    ids = [journal.record_decision(e) for e in evs[:20]]
    journal.record_decisions(evs[20:])
    journal.record_feedback(ids[0], 4)
    journal.record_feedback(ids[1], 1)
    with fresh_database() as url:
        register = open_event_store(url, readonly=False)
        try:
            assert ship_events(journal, register, limit=300) == 300  # events first, in order
            while ship_events(journal, register, limit=300):
                pass
            assert sum(r.count for r in register.hourly(date(2026, 3, 1), date(2026, 4, 30))) == 700
            assert sum(r.n for r in register.daily_satisfaction(date(2020, 1, 1), date(2030, 1, 1))) == 2
            # A crash after the register committed but before the journal's mark: shipping again adds nothing.
            with journal.backend.transaction() as tx:
                tx.execute("UPDATE meta SET value = '0' WHERE name IN ('events_shipped_upto', 'feedback_shipped_upto')")
            while ship_events(journal, register):
                pass
            assert register.hourly(date(2026, 3, 1), date(2026, 4, 30)) == journal.hourly(date(2026, 3, 1),
                                                                                            date(2026, 4, 30))
            assert register.monthly_arrivals(date(2026, 1, 1), date(2026, 12, 1)) == journal.monthly_arrivals(
                date(2026, 1, 1), date(2026, 12, 1))
            assert register.daily_satisfaction(date(2020, 1, 1), date(2030, 1, 1)) == journal.daily_satisfaction(
                date(2020, 1, 1), date(2030, 1, 1))
            with pytest.raises(FeedbackRefused):
                register.record_feedback(ids[0], 2)
        finally:
            register.close()
            journal.close()


def test_every_station_has_a_port_code() -> None:
    assert all(port_code(s) for s in (*STATIONS, "sikakap-port", "padang-office"))
    assert port_code("elsewhere") == ""


def test_percentiles_come_off_the_histogram() -> None:
    hist = [0] * len(HISTOGRAM_COLUMNS)
    for ms in (20, 30, 30, 130, 900):
        hist[histogram_bucket(ms)] += 1
    assert percentile_ms(hist, 0.5) == 50
    assert percentile_ms(hist, 0.95) == 1000
    assert percentile_ms([0] * len(hist), 0.5) is None


def test_a_journal_keeps_unshipped_nationality_rows_past_retention(tmp_path: Path) -> None:
    journal = SqlEventStore(SqliteFile(tmp_path / "journal.db", readonly=False), journal=True, owns_backend=True)
    journal.record_decisions(simulated(200, start=datetime(2025, 11, 1, tzinfo=UTC)))
    later = datetime(2026, 6, 1, tzinfo=UTC)  # every row is past retention
    try:
        assert journal.fold_expired(later) == 0  # nothing shipped yet: the register has not counted them
        with fresh_database() as url:
            register = open_event_store(url, readonly=False)
            try:
                while ship_events(journal, register):
                    pass
                assert journal.fold_expired(later) > 0
                assert register.fold_expired(later) > 0
                assert register.monthly_arrivals(date(2025, 1, 1), date(2026, 12, 1)) == journal.monthly_arrivals(
                    date(2025, 1, 1), date(2026, 12, 1))
            finally:
                register.close()
    finally:
        journal.close()


def _as_before_local_keys(store: SqlEventStore, folded_before: str | None) -> None:
    """Put ``store`` back as the schema before the local keys left it: UTC months and days, older version."""
    postgres = not isinstance(store.backend, SqliteFile)
    with store.backend.transaction() as tx:
        tx.execute("DELETE FROM agg_monthly_arrivals")
        tx.execute("INSERT INTO agg_monthly_arrivals(month, station, port_code, nationality, arrivals) "
                   "SELECT substr(e.minute, 1, 7), e.station, '', COALESCE(x.nationality, 'XXX'), COUNT(*) FROM "
                   "decision_events e LEFT JOIN event_nationality x ON x.event_id = e.event_id WHERE e.direction = "
                   "'arrival' GROUP BY 1, 2, 3, 4")
        tx.execute("DELETE FROM agg_daily_satisfaction")
        tx.execute("INSERT INTO agg_daily_satisfaction(day, station, r1, r2, r3, r4) SELECT substr(f.minute, 1, 10), "
                   "e.station, COUNT(*), 0, 0, 0 FROM event_feedback f JOIN decision_events e ON e.event_id = "
                   "f.event_id GROUP BY 1, 2")
        tx.execute("DELETE FROM meta WHERE name = 'monthly_arrivals_local_from'")
        if folded_before is not None:
            tx.execute("DELETE FROM event_nationality WHERE minute < ?", (folded_before,))
            tx.execute("INSERT INTO meta(name, value) VALUES ('nationality_folded_before', ?)", (folded_before,))
        if postgres:
            tx.execute("UPDATE meta SET value = '4' WHERE name = 'schema_version'")
        else:
            tx.execute("PRAGMA user_version = 4")


@pytest.mark.parametrize("folded_before", [None, "2026-03-20T00:00"])
def test_the_migration_keys_months_and_days_by_local_time(events: SqlEventStore, folded_before: str | None) -> None:
    def arrival(when: datetime, nationality: str) -> DecisionEvent:
        return DecisionEvent(when, "rokot-airport", "k1", ARRIVAL, category_of(nationality), "proceed", 600.0, "high",
                             "m", "c", nationality=nationality)

    late = datetime(2026, 3, 31, 20, 0, tzinfo=UTC)  # 1 April, 03:00 WIB
    events.record_decisions([arrival(datetime(2026, 3, 15, 2, 0, tzinfo=UTC), "AUS")] * 2)
    ids = [events.record_decision(arrival(late, "JPN")) for _ in range(3)]
    events.record_feedback(ids[0], 4, at=late)
    where = events.backend.url if not isinstance(events.backend, SqliteFile) else events.backend.path
    _as_before_local_keys(events, folded_before)
    events.close()
    migrated = open_event_store(where, readonly=False)  # the migration runs at open
    try:
        months = {(r.month, r.nationality): r.count for r in migrated.monthly_arrivals(date(2026, 3, 1),
                                                                                         date(2026, 4, 1))
                  if r.count}
        assert months == {(date(2026, 3, 1), "AUS"): 2, (date(2026, 4, 1), "JPN"): 3}  # JPN arrived on 1 April
        (rating,) = migrated.daily_satisfaction(date(2026, 3, 1), date(2026, 4, 30))
        assert rating.day == date(2026, 4, 1)
        with migrated.backend._read() as view:
            since = view.execute("SELECT value FROM meta WHERE name = 'monthly_arrivals_local_from'").fetchone()[0]
        # folded nationality rows: the months before the first local month whose rows were all there stay UTC
        assert since == ("" if folded_before is None else "2026-04")
        migrated.record_decision(arrival(late, "JPN"))  # and from now on, written by local month
        assert sum(r.count for r in migrated.monthly_arrivals(date(2026, 4, 1), date(2026, 4, 1))) == 4
    finally:
        migrated.close()
