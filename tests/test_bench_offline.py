"""checkpoint-bench offline: its refusals, the link proxy it cuts, and a short run on real servers and PostgreSQL.

The short run uses real LFW faces (``tests/data/lfw-offline``: 30 lfw-dev identities with two images and 10 with
one, copied as they are; the benchmark itself reads ``../shared/data/faces/lfw-dev/images`` by default) on
tiny sizes: island A cut off for real for two seconds while it enrols and verifies and central enrols the same
person and erases; the return; the reviews resolved; then a second cut whose drain is interrupted by SIGKILL.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import psycopg
import pytest
from pg import ADMIN_URL, admin, fresh_database

from benchmarks import offline_bench
from benchmarks.linkcut import LinkProxy

LFW = Path(__file__).resolve().parent / "data" / "lfw-offline"


def bench(argv: list[str]) -> int:
    """``checkpoint-bench offline ARGV`` (this module's parser alone: another command's module cannot break it)."""
    parser = argparse.ArgumentParser(prog="checkpoint-bench offline")
    offline_bench.add_arguments(parser)
    return offline_bench.run(parser.parse_args(argv))


def lfw() -> Path:
    if not LFW.is_dir():
        pytest.fail(f"the LFW images the benchmark uses are not at {LFW}")
    return LFW


@pytest.mark.parametrize(("argv", "message"), [
    (["--shared", "5", "--enrolments", "2"], "--shared cannot exceed --enrolments or --central-enrolments"),
    (["--erasures", "3", "--register", "2"], "--erasures cannot exceed --register"),
    (["--enrolments", "0"], "--enrolments must be at least 1"),
    (["--max-pending", "10", "--enrolments", "20"], "--max-pending must exceed the enrolments made offline"),
    (["--offline-seconds", "0"], "--offline-seconds, --poll-ms and --drain-timeout must be positive"),
])
def test_bad_sizes_are_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                     message: str):
    assert bench(["--out", str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_cut_link_drops_open_connections_and_refuses_new_ones_until_restored():
    with fresh_database("checkpoint_test_linkcut") as url, LinkProxy.to_url(url, name="test") as link:
        through = link.url(url)
        assert f":{link.port}/" in through and through.endswith(url.rsplit("/", 1)[-1])
        with psycopg.connect(through, autocommit=True, connect_timeout=2) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            link.cut()
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(through, connect_timeout=2)
        link.restore()
        with psycopg.connect(through, autocommit=True, connect_timeout=2) as conn:
            assert conn.execute("SELECT 2").fetchone() == (2,)
        stats = link.stats()
        assert stats["cuts"] == 1 and stats["restores"] == 1
        assert stats["dropped_connections"] == 1 and stats["refused_connections"] >= 1
        assert stats["forwarded_connections"] == 2 and stats["bytes_forwarded"] > 0


def bench_databases() -> set[str]:
    with admin() as conn:
        return {r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"checkpoint_bench_offline_{os.getpid()}_%",))}


@pytest.mark.bench
@pytest.mark.server
@pytest.mark.slow
def test_a_short_run_loses_nothing_and_doubles_nothing(tmp_path: Path):
    out = tmp_path / "out"
    rc = bench(["--images", str(lfw()), "--out", str(out), "--register", "3", "--enrolments", "3",
                "--verifications", "4", "--central-enrolments", "3", "--shared", "1", "--erasures", "1",
                "--offline-seconds", "2", "--kill-enrolments", "6", "--spot-checks", "2",
                "--work-dir", str(tmp_path / "work"), "--admin-url", ADMIN_URL])
    report = json.loads((out / "report.json").read_text())
    assert rc == 0, report["failures"]

    # Offline, A acknowledged every enrolment provisionally and answered every Verify, saying how old its view was.
    offline = report["offline"]
    enrolments, verifications = offline["island_enrolments"], offline["island_verifications"]
    assert enrolments["acknowledged"] == enrolments["provisional"] == 3
    assert verifications["calls"] == 4 and verifications["codes"] == {"OK": 4}
    assert verifications["register_as_of_missing"] == 0 and verifications["register_as_of_after_cut"] == 0
    assert offline["central_enrolments"]["acknowledged"] == 3 and offline["central_erasures"][0]["code"] == "OK"

    # After the return: nothing lost or doubled, the shared person waits for review, the erasure left A, the
    # stations hold the register (A also its enrolment in review), the drain timed.
    checks, back = offline["checks"], offline["return"]
    assert checks["accounting"] == {"acknowledged": 3, "in_register": 2, "waiting_for_review": 1, "lost": [],
                                    "stored_twice": []}
    assert checks["shared_pairs"] == checks["pairs_waiting_for_review"] == 1 and not checks["extra_reviews"]
    assert not checks["register_missing"] and not checks["register_unexpected"]
    assert checks["replica_a_equals_register_plus_reviews"] and checks["replica_b_equals_register"]
    assert checks["gallery_counts_as_expected"] and checks["outbox"]["states"] == {"stored": 2, "review": 1}
    assert 0 < back["connected_s"] <= back["drain_s"] and back["outbox_pending_at_restore"] == 3
    assert back["erased_not_found_s"] is not None and not back["erased_found_after_drain_began"]

    resolved = report["after_resolution"]
    assert report["resolution"]["resolutions"] == {"link": 1} and report["resolution"]["codes"] == {"OK": 1}
    assert resolved["same_register"] and resolved["pending_reviews"] == 0
    assert set(resolved["gallery"].values()) == {resolved["register_subjects"]}

    # SIGKILL once the drain had begun and before it ended; after the restart the drain resumed and finished.
    kill = report["kill"]
    assert 0 < kill["kill"]["outbox_pending_seen"] < 6 and kill["kill"]["returncode"] == -9
    assert kill["after_restart"]["outbox_pending"] > 0 and kill["restart_to_drained_s"] is not None
    assert kill["accounting"]["lost"] == [] and kill["accounting"]["stored_twice"] == []
    assert kill["accounting"]["in_register"] + kill["accounting"]["waiting_for_review"] == 6
    assert kill["outbox"]["entries"] == 6 and not kill["outbox"]["not_uploaded"]
    assert not kill["outbox"]["upload_recorded_twice"] and not kill["outbox"]["outcome_differs_from_island_state"]
    assert report["final"]["same_register"] and set(report["final"]["provisional"].values()) == {0}

    # The link was really cut twice (the stations' reconnection attempts refused), and nothing was left behind.
    link_a = next(link for link in report["links"] if link["name"] == "island-a")
    assert link_a["cuts"] == link_a["restores"] == 2 and link_a["refused_connections"] > 0
    assert report["unshipped_audit_at_shutdown"] == []
    md = (out / "report.md").read_text()
    for heading in ("## Phase 1: island A offline", "## After every review was resolved",
                    "## Phase 2: SIGKILL in the middle of the drain"):
        assert heading in md
    assert bench_databases() == set(), "the run dropped its database"
