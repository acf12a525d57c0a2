"""SYNTHETIC traffic: a simulated year of decisions at four Mentawai checkpoints, written into an event store.

Usage::

    checkpoint-bench traffic --store DATA_DIR_OR_POSTGRES_URL [--decisions 200000] [--days 365] [--seed 13]

Every figure this writes is SYNTHETIC: made up by a seeded model, for demonstrations, tests and the
portal's benchmark, never to be read as a real count. The model (local time, WIB = UTC+7):

* **Checkpoints**: Rokot airport (Sipora; a daily flight from Padang, a second in the surf season),
  Tuapejat sea port (Sipora; the fast ferry from Padang four days a week, a slow public ferry twice),
  Siberut (Maileppet) and Sikakap (North Pagai) sea ports (public ferries two or three days a week).
* **Waves**: each arrival's passengers reach the lanes from 5 minutes after it docks or lands, spread over
  about half an hour (5 + Gamma(2, 8) minutes); departing passengers come 30 to 120 minutes before it
  leaves; a trickle of local boats through the day (07:00-18:00).
* **Season**: load factors by month, highest in the surf season (April-October, peak June-August), a bump
  for Indonesian holidays in December; weekends a little busier.
* **Nationality**: the foreign share rises in the surf season (Australians, Americans, Brazilians,
  Europeans, Japanese and others); the rest are Indonesian citizens.
* **Lanes**: kiosks per direction opened with the size of the wave (one per 60 passengers, up to the
  station's kiosks), plus the officer's desk.
* **Processing times**: log-normal, median 650 ms (longer for low-quality samples and for decisions sent
  to the officer); outcomes 94 % proceed, about 5 % see the officer, about 1 % errors.
* **Feedback**: ``--feedback-rate`` of the decisions are rated on the kiosk's four smileys, happier when
  processing was fast.

The events go into the store through ``record_decisions`` (bulk) and the rated ones through
``record_decision`` (for their id) and ``record_feedback``; the command prints events/s.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

from biometrics.events import ARRIVAL, CITIZEN, DEPARTURE, ERROR, FOREIGN, PROCEED, SEE_OFFICER, DecisionEvent

COMMAND = "traffic"
SYNTHETIC = "SYNTHETIC"
LOCAL_OFFSET = timedelta(hours=7)  # WIB
MODEL_VERSION = "face-synthetic-1"
CALIBRATION_VERSION = "calibration-synthetic-1"

#: Load factor by month (January = index 0): surf season April-October, Indonesian holidays in December.
SEASON = (0.45, 0.42, 0.55, 0.78, 0.90, 1.00, 1.00, 1.00, 0.95, 0.82, 0.52, 0.66)
#: Foreign share of travellers by month at the surf ports (scaled per station).
FOREIGN_SHARE = (0.25, 0.22, 0.35, 0.55, 0.65, 0.72, 0.74, 0.72, 0.68, 0.58, 0.32, 0.28)
#: Nationalities of foreign travellers (ISO 3166 alpha-3) and their shares.
FOREIGN_MIX: dict[str, float] = {
    "AUS": 0.30, "USA": 0.13, "BRA": 0.09, "JPN": 0.05, "DEU": 0.06, "FRA": 0.05, "GBR": 0.06, "NLD": 0.04,
    "ESP": 0.03, "PRT": 0.03, "ITA": 0.03, "CHE": 0.02, "NZL": 0.03, "ZAF": 0.015, "CAN": 0.02, "SGP": 0.015,
    "MYS": 0.01, "ARG": 0.005, "CHL": 0.005, "SWE": 0.005, "KOR": 0.005, "ISR": 0.003, "NOR": 0.004,
    "IRL": 0.003,
}


@dataclass(frozen=True)
class Service:
    """A scheduled flight or ferry: local time, direction, seats, weekdays (Mon=0) and months (1-12) it runs."""

    hour: int
    minute: int
    direction: str
    seats: int
    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
    months: tuple[int, ...] = tuple(range(1, 13))


@dataclass(frozen=True)
class Checkpoint:
    """One simulated checkpoint: its services, kiosks per direction and how touristy it is."""

    station: str
    name: str
    services: tuple[Service, ...]
    kiosks: int
    foreign_factor: float  # multiplies FOREIGN_SHARE
    trickle_per_hour: float  # local boats, walk-ins (before scaling)


SURF = tuple(range(4, 11))
CHECKPOINTS: tuple[Checkpoint, ...] = (
    Checkpoint("rokot-airport", "Rokot airport (Sipora)", (
        Service(10, 10, ARRIVAL, 68), Service(10, 50, DEPARTURE, 68),
        Service(14, 30, ARRIVAL, 68, months=SURF), Service(15, 10, DEPARTURE, 68, months=SURF),
    ), kiosks=3, foreign_factor=1.0, trickle_per_hour=0.3),
    Checkpoint("tuapejat-port", "Tuapejat sea port (Sipora)", (
        Service(9, 30, ARRIVAL, 200, weekdays=(0, 2, 4, 5)), Service(15, 0, DEPARTURE, 200, weekdays=(0, 2, 4, 5)),
        Service(6, 0, ARRIVAL, 300, weekdays=(1, 3)), Service(20, 0, DEPARTURE, 300, weekdays=(1, 3)),
    ), kiosks=4, foreign_factor=1.05, trickle_per_hour=2.0),
    Checkpoint("siberut-port", "Siberut (Maileppet) sea port", (
        Service(8, 30, ARRIVAL, 250, weekdays=(1, 3, 5)), Service(14, 0, DEPARTURE, 250, weekdays=(1, 3, 5)),
    ), kiosks=3, foreign_factor=0.6, trickle_per_hour=1.0),
    Checkpoint("sikakap-port", "Sikakap sea port (North Pagai)", (
        Service(10, 0, ARRIVAL, 250, weekdays=(2, 5)), Service(13, 0, DEPARTURE, 250, weekdays=(2, 5)),
    ), kiosks=2, foreign_factor=0.5, trickle_per_hour=0.8),
)


@dataclass
class DayTraffic:
    """One simulated day: its events (in time order) and the ratings given, by index into ``events``."""

    day: date
    events: list[DecisionEvent]
    ratings: dict[int, int]


def _load(day: date) -> float:
    weekend = 1.12 if day.weekday() >= 5 else 1.0
    return SEASON[day.month - 1] * weekend


def expected_decisions(start: date, days: int) -> float:
    """Decisions the model expects over ``days`` days from ``start`` at scale 1 (to scale to a target)."""
    total = 0.0
    for d in range(days):
        day = start + timedelta(days=d)
        for cp in CHECKPOINTS:
            for svc in cp.services:
                if day.weekday() in svc.weekdays and day.month in svc.months:
                    total += svc.seats * 0.8 * _load(day)
            total += cp.trickle_per_hour * 11 * 2 * _load(day)
    return total


class TrafficModel:
    """The seeded generator of :class:`DayTraffic` (see the module docstring for the model)."""

    def __init__(self, start: date, days: int, decisions: int, seed: int = 13, feedback_rate: float = 0.02):
        self.start, self.days, self.feedback_rate = start, days, feedback_rate
        self.scale = decisions / expected_decisions(start, days)
        self.rng = np.random.default_rng(seed)
        self._nat_codes = list(FOREIGN_MIX)
        p = np.array(list(FOREIGN_MIX.values()))
        self._nat_p = p / p.sum()

    def __iter__(self) -> Iterator[DayTraffic]:
        for d in range(self.days):
            yield self.day(self.start + timedelta(days=d))

    def day(self, day: date) -> DayTraffic:
        """The simulated traffic of one day (drawn from this model's generator: call days in order)."""
        rng = self.rng
        load = _load(day)
        events: list[DecisionEvent] = []
        midnight_utc = datetime(day.year, day.month, day.day, tzinfo=UTC) - LOCAL_OFFSET
        for cp in CHECKPOINTS:
            foreign_p = min(0.95, FOREIGN_SHARE[day.month - 1] * cp.foreign_factor)
            groups: list[tuple[str, np.ndarray, int]] = []  # direction, minutes after local midnight, lanes
            for svc in cp.services:
                if day.weekday() not in svc.weekdays or day.month not in svc.months:
                    continue
                pax = rng.poisson(svc.seats * self.scale * load * rng.uniform(0.65, 0.95))
                at = svc.hour * 60 + svc.minute
                if svc.direction == ARRIVAL:
                    minutes = at + 5 + rng.gamma(2.0, 8.0, pax)
                else:
                    minutes = at - rng.uniform(30, 120, pax)
                groups.append((svc.direction, minutes, max(1, min(cp.kiosks, math.ceil(pax / 60)))))
            for direction in (ARRIVAL, DEPARTURE):
                n = rng.poisson(cp.trickle_per_hour * self.scale * load * 11)
                groups.append((direction, rng.uniform(7 * 60, 18 * 60, n), 1))
            for direction, minutes, lanes in groups:
                events.extend(self._decisions(cp, direction, minutes, lanes, foreign_p, midnight_utc))
        events.sort(key=lambda e: e.minute)
        ratings = self._ratings(events)
        return DayTraffic(day, events, ratings)

    def _decisions(self, cp: Checkpoint, direction: str, minutes: np.ndarray, lanes: int, foreign_p: float,
                   midnight_utc: datetime) -> list[DecisionEvent]:
        rng = self.rng
        n = len(minutes)
        if n == 0:
            return []
        minutes = np.clip(minutes, 0, 24 * 60 - 1).astype(int)
        foreign = rng.random(n) < foreign_p
        nats = np.where(foreign, rng.choice(self._nat_codes, n, p=self._nat_p), "IDN")
        quality = rng.choice(["high", "medium", "low", "unknown"], n, p=[0.70, 0.22, 0.06, 0.02])
        u = rng.random(n)
        officer_p = np.where(quality == "low", 0.20, 0.04)
        outcome = np.where(u < 0.01, ERROR, np.where(u < 0.01 + officer_p, SEE_OFFICER, PROCEED))
        ms = rng.lognormal(math.log(650), 0.45, n)
        ms = ms * np.where(quality == "low", 1.8, 1.0) * np.where(outcome == SEE_OFFICER, 2.2, 1.0)
        lane_no = rng.integers(1, lanes + 1, n)
        desk = rng.random(n) < 0.05
        prefix = "a" if direction == ARRIVAL else "d"
        out = []
        for k in range(n):
            lane = f"{prefix}-desk" if desk[k] else f"{prefix}-kiosk-{lane_no[k]}"
            out.append(DecisionEvent(
                minute=midnight_utc + timedelta(minutes=int(minutes[k])), station=cp.station, lane=lane,
                direction=direction, category=FOREIGN if foreign[k] else CITIZEN, outcome=str(outcome[k]),
                processing_ms=round(float(ms[k]), 1), quality=str(quality[k]), model_version=MODEL_VERSION,
                calibration_version=CALIBRATION_VERSION, nationality=str(nats[k])))
        return out

    def _ratings(self, events: list[DecisionEvent]) -> dict[int, int]:
        if not events or self.feedback_rate <= 0:
            return {}
        rng = self.rng
        rated = np.flatnonzero(rng.random(len(events)) < self.feedback_rate)
        ratings = {}
        for k in rated:
            e = events[int(k)]
            slow = e.processing_ms > 1500 or e.outcome != PROCEED
            p = [0.10, 0.20, 0.40, 0.30] if slow else [0.03, 0.07, 0.35, 0.55]
            ratings[int(k)] = int(rng.choice([1, 2, 3, 4], p=p))
        return ratings


@dataclass
class LoadResult:
    """What :func:`write_traffic` stored and how fast."""

    decisions: int
    ratings: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        """Decisions stored per second (ratings included in the time)."""
        return self.decisions / self.seconds if self.seconds > 0 else math.inf


def write_traffic(store: object, model: TrafficModel, batch: int = 20000, progress: bool = False) -> LoadResult:
    """Write the model's days into ``store`` (an :class:`~biometrics.events.EventStore`)."""
    stored = rated = 0
    pending: list[DecisionEvent] = []
    began = time.perf_counter()
    for traffic in model:
        for k, event in enumerate(traffic.events):
            rating = traffic.ratings.get(k)
            if rating is None:
                pending.append(event)
                continue
            event_id = store.record_decision(event)  # type: ignore[attr-defined]
            # rated a minute after the decision (the store dates a rating by ``at``, else by the clock)
            store.record_feedback(event_id, rating, at=event.minute + timedelta(minutes=1))  # type: ignore[attr-defined]
            stored += 1
            rated += 1
        if len(pending) >= batch:
            stored += store.record_decisions(pending)  # type: ignore[attr-defined]
            pending = []
        if progress and traffic.day.day == 1:
            print(f"  {traffic.day:%Y-%m}: {stored} decisions so far", file=sys.stderr, flush=True)
    if pending:
        stored += store.record_decisions(pending)  # type: ignore[attr-defined]
    return LoadResult(stored, rated, time.perf_counter() - began)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``checkpoint-bench traffic``."""
    parser.add_argument("--store", required=True, help="PostgreSQL URL or a station's data directory (SQLite)")
    parser.add_argument("--decisions", type=int, default=200_000, help="expected decisions over the period")
    parser.add_argument("--days", type=int, default=365, help="days to simulate (ending today by default)")
    parser.add_argument("--start", type=date.fromisoformat, default=None, help="first day (YYYY-MM-DD)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--feedback-rate", type=float, default=0.02, help="share of decisions rated")


def default_start(days: int) -> date:
    """The first day of a period of ``days`` days ending today (local time, WIB): a demonstration's "today"
    then has traffic (the whole simulated day, later hours included)."""
    return (datetime.now(UTC) + LOCAL_OFFSET).date() - timedelta(days=days - 1)


def run(args: argparse.Namespace) -> int:
    """Simulate and load; print what was stored and events/s."""
    from biometrics.event_store import open_event_store

    start = args.start or default_start(args.days)
    print(f"{SYNTHETIC} traffic: a made-up year for demonstrations and benchmarks, not real counts.")
    print(f"model: {len(CHECKPOINTS)} checkpoints ({', '.join(c.station for c in CHECKPOINTS)}), {args.days} days "
          f"from {start}, about {args.decisions} decisions, seed {args.seed}, feedback rate {args.feedback_rate}")
    store = open_event_store(args.store, readonly=False)
    try:
        result = write_traffic(store, TrafficModel(start, args.days, args.decisions, args.seed, args.feedback_rate),
                               progress=True)
    finally:
        close = getattr(store, "close", None)
        if close:
            close()
    print(f"{SYNTHETIC}: stored {result.decisions} decisions ({result.ratings} rated) in {result.seconds:.1f} s: "
          f"{result.events_per_s:,.0f} events/s")
    return 0
