"""What each page publishes: views read off the released master tables (public) or the store (auditors).

**Public.** Every count the public site shows comes from one protected table per period, never from a table
built and protected for the request: a local day's master table (:mod:`portal.day_release`: every station,
hour and direction with their totals), a month's arrivals (:mod:`portal.month_release`, protected against
its days' tables) and a month's ratings table (:mod:`portal.satisfaction_release`), each released once its
end plus the grace period has passed (:mod:`portal.released`). A view re-arranges entries of those tables;
a figure that adds months up (a year, the total of a period) is shown only when every month it adds is
shown, so that it is a sum a reader could work out anyway and gives back nothing hidden
(:func:`portal.disclosure.summed`). Nothing of a period that is not released yet is shown.

**Auditors** (``public=False``): the same views over the store's current figures, unsuppressed, today
included.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from biometrics.events import (
    ARRIVAL,
    DEFAULT_NATIONALITY_RETENTION_DAYS,
    DEFAULT_SERVICE_TARGET_MS,
    LOCAL_UTC_OFFSET_HOURS,
    EventStore,
    HourlyRow,
)
from portal import histogram
from portal.day_release import DayRelease, Tally, release_day, tallies
from portal.disclosure import HIDDEN_ENTRY, NationalityRelease, ProtectedTable, Published, ReleasePolicy, summed
from portal.periods import Schedule, month_end, month_range, month_start
from portal.released import TableReleases, utc_now
from portal.satisfaction_release import RatingsRow, release_month
from portal.shared_record import share
from portal.staffing import HourPlan, plan_hour


@dataclass(frozen=True)
class PortalConfig:
    """Settings of a portal: local time, release, disclosure, service target and the staffing model's inputs."""

    utc_offset_hours: float = LOCAL_UTC_OFFSET_HOURS
    tz_name: str = "WIB (UTC+7)"
    release: ReleasePolicy = field(default_factory=ReleasePolicy)
    service_target_ms: float = DEFAULT_SERVICE_TARGET_MS
    handling_s: float = 20.0
    target_wait_s: float = 180.0
    retention_days: int = DEFAULT_NATIONALITY_RETENTION_DAYS
    banner: str = ""  # e.g. "SYNTHETIC DATA" on a demonstration
    state_dir: Path | None = None  # where the releases are kept (None: in memory only)
    grace_hours: float = 24.0  # after a period's end before it is released (late shipments)

    def __post_init__(self) -> None:
        if not self.grace_hours >= 0:
            raise ValueError(f"the grace period must be >= 0 hours, not {self.grace_hours}")
        if self.utc_offset_hours != LOCAL_UTC_OFFSET_HOURS:
            raise ValueError(f"the stores key their months and days by local time, UTC+{LOCAL_UTC_OFFSET_HOURS} "
                             f"(WIB): the portal's local time must be the same, not UTC{self.utc_offset_hours:+g}")

    @property
    def offset(self) -> timedelta:
        """Local time minus UTC."""
        return timedelta(hours=self.utc_offset_hours)

    @property
    def schedule(self) -> Schedule:
        """When periods are released."""
        return Schedule(self.offset, timedelta(hours=self.grace_hours))

    def local(self, when: datetime) -> datetime:
        """``when`` (UTC) in local time (naive)."""
        return (when.astimezone(UTC) + self.offset).replace(tzinfo=None)


#: The placeholder of a figure that is not published (not released, or not in its period's release): never
#: shown as a number (the pages and downloads leave it out or show "·"), and a sum over it is not shown either.
NOT_PUBLISHED = HIDDEN_ENTRY


def either(first: Published, second: Published) -> Published:
    """The same figure worked out two ways: whichever is shown."""
    return first if not first.suppressed else second


@dataclass
class HourFigures:
    """One local hour at a checkpoint."""

    hour: int
    counts: list[Published]  # per direction (ARRIVAL, DEPARTURE)
    total: Published
    percentiles: dict[int, float | None]  # None: not published
    lanes_open: int | None  # None: not published


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
class OverviewView:
    """Every checkpoint's day, and all of them together."""

    day: date
    stations: list[StationDay]
    grand: Published  # all stations, both directions


@dataclass
class ArrivalsView:
    """Arrivals per month by port, and by nationality for one port or all."""

    station: str | None
    months: list[date]
    stations: list[str]
    by_port: ProtectedTable  # rows: months, columns: stations
    pending: set[date]  # months of the period not released yet (public) or not begun (auditors)
    unpublished: set[tuple[int, int]]  # (month, station) cells of released months whose release lacks the station
    nat_months: list[date]  # completed months (released)
    nationalities: list[str]
    by_nationality: list[list[int | None]]  # rows: nationalities, columns: nat_months (None: not released)
    nat_totals: list[int]

    def any_published(self) -> bool:
        """True when at least one month of the period is published (else its totals add up nothing: "·")."""
        return any(m not in self.pending for m in self.months)


@dataclass
class SeasonalView:
    """Arrivals per month, one row per year."""

    station: str | None
    years: list[int]
    table: ProtectedTable  # rows: years, columns: months 1..12
    future: set[tuple[int, int]]  # (year, month) not released yet, or before the first recorded arrival

    def absent(self, year: int) -> bool:
        """True for a year none of whose months has a record."""
        return all((year, m) in self.future for m in range(1, 13))


@dataclass
class SatisfactionView:
    """Ratings per month (None: the month is not released yet)."""

    station: str | None
    months: list[date]
    rows: list[RatingsRow | None]


class Figures:
    """The portal's figures over one event store (thread-safe)."""

    def __init__(self, store: EventStore, config: PortalConfig | None = None,
                 release: NationalityRelease | None = None, tables: TableReleases | None = None,
                 clock: Callable[[], datetime] = utc_now):
        self.store = store
        self.config = config or PortalConfig()
        self.release = release or NationalityRelease(self.config.release)
        self.tables = tables or TableReleases(self.config.schedule, clock=clock)

    # -- time ------------------------------------------------------------------------------------------

    def local(self, when: datetime) -> datetime:
        """``when`` (UTC) in local time (naive)."""
        return self.config.local(when)

    def last_update(self) -> datetime | None:
        """The store's last update (UTC)."""
        return self.store.last_update()

    def current_day(self, last_update: datetime | None = None) -> date:
        """The local day of the last update (the auditors' "today"), or today's local date."""
        when = last_update or self.last_update() or self.tables.clock()
        return self.local(when).date()

    def last_released_day(self) -> date:
        """The last local day the public site publishes."""
        return self.tables.last_day()

    def last_released_month(self) -> date:
        """The first day of the last month the public site publishes whole."""
        return self.config.schedule.last_released_month(self.tables.clock())

    def last_release_time(self) -> datetime:
        """When the last released day was released (UTC): its local end plus the grace period."""
        end = datetime.combine(self.last_released_day() + timedelta(days=1), datetime.min.time())
        return (end + self.config.schedule.grace - self.config.offset).replace(tzinfo=UTC)

    def released_stations(self) -> list[str]:
        """The stations the public site names: those of the last released day's master table (the stations the
        store knew at that release), never the store's current list, which a first decision at a new station
        changes at once (that traveller's place, published live)."""
        return sorted(self.day(self.last_released_day()).stations)

    def stations(self, public: bool = True) -> list[str]:
        """The stations a site names: released (public) or the store's current list (auditors)."""
        return self.released_stations() if public else self.store.stations()

    def first_published_month(self) -> date:
        """The earliest month the public site publishes: the local month of the store's first decision, or the
        last released month when that is earlier or the store holds none. A day or month before it is shown as
        not published and no release of it is built: one anonymous request for ten years of ``/seasonal`` or a
        period from 2000-01 used to build, record and keep a release of every day and month back to then
        (tens of seconds under the releases' lock), all of them empty."""
        last = self.last_released_month()
        first = self.store.first_hour()
        return last if first is None else min(month_start(self.local(first).date()), last)

    def today_local(self) -> date:
        """Today's local date by the wall clock."""
        return self.local(self.tables.clock()).date()

    def _local_rows(self, first: date, last: date, station: str | None = None
                    ) -> Iterable[tuple[datetime, HourlyRow]]:
        for row in self.store.hourly(first - timedelta(days=1), last + timedelta(days=1), station):
            local = self.local(row.hour)
            if first <= local.date() <= last:
                yield local, row

    # -- one day -----------------------------------------------------------------------------------------

    def day(self, day: date, public: bool = True) -> DayRelease:
        """The master table of local day ``day``: released (public; the day must be released), or the store's
        current figures unsuppressed (auditors)."""
        if public:
            released = self.tables.days(self.store, day, day)
            if day not in released:
                raise LookupError(f"{day} is not released yet (the last released day is {self.last_released_day()})")
            return released[day]
        return release_day(day, self._local_rows(day, day), self.store.stations(), public=False)

    def today(self, station: str, day: date, public: bool = True) -> TodayView | None:
        """Hour by hour at ``station`` on local day ``day`` (None: the day's release does not list the station,
        first seen after it, so its day is not published)."""
        if public and month_start(day) < self.first_published_month():
            return None  # before the store's first decision: not published, and no release built
        sd = self.day(day, public).station(station)
        if sd is None:
            return None
        hours = [HourFigures(h, sd.cells[h], sd.hours[h], sd.hour_percentiles[h], sd.lanes[h]) for h in range(24)]
        return TodayView(station, day, hours, sd.directions, sd.total, sd.day_percentiles, sd.within_share)

    def overview(self, day: date, public: bool = True) -> OverviewView:
        """Every checkpoint's day (counts by direction, the day's percentiles) and all of them together."""
        release = self.day(day, public)
        rows = []
        for s in self.stations(public):
            sd = release.station(s)
            if sd is None:  # first seen after the release: left out (the day's total is the release's own)
                continue
            rows.append(StationDay(s, sd.directions, sd.total, sd.day_percentiles))
        return OverviewView(day, rows, release.total)

    # -- months of arrivals ------------------------------------------------------------------------------

    def month_arrivals(self, months: list[date], public: bool = True) -> dict[date, dict[str | None, Published]]:
        """Arrivals per month (first day) and station, and over all stations (key None), of the months given
        that are released (public: each month's released arrivals) or, for the auditors, begun. A station that
        a month's release does not list (first seen after it) has no entry in that month: not published."""
        out: dict[date, dict[str | None, Published]] = {}
        stations = self.store.stations()
        if public:
            floor = self.first_published_month()
            for m in months:
                if m < floor:  # before the store's first decision: not published, and no release built
                    continue
                release = self.tables.arrivals(self.store, m)
                if release is not None:
                    out[m] = {s: p for s in [*stations, None] if (p := release.station(s)) is not None}
            return out
        begun = [m for m in months if m <= self.current_day()]
        raw: dict[date, dict[str, int]] = {m: defaultdict(int) for m in begun}
        if begun:
            for local, row in self._local_rows(begun[0], month_end(begun[-1])):
                if row.direction == ARRIVAL and month_start(local.date()) in raw:
                    raw[month_start(local.date())][row.station] += row.count
        for m, counts in raw.items():
            out[m] = {s: Published(counts.get(s, 0)) for s in stations}
            out[m][None] = Published(sum(counts.values()))
        return out

    def arrivals(self, station: str | None, first: date, last: date, public: bool = True) -> ArrivalsView:
        """Arrivals per month by port (months ``first`` .. ``last``) and by nationality (completed months)."""
        months = month_range(first, last)
        stations = [station] if station else self.stations(public)
        per_month = self.month_arrivals(months, public)
        if station:  # a month whose release does not list the station is not published for it
            per_month = {m: figures for m, figures in per_month.items() if station in figures}
        unpublished = {(i, j) for i, m in enumerate(months) if m in per_month
                       for j, s in enumerate(stations) if s not in per_month[m]}
        cells = [[per_month.get(m, {}).get(s, NOT_PUBLISHED) for s in stations] for m in months]
        rows = [cells[i][0] if station else either(summed(cells[i]), per_month.get(m, {}).get(None, NOT_PUBLISHED))
                for i, m in enumerate(months)]
        done = [i for i, m in enumerate(months) if m in per_month]
        cols = [summed(cells[i][j] for i in done) for j in range(len(stations))]
        by_port = ProtectedTable(cells, rows, cols, either(summed(cols), summed(rows[i] for i in done)))
        if public:
            floor = self.first_published_month()
            nat_months = [m for m in months if m >= floor and self.tables.month_released(m)]
        else:
            nat_months = months
        nat_cells: dict[str, dict[date, int | None]] = defaultdict(dict)
        if nat_months:
            raw: dict[date, dict[tuple[str, str], int]] = defaultdict(dict)
            for r in self.store.monthly_arrivals(nat_months[0], nat_months[-1]):
                raw[r.month][(r.station, r.nationality)] = raw[r.month].get((r.station, r.nationality), 0) + r.count
            for m in nat_months:
                released = self.release.release(m, raw.get(m, {}), self._share) if public else raw.get(m, {})
                for (s, nat), c in released.items():
                    if station is None or s == station:
                        nat_cells[nat][m] = (nat_cells[nat].get(m) or 0) + c
        totals = {nat: sum(v or 0 for v in by_m.values()) for nat, by_m in nat_cells.items()}
        nationalities = sorted(nat_cells, key=lambda n: (-totals[n], n))
        return ArrivalsView(station, months, stations, by_port, {m for m in months if m not in per_month},
                            unpublished, nat_months, nationalities,
                            [[nat_cells[n].get(m) for m in nat_months] for n in nationalities],
                            [totals[n] for n in nationalities])

    def seasonal(self, station: str | None, years: int = 3, public: bool = True) -> SeasonalView:
        """Arrivals per month for the last ``years`` calendar years."""
        today = self.today_local() if public else self.current_day()
        year_list = list(range(today.year - years + 1, today.year + 1))
        per_month = self.month_arrivals(month_range(date(year_list[0], 1, 1), today), public)
        per_month = {m: figures for m, figures in per_month.items() if station in figures}  # listed: published
        cells = [[per_month.get(date(y, m, 1), {}).get(station, NOT_PUBLISHED) for m in range(1, 13)]
                 for y in year_list]
        recorded = [date(y, m, 1) for y in year_list for m in range(1, 13)
                    if date(y, m, 1) in per_month and cells[y - year_list[0]][m - 1].public != 0]
        first = min(recorded, default=None)
        # months not released (or not begun), and months before the first recorded arrival (no record is not
        # zero arrivals)
        future = {(y, m) for y in year_list for m in range(1, 13)
                  if date(y, m, 1) not in per_month or first is None or date(y, m, 1) < first}
        rows = [summed(c for m, c in enumerate(cells[i], 1) if (y, m) not in future) for i, y in enumerate(year_list)]
        cols = [summed(cells[i][m - 1] for i, y in enumerate(year_list) if (y, m) not in future) for m in range(1, 13)]
        return SeasonalView(station, year_list, ProtectedTable(cells, rows, cols, summed(rows)), future)

    def _share(self, name: str, doc: dict[str, Any]) -> dict[str, Any]:
        """A nationality release recorded in the store (or the one recorded there first)."""
        return share(self.store, {name: doc})[name]

    # -- satisfaction ----------------------------------------------------------------------------------

    def satisfaction(self, station: str | None, first: date, last: date, public: bool = True) -> SatisfactionView:
        """Ratings per month (``first`` .. ``last``): a row of each month's released table (public), or the
        store's current figures (auditors)."""
        months = month_range(first, last)
        if public:
            floor = self.first_published_month()
            releases = [self.tables.satisfaction(self.store, m) if m >= floor else None for m in months]
            return SatisfactionView(station, months, [r.row(station) if r else None for r in releases])
        by_month: dict[date, list] = defaultdict(list)
        for r in self.store.monthly_satisfaction(months[0], months[-1], station):
            by_month[r.month].append(r)
        stations = self.store.stations()
        return SatisfactionView(station, months, [release_month(m, by_month[m], stations, public=False).row(station)
                                                  for m in months])

    # -- auditors ---------------------------------------------------------------------------------------

    def staffing(self, station: str, day: date, direction: str = ARRIVAL) -> list[HourPlan]:
        """The Erlang C plan per local hour of ``day`` at ``station`` in ``direction`` (auditors only)."""
        rows = [(local, r) for local, r in self._local_rows(day, day, station) if r.direction == direction]
        hours: list[Tally] = tallies(rows, [station])[station]
        return [plan_hour(h, sum(t.counts), histogram.mean_ms(t.hist), t.lanes, self.config.handling_s,
                          self.config.target_wait_s) for h, t in enumerate(hours)]


__all__ = ["Figures", "PortalConfig"]
