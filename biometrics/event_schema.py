"""The tables of the decision events and their aggregates, in the two SQL dialects of the stores.

A separate module so that both back ends' migrations (:mod:`biometrics.storage`, :mod:`biometrics.register`)
and the store that uses the tables (:mod:`biometrics.event_store`) share one definition without importing
each other. The histogram columns ``h00`` .. ``h28`` follow :data:`biometrics.events.PROCESSING_BUCKETS_MS`
as it was when the tables were added: changing those edges needs a new migration.

Tables (times are UTC text, so that both dialects compare and group them alike):

- ``decision_events``: the public events (minute ``YYYY-MM-DDTHH:MM``, station, lane, direction, category,
  outcome, processing_ms, quality, model and calibration versions) under a random ``event_id``.
- ``event_nationality``: restricted, event id -> ISO 3166 alpha-3 of an arrival, kept for the retention period.
- ``event_feedback`` (until :func:`counters_only` dropped it): one rating 1..4 per event id, with its minute.
- ``event_lanes``: the distinct lanes seen per hour, station and direction (for ``lanes_active``).
- ``agg_hourly``, ``agg_monthly_arrivals``, ``agg_daily_satisfaction`` (until :func:`counters_only` folded it
  into ``agg_monthly_satisfaction``), ``event_stations``: the aggregates the portal reads, kept in the
  transaction of each event or rating. Hours are UTC hours; the month of an arrival and the day (then month) of
  a rating are local (WIB) since :func:`local_keys`, the migration that re-keyed them.
- Since :func:`counters_only`: ``rating_marks`` (the event ids of decisions rated within their rating window: no
  value, no time), ``rating_deltas`` and ``rating_shipments`` (a station journal's ratings not yet counted by
  the register, as counters) and ``rating_batches`` (the ids of the shipments a register has counted).

:func:`event_tables` and :func:`local_keys` are migrations as they were written (v4/v3 and v5): a new store runs
them, then :func:`counters_only`.
"""

from __future__ import annotations

from biometrics.events import (
    ARRIVAL,
    LOCAL_UTC_OFFSET_HOURS,
    PROCESSING_BUCKETS_MS,
    RATING_WINDOW,
    RATINGS,
    UNKNOWN_NATIONALITY,
)

#: One column per histogram bucket (the last one is open).
HISTOGRAM_COLUMNS: tuple[str, ...] = tuple(f"h{i:02d}" for i in range(len(PROCESSING_BUCKETS_MS) + 1))


def event_tables(dialect: str) -> str:
    """The DDL of the event tables for ``dialect`` ("sqlite" or "postgresql"), statements split by ``;``."""
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"unknown SQL dialect {dialect!r}")
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT" if dialect == "sqlite" else "BIGSERIAL PRIMARY KEY"
    real = "REAL" if dialect == "sqlite" else "DOUBLE PRECISION"
    histogram = ",\n    ".join(f"{c} BIGINT NOT NULL DEFAULT 0" for c in HISTOGRAM_COLUMNS)
    return f"""
CREATE TABLE IF NOT EXISTS decision_events (
    n {serial},
    event_id TEXT UNIQUE NOT NULL,
    minute TEXT NOT NULL,
    station TEXT NOT NULL,
    lane TEXT NOT NULL,
    direction TEXT NOT NULL,
    category TEXT NOT NULL,
    outcome TEXT NOT NULL,
    processing_ms {real} NOT NULL,
    quality TEXT NOT NULL,
    model_version TEXT NOT NULL,
    calibration_version TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS event_nationality (
    event_id TEXT PRIMARY KEY,
    minute TEXT NOT NULL,
    nationality TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS event_nationality_minute ON event_nationality(minute);
CREATE TABLE IF NOT EXISTS event_feedback (
    n {serial},
    event_id TEXT UNIQUE NOT NULL,
    rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 4),
    minute TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS event_lanes (
    hour TEXT NOT NULL,
    station TEXT NOT NULL,
    direction TEXT NOT NULL,
    lane TEXT NOT NULL,
    PRIMARY KEY (hour, station, direction, lane)
);
CREATE TABLE IF NOT EXISTS event_stations (
    station TEXT PRIMARY KEY,
    port_code TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agg_hourly (
    hour TEXT NOT NULL,
    station TEXT NOT NULL,
    direction TEXT NOT NULL,
    decisions BIGINT NOT NULL DEFAULT 0,
    within_target BIGINT NOT NULL DEFAULT 0,
    lanes_active INTEGER NOT NULL DEFAULT 0,
    {histogram},
    PRIMARY KEY (hour, station, direction)
);
CREATE INDEX IF NOT EXISTS agg_hourly_station ON agg_hourly(station, hour);
CREATE TABLE IF NOT EXISTS agg_monthly_arrivals (
    month TEXT NOT NULL,
    station TEXT NOT NULL,
    port_code TEXT NOT NULL,
    nationality TEXT NOT NULL,
    arrivals BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (month, station, nationality)
);
CREATE TABLE IF NOT EXISTS agg_daily_satisfaction (
    day TEXT NOT NULL,
    station TEXT NOT NULL,
    r1 BIGINT NOT NULL DEFAULT 0,
    r2 BIGINT NOT NULL DEFAULT 0,
    r3 BIGINT NOT NULL DEFAULT 0,
    r4 BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, station)
)
"""


def local_keys(dialect: str) -> str:
    """The migration that keys the day of a rating and the month of an arrival by local time (WIB), as
    :meth:`biometrics.event_store.SqlEventStore.write` does from then on (they were UTC days and months).

    The daily satisfaction is recounted from the ratings (kept for good, with their minute). The monthly
    arrivals are recounted from the events and their nationality rows for every local month that starts
    after the last fold of the nationality rows (``meta.nationality_folded_before``; all months if none was
    ever folded); before that the nationalities are no longer known, so those months keep their UTC rows,
    and the last of them gives up its final 7 hours to the first local month (those events' rows are still
    there). ``meta.monthly_arrivals_local_from`` records the first local month ('' for all).
    """
    offset = LOCAL_UTC_OFFSET_HOURS
    if dialect == "sqlite":
        local = f"replace({{}}, 'T', ' '), '+{offset} hours'"
        day, month = f"date({local})", f"strftime('%Y-%m', {local})"
        since = (f"COALESCE((SELECT strftime('%Y-%m', replace(value, 'T', ' '), '+{offset} hours', 'start of month', "
                 "'+1 month') FROM meta WHERE name = 'nationality_folded_before'), '')")
        utc_start = f"strftime('%Y-%m-%dT%H:%M', month || '-01', '-{offset} hours')"
        before = "strftime('%Y-%m', month || '-01', '-1 month')"
        count = "SUM(f.rating = {})"
        where = " WHERE true"  # SQLite's INSERT ... SELECT needs it before ON CONFLICT
    elif dialect == "postgresql":
        local = f"(replace({{}}, 'T', ' ')::timestamp + interval '{offset} hours')"
        day, month = f"to_char({local}, 'YYYY-MM-DD')", f"to_char({local}, 'YYYY-MM')"
        since = (f"COALESCE((SELECT to_char(date_trunc('month', replace(value, 'T', ' ')::timestamp + interval "
                 f"'{offset} hours') + interval '1 month', 'YYYY-MM') FROM meta WHERE name = "
                 "'nationality_folded_before'), '')")
        utc_start = f"to_char((month || '-01')::timestamp - interval '{offset} hours', 'YYYY-MM-DD\"T\"HH24:MI')"
        before = "to_char((month || '-01')::timestamp - interval '1 month', 'YYYY-MM')"
        count = "SUM(CASE WHEN f.rating = {} THEN 1 ELSE 0 END)"
        where = ""
    else:
        raise ValueError(f"unknown SQL dialect {dialect!r}")
    arrivals = ("FROM decision_events e LEFT JOIN event_nationality x ON x.event_id = e.event_id "
                f"WHERE e.direction = '{ARRIVAL}'")
    return f"""
DELETE FROM agg_daily_satisfaction;
INSERT INTO agg_daily_satisfaction(day, station, r1, r2, r3, r4)
SELECT {day.format('f.minute')}, e.station, {', '.join(count.format(r) for r in RATINGS)}
FROM event_feedback f JOIN decision_events e ON e.event_id = f.event_id GROUP BY 1, 2;
CREATE TEMP TABLE rekey_since AS SELECT {since} AS month;
UPDATE agg_monthly_arrivals SET arrivals = arrivals - (
    SELECT COUNT(*) {arrivals} AND e.station = agg_monthly_arrivals.station
    AND COALESCE(x.nationality, '{UNKNOWN_NATIONALITY}') = agg_monthly_arrivals.nationality
    AND e.minute >= (SELECT {utc_start} FROM rekey_since) AND e.minute < (SELECT month || '-01T00:00' FROM rekey_since))
WHERE (SELECT month FROM rekey_since) <> '' AND month = (SELECT {before} FROM rekey_since);
DELETE FROM agg_monthly_arrivals WHERE month >= (SELECT month FROM rekey_since);
INSERT INTO agg_monthly_arrivals(month, station, port_code, nationality, arrivals)
SELECT {month.format('e.minute')}, e.station, COALESCE(s.port_code, ''),
       COALESCE(x.nationality, '{UNKNOWN_NATIONALITY}'), COUNT(*)
{arrivals.replace('WHERE', 'LEFT JOIN event_stations s ON s.station = e.station WHERE')}
AND e.minute >= (SELECT CASE WHEN month = '' THEN '' ELSE {utc_start} END FROM rekey_since)
GROUP BY 1, 2, 3, 4;
INSERT INTO meta(name, value) SELECT 'monthly_arrivals_local_from', month FROM rekey_since{where}
ON CONFLICT (name) DO UPDATE SET value = excluded.value;
DROP TABLE rekey_since
"""


def counters_only(dialect: str) -> str:
    """The migration that keeps ratings only as counters (docs/transparency.md, "Feedback").

    - ``agg_monthly_satisfaction`` (local month, station, ``r1``..``r4``): what the portal publishes and no
      finer, folded from the daily rows (local days, so their months are the portal's months exactly).
    - ``rating_marks``: on SQLite (a station's file or journal, where decisions are rated), the event ids of the
      rated decisions still inside their rating window (:data:`biometrics.events.RATING_WINDOW`, from the end of
      the decision's minute), so that a second rating of them is still refused; no value, no time. The register
      (PostgreSQL) gets none: its ratings came from the stations, which check them.
    - ``rating_deltas``: on SQLite, a journal's ratings not yet shipped to the register (``event_feedback.n``
      past ``meta.feedback_shipped_upto``), as counters by local month and station. A single station's file,
      which ships nothing, gets its ratings here too, as the migration cannot tell it from a journal: the service
      discards them when it opens such a store (:meth:`biometrics.event_store.SqlEventStore.discard_deltas`).
      The register gets none (it ships nothing).
    - ``rating_shipments``: the deltas being shipped, under one random id; ``rating_batches``: the ids of the
      shipments a register has counted (no content, no time).
    - ``event_feedback`` and ``agg_daily_satisfaction`` dropped, with ``meta.feedback_shipped_upto``.
    """
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"unknown SQL dialect {dialect!r}")
    counters = ", ".join(f"r{r} BIGINT NOT NULL DEFAULT 0" for r in RATINGS)
    columns = ", ".join(f"r{r}" for r in RATINGS)
    marks = deltas = ""
    if dialect == "sqlite":  # where decisions are rated and shipped from; the register (PostgreSQL) gets neither
        window = int(RATING_WINDOW.total_seconds() // 60) + 1  # the window runs from the end of the decision's minute
        month = f"strftime('%Y-%m', replace(f.minute, 'T', ' '), '+{LOCAL_UTC_OFFSET_HOURS} hours')"
        rated = "FROM event_feedback f JOIN decision_events e ON e.event_id = f.event_id"
        marks = (f"INSERT INTO rating_marks(event_id) SELECT f.event_id {rated} "
                 f"WHERE e.minute > strftime('%Y-%m-%dT%H:%M', 'now', '-{window} minutes');\n")
        deltas = (f"INSERT INTO rating_deltas(month, station, {columns}) SELECT {month}, e.station, "
                  f"{', '.join(f'SUM(f.rating = {r})' for r in RATINGS)} {rated} WHERE f.n > COALESCE((SELECT "
                  "CAST(value AS INTEGER) FROM meta WHERE name = 'feedback_shipped_upto'), 0) GROUP BY 1, 2;\n")
    return f"""
CREATE TABLE IF NOT EXISTS agg_monthly_satisfaction (
    month TEXT NOT NULL,
    station TEXT NOT NULL,
    {counters},
    PRIMARY KEY (month, station)
);
INSERT INTO agg_monthly_satisfaction(month, station, {columns})
SELECT substr(day, 1, 7), station, {', '.join(f'SUM(r{r})' for r in RATINGS)}
FROM agg_daily_satisfaction GROUP BY 1, 2;
CREATE TABLE IF NOT EXISTS rating_marks (
    event_id TEXT PRIMARY KEY
);
{marks}CREATE TABLE IF NOT EXISTS rating_deltas (
    month TEXT NOT NULL,
    station TEXT NOT NULL,
    {counters},
    PRIMARY KEY (month, station)
);
{deltas}CREATE TABLE IF NOT EXISTS rating_shipments (
    shipment_id TEXT NOT NULL,
    month TEXT NOT NULL,
    station TEXT NOT NULL,
    {counters},
    PRIMARY KEY (month, station)
);
CREATE TABLE IF NOT EXISTS rating_batches (
    batch_id TEXT PRIMARY KEY
);
DELETE FROM meta WHERE name = 'feedback_shipped_upto';
DROP TABLE event_feedback;
DROP TABLE agg_daily_satisfaction
"""
