"""RateDecision through a real mutual-TLS server: a kiosk rates a decision once, by the feedback id its answer
gave; every refusal has its own status and a message the kiosk can show. The portal reads the server's events
read-only while it runs."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import ServerProcess, face_sample

from biometrics.event_store import open_event_store
from verify import client

pytestmark = pytest.mark.server

INFO = pb.SubjectInfo(name="Megawati Sukarnoputri", nationality="IDN", date_of_birth="1947-01-23")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    pki = tmp_path_factory.mktemp("pki")
    done = subprocess.run([sys.executable, "-m", "verify.certs", "init", str(pki)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    proc = ServerProcess(tmp_path_factory.mktemp("feedback"), tls=pki,
                         args=("--station", "tuapejat-port", "--lane", "checkpoint-kiosk=departure")).start()
    assert proc.stub("officer").Enroll(pb.EnrollRequest(
        subject_id="A1000001", info=INFO, samples=[face_sample("Megawati_Sukarnoputri_0001.jpg")]), timeout=60).enrolled
    yield proc
    proc.stop()


def _verify(server: ServerProcess) -> pb.VerifyResponse:
    return server.stub("kiosk").Verify(pb.VerifyRequest(
        subject_id="A1000001", samples=[face_sample("Megawati_Sukarnoputri_0002.jpg")], document_nationality="IDN"),
        timeout=60)


def _refusal(call) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_a_kiosk_rates_a_decision_once(server: ServerProcess) -> None:
    kiosk = server.stub("kiosk")
    answer = _verify(server)
    assert answer.decision == pb.PROCEED and len(answer.feedback_id) == 32
    assert answer.feedback_id != answer.decision_id
    assert client.rate(kiosk, answer.feedback_id, 4, timeout=30).message == "Thank you for your feedback."
    again = _refusal(lambda: client.rate(kiosk, answer.feedback_id, 1, timeout=30))
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS and "rated already" in again.details()
    unknown = _refusal(lambda: client.rate(kiosk, "0" * 32, 3, timeout=30))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND and "not known" in unknown.details()
    for rating in (0, 5, -3):
        bad = _refusal(lambda rating=rating: client.rate(kiosk, _verify(server).feedback_id, rating, timeout=30))
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and "1 to 4" in bad.details()
    malformed = _refusal(lambda: client.rate(kiosk, answer.decision_id[:8], 3, timeout=30))
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT
    denied = _refusal(lambda: client.rate(server.stub("auditor"), answer.feedback_id, 3, timeout=30))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_rating_after_the_window_is_refused_with_a_message_the_kiosk_shows(server: ServerProcess) -> None:
    kiosk = server.stub("kiosk")
    answer = _verify(server)
    # The decision made 12 minutes ago (the window is counted on the event's minute, in the server's store).
    minute = (datetime.now(UTC) - timedelta(minutes=12)).strftime("%Y-%m-%dT%H:%M")
    db = sqlite3.connect(server.data_dir / "checkpoint.db", timeout=10)
    try:
        with db:
            db.execute("UPDATE decision_events SET minute = ? WHERE event_id = ?", (minute, answer.feedback_id))
    finally:
        db.close()
    late = _refusal(lambda: client.rate(kiosk, answer.feedback_id, 4, timeout=30))
    assert late.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert late.details() == ("Thank you, but this decision can no longer be rated: a rating is taken within 10 "
                              "minutes of the decision.")


def test_the_portal_reads_the_running_servers_events(server: ServerProcess) -> None:
    _verify(server)
    events = open_event_store(server.data_dir)  # read-only; the server holds the data directory's lock
    try:
        today = datetime.now(UTC).date()
        rows = events.hourly(today - timedelta(days=1), today + timedelta(days=1))
        assert rows and {(r.station, r.direction) for r in rows} == {("tuapejat-port", "departure")}
        assert sum(r.count for r in rows) >= 1 and all(r.lanes_active == 1 for r in rows)
        assert events.stations() == ["tuapejat-port"]
    finally:
        events.close()


def test_the_kiosk_client_prints_the_feedback_id_and_rates(server: ServerProcess, capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    target = ["--target", server.target, "--tls-dir", str(server.tls / "kiosk")]  # type: ignore[operator]
    image = tmp_path / "probe.jpg"
    image.write_bytes(face_sample("Megawati_Sukarnoputri_0002.jpg").image)
    assert client.main([*target, "verify", "A1000001", str(image), "--nationality", "IDN"]) == 0
    out = capsys.readouterr().out
    feedback_id = out.split("[feedback ")[1].split("]")[0]
    assert client.main([*target, "rate", feedback_id, "3"]) == 0
    assert capsys.readouterr().out == "Thank you for your feedback.\n"
    assert client.main([*target, "rate", feedback_id, "3"]) == 2
    assert "ALREADY_EXISTS" in capsys.readouterr().out
