"""checkpoint-bench stations: its refusals, and a short run of every phase against real servers on PostgreSQL.

The short run restarts nothing: its "restart" is ``sleep 1`` (the machine's PostgreSQL serves other users), so
it checks the mixed load, the acknowledgement bookkeeping and the comparisons of phase 5, not an outage.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from pg import admin

from benchmarks import cli
from benchmarks.stations_bench import add_arguments, check_arguments

FACES = Path(__file__).resolve().parent / "data" / "faces"


def parse(argv: list[str]):
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def lfw_layout(root: Path) -> Path:
    """tests/data/faces as <identity>/<image>: two identities with three images each, one with a single image."""
    for f in FACES.glob("*.jpg"):
        person = f.stem.rsplit("_", 1)[0]
        (root / person).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / person / f.name)
    return root


def test_the_restart_phase_runs_only_when_asked():
    assert check_arguments(parse(["--phases", "race,restart"])) == ["race"]
    assert check_arguments(parse(["--phases", "race,restart", "--restart"])) == ["race", "restart"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--phases", "race,warp"], "unknown phase(s) warp"),
    (["--race-trials", "0"], "--race-trials must be at least 1"),
])
def test_bad_arguments_are_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                         message: str):
    assert cli.main(["stations", "--images", str(lfw_layout(tmp_path / "images")), *argv]) == 2
    assert message in capsys.readouterr().err


def test_images_without_a_genuine_pair_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "images" / "Hans_Blix").mkdir(parents=True)
    shutil.copy(FACES / "Hans_Blix_0001.jpg", tmp_path / "images" / "Hans_Blix")
    assert cli.main(["stations", "--images", str(tmp_path / "images"), "--out", str(tmp_path / "out")]) == 2
    assert "no identity with two or more images" in capsys.readouterr().err


def bench_databases() -> set[str]:
    with admin() as conn:
        return {r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"checkpoint_bench_%_{os.getpid()}_%",))}


@pytest.mark.bench
@pytest.mark.server
@pytest.mark.slow
def test_a_short_run_of_every_phase(tmp_path: Path):
    out = tmp_path / "out"
    rc = cli.main(["stations", "--images", str(lfw_layout(tmp_path / "images")), "--out", str(out),
                   "--enrolments", "2", "--race-trials", "2", "--compare-subjects", "2", "--verify-calls", "8",
                   "--verify-clients", "2", "--cold-subjects", "2000", "--no-profile", "--restart",
                   "--restart-command", "sleep 1", "--restart-seconds", "6", "--restart-gallery", "2",
                   "--work-dir", str(tmp_path / "work")])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())

    # Two desks, one person, the same instant: one enrolled, the other held naming the winner, every trial.
    race = report["race"]
    assert race["trials"] == 2 and race["exactly_one_enrolled"] == 2 and race["errors"] == 0
    assert all(sorted(t["enrolled"]) == [False, True] for t in race["detail"])
    assert race["loser_named_winner"] == 2 and race["calls_overlapped"] == 2

    # Each enrolment and erasure at A reached B and C, each timed.
    for kind in ("enrolment", "erasure"):
        p = report["propagation"][kind]
        assert p["all"]["n"] == 4 and p["all"]["p50"] > 0 and p["all"]["p95"] >= p["all"]["p50"]
        for station in ("station-b", "station-c"):
            assert p[station]["never_seen"] == 0 and p[station]["memory_ms"]["n"] == 2

    compare = report["compare"]
    for store in ("sqlite", "postgresql"):
        assert compare[store]["enrolments"] == 2 and compare[store]["verify_errors"] == 0
        assert compare[store]["verify_calls"] == 8 and compare[store]["verify_ms"]["p95"] > 0
    assert all(v is not None for v in compare["ratio_postgresql_over_sqlite"].values())

    cold = report["cold_start"]
    assert cold["gallery_subjects"] == 2000 and cold["gallery_complete"] and cold["first_verify_code"] == "OK"
    assert 0 < cold["register_loaded_s_from_log"] < cold["start_to_ready_s"]
    assert cold["rss_mib"]["server"] > 0

    restart = report["restart"]
    assert restart["command"] == "sleep 1" and not restart["outage_observed"]
    assert restart["acknowledged_enrolments"] >= 3 and restart["verify_calls"] > 0
    assert restart["nothing_lost"] and restart["zero_verify_errors"] and restart["convergence_s"] is not None
    subjects = restart["register"]["subjects"]
    assert restart["station_galleries"] == {s: [subjects, subjects] for s in ("station-a", "station-b", "station-c")}

    md = (out / "report.md").read_text()
    for heading in ("## Propagation", "## Simultaneous enrolments", "## SQLite vs PostgreSQL", "## Cold start",
                    "## PostgreSQL restart under load"):
        assert heading in md
    assert bench_databases() == set(), "the run dropped its databases"
