"""The SYNTHETIC traffic model: seeded, seasonal, in waves, with a nationality mix and no personal data."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import fields
from datetime import date
from pathlib import Path

import pytest

from benchmarks.traffic import CHECKPOINTS, LOCAL_OFFSET, TrafficModel
from biometrics.event_store import open_event_store
from biometrics.events import ARRIVAL, CATEGORIES, DIRECTIONS, OUTCOMES, QUALITY_BUCKETS, DecisionEvent


def days_of(model: TrafficModel, n: int) -> list:
    it = iter(model)
    return [next(it) for _ in range(n)]


def test_same_seed_same_traffic_other_seed_other_traffic() -> None:
    a = days_of(TrafficModel(date(2026, 6, 1), 30, 50_000, seed=5), 3)
    b = days_of(TrafficModel(date(2026, 6, 1), 30, 50_000, seed=5), 3)
    c = days_of(TrafficModel(date(2026, 6, 1), 30, 50_000, seed=6), 3)
    assert [d.events for d in a] == [d.events for d in b]
    assert [d.ratings for d in a] == [d.ratings for d in b]
    assert [d.events for d in a] != [d.events for d in c]


def test_events_are_valid_and_carry_nothing_personal() -> None:
    (day,) = days_of(TrafficModel(date(2026, 7, 4), 1, 20_000, seed=1), 1)
    assert {f.name for f in fields(DecisionEvent)} == {
        "minute", "station", "lane", "direction", "category", "outcome", "processing_ms", "quality",
        "model_version", "calibration_version", "nationality"}
    stations = {c.station for c in CHECKPOINTS}
    for e in day.events:
        assert e.minute.tzinfo is not None and e.minute.second == 0 and e.minute.microsecond == 0
        assert e.station in stations and e.direction in DIRECTIONS and e.category in CATEGORIES
        assert e.outcome in OUTCOMES and e.quality in QUALITY_BUCKETS and e.processing_ms > 0
        assert len(e.nationality) == 3 and e.nationality.isupper()
        assert (e.category == "citizen") == (e.nationality == "IDN")
    assert [e.minute for e in day.events] == sorted(e.minute for e in day.events)
    assert all(1 <= r <= 4 for r in day.ratings.values())


def test_surf_season_is_busier_and_more_foreign_than_february() -> None:
    model = TrafficModel(date(2026, 2, 1), 200, 300_000, seed=2)
    per_month: Counter[int] = Counter()
    foreign: Counter[int] = Counter()
    for day in model:
        if day.day.month in (2, 7):
            per_month[day.day.month] += len(day.events)
            foreign[day.day.month] += sum(e.category == "foreign" for e in day.events)
    assert per_month[7] > 1.8 * per_month[2] * 28 / 31
    assert foreign[7] / per_month[7] > 2 * foreign[2] / per_month[2]


def test_arrivals_come_in_waves_after_the_flight_lands() -> None:
    model = TrafficModel(date(2026, 7, 1), 7, 100_000, seed=3)
    by_hour: Counter[int] = Counter()
    for day in model:
        for e in day.events:
            if e.station == "rokot-airport" and e.direction == ARRIVAL:
                by_hour[(e.minute + LOCAL_OFFSET).hour] += 1
    # the daily flight lands at 10:10 local time: its passengers fill 10:00-11:59; nothing lands at 16:00
    assert by_hour[10] + by_hour[11] > 5 * (by_hour[16] + by_hour[17])
    assert by_hour[3] == 0  # nobody at night


def test_nationality_mix_and_scale() -> None:
    model = TrafficModel(date(2026, 6, 1), 30, 120_000, seed=4)
    nationalities: Counter[str] = Counter()
    total = 0
    for day in model:
        total += len(day.events)
        nationalities.update(e.nationality for e in day.events)
    assert {"AUS", "USA", "BRA", "JPN", "DEU", "IDN"} <= set(nationalities)
    assert nationalities.most_common(2)[1][0] == "AUS" or nationalities.most_common(1)[0][0] == "AUS"
    assert 0.9 * 120_000 < total < 1.1 * 120_000  # --decisions is the expected total over the period


@pytest.mark.bench
def test_traffic_command_writes_a_synthetic_period_into_a_store(tmp_path: Path) -> None:
    store = tmp_path / "station"
    store.mkdir()
    out = subprocess.run([sys.executable, "-m", "benchmarks.cli", "traffic", "--store", str(store), "--decisions",
                          "3000", "--days", "20", "--seed", "2"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("SYNTHETIC")
    stored = int(re.search(r"stored (\d+) decisions", out).group(1))
    assert re.search(r"[\d,]+ events/s", out)
    reader = open_event_store(store)
    try:
        rows = reader.hourly(date(2000, 1, 1), date(2100, 1, 1))
        assert sum(r.count for r in rows) == stored
        assert {r.station for r in rows} == {c.station for c in CHECKPOINTS}
    finally:
        reader.close()


@pytest.mark.bench
@pytest.mark.server
def test_portal_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "benchmarks.cli", "portal", "--decisions", "3000", "--days", "40",
                          "--renders", "2", "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert out.returncode in (0, 1), out.stderr  # 1: a page over its target on a loaded machine
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["load"]["decisions"] > 2000
    assert all(p["status"] == 200 for p in report["pages"].values())
    assert "p95 ms" in out.stdout and "target" in out.stdout
