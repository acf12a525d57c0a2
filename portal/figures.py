"""What each page publishes, computed from the store's aggregates under disclosure control.

:class:`Figures` reads only the aggregate rows of an :class:`~biometrics.events.EventStore` (hourly,
monthly arrivals, daily satisfaction) and turns them into views: today at a checkpoint, arrivals per
month by port and by nationality, the seasonal pattern, satisfaction, and (for auditors) the staffing
plan. A view built with ``public=True`` has passed :mod:`portal.disclosure`; with ``public=False`` it holds
the same figures unsuppressed (the auditors' view).

Arrival counts per local day are cached for days that are over (they no longer change), so that the
seasonal pattern over years reads the store only for today.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from biometrics.events import (
    ARRIVAL,
    DEFAULT_NATIONALITY_RETENTION_DAYS,
    DEFAULT_SERVICE_TARGET_MS,
    DIRECTIONS,
    EventStore,
    HourlyRow,
)
from portal import histogram
from portal.disclosure import (
    MIN_COUNT,
    NationalityRelease,
    ProtectedTable,
    Published,
    ReleasePolicy,
    percentile_allowed,
    protect,
    unprotected,
)
from portal.staffing import HourPlan, plan_hour


@dataclass(frozen=True)
class PortalConfig:
    """Settings of a portal: local time, disclosure, service target and the staffing model's inputs."""

    utc_offset_hours: float = 7.0
    tz_name: str = "WIB (UTC+7)"
    release: ReleasePolicy = field(default_factory=ReleasePolicy)
    service_target_ms: float = DEFAULT_SERVICE_TARGET_MS
    handling_s: float = 20.0
    target_wait_s: float = 180.0
    retention_days: int = DEFAULT_NATIONALITY_RETENTION_DAYS
    banner: str = ""  # e.g. "SYNTHETIC DATA" on a demonstration
    state_dir: Path | None = None  # where the nationality releases are kept (None: in memory only)

    @property
    def offset(self) -> timedelta:
        """Local time minus UTC."""
        return timedelta(hours=self.utc_offset_hours)

    def local(self, when: datetime) -> datetime:
        """``when`` (UTC) in local time (naive)."""
        return (when.astimezone(UTC) + self.offset).replace(tzinfo=None)


def table(cells: list[list[int]], public: bool) -> ProtectedTable:
    """The table as published (protected) or as the auditors see it."""
    return protect(cells) if public else unprotected(cells)


def month_start(d: date) -> date:
    """The first day of ``d``'s month."""
    return d.replace(day=1)


def add_months(d: date, n: int) -> date:
    """The first day of the month ``n`` months after ``d``'s."""
    k = d.year * 12 + d.month - 1 + n
    return date(k // 12, k % 12 + 1, 1)


def month_range(first: date, last: date) -> list[date]:
    """First days of the months from ``first``'s to ``last``'s, inclusive."""
    out, m = [], month_start(first)
    while m <= last:
        out.append(m)
        m = add_months(m, 1)
    return out


def _shown(total: Published) -> bool:
    """Whether percentiles of the decisions behind ``total`` are published (it is, and they are enough)."""
    return not total.suppressed and percentile_allowed(total.value)


def _percentiles(hist: list[int], total: Published) -> dict[int, float | None]:
    """The published percentiles of ``hist``, the decisions counted in ``total`` (every one None if not
    :func:`_shown`)."""
    if not _shown(total):
        return dict.fromkeys(histogram.PERCENTILES)
    return {q: histogram.percentile(hist, q) for q in histogram.PERCENTILES}


@dataclass
class _Tally:
    """Hourly rows summed: decisions per direction, the processing-time histogram, lanes, decisions in target."""

    counts: list[int] = field(default_factory=lambda: [0] * len(DIRECTIONS))
    hist: list[int] = field(default_factory=histogram.empty)
    lanes: int = 0
    within: int = 0

    def add(self, row: HourlyRow) -> None:
        """Count ``row`` in."""
        self.counts[DIRECTIONS.index(row.direction)] += row.count
        self.hist = histogram.merge([self.hist, row.histogram])
        self.lanes += row.lanes_active
        self.within += row.within_target


@dataclass
class HourFigures:
    """One local hour at a checkpoint."""

    hour: int
    counts: list[Published]  # per direction (ARRIVAL, DEPARTURE)
    total: Published
    percentiles: dict[int, float | None]  # None: not published
    lanes_open: int
    within_target: int
    histogram: list[int] = field(repr=False, default_factory=list)


@dataclass
class TodayView:
    """A day at one checkpoint, hour by hour."""

    station: str
    day: date
    hours: list[HourFigures]
    totals: list[Published]  # per direction
    grand: Published
    day_percentiles: dict[int, float | None]
    within_target_share: float | None


@dataclass
class StationDay:
    """One checkpoint's day in the overview."""

    station: str
    counts: list[Published]
    total: Published
    percentiles: dict[int, float | None]


@dataclass
class ArrivalsView:
    """Arrivals per month by port, and by nationality for one port or all."""

    station: str | None
    months: list[date]
    stations: list[str]
    by_port: ProtectedTable  # rows: months, columns: stations
    nat_months: list[date]  # completed months (released)
    nationalities: list[str]
    by_nationality: list[list[int | None]]  # rows: nationalities, columns: nat_months (None: not released)
    nat_totals: list[int]


@dataclass
class SeasonalView:
    """Arrivals per month, one row per year."""

    station: str | None
    years: list[int]
    table: ProtectedTable  # rows: years, columns: months 1..12
    future: set[tuple[int, int]]  # (year, month) not begun yet, or before the first recorded arrival

    def absent(self, year: int) -> bool:
        """True for a year none of whose months has a record."""
        return all((year, m) in self.future for m in range(1, 13))


@dataclass
class SatisfactionView:
    """Ratings per month."""

    station: str | None
    months: list[date]
    table: ProtectedTable  # rows: months, columns: ratings 1..4
    share_positive: list[float | None]


class Figures:
    """The portal's figures over one event store (thread-safe; caches the arrivals of days that are over)."""

    def __init__(self, store: EventStore, config: PortalConfig | None = None,
                 release: NationalityRelease | None = None):
        self.store = store
        self.config = config or PortalConfig()
        self.release = release or NationalityRelease(self.config.release)
        self._days: dict[date, dict[tuple[str, str], int]] = {}
        self._lock = threading.Lock()

    # -- time ------------------------------------------------------------------------------------------

    def local(self, when: datetime) -> datetime:
        """``when`` (UTC) in local time (naive)."""
        return self.config.local(when)

    def last_update(self) -> datetime | None:
        """The store's last update (UTC)."""
        return self.store.last_update()

    def current_day(self, last_update: datetime | None = None) -> date:
        """The local day of the last update (the portal's "today"), or today's local date."""
        when = last_update or self.last_update() or datetime.now(UTC)
        return self.local(when).date()

    def _utc_days(self, first: date, last: date) -> tuple[date, date]:
        """The UTC days whose hours cover local days ``first`` .. ``last``."""
        return first - timedelta(days=1), last + timedelta(days=1)

    def _local_rows(self, first: date, last: date, station: str | None) -> Iterable[tuple[datetime, HourlyRow]]:
        lo, hi = self._utc_days(first, last)
        for row in self.store.hourly(lo, hi, station):
            local = self.local(row.hour)
            if first <= local.date() <= last:
                yield local, row

    def _hours(self, day: date, station: str | None, direction: str | None = None) -> list[_Tally]:
        """The rows of local day ``day`` at ``station`` (in ``direction``; None: both) summed per local hour."""
        hours = [_Tally() for _ in range(24)]
        for local, row in self._local_rows(day, day, station):
            if direction is None or row.direction == direction:
                hours[local.hour].add(row)
        return hours

    # -- today -------------------------------------------------------------------------------------------

    def today(self, station: str, day: date, public: bool = True) -> TodayView:
        """Hour by hour at ``station`` on local day ``day``."""
        tallies = self._hours(day, station)
        t = table([h.counts for h in tallies], public)
        hours = []
        for h, tally in enumerate(tallies):
            total = t.row_totals[h]
            hours.append(HourFigures(h, t.cells[h], total, _percentiles(tally.hist, total), tally.lanes, tally.within,
                                     tally.hist))
        n = t.grand.value
        return TodayView(station, day, hours, t.col_totals, t.grand,
                         _percentiles(histogram.merge(h.hist for h in tallies), t.grand),
                         sum(h.within for h in tallies) / n if _shown(t.grand) and n else None)

    def overview(self, day: date, public: bool = True) -> list[StationDay]:
        """Every checkpoint's day so far (counts by direction, the day's percentiles)."""
        stations = self.store.stations()
        tallies = {s: _Tally() for s in stations}
        for _local, row in self._local_rows(day, day, None):
            if row.station in tallies:
                tallies[row.station].add(row)
        t = table([tallies[s].counts for s in stations], public)
        out = []
        for i, s in enumerate(stations):
            out.append(StationDay(s, t.cells[i], t.row_totals[i], _percentiles(tallies[s].hist, t.row_totals[i])))
        return out

    # -- arrivals per local day (cached once the day is over) ------------------------------------------

    def day_arrivals(self, first: date, last: date, today: date | None = None) -> dict[date, dict[str, int]]:
        """Arrivals per local day and station for ``first`` .. ``last`` (``today``: :meth:`current_day`, if
        the caller has it; days before it are cached)."""
        today = today or self.current_day()
        with self._lock:
            missing = [first + timedelta(days=k) for k in range((last - first).days + 1)
                       if first + timedelta(days=k) not in self._days]
        fresh: dict[date, dict[tuple[str, str], int]] = {}
        if missing:
            lo, hi = min(missing), max(missing)
            fresh = {lo + timedelta(days=k): {} for k in range((hi - lo).days + 1)}
            for local, row in self._local_rows(lo, hi, None):
                key = (row.station, row.direction)
                bucket = fresh[local.date()]
                bucket[key] = bucket.get(key, 0) + row.count
            with self._lock:
                for d, counts in fresh.items():
                    if d < today:
                        self._days[d] = counts
        out: dict[date, dict[str, int]] = {}
        with self._lock:
            for k in range((last - first).days + 1):
                d = first + timedelta(days=k)
                counts = self._days.get(d, fresh.get(d, {}))
                out[d] = {s: c for (s, direction), c in counts.items() if direction == ARRIVAL}
        return out

    def month_arrivals(self, months: list[date], station: str | None,
                       today: date | None = None) -> dict[date, dict[str, int]]:
        """Arrivals per month (first day) and station (``today``: as :meth:`day_arrivals`)."""
        if not months:
            return {}
        days = self.day_arrivals(months[0], add_months(months[-1], 1) - timedelta(days=1), today)
        out: dict[date, dict[str, int]] = {m: defaultdict(int) for m in months}
        for d, counts in days.items():
            for s, c in counts.items():
                if station is None or s == station:
                    out[month_start(d)][s] += c
        return out

    def arrivals(self, station: str | None, first: date, last: date, public: bool = True) -> ArrivalsView:
        """Arrivals per month by port (months ``first`` .. ``last``) and by nationality (completed months)."""
        months = month_range(first, last)
        stations = [station] if station else self.store.stations()
        today = self.current_day()
        per_month = self.month_arrivals(months, None, today)
        by_port = table([[per_month[m].get(s, 0) for s in stations] for m in months], public)
        current = month_start(today)
        nat_months = [m for m in months if m < current] if public else months
        cells: dict[str, dict[date, int | None]] = defaultdict(dict)
        if nat_months:
            rows = self.store.monthly_arrivals(nat_months[0], nat_months[-1])
            raw: dict[date, dict[tuple[str, str], int]] = defaultdict(dict)
            for r in rows:
                raw[r.month][(r.station, r.nationality)] = raw[r.month].get((r.station, r.nationality), 0) + r.count
            for m in nat_months:
                released = self.release.release(m, raw.get(m, {})) if public else raw.get(m, {})
                for (s, nat), c in released.items():
                    if station is None or s == station:
                        cells[nat][m] = (cells[nat].get(m) or 0) + c
        totals = {nat: sum(v or 0 for v in by_m.values()) for nat, by_m in cells.items()}
        nationalities = sorted(cells, key=lambda n: (-totals[n], n))
        return ArrivalsView(station, months, stations, by_port, nat_months, nationalities,
                            [[cells[n].get(m) for m in nat_months] for n in nationalities],
                            [totals[n] for n in nationalities])

    def seasonal(self, station: str | None, years: int = 3, public: bool = True) -> SeasonalView:
        """Arrivals per month for the last ``years`` calendar years."""
        today = self.current_day()
        year_list = list(range(today.year - years + 1, today.year + 1))
        months = month_range(date(year_list[0], 1, 1), today)
        per_month = self.month_arrivals(months, station, today)
        cells = [[sum(per_month.get(date(y, m, 1), {}).values()) for m in range(1, 13)] for y in year_list]
        recorded = [date(y, m, 1) for y in year_list for m in range(1, 13) if cells[y - year_list[0]][m - 1]]
        first = min(recorded, default=today.replace(day=1))
        # months not begun, and months before the first recorded arrival (no record is not zero arrivals)
        future = {(y, m) for y in year_list for m in range(1, 13) if not first <= date(y, m, 1) <= today}
        return SeasonalView(station, year_list, table(cells, public), future)

    def satisfaction(self, station: str | None, first: date, last: date, public: bool = True) -> SatisfactionView:
        """Ratings per month (``first`` .. ``last``) and the share positive where the row is fully published."""
        months = month_range(first, last)
        sums = {m: [0, 0, 0, 0] for m in months}
        end = add_months(months[-1], 1) - timedelta(days=1)
        for row in self.store.daily_satisfaction(months[0], end, station):
            m = month_start(row.day)
            if m in sums:
                sums[m] = [a + b for a, b in zip(sums[m], row.counts, strict=True)]
        t = table([sums[m] for m in months], public)
        shares: list[float | None] = []
        for i, _m in enumerate(months):
            n = t.row_totals[i]
            whole = not n.suppressed and not any(c.suppressed for c in t.cells[i]) and n.value >= MIN_COUNT
            shares.append((t.cells[i][2].value + t.cells[i][3].value) / n.value if whole else None)
        return SatisfactionView(station, months, t, shares)

    # -- auditors ---------------------------------------------------------------------------------------

    def staffing(self, station: str, day: date, direction: str = ARRIVAL) -> list[HourPlan]:
        """The Erlang C plan per local hour of ``day`` at ``station`` in ``direction`` (auditors only)."""
        return [plan_hour(h, sum(t.counts), histogram.mean_ms(t.hist), t.lanes, self.config.handling_s,
                          self.config.target_wait_s) for h, t in enumerate(self._hours(day, station, direction))]


__all__ = ["Figures", "PortalConfig"]
