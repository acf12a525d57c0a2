"""Published tables that share counts must not give each other's hidden counts back (review finding 1).

A small store (two stations, two complete months, the review's counts) is read the way a reader would: every
day's page of each station, ``/arrivals`` over every period of the two months (all stations and each one),
``/seasonal`` and ``/satisfaction`` (all stations and each one). Every figure on them is one equation over
the underlying counts (a station's decisions per local day, hour and direction; its ratings per month); an
exact integer reader (``test_disclosure.determined_entries``: scipy's MILP, each symbol with its meaning) then
looks for a hidden figure that all of them together determine. The reader is also told that every count
outside the two months is zero (it is), which only makes it stronger.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime, timedelta
from itertools import combinations_with_replacement
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from test_disclosure import determined_entries

from biometrics.event_store import open_event_store
from biometrics.events import ARRIVAL, DEPARTURE, DecisionEvent, HourlyRow
from portal.app import STATION_NAMES, create_app
from portal.periods import add_months, day_range, month_end, month_start

pytestmark = pytest.mark.slow

ROKOT, SIBERUT = "rokot-airport", "siberut-port"
OFFSET = timedelta(hours=7)
MONTH_NAMES = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
               "November", "December"]
#: (station, month index 0/1, day, UTC hour, direction, count): the review's arrivals and a few more
DECISIONS = [(ROKOT, 0, 10, 3, ARRIVAL, 5), (SIBERUT, 0, 10, 3, ARRIVAL, 20), (ROKOT, 1, 10, 3, ARRIVAL, 30),
             (SIBERUT, 1, 10, 3, ARRIVAL, 25), (SIBERUT, 0, 3, 1, ARRIVAL, 12), (SIBERUT, 0, 3, 5, ARRIVAL, 4),
             (ROKOT, 1, 12, 8, DEPARTURE, 7), (ROKOT, 1, 12, 9, DEPARTURE, 16)]
#: (station, month index, ratings 1..4): the review's satisfaction counts
RATINGS = [(ROKOT, 1, (2, 15, 20, 30)), (SIBERUT, 1, (12, 11, 14, 16)), (ROKOT, 0, (11, 12, 20, 30)),
           (SIBERUT, 0, (12, 11, 14, 16))]


def event(when: datetime, station: str, direction: str) -> DecisionEvent:
    return DecisionEvent(minute=when, station=station, lane="k1", direction=direction, category="foreign",
                         outcome="proceed", processing_ms=600.0, quality="high", model_version="m",
                         calibration_version="c", nationality="AUS")


def table(page: str, table_id: str) -> list[tuple[str, list[str]]]:
    """The rows of a table on a page: (row heading, cell texts), header row included."""
    body = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S)
    assert body, table_id
    def text(fragment: str) -> str:
        return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()

    rows = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body.group(1), re.S):
        head = re.findall(r"<th[^>]*>(.*?)</th>", row, re.S)
        rows.append((text(head[0]) if head else "", [text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]))
    return rows


def month_of(label: str) -> date:
    name, year = label.rsplit(" ", 1)
    return date(int(year), MONTH_NAMES.index(name) + 1, 1)


class Reader:
    """Every figure read so far, each with the underlying counts it adds up."""

    def __init__(self, window: list[date], stations: list[str]):
        self.days = set(window)
        self.months = {month_start(d) for d in window}
        self.stations = stations
        self.shown: dict[Any, str] = {}
        self.relations: list[tuple[list[Any], Any]] = []

    def figure(self, key: Any, text: str, parts: list[Any]) -> None:
        if text in ("·", "–", ""):
            return  # not published
        text = text.replace(",", "")
        parts = [p for p in parts if (p[2] in self.days if p[0] == "a" else p[2] in self.months)]
        if not parts:
            return  # outside the two months: zero, and the reader is told so
        for p in parts:
            self.shown.setdefault(p, "[c]")  # an underlying count: >= 0
        self.shown[key] = text
        self.relations.append((parts, key))

    def arrivals(self, stations: list[str], days: list[date]) -> list[Any]:
        return [("a", s, d, h, ARRIVAL) for s in stations for d in days for h in range(24)]


def read_everything(client: TestClient, months: list[date], stations: list[str]) -> Reader:
    window = day_range(months[0], month_end(months[-1]))
    reader = Reader(window, stations)
    for s in stations:
        for d in window:
            page = client.get("/today", params={"station": s, "date": d.isoformat(), "lang": "en"}).text
            rows = table(page, "hourly")
            for label, cells in rows[1:-1]:
                h = int(label[:2])
                a, p = ("a", s, d, h, ARRIVAL), ("a", s, d, h, DEPARTURE)
                for k, parts in enumerate(([a], [p], [a, p])):
                    reader.figure(("today", s, d, h, k), cells[k], parts)
            cells = rows[-1][1]
            for k, direction in enumerate((ARRIVAL, DEPARTURE)):
                reader.figure(("today", s, d, "day", k), cells[k],
                              [("a", s, d, h, direction) for h in range(24)])
            reader.figure(("today", s, d, "day", 2), cells[2],
                          [("a", s, d, h, x) for h in range(24) for x in (ARRIVAL, DEPARTURE)])
    for first, last in combinations_with_replacement(months, 2):
        for station in ("", *stations):
            params = {"from": f"{first:%Y-%m}", "to": f"{last:%Y-%m}", "lang": "en", "station": station}
            rows = table(client.get("/arrivals", params=params).text, "arrivals-port")
            columns = [station] if station else stations
            assert [h for h in rows[0][1]] == [] and len(rows[1][1]) == len(columns) + 1
            covered: list[date] = []
            for label, cells in rows[1:-1]:
                m = month_of(label)
                covered.append(m)
                days = day_range(m, month_end(m))
                for j, s in enumerate(columns):
                    reader.figure(("arrivals", first, last, station, m, s), cells[j], reader.arrivals([s], days))
                reader.figure(("arrivals", first, last, station, m, "all"), cells[-1],
                              reader.arrivals(columns, days))
            period = [d for m in covered for d in day_range(m, month_end(m))]
            cells = rows[-1][1]
            for j, s in enumerate(columns):
                reader.figure(("arrivals", first, last, station, "all", s), cells[j], reader.arrivals([s], period))
            reader.figure(("arrivals", first, last, station, "all", "all"), cells[-1],
                          reader.arrivals(columns, period))
    for station in ("", *stations):
        rows = table(client.get("/seasonal", params={"years": "2", "lang": "en", "station": station}).text,
                     "seasonal")
        columns = [station] if station else stations
        for label, cells in rows[1:]:
            year = int(label)
            for m in range(1, 13):
                first = date(year, m, 1)
                reader.figure(("seasonal", station, year, m), cells[m - 1],
                              reader.arrivals(columns, day_range(first, month_end(first))))
            reader.figure(("seasonal", station, year, "all"), cells[12],
                          reader.arrivals(columns, day_range(date(year, 1, 1), date(year, 12, 31))))
    for first, last in combinations_with_replacement(months, 2):
        for station in ("", *stations):
            params = {"from": f"{first:%Y-%m}", "to": f"{last:%Y-%m}", "lang": "en", "station": station}
            rows = table(client.get("/satisfaction", params=params).text, "satisfaction")
            columns = [station] if station else stations
            for label, cells in rows[1:]:
                m = month_of(label)
                for r in range(4):
                    reader.figure(("satisfaction", first, last, station, m, r), cells[r],
                                  [("r", s, m, r) for s in columns])
                reader.figure(("satisfaction", first, last, station, m, "all"), cells[4],
                              [("r", s, m, r) for s in columns for r in range(4)])
    return reader


def test_no_hidden_count_can_be_worked_out_from_every_page_together(tmp_path: Path) -> None:
    today = (datetime.now(UTC) + OFFSET).date()
    months = [add_months(month_start(today), -3), add_months(month_start(today), -2)]
    writer = open_event_store(tmp_path, readonly=False)
    truth: dict[Any, int] = {}
    for station, k, day, hour, direction, n in DECISIONS:
        when = datetime(months[k].year, months[k].month, day, hour, tzinfo=UTC)
        writer.record_decisions([event(when + timedelta(minutes=i % 60), station, direction) for i in range(n)])
        local = when + OFFSET
        key = ("a", station, local.date(), local.hour, direction)
        truth[key] = truth.get(key, 0) + n
    for station, k, counts in RATINGS:
        when = datetime(months[k].year, months[k].month, 5, 2, tzinfo=UTC)
        for rating, n in enumerate(counts, 1):
            for i in range(n):
                event_id = writer.record_decision(event(when + timedelta(minutes=i), station, ARRIVAL))
                writer.record_feedback(event_id, rating, at=when + timedelta(minutes=i))
            truth[("r", station, months[k], rating - 1)] = n
            local = when + OFFSET
            key = ("a", station, local.date(), local.hour, ARRIVAL)
            truth[key] = truth.get(key, 0) + n
    writer.close()
    client = TestClient(create_app(lambda: open_event_store(tmp_path)), raise_server_exceptions=False)
    stations = sorted(STATION_NAMES.keys() & {ROKOT, SIBERUT})
    reader = read_everything(client, months, stations)

    def true_value(parts: list[Any]) -> int:
        return sum(truth.get(p, 0) for p in parts)

    hidden = [key for parts, key in reader.relations if not reader.shown[key].isdigit()]
    assert hidden, "the pages hide something (else the test proves nothing)"
    for parts, key in reader.relations:
        if reader.shown[key].isdigit():
            assert int(reader.shown[key]) == true_value(parts), key
    values = {key: true_value(parts) for parts, key in reader.relations}
    determined = determined_entries(reader.shown, reader.relations, hidden)  # the true values are one solution
    assert not determined, [f"{key} = {values[key]} is determined by the pages together" for key in determined]


def _hourly(day: date, station: str, hour: int, direction: str, count: int) -> tuple[datetime, HourlyRow]:
    local = datetime(day.year, day.month, day.day, hour)
    return local, HourlyRow(local.replace(tzinfo=UTC) - OFFSET, station, direction, count, count, 1,
                            tuple([count] + [0] * 28))


def _base(entry: tuple[Any, ...], stations: list[str]) -> list[Any]:
    """The underlying counts (day, station, hour, direction) an entry of a day's table or a month's adds up."""
    day, kind, *rest = entry
    hours, directions = range(24), (ARRIVAL, DEPARTURE)
    if kind == "cell":
        return [(day, *rest)]
    if kind == "hour":
        return [(day, rest[0], rest[1], x) for x in directions]
    if kind == "direction":
        return [(day, rest[0], h, rest[1]) for h in hours]
    if kind == "station":
        return [(day, rest[0], h, x) for h in hours for x in directions]
    return [(day, s, h, x) for s in stations for h in hours for x in directions]  # the day's total


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from([ROKOT, SIBERUT]), st.integers(8, 11),
                          st.sampled_from([ARRIVAL, DEPARTURE]), st.sampled_from([1, 2, 4, 7, 9, 10, 12, 25, 40])),
                min_size=1, max_size=12))
def test_a_month_and_its_days_together_determine_no_hidden_count(events: list[tuple[int, str, int, str, int]]) -> None:
    """The month's arrivals, chosen against its days' tables, with every day's table: an exact reader."""
    from portal.day_release import release_day
    from portal.month_release import release_month_arrivals

    month = date(2026, 9, 1)
    stations = [ROKOT, SIBERUT]
    counts: dict[tuple[date, str, int, str], int] = {}
    for k, station, hour, direction, n in events:
        key = (month + timedelta(days=k), station, hour, direction)
        counts[key] = counts.get(key, 0) + n
    days = [release_day(month + timedelta(days=k), [_hourly(d, s, h, x, n) for (d, s, h, x), n in counts.items()
                                                     if d == month + timedelta(days=k)], stations)
            for k in range(4)]
    arrivals = release_month_arrivals(month, days)
    shown: dict[Any, str] = {}
    relations: list[tuple[list[Any], Any]] = []

    def figure(key: Any, published: Any, parts: list[Any]) -> None:
        shown[key] = published.text()
        relations.append((parts, key))
        for p in parts:
            shown.setdefault(p, "[c]")

    for d in days:
        for key, published in d.entries().items():
            figure(key, published, _base(key, stations))
    for s in stations:
        figure(("month", s), arrivals.station(s), [(d.day, s, h, ARRIVAL) for d in days for h in range(24)])
    figure(("month", None), arrivals.total,
           [(d.day, s, h, ARRIVAL) for d in days for s in stations for h in range(24)])
    truth = {key: sum(counts.get(p, 0) for p in parts) for parts, key in relations}
    hidden = [key for _parts, key in relations if not shown[key].isdigit()]
    for key in shown:
        if shown[key].isdigit():
            assert int(shown[key]) == truth[key]
    determined = determined_entries(shown, relations, hidden)  # the true values are one solution
    assert not determined, [f"{key} = {truth[key]} is determined" for key in determined]


def test_the_share_within_target_is_published_only_when_it_gives_back_no_small_count() -> None:
    """Beside an exact day total, the share within the service target gives back how many were outside it: 1 of 80
    is not published, 10 of 80 and 0 of 80 are; the auditors' unsuppressed table keeps it."""
    from portal.day_release import release_day

    day = date(2026, 9, 1)

    def released(slow: int, public: bool = True) -> float | None:
        local = datetime(day.year, day.month, day.day, 9)
        row = HourlyRow(local.replace(tzinfo=UTC) - OFFSET, ROKOT, ARRIVAL, 80, 80 - slow, 1,
                        tuple([80 - slow, slow] + [0] * 27))
        return release_day(day, [(local, row)], [ROKOT], public=public).stations[ROKOT].within_share

    assert released(1) is None and released(9) is None
    assert released(10) == 70 / 80 and released(0) == 1.0
    assert released(1, public=False) == 79 / 80
