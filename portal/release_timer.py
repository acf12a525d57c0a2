"""Releasing periods when they fall due, not when they are first asked for.

docs/portal.md says a local day is released at its end plus the grace period (a month once all its days are).
The tables were built at a period's first request after that, so a period nobody asked for during a week
was built from a week's more data than one asked for at once. :func:`release_due` builds every period due at
the clock's time (the last released day and the rest of its month, the last released month's arrivals,
ratings and nationalities); :class:`ReleaseTimer` runs it at start and again at each moment a period falls
due (every local midnight plus the grace period), so that, while a portal runs, a period is built within
about :data:`MARGIN` of its release time, from what had reached the store by then. (A portal that is not
running at that moment builds the period at its next start: the store keeps no time of receipt, so a
release cannot be rebuilt as of its cut-off afterwards.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from portal.figures import Figures
from portal.periods import Schedule, month_start

log = logging.getLogger(__name__)

#: How long after a period's release time the timer wakes (clocks of hosts and of the store's writers differ).
MARGIN = timedelta(seconds=5)
#: The longest sleep between two checks (a wall clock that jumps is noticed within it).
MAX_SLEEP = timedelta(minutes=10)


def next_release(schedule: Schedule, now: datetime) -> datetime:
    """The first moment after ``now`` (UTC) at which a new local day falls due: a local midnight plus the grace."""
    next_day = schedule.last_released_day(now) + timedelta(days=2)  # the day after the next one to fall due
    local = datetime.combine(next_day, datetime.min.time()) + schedule.grace
    return (local - schedule.offset).replace(tzinfo=UTC)


def release_due(figures: Figures) -> None:
    """Build (and keep) every period due now that the public pages publish: the days of the last released
    day's month up to it, and the last released month's arrivals, ratings and nationality counts."""
    last_day = figures.last_released_day()
    figures.tables.days(figures.store, month_start(last_day), last_day)
    month = figures.last_released_month()
    figures.arrivals(None, month, month)
    figures.tables.satisfaction(figures.store, month)


class ReleaseTimer:
    """A daemon thread that calls :func:`release_due` at start and whenever a period falls due."""

    def __init__(self, figures: Callable[[], Figures], schedule: Schedule,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), max_sleep: timedelta = MAX_SLEEP):
        self._figures, self.schedule, self.clock, self.max_sleep = figures, schedule, clock, max_sleep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="portal-releases", daemon=True)

    def start(self) -> ReleaseTimer:
        """Start the thread (the first release at once)."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                release_due(self._figures())
            except Exception as exc:  # the store may be down: the pages say so; try again at the next wake-up
                log.warning("portal: releasing the due periods failed: %s", exc)
            now = self.clock()
            wait = min(next_release(self.schedule, now) + MARGIN - now, self.max_sleep)
            self._stop.wait(max(wait.total_seconds(), 0.01))
