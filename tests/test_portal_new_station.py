"""A station first seen after a period was released is "not published" for that period, never a zero, and the
public site does not name it before a release does.

A released day's (or month's) table lists the stations the store knew at its release; a station whose first
decisions reach the store later (a new checkpoint, or one that shipped its journal late) is not in it. The
released table never changes, so the public site must not read its absence as "nobody passed": the station's
day page and downloads say the day is not published for it, the overview leaves it out (the all-stations
total is the release's own), and the months show "·" for it. The public site's list of stations (the
drop-downs, the chart legends, the stations a ``station`` parameter may name, the port codes on ``/method``)
is the last released day's: a first decision at a new station changes nothing the site serves until the
release of a day after it (one traveller's place and time would otherwise be published live).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
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
    # not named by the public site before a release lists it: unknown there, as before its decisions
    assert c.get("/today", params={**new, "lang": "en"}).status_code == 400
    assert c.get("/data/hourly", params={**new, "format": "json"}).status_code == 400
    home = c.get("/", params={"lang": "en"}).text
    assert "siberut-port" not in home and "rokot-airport" in home  # left out: the total is the release's own
    # a day later the next day's release lists it; the day released before it is still not published for it
    c = TestClient(create_app(lambda: open_event_store(store), clock=lambda: NOW + timedelta(days=1)),
                   raise_server_exceptions=False)
    assert c.get("/today", params={**new, "lang": "en"}).status_code == 200
    hourly = c.get("/data/hourly", params={**new, "date": DAY.isoformat(), "format": "json"}).json()["records"]
    assert hourly == []  # not 24 hours of zeros
    page = c.get("/today", params={**new, "date": DAY.isoformat(), "lang": "en"})
    assert page.status_code == 200 and 'id="hourly"' not in page.text and "not published" in page.text
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


def _public_site(c: TestClient, stations: list[str]) -> dict[str, tuple[int, bytes]]:
    """Every page (both languages) and download (both formats) of the public site, for every station the
    parameters may name (the stations given, all of them, and none), with its status and its bytes."""
    urls: list[tuple[str, dict[str, str]]] = [("/data/dictionary.json", {})]
    for lang in ("id", "en"):
        urls += [(path, {"lang": lang}) for path in ("/", "/method", "/data", "/nowhere")]
        for s in ["", *stations]:
            q = {"lang": lang, **({"station": s} if s else {})}
            urls += [("/today", q), ("/arrivals", q), ("/seasonal", {**q, "years": "2"}),
                     ("/satisfaction", q), ("/arrivals", {**q, "from": "2026-01", "to": "2026-04"}),
                     ("/satisfaction", {**q, "from": "2026-01", "to": "2026-04"})]
    for fmt in ("csv", "json"):
        urls.append(("/data/arrivals_port", {"format": fmt}))
        for s in ["", *stations]:
            q = {"format": fmt, **({"station": s} if s else {})}
            urls += [(f"/data/{d}", q) for d in ("hourly", "arrivals_nationality", "seasonal", "satisfaction")]
    out = {}
    for path, params in urls:
        r = c.get(path, params=params)
        out[f"{path}?{sorted(params.items())}"] = (r.status_code, r.content)
    return out


@pytest.mark.parametrize("when", ["now", "released-day"])
@pytest.mark.parametrize("earlier", [True, False], ids=["beside-others", "first-ever"])
def test_a_first_decision_at_a_new_station_changes_nothing_the_public_site_serves(
        tmp_path: Path, when: str, earlier: bool) -> None:
    """The review's repro: one decision (rated, with a nationality) at a station the store has never seen,
    now (on a day not released) or shipped late into a released day; every public page and download fetched
    before and after it is byte for byte the same (a ``station`` naming it is refused before and after)."""
    store = tmp_path / "store"
    if earlier:
        _decisions(store, "rokot-airport", 40, rating=4)
    else:
        open_event_store(store, readonly=False).close()  # an empty store: the first decision of all
    c = TestClient(create_app(lambda: open_event_store(store), clock=lambda: NOW), raise_server_exceptions=False)
    stations = ["rokot-airport", "sikakap-port"]
    before = _public_site(c, stations)
    at = NOW - timedelta(minutes=5) if when == "now" else TEN_LOCAL + timedelta(hours=2)
    writer = open_event_store(store, readonly=False)
    try:
        event_id = writer.record_decision(DecisionEvent(at, "sikakap-port", "k1", "arrival", "foreign", "proceed",
                                                        4200.0, "low", "m", "c", nationality="GHA"))
        writer.record_feedback(event_id, 1, at=at)
    finally:
        writer.close()
    after = _public_site(c, stations)
    changed = [url for url in before if before[url] != after[url]]
    assert changed == []
    assert before["/today?[('lang', 'en'), ('station', 'sikakap-port')]"][0] == 400
