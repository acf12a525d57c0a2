"""Decision events for the transparency portal: what happened at a lane, never who it happened to.

This module is the contract between the service that records decisions (the writer) and the public portal
that publishes them (the reader). It holds only value types and constants; the store that keeps the events
and their incremental aggregates implements :class:`EventStore`.

A :class:`DecisionEvent` carries no name, document number, pseudonym, template, image or decision id of an
audit record. Its time is truncated to the minute. Nationality is personal data under UU 27/2022 once it is
combined with a time and a place: it travels beside the event (``nationality``) only to be written into a
restricted table with a retention period, and it is published only as monthly aggregates under disclosure
control.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol

#: Lane directions.
ARRIVAL = "arrival"
DEPARTURE = "departure"
DIRECTIONS = (ARRIVAL, DEPARTURE)

#: Traveller categories (from the travel document: ``IDN`` is a citizen).
CITIZEN = "citizen"
FOREIGN = "foreign"
CATEGORIES = (CITIZEN, FOREIGN)

#: Decision outcomes as published (a watchlist hit is published as ``see_officer``, like a no-match).
PROCEED = "proceed"
SEE_OFFICER = "see_officer"
ERROR = "error"
OUTCOMES = (PROCEED, SEE_OFFICER, ERROR)

#: Face or fingerprint sample quality, bucketed so that no exact score leaks.
QUALITY_BUCKETS = ("low", "medium", "high", "unknown")

#: Upper edges (ms) of the processing-time histogram kept per aggregate row; the last bucket is open.
#: Percentiles are read off this histogram (the upper edge of the bucket that holds the rank), so that
#: aggregates stay incremental and can be merged across stations and hours.
PROCESSING_BUCKETS_MS: tuple[float, ...] = (
    25, 50, 75, 100, 125, 150, 175, 200, 250, 300, 350, 400, 500, 600, 700, 800, 1000, 1250, 1500, 2000,
    2500, 3000, 4000, 5000, 7500, 10000, 15000, 30000,
)

#: The four buttons of the kiosk's smiley scale (1: very unhappy ... 4: very happy); 3 and 4 are positive.
RATINGS = (1, 2, 3, 4)
POSITIVE_RATINGS = (3, 4)


@dataclass(frozen=True)
class DecisionEvent:
    """One decision at a lane, without personal data (``nationality`` goes to the restricted table only)."""

    minute: datetime  # UTC, truncated to the minute
    station: str
    lane: str
    direction: str  # ARRIVAL or DEPARTURE
    category: str  # CITIZEN or FOREIGN
    outcome: str  # one of OUTCOMES
    processing_ms: float
    quality: str  # one of QUALITY_BUCKETS
    model_version: str
    calibration_version: str
    nationality: str = ""  # ISO 3166 alpha-3; restricted, never in the public event table


@dataclass(frozen=True)
class HourlyRow:
    """One hour at one station in one direction (aggregated incrementally as events are recorded)."""

    hour: datetime  # UTC, start of the hour
    station: str
    direction: str
    count: int
    within_target: int  # decisions whose processing time was within the service target
    lanes_active: int
    histogram: tuple[int, ...] = field(default=())  # counts per PROCESSING_BUCKETS_MS bucket (+1 open bucket)


@dataclass(frozen=True)
class MonthlyArrivalsRow:
    """Arrivals in one month at one station from one nationality (the restricted data, aggregated)."""

    month: date  # first day of the month
    station: str
    port_code: str  # BPS port code of the station
    nationality: str  # ISO 3166 alpha-3
    count: int


@dataclass(frozen=True)
class SatisfactionRow:
    """Kiosk feedback on one day at one station."""

    day: date
    station: str
    counts: tuple[int, int, int, int]  # ratings 1..4

    @property
    def n(self) -> int:
        """Number of ratings."""
        return sum(self.counts)

    @property
    def positive(self) -> int:
        """Ratings 3 and 4."""
        return self.counts[2] + self.counts[3]


class EventStore(Protocol):
    """What the portal reads and the service writes (implemented by the SQLite and PostgreSQL stores)."""

    def record_decision(self, event: DecisionEvent) -> str:
        """Store one event and fold it into the aggregates; return its decision-event id (for feedback)."""

    def record_decisions(self, events: Sequence[DecisionEvent]) -> int:
        """Bulk load (simulations, imports); return how many were stored."""

    def record_feedback(self, event_id: str, rating: int) -> None:
        """One rating per event; a second rating for the same event raises ``FeedbackRefused``."""

    def hourly(self, start: date, end: date, station: str | None = None) -> list[HourlyRow]:
        """Hourly rows for the days ``start`` .. ``end`` inclusive."""

    def monthly_arrivals(self, start: date, end: date, station: str | None = None) -> list[MonthlyArrivalsRow]:
        """Monthly arrivals by nationality for the months that hold ``start`` .. ``end``."""

    def daily_satisfaction(self, start: date, end: date, station: str | None = None) -> list[SatisfactionRow]:
        """Daily satisfaction for the days ``start`` .. ``end`` inclusive."""

    def stations(self) -> list[str]:
        """Stations that have recorded events."""

    def last_update(self) -> datetime | None:
        """When the last event or rating was recorded (UTC), or None."""
