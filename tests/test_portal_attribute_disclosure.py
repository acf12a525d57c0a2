"""Attribute disclosure and the review's other findings on the public portal (review 2).

Cell suppression hid a small count's *value* but not where its people were: a line (a station's day, an hour, a
station's month of ratings) whose total was hidden showed its other entries as 0, so one traveller's hour and
direction, and one rating's value, were published. Now a line whose total is hidden is hidden whole, zeros
included (:func:`portal.suppression.suppress`, rule 0), and nothing hidden is determined. Also: a ``years`` of
thousands of digits is a 400 page, and a period before the store's first decision is not published and not built.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scipy.optimize import Bounds, LinearConstraint, milp
from starlette.testclient import TestClient

from biometrics.event_store import open_event_store
from biometrics.events import ARRIVAL, DIRECTIONS, DecisionEvent, HourlyRow, SatisfactionRow
from portal import histogram
from portal.app import create_app
from portal.day_release import release_day
from portal.disclosure import protect
from portal.figures import PortalConfig
from portal.satisfaction_release import release_month

DAY = date(2026, 11, 20)
BUSY = {"rokot-airport": 37, "tuapejat-port": 23, "sikakap-port": 41}  # decisions in every hour and direction
LONE = "siberut-port"


def _row(station: str, hour: int, direction: str, n: int) -> tuple[datetime, HourlyRow]:
    hist = histogram.empty()
    hist[10] = n
    return (datetime(DAY.year, DAY.month, DAY.day, hour),
            HourlyRow(datetime(2026, 1, 1, tzinfo=UTC), station, direction, n, n, 1 if n else 0, tuple(hist)))


def _published_day(hour: int, direction: str, busy: dict[str, int]) -> dict:
    """The day's master table as the public sees it, with one traveller at :data:`LONE` at ``hour`` and
    ``direction`` (the release's unpublished true arrivals left out)."""
    rows = [_row(s, h, d, n + h % 3) for s, n in busy.items() for h in range(24) for d in DIRECTIONS]
    rows.append(_row(LONE, hour, direction, 1))
    doc = release_day(DAY, rows, [*busy, LONE]).to_json()
    del doc["arrivals"]
    return doc


@pytest.mark.parametrize("busy", [BUSY, {}], ids=["beside-busy-stations", "alone"])
def test_a_lone_travellers_hour_and_direction_are_not_published(busy: dict[str, int]) -> None:
    """The review's F1: with one crossing at a station on a day, the 48 places of that traveller (24 hours x 2
    directions) give byte-identical published tables (main published [c] in the traveller's hour and direction
    and 0 in the 47 other cells: 48 different pages)."""
    pages = {str(_published_day(h, d, busy)) for d in DIRECTIONS for h in range(24)}
    assert len(pages) == 1
    lone = _published_day(14, ARRIVAL, busy)["stations"][LONE]
    assert all(v is None for hour in lone["cells"] for v in hour)  # no 0 beside the hidden one
    assert all(v is None for v in lone["hours"]) and lone["total"] is None and lone["directions"] == [None, None]


def _feasible(published: dict[tuple[int, int], int | None], n_rows: int, n_cols: int,
              fixed: dict[tuple[int, int], int]) -> bool:
    """Whether an integer table (every count >= 0) agrees with every published figure of an extended table
    (``n_rows`` x ``n_cols`` with its totals: the last row and column), its row and column relations and
    ``fixed`` (values forced on hidden entries): the exact integer reader (scipy's MILP)."""
    if any(published[k] is not None and published[k] != v for k, v in fixed.items()):
        return False
    keys = sorted(published)
    hidden = [k for k in keys if published[k] is None]
    index = {k: i for i, k in enumerate(hidden)}
    rows, lo, hi = [], [], []
    relations = [([(i, j) for j in range(n_cols - 1)], (i, n_cols - 1)) for i in range(n_rows)]
    relations += [([(i, j) for i in range(n_rows - 1)], (n_rows - 1, j)) for j in range(n_cols)]
    for parts, total in relations:
        row, known = np.zeros(len(hidden)), 0
        for key, sign in [(p, 1) for p in parts] + [(total, -1)]:
            value = published[key] if published[key] is not None else fixed.get(key)
            if value is None:
                row[index[key]] += sign
            else:
                known -= sign * value
        if row.any():
            rows.append(row)
            lo.append(known)
            hi.append(known)
        elif known != 0:
            return False
    if not hidden:
        return True
    constraints = [LinearConstraint(np.array(rows), lo, hi)] if rows else []
    result = milp(np.zeros(len(hidden)), constraints=constraints, integrality=np.ones(len(hidden)),
                  bounds=Bounds(0, np.inf))
    return result.status == 0


def _ratings_table(release, stations: list[str]) -> dict[tuple[int, int], int | None]:
    out: dict[tuple[int, int], int | None] = {}
    for i, s in enumerate([*stations, None]):
        row = release.row(s)
        for j, c in enumerate(row.counts):
            out[(i, j)] = c.public
        out[(i, 4)] = row.total.public
    return out


def test_a_lone_ratings_value_is_not_recoverable() -> None:
    """The review's F2: one rating in a station's month, whatever its value: for every value it may have had,
    a table in which the station's one rating has that value agrees with everything published (main published
    it as 0, [c], 0, 0: only its own value agreed)."""
    month = date(2026, 10, 1)
    busy = [SatisfactionRow(month, "rokot-airport", (14, 22, 61, 80)),
            SatisfactionRow(month, "tuapejat-port", (11, 19, 40, 52)),
            SatisfactionRow(month, "sikakap-port", (12, 17, 33, 45))]
    stations = ["rokot-airport", "tuapejat-port", "sikakap-port", LONE]
    lone = stations.index(LONE)
    for value in range(4):
        counts = [0, 0, 0, 0]
        counts[value] = 1
        release = release_month(month, [*busy, SatisfactionRow(month, LONE, tuple(counts))], stations)
        published = _ratings_table(release, stations)
        for other in range(4):
            alone = {(lone, j): int(j == other) for j in range(4)} | {(lone, 4): 1}
            assert _feasible(published, len(stations) + 1, 5, alone), (value, other)
        assert all(published[(lone, j)] is None for j in range(5))


def _lines_hidden_whole(cells: list[list[int]]) -> list[str]:
    """The lines of ``protect(cells)`` whose total is hidden while an entry of them is shown (but for a 0 whose
    other line, its column or its row, has a total shown as 0: that 0 is public anyway)."""
    t = protect(cells)
    bad = [f"row {i}" for i, r in enumerate(t.cells) if t.row_totals[i].suppressed
           and not all(c.suppressed or t.col_totals[j].public == 0 for j, c in enumerate(r))]
    bad += [f"column {j}" for j, c in enumerate(t.col_totals)
            if c.suppressed and not all(r[j].suppressed or t.row_totals[i].public == 0 for i, r in enumerate(t.cells))]
    if t.grand.suppressed and not all(e.suppressed for e in [*t.row_totals, *t.col_totals]):
        bad.append("grand total")
    return bad


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 4).flatmap(lambda n_c: st.lists(st.lists(st.sampled_from([0, 0, 1, 2, 5, 9, 10, 14, 40]),
                                                               min_size=n_c, max_size=n_c), min_size=1, max_size=5)))
@example([[0, 1, 0, 0], [14, 22, 61, 80], [11, 19, 40, 52]])  # the review's lone rating (main: 0, [c], 0, 0)
def test_a_line_whose_total_is_hidden_is_hidden_whole(cells: list[list[int]]) -> None:
    assert _lines_hidden_whole(cells) == []


def test_a_huge_years_is_a_400_page(tmp_path: Path) -> None:
    """The review's F3: ``years`` of 4,301 digits (leading zeros) passed the digit check and made int() raise:
    a 500 page. Now a 400 page; ``0003`` is still read as 3."""
    store = tmp_path / "store"
    open_event_store(store, readonly=False).close()
    c = TestClient(create_app(lambda: open_event_store(store)), raise_server_exceptions=False)
    huge = "0" * 4300 + "3"
    for path in ("/seasonal", "/data/seasonal"):
        assert c.get(path, params={"years": huge}).status_code == 400
        assert c.get(path, params={"years": "1" + "0" * 30}).status_code == 400
        assert c.get(path, params={"years": "0003"}).status_code == 200


NOW = datetime(2026, 4, 1, 18, tzinfo=UTC)  # 01:00 WIB on 2 April: March released


def test_a_period_before_the_stores_first_decision_is_not_built(tmp_path: Path) -> None:
    """The review's F4: a period from 2000-01, or ten years of ``/seasonal``, built (and recorded in the store
    and the state directory) a release of every day and month back to then, in one anonymous request. Now such
    periods are shown as not published and nothing of them is built or recorded."""
    store, state = tmp_path / "store", tmp_path / "state"
    writer = open_event_store(store, readonly=False)
    try:
        for i in range(30):
            writer.record_decision(DecisionEvent(datetime(2026, 3, 10, 3, tzinfo=UTC) + timedelta(minutes=i),
                                                 "rokot-airport", "k1", "arrival", "foreign", "proceed", 600.0,
                                                 "high", "m", "c", nationality="AUS"))
    finally:
        writer.close()
    c = TestClient(create_app(lambda: open_event_store(store), PortalConfig(state_dir=state), clock=lambda: NOW),
                   raise_server_exceptions=False)
    for path, params in (("/arrivals", {"from": "2000-01", "to": "2002-12"}),
                         ("/satisfaction", {"from": "2000-01", "to": "2002-12"}),
                         ("/data/arrivals_port", {"from": "2000-01", "to": "2002-12"}),
                         ("/seasonal", {"years": "10"}), ("/data/seasonal", {"years": "10"}),
                         ("/today", {"station": "rokot-airport", "date": "2000-01-01"}),
                         ("/data/hourly", {"station": "rokot-airport", "date": "2000-01-01"})):
        assert c.get(path, params=params).status_code == 200, path
    db = sqlite3.connect(store)  # the store's SQLite file, where the releases are recorded
    names = [r[0] for r in db.execute("SELECT name FROM portal_releases")]
    assert names and all(name.split("/")[1] >= "2026-03" for name in names), names
    assert sorted(p.name for p in (state / "tables").iterdir()) <= ["2026-03.json", "2026-04.json"]
    # the store's first month is published
    assert "30" in c.get("/data/arrivals_port", params={"from": "2026-03", "to": "2026-03"}).text
    assert ",2000-" not in c.get("/data/seasonal", params={"years": "10"}).text
