"""The tables of the decision events and their aggregates, in the two SQL dialects of the stores.

A separate module so that both back ends' migrations (:mod:`biometrics.storage`, :mod:`biometrics.register`)
and the store that uses the tables (:mod:`biometrics.event_store`) share one definition without importing
each other. The histogram columns ``h00`` .. ``h28`` follow :data:`biometrics.events.PROCESSING_BUCKETS_MS`
as it was when the tables were added: changing those edges needs a new migration.

Tables (times are UTC text, so that both dialects compare and group them alike):

- ``decision_events``: the public events (minute ``YYYY-MM-DDTHH:MM``, station, lane, direction, category,
  outcome, processing_ms, quality, model and calibration versions) under a random ``event_id``.
- ``event_nationality``: restricted, event id -> ISO 3166 alpha-3 of an arrival, kept for the retention period.
- ``event_feedback``: one rating 1..4 per event id, with the minute it was given.
- ``event_lanes``: the distinct lanes seen per hour, station and direction (for ``lanes_active``).
- ``agg_hourly``, ``agg_monthly_arrivals``, ``agg_daily_satisfaction``, ``event_stations``: the aggregates the
  portal reads, kept in the transaction of each event or rating. Hours are UTC hours; the month of an arrival
  and the day of a rating are local (WIB) since :func:`local_keys`, the migration that re-keyed them.
"""

from __future__ import annotations

from biometrics.events import ARRIVAL, LOCAL_UTC_OFFSET_HOURS, PROCESSING_BUCKETS_MS, RATINGS, UNKNOWN_NATIONALITY

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
