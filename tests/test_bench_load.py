"""checkpoint-bench load: loopback-only targets, and a short run against a live server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from checkpoint.v1 import checkpoint_pb2 as pb

from benchmarks import cli
from benchmarks.load_bench import LoadError, loopback_target
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
        for phase in result["phases"]:
            assert phase["calls"] >= 1 and phase["errors"] == 0
            assert phase["calls"] <= 40
            assert phase["latency_ms"]["p50"] <= phase["latency_ms"]["p95"] <= phase["latency_ms"]["p99"]
        assert result["server_pid"] == server.proc.pid
        assert result["phases"][0]["server_rss_mib"]["start"] > 0
        assert result["subjects_enrolled"] == 2 and result["cleanup_failures"] == []
        assert (out / "load.png").stat().st_size > 0
        calls = (out / "calls.csv").read_text().splitlines()
        assert len(calls) == 1 + sum(p["calls"] for p in result["phases"])
        stats = server.stub().GetStatistics(pb.GetStatisticsRequest(), timeout=10)
        assert stats.gallery_subjects == 0  # the run cleaned up after itself
    finally:
        server.stop()
