"""checkpoint-bench load: loopback-only targets, and a short run against a live server."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
from checkpoint.v1 import checkpoint_pb2 as pb

from benchmarks import cli
from benchmarks.load_bench import Call, LoadError, Phase, loopback_target, phase_summary
from tests.helpers import ServerProcess

FACES = Path(__file__).resolve().parent / "data" / "faces"


@pytest.mark.parametrize("target", ["127.0.0.1:1", "127.9.9.9:50051", "[::1]:50051", "localhost:50051"])
def test_loopback_targets_are_accepted(target: str):
    assert loopback_target(target)[1] == int(target.rsplit(":", 1)[1])


@pytest.mark.parametrize("target", ["10.0.0.1:50051", "example.com:50051", "[2001:db8::1]:50051",
                                    "0.0.0.0:50051", "127.0.0.1", "127.0.0.1:99999"])
def test_other_targets_are_refused(target: str):
    with pytest.raises(LoadError):
        loopback_target(target)


def test_refusal_is_a_clear_error_not_a_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    rc = cli.main(["load", "--target", "192.168.1.10:50051", "--images", str(tmp_path), "--seconds", "1"])
    assert rc == 2
    assert "loopback" in capsys.readouterr().err


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile by linear interpolation between the closest ranks (numpy's default), by hand."""
    xs = sorted(values)
    h = (len(xs) - 1) * q / 100
    lo = math.floor(h)
    return xs[lo] + (h - lo) * (xs[min(lo + 1, len(xs) - 1)] - xs[lo])


def test_phase_summary_on_a_hand_made_phase():
    # Five answered calls (10..50 ms, out of order) and two refused ones, whose latencies must not count.
    calls = [Call(0.0, 40.0, "Verify", "OK"), Call(0.1, 10.0, "Identify", "OK"), Call(0.2, 1000.0, "Verify",
             "UNAVAILABLE"), Call(0.3, 30.0, "Verify", "OK"), Call(0.4, 20.0, "Verify", "OK"),
             Call(0.5, 5000.0, "Identify", "DEADLINE_EXCEEDED"), Call(0.6, 50.0, "Identify", "OK")]
    s = phase_summary(Phase(clients=2, calls=calls, seconds=2.0, rss_start_mib=100.0, rss_end_mib=120.0,
                            memory=[(0.0, 100.0), (1.0, 130.0), (2.0, 120.0)]))
    assert (s["calls"], s["ok"], s["errors"]) == (7, 5, 2)
    assert s["by_status"] == {"OK": 5, "UNAVAILABLE": 1, "DEADLINE_EXCEEDED": 1}
    assert s["by_method"] == {"Verify": 4, "Identify": 3}
    assert s["throughput_per_s"] == pytest.approx(2.5)  # answered calls only: 5 in 2 s
    # sorted 10, 20, 30, 40, 50: p95 sits at rank 0.95 * 4 = 3.8 (40 + 0.8 * 10), p99 at 3.96
    assert s["latency_ms"] == pytest.approx({"mean": 30.0, "p50": 30.0, "p95": 48.0, "p99": 49.6, "max": 50.0})
    assert s["verify_latency_ms"] == pytest.approx({"p50": 30.0, "p95": 39.0})  # 20, 30, 40
    assert s["identify_latency_ms"] == pytest.approx({"p50": 30.0, "p95": 48.0})  # 10, 50
    assert s["server_rss_mib"] == {"start": 100.0, "end": 120.0, "max": 130.0}


@pytest.mark.server
@pytest.mark.bench
@pytest.mark.slow
def test_short_load_run_against_a_live_server(tmp_path: Path):
    images = tmp_path / "images"
    for f in FACES.glob("*.jpg"):
        name = f.stem.rsplit("_", 1)[0]
        (images / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, images / name / f.name)
    server = ServerProcess(tmp_path / "data").start()
    try:
        out = tmp_path / "out"
        rc = cli.main(["load", "--target", server.target, "--clients", "2", "--seconds", "2",
                       "--baseline-clients", "1", "--images", str(images), "--subjects", "2",
                       "--max-requests", "40", "--out", str(out)])
        assert rc == 0
        result = json.loads((out / "metrics.json").read_text())
        assert [p["clients"] for p in result["phases"]] == [1, 2]
        with (out / "calls.csv").open() as f:
            rows = list(csv.DictReader(f))
        for phase in result["phases"]:
            assert phase["calls"] >= 1 and phase["errors"] == 0
            assert phase["calls"] <= 40
            # the percentiles are those of the calls written to calls.csv (latencies rounded to 0.01 ms there)
            latencies = [float(r["latency_ms"]) for r in rows
                         if int(r["clients"]) == phase["clients"] and r["code"] == "OK"]
            assert len(latencies) == phase["ok"]
            for q in (50, 95, 99):
                assert phase["latency_ms"][f"p{q}"] == pytest.approx(percentile(latencies, q), abs=0.01)
        assert result["server_pid"] == server.proc.pid
        assert result["phases"][0]["server_rss_mib"]["start"] > 0
        assert result["subjects_enrolled"] == 2 and result["cleanup_failures"] == []
        assert (out / "load.png").stat().st_size > 0
        assert len(rows) == sum(p["calls"] for p in result["phases"])
        stats = server.stub().GetStatistics(pb.GetStatisticsRequest(), timeout=10)
        assert stats.gallery_subjects == 0  # the run cleaned up after itself
    finally:
        server.stop()
