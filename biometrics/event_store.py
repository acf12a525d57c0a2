"""The store of decision events, their restricted nationality rows, feedback and incremental aggregates.

:class:`SqlEventStore` implements :class:`biometrics.events.EventStore` over either back end: the station's
SQLite file (:class:`biometrics.storage.Storage`) or the shared PostgreSQL register
(:class:`biometrics.register.RegisterStorage`), or, for a reader such as the portal, a plain connection that
needs no key ring (:func:`open_event_store`). The tables are those of :mod:`biometrics.event_schema`, added by
a versioned migration of each back end.

**Aggregates move with the events.** :meth:`SqlEventStore.write` inserts a batch of events and, in the same
transaction, adds the batch's counts to the hourly rows (per station and direction: decisions, decisions
within the service target, the processing-time histogram, lanes active), the monthly arrivals (per station,
BPS port code and nationality) and the list of stations. The month of an arrival is local (WIB,
:data:`biometrics.events.LOCAL_UTC_OFFSET_HOURS`), as the portal's days and months are. A reader reads only
those aggregate rows, never the events table.

**Ratings are counters only.** A rating adds one to its local month's satisfaction counter at its station
(``agg_monthly_satisfaction``: what the portal publishes, and no finer) and inserts the decision's mark
(``rating_marks``: the event id alone, no value, no time), in one transaction; a mark already there is a second
rating. No row holds a rating beside an event id or a time. A rating is taken only within
:data:`biometrics.events.RATING_WINDOW` of its decision, and the marks of decisions past it are deleted by the
housekeeping (:meth:`SqlEventStore.purge_marks`): a mark ties "rated" to a decision, which the order of the
events ties to its subject in the audit chain (docs/transparency.md).

**Nationality is restricted.** It is written only for arrivals, into ``event_nationality`` (event id ->
alpha-3, with the minute), and counted into the monthly arrivals in the event's own transaction. After the
retention period (default 90 days) :meth:`SqlEventStore.fold_expired` deletes the rows: their counts are
already in the monthly aggregates, which stay as they were. Running it again deletes nothing more.

**A station on a shared register** writes its events into its local journal (SQLite, beside its audit
journal), durable while the register is away; :func:`ship_events` copies them, their nationality rows and
their ratings into the register, idempotently (an event the register holds already is skipped, so a crash
between the two commits never counts an event twice). Its ratings travel as counters: each rating also adds to
the journal's ``rating_deltas`` (local month, station), which :func:`ship_ratings` moves into one shipment under
a random id, adds to the register's counters unless the register has counted that id already
(``rating_batches``), then deletes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

from biometrics.errors import InvalidSample
from biometrics.event_schema import HISTOGRAM_COLUMNS
from biometrics.events import (
    ARRIVAL,
    DEFAULT_NATIONALITY_RETENTION_DAYS,
    DEFAULT_SERVICE_TARGET_MS,
    RATING_WINDOW,
    RATINGS,
    UNKNOWN_NATIONALITY,
    DecisionEvent,
    EventNotFound,
    FeedbackRefused,
    HourlyRow,
    InvalidRating,
    MonthlyArrivalsRow,
    RatingWindowClosed,
    SatisfactionRow,
    check_event,
    check_nationality,
    histogram_bucket,
    local_text,
    to_minute,
)
from biometrics.storage import Transaction

log = logging.getLogger(__name__)

#: BPS port codes of the stations, for the monthly arrivals (so that they reconcile with the national
#: statistics of international visitor arrivals).
#:
#: PLACEHOLDERS, TO BE CONFIRMED BY THE OFFICE: the real BPS codes of these ports (BPS's "kode pintu masuk"
#: of the entry points it reports) could not be found with the sources available when this was written. BPS
#: Sumatera Barat's monthly release "Perkembangan Pariwisata dan Transportasi Sumatera Barat" (e.g. BRS
#: No.25/05/13/Th. XIX, 2 May 2016) counts foreign visitor arrivals through Minangkabau International Airport
#: and Teluk Bayur port only: none of these stations appears there as an entry point. The
#: codes below are made up in one recognisable pattern (``MTW-`` for the Mentawai Islands regency, then the
#: kind: ``A`` airport, ``S`` sea port, ``O`` office) so that no figure is ever mistaken for one of BPS's.
#: Replace them with BPS's codes before any figure is published as reconcilable.
BPS_PORTS: dict[str, str] = {
    "rokot-airport": "MTW-A01",  # Rokot airport, Sipora
    "tuapejat-port": "MTW-S01",  # Tuapejat sea port, Sipora
    "siberut-port": "MTW-S02",  # Maileppet / Siberut sea port
    "sikakap-port": "MTW-S03",  # Sikakap sea port, North Pagai
    "padang-office": "MTW-O01",  # the central office in Padang (desk decisions)
}
BPS_PORTS_SOURCE = "placeholders: the real BPS port codes are to be confirmed by the office (see BPS_PORTS)"

#: Events written per transaction by a bulk load.
BULK_BATCH = 20_000
_MINUTE = "%Y-%m-%dT%H:%M"
_LAST_UPDATE = "events_last_update"
_EVENTS_SHIPPED = "events_shipped_upto"
_COUNTS = ", ".join(f"r{r}" for r in RATINGS)
_FOLDED_BEFORE = "nationality_folded_before"
_EVENT_COLUMNS = ("event_id", "minute", "station", "lane", "direction", "category", "outcome", "processing_ms",
                  "quality", "model_version", "calibration_version")


#: The portal's released tables and counts, one insert-once record per period (``day/YYYY-MM-DD``,
#: ``arrivals/YYYY-MM``, ``satisfaction/YYYY-MM``, ``nationality/YYYY-MM``): JSON as the portal published it.
RELEASES_TABLE = ("CREATE TABLE IF NOT EXISTS portal_releases (name TEXT PRIMARY KEY, doc TEXT NOT NULL, "
                  "released_at TEXT NOT NULL)")


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for k in range(0, len(items), size):
        yield items[k:k + size]


def _has_release_table(view: Transaction) -> bool:
    if _postgres(view):
        return view.execute("SELECT to_regclass('portal_releases')").fetchone()[0] is not None
    return view.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'portal_releases'"
                        ).fetchone() is not None


def _releases_named(view: Transaction, names: list[str]) -> dict[str, str]:
    """The records of ``portal_releases`` among ``names`` (name -> document), read in ``view``."""
    out: dict[str, str] = {}
    for chunk in _chunks(names, 500):
        marks = ", ".join("?" for _ in chunk)
        out.update(view.execute(f"SELECT name, doc FROM portal_releases WHERE name IN ({marks})", chunk).fetchall())
    return out


def _release_transaction(backend: Any) -> Any:
    """A write transaction for the portal's release records: the backend's own read-only-proof one if it has
    one (:class:`SqliteFile`, :class:`PostgresPool`), else its ordinary write transaction."""
    opener = getattr(backend, "release_transaction", None)
    return opener() if opener is not None else backend.transaction()


def port_code(station: str) -> str:
    """The BPS port code of ``station`` (see :data:`BPS_PORTS`; "" for a station not in the mapping)."""
    return BPS_PORTS.get(station, "")


def new_event_id() -> str:
    """A random event id (128 bits): derived from nothing, so it leads to no one and to no audit record."""
    return uuid.uuid4().hex


class ReadOnlyStore(Exception):
    """A write was asked of a store opened read-only."""


class StoreSchemaMismatch(Exception):
    """A keyless reader (the portal) and the store it opened are at different schema versions: the store is
    older (its station has not started under this version yet, which migrates it) or newer (this reader needs
    an upgrade). Its rows would be read under another layout (v5 re-keyed the days and months from UTC to
    local time), so nothing is read until both match."""


def check_reader_schema(found: int, expected: int, where: str) -> None:
    """Raise :class:`StoreSchemaMismatch` unless the store at ``where`` is at schema ``expected``."""
    if found == expected:
        return
    if found < expected:
        raise StoreSchemaMismatch(
            f"the store {where} has schema version {found}, and this reader reads version {expected}: start the "
            "upgraded station (or server) on it once, which migrates it, then open it again")
    raise StoreSchemaMismatch(f"the store {where} has schema version {found}, newer than the version {expected} "
                              "this reader knows: upgrade this reader")


class NoEventTables(Exception):
    """The database has no event tables yet (a schema older than the one that added them)."""


class Backend(Protocol):
    """What the event store needs of a database: write transactions and consistent reads."""

    def transaction(self) -> Any:
        """A context manager yielding a write :class:`Transaction`."""

    def _read(self) -> Any:
        """A context manager yielding a read-only :class:`Transaction` (one snapshot)."""

    def close(self) -> None:
        """Release the connection(s)."""


def _postgres(tx: Transaction) -> bool:
    return tx.placeholder != "?"


class SqlEventStore:
    """Decision events, feedback and their aggregates in one SQL database (see the module doc).

    ``service_target_ms``: a decision processed within it counts as within target. ``journal``: the store is a
    station's journal shipped to a register (the nationality rows not yet shipped are kept past retention until
    they are).
    """

    def __init__(self, backend: Backend, *, service_target_ms: float = DEFAULT_SERVICE_TARGET_MS,
                 retention_days: int = DEFAULT_NATIONALITY_RETENTION_DAYS, readonly: bool = False,
                 journal: bool = False, owns_backend: bool = False) -> None:
        if service_target_ms <= 0:
            raise ValueError(f"the service target must be a positive number of ms, not {service_target_ms}")
        if retention_days < 1:
            raise ValueError(f"the nationality retention must be at least one day, not {retention_days}")
        self.backend = backend
        self.service_target_ms = float(service_target_ms)
        self.retention_days = retention_days
        self.readonly = readonly
        self.journal = journal
        self._owns_backend = owns_backend
        hist = ", ".join(HISTOGRAM_COLUMNS)
        self._hourly_upsert = (
            f"INSERT INTO agg_hourly(hour, station, direction, decisions, within_target, {hist}) VALUES "
            f"(?, ?, ?, ?, ?, {', '.join('?' for _ in HISTOGRAM_COLUMNS)}) "
            "ON CONFLICT (hour, station, direction) DO UPDATE SET "
            "decisions = agg_hourly.decisions + excluded.decisions, "
            "within_target = agg_hourly.within_target + excluded.within_target, "
            + ", ".join(f"{c} = agg_hourly.{c} + excluded.{c}" for c in HISTOGRAM_COLUMNS))

    def __str__(self) -> str:
        return f"event store on {self.backend}"

    def close(self) -> None:
        """Close the connection(s) if this store opened them."""
        if self._owns_backend:
            self.backend.close()

    @contextmanager
    def _write(self) -> Iterator[Transaction]:
        if self.readonly:
            raise ReadOnlyStore(f"{self} is open read-only")
        with self.backend.transaction() as tx:
            yield tx

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.backend._read() as view:
            return list(view.execute(sql, params).fetchall())

    # -- writing ---------------------------------------------------------------------------------

    def record_decision(self, event: DecisionEvent) -> str:
        """Store one event and fold it into the aggregates in one transaction; its event id (for feedback)."""
        with self._write() as tx:
            return self.write(tx, [event])[0]

    def record_decisions(self, events: Iterable[DecisionEvent], batch: int = BULK_BATCH) -> int:
        """Bulk load (simulations, imports): one transaction per ``batch`` events, aggregates added per batch;
        returns how many were stored."""
        done = 0
        it = iter(events)
        while chunk := list(islice(it, batch)):
            with self._write() as tx:
                self.write(tx, chunk)
            done += len(chunk)
        return done

    def write(self, tx: Transaction, events: Sequence[DecisionEvent], ids: Sequence[str] | None = None
              ) -> list[str]:
        """Insert ``events`` (with ``ids``, else new random ones) and add them to the aggregates, in ``tx``.

        The service calls this inside the transaction of the decision's audit record.
        """
        if ids is None:
            ids = [new_event_id() for _ in events]
        rows: list[tuple[Any, ...]] = []
        nationality_rows: list[tuple[str, str, str]] = []
        hourly: dict[tuple[str, str, str], list[Any]] = {}
        lanes: set[tuple[str, str, str, str]] = set()
        monthly: dict[tuple[str, str, str], int] = {}
        target = self.service_target_ms
        width = len(HISTOGRAM_COLUMNS)
        for event_id, e in zip(ids, events, strict=True):
            check_event(e)
            minute = to_minute(e.minute).strftime(_MINUTE)
            hour = minute[:13]
            ms = float(e.processing_ms)
            rows.append((event_id, minute, e.station, e.lane, e.direction, e.category, e.outcome, ms, e.quality,
                         e.model_version, e.calibration_version))
            key = (hour, e.station, e.direction)
            agg = hourly.get(key)
            if agg is None:
                agg = hourly[key] = [0, 0, [0] * width]
            agg[0] += 1
            agg[1] += ms <= target
            agg[2][histogram_bucket(ms)] += 1
            lanes.add((hour, e.station, e.direction, e.lane))
            if e.direction == ARRIVAL:
                nationality = check_nationality(e.nationality)
                month_key = (local_text(e.minute)[:7], e.station, nationality or UNKNOWN_NATIONALITY)
                monthly[month_key] = monthly.get(month_key, 0) + 1
                if nationality:
                    nationality_rows.append((event_id, minute, nationality))
        if not rows:
            return []
        self._insert(tx, "decision_events", _EVENT_COLUMNS, rows)
        if nationality_rows:
            self._insert(tx, "event_nationality", ("event_id", "minute", "nationality"), nationality_rows)
        stations = sorted({r[2] for r in rows})
        tx.executemany("INSERT INTO event_stations(station, port_code) VALUES (?, ?) ON CONFLICT DO NOTHING",
                       [(s, port_code(s)) for s in stations])
        tx.executemany("INSERT INTO event_lanes(hour, station, direction, lane) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT DO NOTHING", sorted(lanes))
        keys = sorted(hourly)  # one order for every writer: two transactions never wait on each other's rows
        tx.executemany(self._hourly_upsert, [(*k, hourly[k][0], hourly[k][1], *hourly[k][2]) for k in keys])
        tx.executemany("UPDATE agg_hourly SET lanes_active = (SELECT COUNT(*) FROM event_lanes l WHERE "
                       "l.hour = agg_hourly.hour AND l.station = agg_hourly.station AND "
                       "l.direction = agg_hourly.direction) WHERE hour = ? AND station = ? AND direction = ?", keys)
        if monthly:
            tx.executemany("INSERT INTO agg_monthly_arrivals(month, station, port_code, nationality, arrivals) "
                           "VALUES (?, ?, ?, ?, ?) ON CONFLICT (month, station, nationality) DO UPDATE SET "
                           "arrivals = agg_monthly_arrivals.arrivals + excluded.arrivals",
                           [(m, s, port_code(s), n, monthly[(m, s, n)]) for m, s, n in sorted(monthly)])
        self._touch(tx)
        return list(ids)

    def _insert(self, tx: Transaction, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        """Insert rows: COPY on PostgreSQL for a large batch, else one prepared statement for every row."""
        if _postgres(tx) and len(rows) >= 500:
            with tx.db.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        tx.executemany(f"INSERT INTO {table}({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                       rows)

    def _touch(self, tx: Transaction) -> None:
        _set_meta(tx, _LAST_UPDATE, datetime.now(UTC).isoformat(timespec="seconds"))

    def record_feedback(self, event_id: str, rating: int, at: datetime | None = None) -> None:
        """One rating (1..4) of the decision ``event_id``, given ``at`` (now by default); a second rating raises
        :class:`FeedbackRefused`, one past the decision's rating window :class:`RatingWindowClosed`, an unknown id
        :class:`EventNotFound`, a rating outside 1..4 :class:`InvalidRating`."""
        check_rating(rating)
        check_event_id(event_id)
        with self._write() as tx:
            self.feedback(tx, event_id, rating, at or datetime.now(UTC))

    def feedback(self, tx: Transaction, event_id: str, rating: int, at: datetime) -> None:
        """Count a rating given ``at`` in ``tx``: the decision's mark (a second one is refused), one more in the
        month's satisfaction counter at its station and, on a journal, in the deltas to ship. Nothing of it is
        kept with the event id but the mark, and the mark without the value."""
        row = tx.execute("SELECT station, minute FROM decision_events WHERE event_id = ?", (event_id,)).fetchone()
        if row is None:
            raise EventNotFound("This decision is not known here, so it cannot be rated.")
        station, minute = row
        if not rating_window_open(minute, at):  # checked on the event's minute: never on the mark (purged)
            raise RatingWindowClosed("Thank you, but this decision can no longer be rated: a rating is taken within "
                                     f"{int(RATING_WINDOW.total_seconds() // 60)} minutes of the decision.")
        inserted = tx.execute("INSERT INTO rating_marks(event_id) VALUES (?) ON CONFLICT (event_id) DO NOTHING "
                              "RETURNING event_id", (event_id,)).fetchone()
        if inserted is None:
            raise FeedbackRefused("Thank you: this decision has been rated already (one rating per decision).")
        counts = [0] * len(RATINGS)
        counts[RATINGS.index(int(rating))] = 1
        month = local_text(at)[:7]
        _add_counts(tx, "agg_monthly_satisfaction", [(month, station, *counts)])
        if self.journal:
            _add_counts(tx, "rating_deltas", [(month, station, *counts)])
        self._touch(tx)

    def purge_marks(self, now: datetime | None = None) -> int:
        """Delete the marks of decisions past their rating window (a rating of them is refused on the event's
        minute alone); idempotent. Returns how many were deleted. On SQLite the store's ``secure_delete``
        overwrites them in the file."""
        cutoff = (to_minute(now or datetime.now(UTC)) - RATING_WINDOW - timedelta(minutes=1)).strftime(_MINUTE)
        with self.backend._read() as view:
            if view.execute("SELECT 1 FROM rating_marks LIMIT 1").fetchone() is None:
                return 0
        with self._write() as tx:
            deleted = tx.execute("DELETE FROM rating_marks WHERE event_id IN (SELECT m.event_id FROM rating_marks m "
                                 "LEFT JOIN decision_events e ON e.event_id = m.event_id "
                                 "WHERE e.minute IS NULL OR e.minute <= ?)", (cutoff,)).rowcount
            # as after an erasure: the WAL is truncated once this commits, so no frame keeps a mark's page beside
            # the counter pages its rating's commit changed (their two versions would give the value back)
            tx.erased = tx.erased or deleted > 0
        return int(deleted)

    def discard_deltas(self) -> int:
        """Delete the rating deltas of a store that ships nothing (a single station's file, whose v7 migration
        could not tell it from a journal and converted its ratings into deltas); returns how many rows."""
        with self._write() as tx:
            return int(tx.execute("DELETE FROM rating_deltas").rowcount) + int(
                tx.execute("DELETE FROM rating_shipments").rowcount)

    # -- retention -------------------------------------------------------------------------------

    def fold_expired(self, now: datetime | None = None) -> int:
        """Delete the nationality rows older than the retention period (their counts are in the monthly
        arrivals already, which do not change); idempotent. Returns how many rows were deleted.

        On a station's journal, rows not yet shipped to the register are kept until they are.
        """
        cutoff = (to_minute(now or datetime.now(UTC)) - timedelta(days=self.retention_days)).strftime(_MINUTE)
        with self._write() as tx:
            if self.journal:
                mark = self._meta(tx, _EVENTS_SHIPPED, "0")
                deleted = tx.execute(
                    "DELETE FROM event_nationality WHERE minute < ? AND EXISTS (SELECT 1 FROM decision_events e "
                    "WHERE e.event_id = event_nationality.event_id AND e.n <= ?)", (cutoff, int(mark))).rowcount
            else:
                deleted = tx.execute("DELETE FROM event_nationality WHERE minute < ?", (cutoff,)).rowcount
            _set_meta(tx, _FOLDED_BEFORE, cutoff)
        if deleted:
            log.info("events: %d nationality rows older than %s folded away (kept in the monthly arrivals)",
                     deleted, cutoff)
        return int(deleted)

    @staticmethod
    def _meta(tx: Transaction, name: str, default: str) -> str:
        row = tx.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else default

    # -- the portal's releases, shared by every portal on the store ------------------------------------

    def recorded_releases(self, names: Sequence[str]) -> dict[str, str]:
        """The release records among ``names`` that a portal has recorded (:meth:`record_releases`)."""
        with self.backend._read() as view:
            if not _has_release_table(view):
                return {}
            return _releases_named(view, list(names))

    def record_releases(self, docs: dict[str, str]) -> dict[str, str]:
        """Record each release (name -> document) unless one is recorded under its name already, in one
        transaction; the records as they are then (another portal's, where it was first).

        Insert-once: a record is never changed, so every portal on the store publishes the first one. The
        one table a portal writes (``portal_releases``, created here if missing); a store opened read-only
        writes it on a connection of its own (:func:`_release_transaction`).
        """
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with _release_transaction(self.backend) as tx:
            if not _has_release_table(tx):  # (a role with INSERT only may not run CREATE, even IF NOT EXISTS)
                tx.execute(RELEASES_TABLE)
            tx.executemany("INSERT INTO portal_releases(name, doc, released_at) VALUES (?, ?, ?) "
                           "ON CONFLICT (name) DO NOTHING", [(n, d, now) for n, d in sorted(docs.items())])
            return _releases_named(tx, sorted(docs))

    # -- reading (aggregates only) ----------------------------------------------------------------

    def hourly(self, start: date, end: date, station: str | None = None) -> list[HourlyRow]:
        """Hourly rows for the days ``start`` .. ``end`` inclusive, by hour, station and direction."""
        sql = (f"SELECT hour, station, direction, decisions, within_target, lanes_active, "
               f"{', '.join(HISTOGRAM_COLUMNS)} FROM agg_hourly WHERE hour >= ? AND hour < ?")
        params: list[Any] = [start.isoformat(), (end + timedelta(days=1)).isoformat()]
        if station is not None:
            sql += " AND station = ?"
            params.append(station)
        return [HourlyRow(datetime.strptime(r[0], "%Y-%m-%dT%H").replace(tzinfo=UTC), r[1], r[2], int(r[3]),
                          int(r[4]), int(r[5]), tuple(int(n) for n in r[6:]))
                for r in self._query(sql + " ORDER BY hour, station, direction", params)]

    def first_hour(self) -> datetime | None:
        """The first hour (UTC) that holds a decision, or None (the primary key's first entry: no scan)."""
        rows = self._query("SELECT MIN(hour) FROM agg_hourly")
        return datetime.strptime(rows[0][0], "%Y-%m-%dT%H").replace(tzinfo=UTC) if rows and rows[0][0] else None

    def monthly_arrivals(self, start: date, end: date, station: str | None = None) -> list[MonthlyArrivalsRow]:
        """Monthly arrivals by nationality for the (local) months that hold ``start`` .. ``end``."""
        sql = ("SELECT month, station, port_code, nationality, arrivals FROM agg_monthly_arrivals "
               "WHERE month >= ? AND month <= ?")
        params: list[Any] = [start.strftime("%Y-%m"), end.strftime("%Y-%m")]
        if station is not None:
            sql += " AND station = ?"
            params.append(station)
        return [MonthlyArrivalsRow(date.fromisoformat(r[0] + "-01"), r[1], r[2], r[3], int(r[4]))
                for r in self._query(sql + " ORDER BY month, station, nationality", params)]

    def monthly_satisfaction(self, start: date, end: date, station: str | None = None) -> list[SatisfactionRow]:
        """Monthly satisfaction for the (local) months that hold ``start`` .. ``end``."""
        sql = f"SELECT month, station, {_COUNTS} FROM agg_monthly_satisfaction WHERE month >= ? AND month <= ?"
        params: list[Any] = [start.strftime("%Y-%m"), end.strftime("%Y-%m")]
        if station is not None:
            sql += " AND station = ?"
            params.append(station)
        return [SatisfactionRow(date.fromisoformat(r[0] + "-01"), r[1], (int(r[2]), int(r[3]), int(r[4]), int(r[5])))
                for r in self._query(sql + " ORDER BY month, station", params)]

    def stations(self) -> list[str]:
        """Stations that have recorded events."""
        return [r[0] for r in self._query("SELECT station FROM event_stations ORDER BY station")]

    def port_codes(self) -> dict[str, str]:
        """The BPS port code recorded for each station ("" where the mapping had none)."""
        return dict(self._query("SELECT station, port_code FROM event_stations ORDER BY station"))

    def last_update(self) -> datetime | None:
        """When the last event or rating was recorded (UTC, to the second), or None."""
        rows = self._query("SELECT value FROM meta WHERE name = ?", (_LAST_UPDATE,))
        return datetime.fromisoformat(rows[0][0]) if rows else None


def check_rating(rating: Any) -> int:
    """A rating of the kiosk's four buttons (1..4); InvalidRating otherwise."""
    if isinstance(rating, bool) or not isinstance(rating, int) or rating not in RATINGS:
        raise InvalidRating(f"A rating is one of the four buttons, 1 to 4, not {rating!r}.")
    return rating


def rating_window_open(minute: str, at: datetime) -> bool:
    """Whether a rating given ``at`` is within :data:`RATING_WINDOW` of the end of the decision's ``minute``
    (``YYYY-MM-DDTHH:MM``, UTC)."""
    decided = datetime.strptime(minute, _MINUTE).replace(tzinfo=UTC)
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at < decided + timedelta(minutes=1) + RATING_WINDOW


def _add_counts(tx: Transaction, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Add rating counts (month, station, r1..r4) to ``table``'s rows, in one sorted order (two writers never
    wait on each other's rows in opposite orders)."""
    tx.executemany(f"INSERT INTO {table}(month, station, {_COUNTS}) VALUES (?, ?, ?, ?, ?, ?) "
                   "ON CONFLICT (month, station) DO UPDATE SET "
                   + ", ".join(f"r{r} = {table}.r{r} + excluded.r{r}" for r in RATINGS), sorted(rows))


def check_event_id(event_id: str) -> str:
    """A feedback id as a decision answer gives it (32 hex digits); InvalidSample otherwise."""
    if not isinstance(event_id, str) or len(event_id) != 32 or any(c not in "0123456789abcdef" for c in event_id):
        raise InvalidSample("The feedback id is not one a decision gave (32 hexadecimal digits).")
    return event_id


# -- shipping a station's journal to the register -----------------------------------------------------


def ship_events(journal: SqlEventStore, register: SqlEventStore, limit: int = 5000) -> int:
    """Copy the journal's events (with their nationality) that the register does not hold yet into it, in
    order, idempotently, then its ratings as counters (:func:`ship_ratings`); returns how many events and
    ratings were shipped (0: nothing pending).

    Raises what the register raises when it is away (RegisterUnavailable): the journal keeps everything.
    """
    shipped = 0
    with journal.backend._read() as view:
        mark = int(journal._meta(view, _EVENTS_SHIPPED, "0"))
        rows = view.execute(
            f"SELECT e.n, {', '.join('e.' + c for c in _EVENT_COLUMNS)}, COALESCE(x.nationality, '') FROM "
            "decision_events e LEFT JOIN event_nationality x ON x.event_id = e.event_id WHERE e.n > ? "
            "ORDER BY e.n LIMIT ?", (mark, limit)).fetchall()
    if rows:
        with register._write() as tx:
            held = _held(tx, [r[1] for r in rows])
            fresh = [r for r in rows if r[1] not in held]
            register.write(tx, [DecisionEvent(datetime.strptime(r[2], _MINUTE).replace(tzinfo=UTC), *r[3:8],
                                              float(r[8]), *r[9:12], nationality=r[12]) for r in fresh],
                           [r[1] for r in fresh])
        with journal._write() as jtx:
            _set_meta(jtx, _EVENTS_SHIPPED, str(rows[-1][0]))
        shipped += len(rows)
        if len(rows) == limit:
            return shipped  # more events first: a station's ratings are counted once its events are
    return shipped + ship_ratings(journal, register)


def ship_ratings(journal: SqlEventStore, register: SqlEventStore) -> int:
    """Add the journal's rating deltas to the register's counters, once; returns how many ratings were shipped.

    Three commits, each safe to be interrupted after: the journal moves its deltas into one shipment under a
    random id (a shipment left by a crash is shipped again as it is, under its id); the register adds the
    shipment to its counters and records the id in the same transaction, unless it holds the id already (a crash
    after its commit); the journal deletes the shipment; then the register forgets the id (the journal can no
    longer ship it). A rating given meanwhile goes to the deltas, for the next shipment. The register keeps the
    id only while it is needed: no counts, no time.
    """
    with journal.backend._read() as view:
        if (view.execute("SELECT 1 FROM rating_shipments LIMIT 1").fetchone() is None
                and view.execute("SELECT 1 FROM rating_deltas LIMIT 1").fetchone() is None):
            return 0
    with journal._write() as jtx:
        shipment = jtx.execute(f"SELECT shipment_id, month, station, {_COUNTS} FROM rating_shipments "
                               "ORDER BY month, station").fetchall()
        if not shipment:
            deltas = jtx.execute(f"SELECT month, station, {_COUNTS} FROM rating_deltas ORDER BY month, station"
                                 ).fetchall()
            if not deltas:
                return 0
            shipment_id = new_event_id()
            jtx.executemany(f"INSERT INTO rating_shipments(shipment_id, month, station, {_COUNTS}) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", [(shipment_id, *d) for d in deltas])
            jtx.execute("DELETE FROM rating_deltas")
            shipment = [(shipment_id, *d) for d in deltas]
    shipment_id = shipment[0][0]
    rows = [tuple(r[1:]) for r in shipment]
    with register._write() as tx:
        fresh = tx.execute("INSERT INTO rating_batches(batch_id) VALUES (?) ON CONFLICT (batch_id) DO NOTHING "
                           "RETURNING batch_id", (shipment_id,)).fetchone()
        if fresh is not None:  # else counted before (a crash between the register's commit and the journal's)
            _add_counts(tx, "agg_monthly_satisfaction", rows)
            register._touch(tx)
    with journal._write() as jtx:
        jtx.execute("DELETE FROM rating_shipments WHERE shipment_id = ?", (shipment_id,))
    # the journal holds the shipment no more, so it never ships that id again: the register forgets it (only a
    # crash between these two commits leaves an id behind; the table does not grow with every shipment)
    with register._write() as tx:
        tx.execute("DELETE FROM rating_batches WHERE batch_id = ?", (shipment_id,))
    return sum(int(n) for r in rows for n in r[2:])


def pending_ratings(journal: SqlEventStore) -> int:
    """How many of the journal's ratings the register has not counted yet (deltas and a shipment under way)."""
    with journal.backend._read() as view:
        return sum(int(view.execute(f"SELECT COALESCE(SUM({' + '.join(f'r{r}' for r in RATINGS)}), 0) FROM {t}"
                                    ).fetchone()[0]) for t in ("rating_deltas", "rating_shipments"))


def pending_events(journal: SqlEventStore) -> int:
    """How many of the journal's events the register does not hold yet."""
    with journal.backend._read() as view:
        mark = int(journal._meta(view, _EVENTS_SHIPPED, "0"))
        return int(view.execute("SELECT COUNT(*) FROM decision_events WHERE n > ?", (mark,)).fetchone()[0])


def _held(tx: Transaction, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` the store of ``tx`` holds already."""
    held: set[str] = set()
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        held.update(r[0] for r in tx.execute(
            f"SELECT event_id FROM decision_events WHERE event_id IN ({', '.join('?' for _ in part)})",
            part).fetchall())
    return held


def _set_meta(tx: Transaction, name: str, value: str) -> None:
    tx.execute("INSERT INTO meta(name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
               (name, value))


class EventHousekeeper:
    """The service's background work on its events, in a daemon thread: every ``fold_every`` seconds
    :meth:`SqlEventStore.fold_expired` (on the local store and the register); every ``purge_every`` seconds
    :meth:`SqlEventStore.purge_marks` (the marks of decisions past their rating window); on a station with a
    register, every ``interval`` seconds ship the journal to it (while it is away the journal keeps
    everything)."""

    def __init__(self, local: SqlEventStore, register: SqlEventStore | None = None, *, interval: float = 1.0,
                 fold_every: float = 3600.0, on_tick: Callable[[], object] | None = None, station: str = "",
                 purge_every: float = 60.0) -> None:
        from biometrics.shipping import ShippingFailures

        self.local = local
        self.register = register
        self._failures = ShippingFailures(station, "decision events", log)
        self.interval = interval
        self.fold_every = fold_every
        self.purge_every = purge_every
        self._next_purge = 0.0  # at once on start
        self.on_tick = on_tick  # the service's own periodic event work (transactions whose window has passed)
        self._next_fold = 0.0  # at once on start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-housekeeper", daemon=True)

    def start(self) -> EventHousekeeper:
        """Start the thread."""
        self._thread.start()
        return self

    def ship_all(self) -> int:
        """Ship everything pending now, on the calling thread; returns how many rows (0 without a register)."""
        total = 0
        while self.register is not None and (n := ship_events(self.local, self.register)):
            total += n
        return total

    def fold(self) -> int:
        """Fold the expired nationality rows of the local store and of the register, and purge the expired
        rating marks (idempotent)."""
        self.purge()
        folded = self.local.fold_expired()
        if self.register is not None:
            folded += self.register.fold_expired()
        return folded

    def purge(self) -> int:
        """Delete the rating marks of decisions past their rating window, on the local store (where decisions
        are rated; the register holds none of a station's); returns how many."""
        purged = self.local.purge_marks()
        if purged:
            log.debug("events: %d rating mark(s) past the rating window deleted", purged)
        return purged

    def _run(self) -> None:
        pause = min(self.fold_every, self.purge_every, 30.0)
        while not self._stop.wait(self.interval if self.register is not None else pause):
            if self.on_tick is not None:
                try:
                    self.on_tick()
                except Exception:
                    log.exception("events: periodic work failed")
            try:
                self.ship_all()
            except Exception as exc:  # the journal keeps them; said at ERROR unless the register is away
                self._failures.failed(exc)
            else:
                self._failures.shipped()
            if time.monotonic() >= self._next_purge:
                try:
                    self.purge()
                    self._next_purge = time.monotonic() + self.purge_every
                except Exception as exc:
                    log.info("events: rating marks not purged now (%s)", exc)
            if time.monotonic() >= self._next_fold:
                try:
                    self.fold()
                    self._next_fold = time.monotonic() + self.fold_every
                except Exception as exc:
                    log.info("events: retention deferred (%s)", exc)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread, then try once more to ship what is pending (a failure leaves it in the journal)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.register is None:
            return
        try:
            self.ship_all()
        except Exception as exc:
            log.warning("events: %d event(s) not shipped to the register at shutdown (%s); they stay in the "
                        "journal and are shipped at the next start", pending_events(self.local), exc)


# -- opening a store without the station's key ring (the portal, simulations) -------------------------


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[Transaction]:
    """A write transaction on ``db`` (``BEGIN IMMEDIATE``; rolled back on any exception)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield Transaction(db)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class SqliteFile:
    """A SQLite store file opened without a key ring: read-only (a URI ``mode=ro`` connection that reads beside
    a running server, WAL), or writable (migrated to the current schema; for simulations and imports)."""

    def __init__(self, path: Path, *, readonly: bool = True) -> None:
        from biometrics.storage import migrate

        self.path, self.readonly = path, readonly
        self._writer: sqlite3.Connection | None = None  # for the portal's release records (read-only file)
        self._lock = threading.RLock()
        if readonly:
            if not path.exists():
                raise FileNotFoundError(f"no store at {path}")
            self._db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False,
                                       isolation_level=None)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA secure_delete=ON")  # deleted rows (rating marks, shipped deltas) overwritten
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        if not readonly:
            with self.transaction():
                migrate(self._db, path)
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "agg_hourly" not in tables:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            self._db.close()
            raise NoEventTables(f"the store {path} has no event tables yet (schema version {version}): start the "
                                "server on it once (it migrates the schema), then open it again")
        try:
            self._check_schema()
        except StoreSchemaMismatch:
            self._db.close()
            raise

    def _check_schema(self) -> None:
        """The file is at the schema this code reads (it can be migrated under a reader that keeps it open)."""
        from biometrics.storage import SCHEMA_VERSION

        check_reader_schema(int(self._db.execute("PRAGMA user_version").fetchone()[0]), SCHEMA_VERSION,
                            str(self.path))

    def __str__(self) -> str:
        return str(self.path)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A write transaction (``BEGIN IMMEDIATE``); one that deleted what must not linger (``tx.erased``: purged
        rating marks) truncates the WAL once committed, as the station's store does after an erasure."""
        with self._lock:
            with _immediate(self._db) as tx:
                yield tx
            if tx.erased:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @contextmanager
    def release_transaction(self) -> Iterator[Transaction]:
        """A write transaction for the portal's release records, on a writable connection of its own when
        this one is read-only (opened on first use; it writes ``portal_releases`` only)."""
        if not self.readonly:
            with self.transaction() as tx:
                yield tx
            return
        with self._lock:
            if self._writer is None:
                self._writer = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                self._writer.execute("PRAGMA busy_timeout=10000")
            with _immediate(self._writer) as tx:
                yield tx

    @contextmanager
    def _read(self) -> Iterator[Transaction]:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._check_schema()  # in the read's snapshot
                yield Transaction(self._db)
            finally:
                self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the connection(s)."""
        with self._lock:
            self._db.close()
            if self._writer is not None:
                self._writer.close()


class PostgresPool:
    """The register opened without a key ring: a plain connection pool (migrated when writable)."""

    def __init__(self, url: str, *, readonly: bool = True, pool_size: int = 4) -> None:
        from psycopg_pool import ConnectionPool

        from biometrics.register import check_url, connect_once, migrate_register, redact

        self.url = check_url(url)
        self._name = redact(url)
        connect_once(self.url)
        kwargs: dict[str, Any] = {"autocommit": True}
        if readonly:  # every transaction read-only, whatever a caller does with the connection
            kwargs["options"] = "-c default_transaction_read_only=on"
        self._pool = ConnectionPool(self.url, min_size=1, max_size=pool_size, open=True, kwargs=kwargs,
                                    name="event-store")
        if not readonly:
            with self.transaction() as tx:
                migrate_register(tx, self._name)
        with self._pool.connection() as conn:
            present = conn.execute("SELECT to_regclass('agg_hourly')").fetchone()[0]  # type: ignore[index]
        if present is None:
            self._pool.close()
            raise NoEventTables(f"the register {self._name} has no event tables yet: start a station on it once "
                                "(it migrates the schema), then open it again")
        try:
            with self._read():  # checks the schema version
                pass
        except StoreSchemaMismatch:
            self._pool.close()
            raise

    def __str__(self) -> str:
        return self._name

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A write transaction on a pooled connection."""
        with self._pool.connection() as conn, conn.transaction():
            yield Transaction(conn, "%s")

    @contextmanager
    def release_transaction(self) -> Iterator[Transaction]:
        """A write transaction for the portal's release records, also on a read-only pool (the portal's role
        needs INSERT on ``portal_releases``, and CREATE once if nobody has created it)."""
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION READ WRITE")
            yield Transaction(conn, "%s")

    @contextmanager
    def _read(self) -> Iterator[Transaction]:
        from biometrics.register import SCHEMA_VERSION

        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
            check_reader_schema(int(row[0]) if row else 0, SCHEMA_VERSION, self._name)  # in the read's snapshot
            yield Transaction(conn, "%s")

    def close(self) -> None:
        """Close the pool."""
        self._pool.close()


def store_file(data_dir_or_file: Path) -> Path:
    """The SQLite file of a data directory: ``checkpoint.db`` (a single station), else ``journal.db`` (a
    station on a register); a file path is taken as it is."""
    if data_dir_or_file.is_dir():
        for name in ("checkpoint.db", "journal.db"):
            if (data_dir_or_file / name).exists():
                return data_dir_or_file / name
        return data_dir_or_file / "checkpoint.db"
    return data_dir_or_file


def open_event_store(url_or_data_dir: str | Path, readonly: bool = True, **options: Any) -> SqlEventStore:
    """The event store at a ``postgresql://`` URL (the register) or in a data directory / SQLite file.

    Needs no key ring and reads while a server holds the data directory's lock. ``readonly=False`` opens it for
    writing (and migrates the schema): simulations and imports. ``options`` go to :class:`SqlEventStore`
    (``service_target_ms``, ``retention_days``).
    """
    text = str(url_or_data_dir)
    backend: Backend
    if text.startswith(("postgresql://", "postgres://")):
        backend = PostgresPool(text, readonly=readonly)
    else:
        backend = SqliteFile(store_file(Path(text)), readonly=readonly)
    return SqlEventStore(backend, readonly=readonly, owns_backend=True, **options)
