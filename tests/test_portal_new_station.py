"""A station first seen after a period was released is "not published" for that period, never a zero.

A released day's (or month's) table lists the stations the store knew at its release; a station whose first
decisions reach the store later (a new checkpoint, or one that shipped its journal late) is not in it. The
released table never changes, so the public site must not read its absence as "nobody passed": the station's
day page and downloads say the day is not published for it, the overview leaves it out (the all-stations
total is the release's own), and the months show "·" for it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from starlette.testclient import TestClient

from biometrics.event_store import open_event_store
from biometrics.events import DecisionEvent
from portal.app import create_app

DAY = date(2026, 3, 31)  # the last day of March: the day and its month are released together
TEN_LOCAL = datetime(2026, 3, 31, 3, tzinfo=UTC)  # 10:00 WIB
NOW = datetime(2026, 4, 1, 18, tzinfo=UTC)  # 01:00 WIB on 2 April: 31 March (and March) released, grace 24 h


def _decisions(store: Path, station: str, n: int, rating: int | None = None) -> None:
    """``n`` arrivals at ``station`` at 10:00 WIB on :data:`DAY`, each rated ``rating`` (if given)."""
    writer = open_event_store(store, readonly=False)
    try:
        for i in range(n):
            event_id = writer.record_decision(DecisionEvent(TEN_LOCAL + timedelta(minutes=i), station, "k1", "arrival",
                                                            "foreign", "proceed", 600.0, "high", "m", "c",
                                                            nationality="AUS"))
            if rating is not None:
                writer.record_feedback(event_id, rating, at=TEN_LOCAL + timedelta(minutes=i))
    finally:
        writer.close()


def test_a_station_first_seen_after_a_release_is_not_published_for_that_period(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _decisions(store, "rokot-airport", 40, rating=4)
    c = TestClient(create_app(lambda: open_event_store(store), clock=lambda: NOW), raise_server_exceptions=False)
    month = {"from": "2026-03", "to": "2026-03"}
    first = c.get("/data/hourly", params={"station": "rokot-airport", "date": DAY.isoformat(), "format": "json"})
    assert first.json()["records"][10]["arrivals"] == 40
    assert c.get("/data/arrivals_port", params={**month, "format": "json"}).status_code == 200  # March released
    assert c.get("/data/satisfaction", params={**month, "format": "json"}).json()["records"][0]["rating_4"] == 40

    _decisions(store, "siberut-port", 25, rating=1)  # a new station, first seen after the release
    new = {"station": "siberut-port"}
    hourly = c.get("/data/hourly", params={**new, "date": DAY.isoformat(), "format": "json"}).json()["records"]
    assert hourly == []  # not 24 hours of zeros
    page = c.get("/today", params={**new, "date": DAY.isoformat(), "lang": "en"})
    assert page.status_code == 200 and 'id="hourly"' not in page.text and "not published" in page.text
    home = c.get("/", params={"lang": "en"}).text
    assert "siberut-port" not in home and "rokot-airport" in home  # left out: the total is the release's own
    ports = c.get("/data/arrivals_port", params={**month, "format": "json"}).json()["records"]
    assert {r["station"]: r["arrivals"] for r in ports} == {"rokot-airport": 40}
    arrivals = c.get("/arrivals", params={**new, **month, "lang": "en"}).text
    assert "<td class=\"num\">0</td>" not in arrivals
    seasonal = c.get("/data/seasonal", params={**new, "years": 1, "format": "json"}).json()["records"]
    assert all(r["month"] != 3 for r in seasonal)
    ratings = c.get("/data/satisfaction", params={**new, **month, "format": "json"}).json()["records"]
    assert ratings == []
    # the released figures themselves are unchanged: all stations' March is still Rokot's 40 ratings
    assert c.get("/data/satisfaction", params={**month, "format": "json"}).json()["records"][0]["rating_4"] == 40
