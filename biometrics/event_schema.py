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
  portal reads, kept in the transaction of each event or rating.
"""

from __future__ import annotations

from biometrics.events import PROCESSING_BUCKETS_MS

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
