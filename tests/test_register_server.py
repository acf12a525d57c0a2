"""checkpoint-server on a shared register: it names its station, reports its sync, and refuses a bad --store at
start with a message naming the problem."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import ServerProcess, face_sample
from pg import ADMIN_URL, fresh_database
from waiting import wait_until

pytestmark = pytest.mark.server


@pytest.fixture
def register_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def start_refused(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "verify.server", "--plaintext", "--listen", "127.0.0.1:0",
                           "--workers", "0", "--data-dir", str(tmp_path / "data"), "--key-dir",
                           str(tmp_path / "keys"), *args], capture_output=True, text=True, timeout=120)


def test_a_station_on_the_register_names_itself_and_reports_its_sync(tmp_path: Path, register_url: str) -> None:
    server = ServerProcess(tmp_path / "data", key_dir=tmp_path / "keys",
                           args=("--store", register_url, "--station", "rokot-airport")).start()
    try:
        stub = server.stub()
        wait_until(lambda: stub.GetStatistics(pb.GetStatisticsRequest()).register.ready, timeout=60,
                   message="the station loaded the register (in the background, its port already open)")
        assert stub.Enroll(pb.EnrollRequest(subject_id="A1000001", info=pb.SubjectInfo(name="Megawati"),
                                            samples=[face_sample("Megawati_Sukarnoputri_0001.jpg")])).enrolled
        stats = stub.GetStatistics(pb.GetStatisticsRequest())
        assert stats.station == "rokot-airport"
        assert stats.register.shared and stats.register.ready and stats.register.connected
        assert stats.register.applied_seq == 1 and 0 <= stats.register.seconds_since_sync < 10
        assert stub.Verify(pb.VerifyRequest(subject_id="A1000001",
                                            samples=[face_sample("Megawati_Sukarnoputri_0002.jpg")])).match
    finally:
        assert server.stop() == 0
    done = subprocess.run([sys.executable, "-m", "verify.audit_cli", "verify", "--store", register_url, "--station",
                           "rokot-airport", "--key-dir", str(tmp_path / "keys")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 records" in done.stdout and "holds the signed head" in done.stdout, done.stdout


@pytest.mark.parametrize(("store", "station", "message"), [
    ("mysql://root@127.0.0.1/test", "rokot-airport", "must be a postgresql:// URL"),
    ("postgresql://postgres@127.0.0.1:5432/test?sslmode=nonsense", "rokot-airport", "sslmode"),
    ("postgresql://no_such_role_here@127.0.0.1:5432/postgres", "rokot-airport", "no_such_role_here"),
    ("postgresql://postgres@127.0.0.1:5432/no_such_database_here", "rokot-airport", "no_such_database_here"),
    (ADMIN_URL, "", "needs a name"),
    (ADMIN_URL, "Rokot Airport", "lower-case"),
])
def test_a_bad_store_stops_the_server_at_start_naming_the_problem(tmp_path: Path, store: str, station: str,
                                                                   message: str) -> None:
    done = start_refused(tmp_path, "--store", store, "--station", station)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr, done.stderr
    assert "listening" not in done.stdout


@pytest.mark.slow
def test_health_follows_the_register_when_a_station_starts_without_it(tmp_path: Path, register_url: str) -> None:

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from benchmarks.linkcut import LinkProxy

    with LinkProxy.to_url(register_url) as proxy:
        proxy.cut()
        server = ServerProcess(tmp_path / "data", key_dir=tmp_path / "keys", args=(
            "--store", proxy.url(register_url), "--station", "sikakap-port")).start()
        try:
            health = health_pb2_grpc.HealthStub(server.channel())

            def status() -> int:
                return health.Check(health_pb2.HealthCheckRequest(service="checkpoint.v1.Checkpoint")).status

            assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as refused:
                server.stub().Verify(pb.VerifyRequest(subject_id="A1000001",
                                                      samples=[face_sample("Megawati_Sukarnoputri_0002.jpg")]))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "still loading the register" in (refused.value.details() or "")
            proxy.restore()
            wait_until(lambda: status() == health_pb2.HealthCheckResponse.SERVING, timeout=30,
                       message="SERVING once the register is loaded")
        finally:
            server.stop()
