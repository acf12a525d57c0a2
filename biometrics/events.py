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

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from biometrics.errors import BiometricError, InvalidSample

#: Lane directions.
ARRIVAL = "arrival"
DEPARTURE = "departure"
DIRECTIONS = (ARRIVAL, DEPARTURE)

#: Traveller categories (from the travel document: ``IDN`` is a citizen).
CITIZEN = "citizen"
FOREIGN = "foreign"
#: No nationality was known for the decision (an Identify without a document, say).
UNKNOWN_CATEGORY = "unknown"
CATEGORIES = (CITIZEN, FOREIGN, UNKNOWN_CATEGORY)

#: The nationality of a citizen's travel document (ISO 3166 alpha-3, as in the MRZ).
CITIZEN_NATIONALITY = "IDN"
#: A nationality not known at the decision, counted under ICAO 9303's code for "unspecified" in the monthly
#: arrivals so that their totals still equal the arrivals.
UNKNOWN_NATIONALITY = "XXX"

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

#: How long after its decision a traveller can rate it. A kiosk shows the rating buttons with the answer, so a
#: rating comes within a minute or two; the window is counted from the end of the decision's minute (events are
#: kept to the minute), so every decision has at least this long. Past it a rating is refused
#: (:class:`RatingWindowClosed`), and the mark that keeps a decision from being rated twice
#: (``rating_marks``) is deleted by the housekeeping: a mark says "this decision was rated", a link to the
#: decision's subject through the order of the events, so it is kept no longer than it is needed.
RATING_WINDOW = timedelta(minutes=10)

#: The checkpoints' local time (WIB, UTC+7), in hours ahead of UTC. The stores key the month of a rating and the
#: month of an arrival by it (:func:`local_text`), so that a day or a month is the same in every figure the
#: portal publishes (the hourly rows, keyed by UTC hour, map onto local days and months exactly).
LOCAL_UTC_OFFSET_HOURS = 7

#: The default service target: a decision processed within this many ms counts as within target.
DEFAULT_SERVICE_TARGET_MS = 1000.0
#: How long the restricted nationality rows are kept before they are folded away (days).
DEFAULT_NATIONALITY_RETENTION_DAYS = 90


class FeedbackRefused(BiometricError):
    """The decision was rated already: one rating per decision."""


class RatingWindowClosed(BiometricError):
    """The decision is past its rating window (:data:`RATING_WINDOW`): too late to rate it."""


class EventNotFound(BiometricError):
    """No decision is known under this feedback id."""


class InvalidRating(InvalidSample):
    """A rating outside the kiosk's four buttons (1..4)."""


class InvalidEvent(ValueError):
    """A decision event whose fields are not among the published values."""


def to_minute(when: datetime) -> datetime:
    """``when`` in UTC, truncated to the minute (a naive datetime is taken as UTC)."""
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return when.replace(second=0, microsecond=0)


def local_text(minute: datetime) -> str:
    """``minute`` (UTC) as local time (:data:`LOCAL_UTC_OFFSET_HOURS`), ``YYYY-MM-DDTHH:MM``: its first 10
    characters are the local day, its first 7 the local month."""
    return (to_minute(minute) + timedelta(hours=LOCAL_UTC_OFFSET_HOURS)).strftime("%Y-%m-%dT%H:%M")


def category_of(nationality: str) -> str:
    """The traveller category of a travel document's nationality (alpha-3): IDN is a citizen."""
    code = (nationality or "").strip().upper()
    if not code or code == UNKNOWN_NATIONALITY:
        return UNKNOWN_CATEGORY
    return CITIZEN if code == CITIZEN_NATIONALITY else FOREIGN


#: ICAO 9303's nationality codes that are not three letters (Part 3: Germany's "D", the only one), each counted
#: under its ISO 3166 alpha-3 code, so that one country's arrivals are one row whichever form the kiosk sends.
ICAO_SHORT_CODES = {"D": "DEU"}


def check_nationality(code: str) -> str:
    """A travel document's nationality as counted, in upper case ("" stays ""): three letters, as the MRZ gives
    them (ISO 3166 alpha-3 such as IDN, or ICAO 9303's own codes such as GBD, UNO, XXA, which are counted as they
    are), or Germany's one-letter "D" with or without the MRZ's filler ("D<<"), counted as DEU. Anything else is
    refused, InvalidSample (a kiosk can show it): a misread document is not recorded as some other country.
    docs/transparency.md, "Nationality"."""
    code = (code or "").strip().upper()
    if not code:
        return code
    if len(code) <= 3 and code.rstrip("<") in ICAO_SHORT_CODES:
        return ICAO_SHORT_CODES[code.rstrip("<")]
    if not (len(code) == 3 and code.isascii() and code.isalpha()):
        shown = repr(code[:12]) + ("..." if len(code) > 12 else "")
        raise InvalidSample("document_nationality must be the travel document's three-letter nationality code as in "
                            f"its MRZ, such as IDN (Germany: D<< or DEU), or empty; not {shown}.")
    return code


def quality_bucket(quality: float | None) -> str:
    """The bucket of a 0..100 sample quality: low (< 40), medium (< 70), high; unknown without one."""
    if quality is None or not math.isfinite(quality):
        return "unknown"
    return "low" if quality < 40 else "medium" if quality < 70 else "high"


def histogram_bucket(processing_ms: float) -> int:
    """The index of the PROCESSING_BUCKETS_MS bucket that holds ``processing_ms`` (an edge is in its bucket)."""
    return bisect.bisect_left(PROCESSING_BUCKETS_MS, processing_ms)


def percentile_ms(histogram: Sequence[int], q: float) -> float | None:
    """The ``q`` (0..1) percentile read off a histogram: the upper edge of the bucket holding the rank
    (``math.inf`` in the open bucket); None when the histogram is empty."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i, n in enumerate(histogram):
        seen += n
        if seen >= rank:
            return PROCESSING_BUCKETS_MS[i] if i < len(PROCESSING_BUCKETS_MS) else math.inf
    return math.inf


def check_event(event: DecisionEvent) -> None:
    """Refuse an event whose fields are not among the published values (InvalidEvent)."""
    if event.direction not in DIRECTIONS:
        raise InvalidEvent(f"direction {event.direction!r} is not one of {DIRECTIONS}")
    if event.category not in CATEGORIES:
        raise InvalidEvent(f"category {event.category!r} is not one of {CATEGORIES}")
    if event.outcome not in OUTCOMES:
        raise InvalidEvent(f"outcome {event.outcome!r} is not one of {OUTCOMES}")
    if event.quality not in QUALITY_BUCKETS:
        raise InvalidEvent(f"quality {event.quality!r} is not one of {QUALITY_BUCKETS}")
    if not event.station or not event.lane:
        raise InvalidEvent("an event names its station and lane")
    if not math.isfinite(event.processing_ms) or event.processing_ms < 0:
        raise InvalidEvent(f"processing_ms {event.processing_ms!r} is not a duration")


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

    month: date  # first day of the (local, WIB) month
    station: str
    port_code: str  # BPS port code of the station
    nationality: str  # ISO 3166 alpha-3
    count: int


@dataclass(frozen=True)
class SatisfactionRow:
    """Kiosk feedback in one month at one station (counters only: no rating is kept on its own)."""

    month: date  # first day of the local (WIB) month of the ratings
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
        """One rating per event, within :data:`RATING_WINDOW` of it; a second rating for the same event raises
        ``FeedbackRefused``, a late one ``RatingWindowClosed``."""

    def hourly(self, start: date, end: date, station: str | None = None) -> list[HourlyRow]:
        """Hourly rows for the days ``start`` .. ``end`` inclusive."""

    def first_hour(self) -> datetime | None:
        """The first hour (UTC) that holds a decision, or None."""

    def monthly_arrivals(self, start: date, end: date, station: str | None = None) -> list[MonthlyArrivalsRow]:
        """Monthly arrivals by nationality for the (local) months that hold ``start`` .. ``end``."""

    def monthly_satisfaction(self, start: date, end: date, station: str | None = None) -> list[SatisfactionRow]:
        """Monthly satisfaction for the (local) months that hold ``start`` .. ``end``."""

    def stations(self) -> list[str]:
        """Stations that have recorded events."""

    def last_update(self) -> datetime | None:
        """When the last event or rating was recorded (UTC), or None."""
