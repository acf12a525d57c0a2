"""A period is released when it falls due (its local end plus the grace period), not at its first request.

The portal runs :class:`portal.release_timer.ReleaseTimer`: at start and at every local midnight plus the grace
period it builds the periods due then, so that what reaches the store afterwards (a late shipment) is not in
them, however long it is until somebody asks for the day.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from starlette.testclient import TestClient

from biometrics.event_store import open_event_store
from biometrics.events import DecisionEvent
from portal.app import create_app
from portal.figures import PortalConfig
from portal.periods import Schedule
from portal.release_timer import ReleaseTimer, next_release

DAY = date(2026, 3, 10)
TEN_LOCAL = datetime(2026, 3, 10, 3, tzinfo=UTC)  # 10:00 WIB
DUE = datetime(2026, 3, 11, 17, tzinfo=UTC)  # 11 March 24:00 WIB: 10 March's end plus 24 h


def _arrivals(store: Path, n: int) -> None:
    writer = open_event_store(store, readonly=False)
    try:
        writer.record_decisions([DecisionEvent(TEN_LOCAL + timedelta(minutes=i), "rokot-airport", "k1", "arrival",
                                               "foreign", "proceed", 600.0, "high", "m", "c", nationality="AUS")
                                 for i in range(n)])
    finally:
        writer.close()


def test_next_release_is_the_next_local_midnight_plus_the_grace_period() -> None:
    schedule = Schedule(timedelta(hours=7), timedelta(hours=24))
    assert next_release(schedule, DUE - timedelta(seconds=1)) == DUE
    assert next_release(schedule, DUE) == DUE + timedelta(days=1)
    assert next_release(Schedule(timedelta(hours=7), timedelta(hours=2)), DUE) == datetime(2026, 3, 11, 19,
                                                                                           tzinfo=UTC)


def test_a_day_is_built_when_it_falls_due_not_when_first_asked_for(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _arrivals(store, 40)
    now = [DUE - timedelta(minutes=1)]
    app = create_app(lambda: open_event_store(store), PortalConfig(state_dir=tmp_path / "state"),
                     clock=lambda: now[0])
    holder = app.state.portal.holder
    timer = ReleaseTimer(holder.figures, PortalConfig().schedule, clock=lambda: now[0],
                         max_sleep=timedelta(seconds=0.05)).start()  # the test's clock jumps: look often
    try:
        now[0] = DUE + timedelta(seconds=10)  # the day falls due while the portal runs; nobody asks for it
        deadline = time.monotonic() + 20
        while DAY not in holder.tables._days and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        timer.stop()
    _arrivals(store, 30)  # a late shipment, after the day's release time
    now[0] = DUE + timedelta(days=3)  # the first visitor, three days later
    with TestClient(app, raise_server_exceptions=False) as c:
        records = c.get("/data/hourly", params={"station": "rokot-airport", "date": DAY.isoformat(),
                                                "format": "json"}).json()["records"]
    assert records[10]["arrivals"] == 40  # as it stood at its release time, not 70
