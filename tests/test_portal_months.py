"""One month, one definition (review finding 4): local (WIB) months everywhere, released after a grace period.

An arrival at 03:00 WIB on the first of a month (20:00 UTC the day before) belongs to that month in the port
table and in the nationality release alike; a month's nationality counts are released only once its end
plus the grace period has passed; a station that ships its journal late, within the grace period, is
counted in the day it is released with.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from starlette.testclient import TestClient

from biometrics.event_store import open_event_store
from biometrics.events import DecisionEvent
from portal.app import create_app
from portal.periods import add_months, month_start

WIB = timedelta(hours=7)


def arrivals(store: Path, when: datetime, n: int, nationality: str) -> None:
    writer = open_event_store(store, readonly=False)
    try:
        writer.record_decisions([DecisionEvent(when + timedelta(minutes=i % 60), "rokot-airport", "k1", "arrival",
                                               "foreign", "proceed", 600.0, "high", "m", "c", nationality=nationality)
                                 for i in range(n)])
    finally:
        writer.close()


def utc(local: datetime) -> datetime:
    """A local (WIB) time as UTC."""
    return (local - WIB).replace(tzinfo=UTC)


def test_an_arrival_after_local_midnight_is_in_that_month_everywhere(tmp_path: Path) -> None:
    month = add_months(month_start((datetime.now(UTC) + WIB).date()), -2)
    first = datetime(month.year, month.month, 1, 3)  # 03:00 WIB on the 1st: still the previous month in UTC
    arrivals(tmp_path, utc(first), 40, "JPN")
    arrivals(tmp_path, utc(first + timedelta(days=10)), 30, "AUS")
    # an earlier month's arrivals, outside the period: a month before the store's first decision is not
    # published at all, and the month before ``month`` must be one the store covers (its 0 is the check)
    before = add_months(month, -2)
    arrivals(tmp_path, utc(datetime(before.year, before.month, 15, 10)), 20, "AUS")
    c = TestClient(create_app(lambda: open_event_store(tmp_path)), raise_server_exceptions=False)
    period = {"from": f"{add_months(month, -1):%Y-%m}", "to": f"{month:%Y-%m}"}
    ports = c.get("/data/arrivals_port", params={"format": "json", **period}).json()["records"]
    by_month = {r["month"]: r["arrivals"] for r in ports if r["station"] == "rokot-airport"}
    assert by_month == {f"{add_months(month, -1):%Y-%m}": 0, f"{month:%Y-%m}": 70}
    released = c.get("/data/arrivals_nationality", params={"format": "json", **period}).json()["records"]
    assert {(r["month"], r["nationality"]) for r in released} == {(f"{month:%Y-%m}", "JPN"), (f"{month:%Y-%m}", "AUS")}


def test_a_month_is_released_after_its_grace_period_and_late_days_are_counted(tmp_path: Path) -> None:
    month = add_months(month_start((datetime.now(UTC) + WIB).date()), -3)
    day = month + timedelta(days=27)
    arrivals(tmp_path, utc(datetime(day.year, day.month, day.day, 10)), 30, "AUS")
    now = [utc(datetime.combine(add_months(month, 1), datetime.min.time()) + timedelta(hours=12))]
    c = TestClient(create_app(lambda: open_event_store(tmp_path), clock=lambda: now[0]),
                   raise_server_exceptions=False)
    period = {"from": f"{month:%Y-%m}", "to": f"{month:%Y-%m}", "format": "json"}
    # 12 hours after the month's end: within the grace period (24 h), nothing of its last day nor its
    # nationalities is out, and a station shipping late now is still counted
    assert c.get("/data/arrivals_nationality", params=period).json()["records"] == []
    assert c.get("/data/arrivals_port", params=period).json()["records"] == []
    last = add_months(month, 1) - timedelta(days=1)
    assert c.get("/data/hourly", params={"date": last.isoformat(), "station": "rokot-airport"}).status_code == 400
    arrivals(tmp_path, utc(datetime(last.year, last.month, last.day, 9)), 20, "AUS")  # shipped late
    now[0] += timedelta(hours=13)  # the grace period is over
    ports = c.get("/data/arrivals_port", params=period).json()["records"]
    assert [r["arrivals"] for r in ports if r["station"] == "rokot-airport"] == [50]
    hourly = c.get("/data/hourly", params={"date": last.isoformat(), "station": "rokot-airport",
                                           "format": "json"}).json()["records"]
    assert hourly[9]["arrivals"] == 20
    assert [r["nationality"] for r in c.get("/data/arrivals_nationality", params=period).json()["records"]] == ["AUS"]
    assert date.fromisoformat(hourly[0]["date"]) == last
