"""The public portal's released master tables: each local day and month protected once, then kept.

:class:`TableReleases` gives the public views every day's master table (:mod:`portal.day_release`), every
month's arrivals (:mod:`portal.month_release`) and ratings table (:mod:`portal.satisfaction_release`) once
the period is released (its end plus the grace period, :class:`~portal.periods.Schedule`). The first time a
released period is asked for (or falls due: :mod:`portal.release_timer`), it is read from the state directory
(:class:`~portal.table_log.TableLog`) or, if it is not there, taken from the store's record of it
(:mod:`portal.shared_record`: another portal on the store released it) or built from the store, protected,
recorded there and written to the state directory; from then on it is served as it is, for good, in this
process, in any other on the same state directory and in any portal on the same store (a period read from the
state directory is written back to a store that has no record of it). A period not released yet is not
published at all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from itertools import groupby
from typing import Any

from biometrics.events import EventStore
from portal.day_release import DayRelease, release_day
from portal.month_release import MonthArrivals, release_month_arrivals
from portal.periods import Schedule, day_range, month_end, month_start
from portal.satisfaction_release import SatisfactionRelease, release_month
from portal.shared_record import recorded, share, write_back
from portal.table_log import TableLog


def utc_now() -> datetime:
    """The wall clock (UTC)."""
    return datetime.now(UTC)


class TableReleases:
    """Released days and months, kept in memory and (with ``log``) in the state directory; thread-safe."""

    def __init__(self, schedule: Schedule, log: TableLog | None = None, clock: Callable[[], datetime] = utc_now):
        self.schedule, self.log, self.clock = schedule, log, clock
        self._days: dict[date, DayRelease] = {}
        self._satisfaction: dict[date, SatisfactionRelease] = {}
        self._arrivals: dict[date, MonthArrivals] = {}
        self._read: set[date] = set()  # months whose file has been read
        self._lock = threading.Lock()

    def last_day(self) -> date:
        """The last released local day."""
        return self.schedule.last_released_day(self.clock())

    def month_released(self, month: date) -> bool:
        """Whether every day of ``month`` is released."""
        return self.schedule.month_released(month, self.clock())

    def _from_log(self, store: EventStore, month: date) -> None:
        """Read the month's released periods from the state directory, once, and write them back to the store
        where it has no record of them (:func:`portal.shared_record.write_back`: a store restored from a backup)."""
        if self.log is None or month in self._read:
            return
        doc = self.log.read(month)
        kept = {f"day/{text}": record for text, record in doc["days"].items()}
        kept.update({f"{name}/{month:%Y-%m}": doc[name] for name in ("satisfaction", "arrivals")
                     if doc.get(name) is not None})
        write_back(store, kept)
        for text, record in doc["days"].items():
            day = date.fromisoformat(text)
            self._days.setdefault(day, DayRelease.from_json(day, record))
        if doc.get("satisfaction") is not None:
            self._satisfaction.setdefault(month, SatisfactionRelease.from_json(month, doc["satisfaction"]))
        if doc.get("arrivals") is not None:
            self._arrivals.setdefault(month, MonthArrivals.from_json(month, doc["arrivals"]))
        self._read.add(month)

    def days(self, store: EventStore, first: date, last: date) -> dict[date, DayRelease]:
        """The master tables of the released days among ``first`` .. ``last`` (releasing those not yet kept)."""
        wanted = day_range(first, min(last, self.last_day()))
        with self._lock:
            for month in {month_start(d) for d in wanted}:
                self._from_log(store, month)
            missing = [d for d in wanted if d not in self._days]
            for month, group in groupby(missing, month_start):
                self._release_days(store, month, list(group))
            return {d: self._days[d] for d in wanted}

    def _release_days(self, store: EventStore, month: date, days: list[date]) -> None:
        names = {d: f"day/{d.isoformat()}" for d in days}
        docs = recorded(store, names.values())  # released by another portal on the store: theirs
        building = [d for d in days if names[d] not in docs]
        if building:
            stations = store.stations()
            rows: dict[date, list] = {d: [] for d in building}
            for row in store.hourly(building[0] - timedelta(days=1), building[-1] + timedelta(days=1)):
                local = self.schedule.local(row.hour)
                if local.date() in rows:
                    rows[local.date()].append((local, row))
            docs.update(share(store, {names[d]: release_day(d, rows[d], stations).to_json() for d in building}))
        fresh = {d: DayRelease.from_json(d, docs[names[d]]) for d in days}
        if self.log is None:
            self._days.update(fresh)
            return
        with self.log.adding(month) as doc:  # another process may have released some of them meanwhile: theirs
            for d, release in fresh.items():
                key = d.isoformat()
                if key in doc["days"]:
                    release = DayRelease.from_json(d, doc["days"][key])
                else:
                    doc["days"][key] = release.to_json()
                self._days[d] = release

    def satisfaction(self, store: EventStore, month: date) -> SatisfactionRelease | None:
        """``month``'s released ratings table (None: not released yet)."""
        if not self.month_released(month):
            return None
        with self._lock:
            self._from_log(store, month)
            if month not in self._satisfaction:
                release = release_month(month, store.monthly_satisfaction(month, month), store.stations())
                self._satisfaction[month] = self._kept(store, month, "satisfaction", release,
                                                       SatisfactionRelease.from_json)
            return self._satisfaction[month]

    def arrivals(self, store: EventStore, month: date) -> MonthArrivals | None:
        """``month``'s released arrivals (None: not released yet), protected against its days' tables."""
        if not self.month_released(month):
            return None
        days = list(self.days(store, month, month_end(month)).values())
        with self._lock:
            if month not in self._arrivals:
                release = release_month_arrivals(month, days)
                self._arrivals[month] = self._kept(store, month, "arrivals", release, MonthArrivals.from_json)
            return self._arrivals[month]

    def _kept(self, store: EventStore, month: date, name: str, release: Any, read: Callable[[date, Any], Any]
              ) -> Any:
        """``release`` recorded in the store (or the record there: another portal's) and written to the month's
        record as ``name``, or the one already in that record (another process's on this state directory)."""
        key = f"{name}/{month:%Y-%m}"
        shared = share(store, {key: release.to_json()})[key]
        if self.log is None:
            return read(month, shared)
        with self.log.adding(month) as doc:
            if doc.get(name) is None:
                doc[name] = shared
            return read(month, doc[name])
