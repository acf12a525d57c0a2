"""``checkpoint-bench portal`` end to end on a small SYNTHETIC year: a real portal process, its start (the
first visitor during the warm-up, the warm-up's duration from its log line) reported apart from the pages,
which are measured after it; a kept state directory is reported as a restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import cli
from benchmarks.traffic import TrafficModel, default_start, write_traffic
from biometrics.event_store import open_event_store


def run_bench(store: Path, state: Path, out: Path) -> dict:
    code = cli.main(["portal", "--store", str(store), "--renders", "2", "--out", str(out), "--state-dir", str(state)])
    report = json.loads((out / "report.json").read_text())
    assert code == (0 if report["met"] else 1)
    return report


@pytest.mark.server
def test_start_is_reported_apart_and_pages_are_measured_after_the_warm_up(tmp_path: Path) -> None:
    store, state = tmp_path / "store", tmp_path / "state"
    store.mkdir()
    writer = open_event_store(str(store), readonly=False)
    try:
        write_traffic(writer, TrafficModel(default_start(400), 400, 20_000, seed=7))
    finally:
        writer.close()

    first = run_bench(store, state, tmp_path / "first")
    assert first["start"]["state_dir"] == "fresh" and first["start"]["first_status"] == 200
    assert first["start"]["warm_up_s"] >= 0 and first["start"]["first_fetch_ms"] > 0
    assert all(page["status"] == 200 for page in first["pages"].values())
    assert any(state.iterdir())  # the releases the warm-up made are kept for the next start

    again = run_bench(store, state, tmp_path / "again")
    assert again["start"]["state_dir"] == "kept" and again["start"]["first_status"] == 200
    assert "warm-up done in" in (tmp_path / "again" / "portal.log").read_text()
