"""Local days and months, and when the public portal releases them.

A period (a local day, or a local calendar month) is released once its local end plus a grace period has
passed (:class:`Schedule`): a station that ships its journal late, after an outage, has that long for its
decisions to be counted. A released period is final: the portal publishes it from what the store held at
its release and never again from anything else (:mod:`portal.released`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta


def month_start(d: date) -> date:
    """The first day of ``d``'s month."""
    return d.replace(day=1)


def add_months(d: date, n: int) -> date:
    """The first day of the month ``n`` months after ``d``'s."""
    k = d.year * 12 + d.month - 1 + n
    return date(k // 12, k % 12 + 1, 1)


def month_end(d: date) -> date:
    """The last day of ``d``'s month."""
    return add_months(d, 1) - timedelta(days=1)


def month_range(first: date, last: date) -> list[date]:
    """First days of the months from ``first``'s to ``last``'s, inclusive."""
    out, m = [], month_start(first)
    while m <= last:
        out.append(m)
        m = add_months(m, 1)
    return out


def day_range(first: date, last: date) -> list[date]:
    """The days ``first`` .. ``last``, inclusive."""
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


@dataclass(frozen=True)
class Schedule:
    """Local time (``offset``: local minus UTC) and the grace period after a period's end before its release."""

    offset: timedelta = timedelta(hours=7)
    grace: timedelta = timedelta(hours=24)

    def local(self, when: datetime) -> datetime:
        """``when`` (UTC) in local time (naive)."""
        return (when.astimezone(UTC) + self.offset).replace(tzinfo=None)

    def last_released_day(self, now: datetime) -> date:
        """The last local day released at ``now`` (UTC): its end plus the grace period is past."""
        return (self.local(now) - self.grace).date() - timedelta(days=1)

    def month_released(self, month: date, now: datetime) -> bool:
        """Whether every day of ``month`` is released at ``now``."""
        return month_end(month) <= self.last_released_day(now)

    def last_released_month(self, now: datetime) -> date:
        """The first day of the last month released at ``now``."""
        last = self.last_released_day(now)
        return month_start(last) if last == month_end(last) else add_months(month_start(last), -1)
