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
from biometrics.event_schema import HISTOGRAM_COLUMNS, event_tables
from biometrics.event_store import (
    BPS_PORTS,
    NoEventTables,
    ReadOnlyStore,
    SqlEventStore,
    SqliteFile,
    open_event_store,
    pending_ratings,
    port_code,
    ship_events,
    ship_ratings,
)
from biometrics.events import (
    ARRIVAL,
    CATEGORIES,
    DEPARTURE,
    OUTCOMES,
    QUALITY_BUCKETS,
    RATING_WINDOW,
    UNKNOWN_NATIONALITY,
    DecisionEvent,
    EventNotFound,
    FeedbackRefused,
    InvalidRating,
    RatingWindowClosed,
    SatisfactionRow,
    category_of,
    histogram_bucket,
    local_text,
    percentile_ms,
)
from biometrics.register import RegisterStorage
from biometrics.storage import Storage
from portal.periods import month_end
from portal.satisfaction_release import release_month

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
    ratings = [1, 2, 3, 4, 4, 3, 3, 4, 2, 4]
    for event_id, e, rating in zip(ids, evs, ratings, strict=False):
        events.record_feedback(event_id, rating, at=e.minute + timedelta(minutes=2))
    with pytest.raises(FeedbackRefused, match="rated already"):
        events.record_feedback(ids[0], 4, at=evs[0].minute + timedelta(minutes=3))
    with pytest.raises(EventNotFound):
        events.record_feedback("0" * 32, 3)
    for bad in (0, 5, -1, True, 2.5, "3"):
        with pytest.raises(InvalidRating):
            events.record_feedback(ids[-1], bad)  # type: ignore[arg-type]
    rows = events.monthly_satisfaction(date(2026, 3, 1), date(2026, 4, 30))
    expected: dict[tuple[date, str], list[int]] = {}
    for e, rating in zip(evs, ratings, strict=False):  # the local month of each rating, at its station
        month = date.fromisoformat(local_text(e.minute + timedelta(minutes=2))[:7] + "-01")
        expected.setdefault((month, e.station), [0, 0, 0, 0])[rating - 1] += 1
    assert {(r.month, r.station): list(r.counts) for r in rows} == expected
    assert sum(r.n for r in rows) == 10 and sum(r.positive for r in rows) == 7
    with events.backend._read() as view:
        marks = {r[0] for r in view.execute("SELECT event_id FROM rating_marks").fetchall()}
        deltas = view.execute("SELECT COUNT(*) FROM rating_deltas").fetchone()[0]
    assert marks == set(ids[:10]) and deltas == 0  # a mark per rated decision; deltas only on a journal


def test_a_rating_is_taken_within_its_window_only(events: SqlEventStore) -> None:
    decided = datetime(2026, 4, 1, 9, 30, 40, tzinfo=UTC)  # the event keeps 09:30
    first, second, third = (events.record_decision(DecisionEvent(decided, "rokot-airport", "k1", ARRIVAL, "citizen",
                                                                 "proceed", 100.0, "high", "m", "c"))
                            for _ in range(3))
    window_end = datetime(2026, 4, 1, 9, 31, tzinfo=UTC) + RATING_WINDOW  # from the end of the decision's minute
    events.record_feedback(first, 3, at=window_end - timedelta(seconds=1))
    with pytest.raises(RatingWindowClosed, match="can no longer be rated"):
        events.record_feedback(second, 3, at=window_end)
    with pytest.raises(RatingWindowClosed):  # late, even for a decision rated already
        events.record_feedback(first, 3, at=window_end)
    assert events.purge_marks(window_end - timedelta(minutes=1)) == 0  # inside the window: kept
    assert events.purge_marks(window_end) == 1
    assert events.purge_marks(window_end) == 0  # idempotent
    with events.backend._read() as view:
        assert view.execute("SELECT COUNT(*) FROM rating_marks").fetchone()[0] == 0
    with pytest.raises(RatingWindowClosed):  # the mark is gone: refused on the event's minute all the same
        events.record_feedback(first, 1, at=window_end + timedelta(hours=1))
    events.record_feedback(third, 4, at=decided)
    (row,) = events.monthly_satisfaction(date(2026, 4, 1), date(2026, 4, 1))
    assert row.counts == (0, 0, 1, 1)


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


def _rate(store: SqlEventStore, ids: list[str], evs: list[DecisionEvent], ratings: dict[int, int]) -> None:
    """Rate the decisions ``ids[k]`` (``k`` -> rating) a minute after each."""
    for k, rating in ratings.items():
        store.record_feedback(ids[k], rating, at=evs[k].minute + timedelta(minutes=1))


def test_a_journal_ships_its_events_and_ratings_to_the_register_once(tmp_path: Path) -> None:
    journal = SqlEventStore(SqliteFile(tmp_path / "journal.db", readonly=False), journal=True, owns_backend=True)
    evs = simulated(700)
    ids = [journal.record_decision(e) for e in evs[:20]]
    journal.record_decisions(evs[20:])
    _rate(journal, ids, evs, {0: 4, 1: 1})
    assert pending_ratings(journal) == 2
    far = (date(2020, 1, 1), date(2030, 1, 1))
    with fresh_database() as url:
        register = open_event_store(url, readonly=False)
        try:
            assert ship_events(journal, register, limit=300) == 300  # events first, in order
            while ship_events(journal, register, limit=300):
                pass
            assert sum(r.count for r in register.hourly(date(2026, 3, 1), date(2026, 4, 30))) == 700
            assert sum(r.n for r in register.monthly_satisfaction(*far)) == 2 and pending_ratings(journal) == 0
            # A crash after the register committed but before the journal's mark: shipping again adds nothing.
            with journal.backend.transaction() as tx:
                tx.execute("UPDATE meta SET value = '0' WHERE name = 'events_shipped_upto'")
            while ship_events(journal, register):
                pass
            assert register.hourly(date(2026, 3, 1), date(2026, 4, 30)) == journal.hourly(date(2026, 3, 1),
                                                                                            date(2026, 4, 30))
            assert register.monthly_arrivals(date(2026, 1, 1), date(2026, 12, 1)) == journal.monthly_arrivals(
                date(2026, 1, 1), date(2026, 12, 1))
            assert register.monthly_satisfaction(*far) == journal.monthly_satisfaction(*far)
            with pytest.raises(FeedbackRefused):  # the journal, where the decision was made, keeps its mark
                journal.record_feedback(ids[0], 2, at=evs[0].minute + timedelta(minutes=2))
            with register.backend._read() as view:  # the register keeps no marks, and no rating beside an id
                assert view.execute("SELECT COUNT(*) FROM rating_marks").fetchone()[0] == 0
                columns = {r[0] for r in view.execute("SELECT column_name FROM information_schema.columns WHERE "
                                                      "table_schema = current_schema() AND column_name = 'rating'")}
                assert columns == set()
        finally:
            register.close()
            journal.close()


def test_a_crash_between_the_commits_of_a_rating_shipment_counts_each_rating_once(tmp_path: Path) -> None:
    """The two cuts of a shipment: the register failing after the journal made its shipment (the link cut), and
    the journal failing after the register counted it (a crash before the journal deleted it)."""
    journal = SqlEventStore(SqliteFile(tmp_path / "journal.db", readonly=False), journal=True, owns_backend=True)
    evs = simulated(20)
    ids = [journal.record_decision(e) for e in evs]
    _rate(journal, ids, evs, {0: 4, 1: 1, 2: 3})
    far = (date(2020, 1, 1), date(2030, 1, 1))
    with fresh_database() as url:
        register = open_event_store(url, readonly=False)
        admin = psycopg.connect(url, autocommit=True)
        try:
            while ship_events(journal, register, limit=5):  # the events; then the ratings
                pass
            assert sum(r.n for r in register.monthly_satisfaction(*far)) == 3
            # 1. The register refuses the shipment after the journal moved its deltas into it.
            _rate(journal, ids, evs, {3: 2, 4: 2})
            admin.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                          "$$BEGIN RAISE EXCEPTION 'the link is cut'; END$$")
            admin.execute("CREATE TRIGGER cut BEFORE INSERT ON rating_batches FOR EACH ROW EXECUTE FUNCTION refuse()")
            with pytest.raises(psycopg.Error, match="the link is cut"):
                ship_ratings(journal, register)
            _rate(journal, ids, evs, {5: 4})  # rated meanwhile: into the deltas, for the next shipment
            assert pending_ratings(journal) == 3
            admin.execute("DROP TRIGGER cut ON rating_batches")
            assert ship_ratings(journal, register) == 2  # the shipment under way first, under its id
            assert ship_ratings(journal, register) == 1
            assert ship_ratings(journal, register) == 0
            assert sum(r.n for r in register.monthly_satisfaction(*far)) == 6
            # 2. The journal fails to delete its shipment after the register counted it.
            _rate(journal, ids, evs, {6: 1})
            with journal.backend.transaction() as tx:
                tx.execute("CREATE TRIGGER crash BEFORE DELETE ON rating_shipments BEGIN "
                           "SELECT RAISE(ABORT, 'the station crashed'); END")
            with pytest.raises(sqlite3.DatabaseError, match="the station crashed"):
                ship_ratings(journal, register)
            assert sum(r.n for r in register.monthly_satisfaction(*far)) == 7 and pending_ratings(journal) == 1
            with journal.backend.transaction() as tx:
                tx.execute("DROP TRIGGER crash")
            assert ship_ratings(journal, register) == 1  # shipped again, skipped by the register
            assert pending_ratings(journal) == 0
            assert register.monthly_satisfaction(*far) == journal.monthly_satisfaction(*far)
            assert sum(r.n for r in register.monthly_satisfaction(*far)) == 7
            with register.backend._read() as view:  # every shipment settled: no batch id kept for ever
                assert view.execute("SELECT COUNT(*) FROM rating_batches").fetchone()[0] == 0
        finally:
            admin.close()
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


#: The tables version 7 added (ratings as counters), and the two it dropped.
V7_TABLES = ("agg_monthly_satisfaction", "rating_marks", "rating_deltas", "rating_shipments", "rating_batches")
V6_RATING_TABLES = ("event_feedback", "agg_daily_satisfaction")


def _back_to_v6(store: SqlEventStore) -> None:
    """Put ``store`` back as schema version 6 left it: the ratings' own rows (``event_feedback``) and their daily
    counts, none of version 7's tables. Ratings are then written as version 6 wrote them (:func:`_v6_rating`)."""
    postgres = not isinstance(store.backend, SqliteFile)
    with store.backend.transaction() as tx:
        for table in V7_TABLES:
            tx.execute(f"DROP TABLE {table}")
        for statement in filter(str.strip, event_tables("postgresql" if postgres else "sqlite").split(";")):
            tx.execute(statement)  # CREATE ... IF NOT EXISTS: the two tables version 7 dropped
        if postgres:
            tx.execute("UPDATE meta SET value = '6' WHERE name = 'schema_version'")
        else:
            tx.execute("PRAGMA user_version = 6")


def _v6_rating(store: SqlEventStore, event_id: str, rating: int, at: datetime) -> int:
    """A rating as version 6 stored it (its row under the event id, with its minute; the local day's counter);
    returns its ``n``."""
    minute = at.strftime("%Y-%m-%dT%H:%M")
    with store.backend.transaction() as tx:
        (station,) = tx.execute("SELECT station FROM decision_events WHERE event_id = ?", (event_id,)).fetchone()
        (n,) = tx.execute("INSERT INTO event_feedback(event_id, rating, minute) VALUES (?, ?, ?) RETURNING n",
                          (event_id, rating, minute)).fetchone()
        tx.execute(f"INSERT INTO agg_daily_satisfaction(day, station, r{rating}) VALUES (?, ?, 1) ON CONFLICT "
                   f"(day, station) DO UPDATE SET r{rating} = agg_daily_satisfaction.r{rating} + 1",
                   (local_text(at)[:10], station))
    return int(n)


def _tables(store: SqlEventStore) -> set[str]:
    with store.backend._read() as view:
        if isinstance(store.backend, SqliteFile):
            return {r[0] for r in view.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}
        return {r[0] for r in view.execute("SELECT table_name FROM information_schema.tables WHERE "
                                           "table_schema = current_schema()").fetchall()}


def test_the_migration_to_counters_keeps_the_published_figures_and_the_unshipped_ratings(
        events: SqlEventStore) -> None:
    """Version 6 -> 7 on both back ends: the daily counts folded into months (every satisfaction figure the portal
    publishes is the same), a journal's unshipped ratings into its deltas, marks for the decisions still inside
    their window only, the ratings' own rows dropped."""
    sqlite = isinstance(events.backend, SqliteFile)
    now = datetime.now(UTC)

    def decision(when: datetime, station: str) -> str:
        return events.record_decision(DecisionEvent(when, station, "k1", ARRIVAL, "citizen", "proceed", 300.0,
                                                    "high", "m", "c"))

    old = [(datetime(2026, 3, 31, 16, 30, tzinfo=UTC), "rokot-airport", 4),  # 23:30 WIB on 31 March
           (datetime(2026, 3, 31, 17, 30, tzinfo=UTC), "rokot-airport", 2),  # 00:30 WIB on 1 April
           (datetime(2026, 3, 12, 2, 0, tzinfo=UTC), "siberut-port", 1),
           *((datetime(2026, 4, 2, 3, i, tzinfo=UTC), "siberut-port", 1 + i % 4) for i in range(15))]
    old_ids = [decision(when, station) for when, station, _ in old]
    recent = decision(now - timedelta(minutes=2), "rokot-airport")  # inside its window at the migration
    unrated = decision(now - timedelta(minutes=1), "rokot-airport")
    where = events.backend.url if not sqlite else events.backend.path
    stations = events.stations()
    _back_to_v6(events)
    ns = [_v6_rating(events, event_id, rating, when + timedelta(minutes=1))
          for event_id, (when, _, rating) in zip(old_ids, old, strict=True)]
    ns.append(_v6_rating(events, recent, 3, now))
    shipped_upto = ns[1]  # a journal that had shipped its first two ratings
    with events.backend.transaction() as tx:
        tx.execute("INSERT INTO meta(name, value) VALUES ('feedback_shipped_upto', ?)", (str(shipped_upto),))
        daily = [SatisfactionRow(date.fromisoformat(r[0]), r[1], tuple(int(c) for c in r[2:])) for r in tx.execute(
            "SELECT day, station, r1, r2, r3, r4 FROM agg_daily_satisfaction").fetchall()]
    months = sorted({date(d.month.year, d.month.month, 1) for d in daily})
    assert len(months) >= 3  # March, April and this month
    # As the portal published them before: the month's table from the daily rows of the month.
    before = {(m, public): release_month(m, [d for d in daily if m <= d.month <= month_end(m)], stations, public)
              for m in months for public in (True, False)}
    events.close()
    migrated = open_event_store(where, readonly=False)  # the migration runs at open
    try:
        after = {(m, public): release_month(m, migrated.monthly_satisfaction(m, m), migrated.stations(), public)
                 for m in months for public in (True, False)}
        assert after == before
        assert sum(r.n for r in migrated.monthly_satisfaction(date(2020, 1, 1), date(2030, 1, 1))) == len(ns)
        tables = _tables(migrated)
        assert set(V7_TABLES) <= tables and not set(V6_RATING_TABLES) & tables
        with migrated.backend._read() as view:
            marks = [r[0] for r in view.execute("SELECT event_id FROM rating_marks").fetchall()]
            deltas = sorted(tuple(r) for r in view.execute(
                "SELECT month, station, r1, r2, r3, r4 FROM rating_deltas").fetchall())
            meta = {r[0] for r in view.execute("SELECT name FROM meta").fetchall()}
        assert "feedback_shipped_upto" not in meta
        if sqlite:  # where decisions are rated (a station's file or journal)
            assert marks == [recent]
            unshipped = Counter()
            for (when, station, rating) in old[2:]:
                unshipped[(local_text(when + timedelta(minutes=1))[:7], station, rating)] += 1
            unshipped[(local_text(now)[:7], "rokot-airport", 3)] += 1
            expected = {}
            for (month, station, rating), n in unshipped.items():
                expected.setdefault((month, station), [0, 0, 0, 0])[rating - 1] += n
            assert deltas == sorted((m, s, *c) for (m, s), c in expected.items())
            with pytest.raises(FeedbackRefused):  # the mark kept: rated already, within its window
                migrated.record_feedback(recent, 1)
            migrated.record_feedback(unrated, 4)
        else:  # the register: its ratings came from the stations, which check them; it ships nothing
            assert marks == [] and deltas == []
    finally:
        migrated.close()


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
    where = events.backend.url if not isinstance(events.backend, SqliteFile) else events.backend.path
    _back_to_v6(events)
    _v6_rating(events, ids[0], 4, late)
    _as_before_local_keys(events, folded_before)
    events.close()
    migrated = open_event_store(where, readonly=False)  # the migration runs at open
    try:
        months = {(r.month, r.nationality): r.count for r in migrated.monthly_arrivals(date(2026, 3, 1),
                                                                                         date(2026, 4, 1))
                  if r.count}
        assert months == {(date(2026, 3, 1), "AUS"): 2, (date(2026, 4, 1), "JPN"): 3}  # JPN arrived on 1 April
        (rating,) = migrated.monthly_satisfaction(date(2026, 3, 1), date(2026, 4, 30))
        assert rating.month == date(2026, 4, 1)  # the local day, 1 April, then its month
        with migrated.backend._read() as view:
            since = view.execute("SELECT value FROM meta WHERE name = 'monthly_arrivals_local_from'").fetchone()[0]
        # folded nationality rows: the months before the first local month whose rows were all there stay UTC
        assert since == ("" if folded_before is None else "2026-04")
        migrated.record_decision(arrival(late, "JPN"))  # and from now on, written by local month
        assert sum(r.count for r in migrated.monthly_arrivals(date(2026, 4, 1), date(2026, 4, 1))) == 4
    finally:
        migrated.close()


def test_a_purged_mark_leaves_no_copy_in_the_wal(tmp_path: Path) -> None:
    """The rating's commit wrote the counter page and the mark's page in one transaction; once the mark is purged,
    a WAL still holding both (and the counter's page before) would give the rating of that decision back. The
    purge truncates the WAL, as an erasure does."""
    store = open_event_store(tmp_path / "events.db", readonly=False, service_target_ms=1000)
    try:
        decided = datetime(2026, 4, 1, 9, 30, tzinfo=UTC)
        event_id = store.record_decision(DecisionEvent(decided, "rokot-airport", "k1", ARRIVAL, "citizen", "proceed",
                                                       100.0, "high", "m", "c"))
        store.record_feedback(event_id, 2, at=decided + timedelta(minutes=1))
        wal = tmp_path / "events.db-wal"
        assert event_id.encode() in wal.read_bytes()  # the mark, in the WAL until the purge
        assert store.purge_marks(decided + timedelta(hours=1)) == 1
        assert event_id.encode() not in wal.read_bytes()  # (the file keeps the event, its id included: no rating)
        with store.backend._read() as view:
            assert view.execute("SELECT COUNT(*) FROM rating_marks").fetchone()[0] == 0
    finally:
        store.close()
