"""Captures keep to the call that asks for them.

The server keeps to its caller's deadline: a capture waits no longer than the call has left and stops when the
call ends (the scanner is free, and a finger placed afterwards goes to the next capture), and an enrolment whose
caller has gone stores nothing (review: the desk showed DEADLINE_EXCEEDED for a subject actually enrolled, an
abandoned capture kept the scanner busy and swallowed the next finger). An enrolment's request is checked
before the traveller is captured (review: a bad subject id was refused only after the camera and three scans)."""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import ServerProcess, face_sample
from waiting import wait_until

from devices import scanner as scanner_module
from devices.errors import DeviceBusy
from devices.scanner import FingerprintScanner
from devices.zfm_emulator import Fault, ZfmEmulator
from devices.zfm_protocol import GEN_IMG
from enroll.cli import build_parser as desk_parser
from verify.channel import call_timeout, samples_from_args

PRINTS = Path(__file__).resolve().parent / "data" / "scanner"


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory):
    """A server with the ZFM emulator (in this process) as its scanner."""
    with ZfmEmulator(PRINTS) as emulator:
        proc = ServerProcess(tmp_path_factory.mktemp("deadlines"), args=("--scanner", emulator.port)).start()
        try:
            yield proc, emulator
        finally:
            proc.stop()


def scanner_state(server: ServerProcess) -> int:
    devices = server.stub().ListDevices(pb.ListDevicesRequest(), timeout=30).devices
    return next(d.state for d in devices if d.name == "scanner0")


def calls_answered(server: ServerProcess, method: str) -> dict[str, int]:
    stats = server.stub().GetStatistics(pb.GetStatisticsRequest(), timeout=30)
    return next((dict(c.by_status) for c in stats.calls if c.method == method), {})


@pytest.mark.server
def test_an_abandoned_capture_stops_and_leaves_the_next_finger_to_the_next_capture(station) -> None:
    server, emulator = station
    emulator.inject(Fault.NO_FINGER)
    try:
        before = calls_answered(server, "CaptureFingerprint")
        with pytest.raises(grpc.RpcError) as gave_up:  # the kiosk gives up long before the capture's 20 s
            server.stub().CaptureFingerprint(pb.CaptureRequest(timeout_seconds=20), timeout=1)
        assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(lambda: calls_answered(server, "CaptureFingerprint") != before,
                   message="the server ended the capture with its call")
        assert scanner_state(server) == pb.READY  # free for the next traveller, not busy
        # A kiosk that cancels its call (the traveller walked away) stops the capture as well.
        polling = emulator.commands.count(GEN_IMG)
        cancelled = server.stub().CaptureFingerprint.future(pb.CaptureRequest(timeout_seconds=20), timeout=30)
        wait_until(lambda: emulator.commands.count(GEN_IMG) > polling, message="the scanner polls for a finger")
        cancelled.cancel()
        wait_until(lambda: calls_answered(server, "CaptureFingerprint").get("CANCELLED"),
                   message="the server stopped the capture when its call was cancelled")
        assert scanner_state(server) == pb.READY
    finally:
        emulator.clear()
    polls = emulator.commands.count(GEN_IMG)
    served = len(emulator.served)
    emulator.place(PRINTS / "DB4_B_102_1.png")
    assert emulator.commands.count(GEN_IMG) == polls  # nobody is polling the sensor any more
    answer = server.stub().CaptureFingerprint(pb.CaptureRequest(timeout_seconds=10), timeout=30)
    assert answer.width == 256 and answer.height == 288
    assert [p.name for p in emulator.served[served:]] == ["DB4_B_102_1.png"]  # the next capture got that finger


@pytest.mark.server
def test_an_enrolment_whose_caller_gave_up_stores_nothing(station) -> None:
    server, _ = station
    samples = [face_sample(f"Megawati_Sukarnoputri_000{n}.jpg") for n in (1, 2, 4, 1, 2, 4, 1, 2, 4, 1)]
    before = calls_answered(server, "Enroll")
    with pytest.raises(grpc.RpcError) as gave_up:  # ten extractions on one worker take longer than this
        server.stub().Enroll(pb.EnrollRequest(subject_id="IDN0000001", info=pb.SubjectInfo(name="Megawati"),
                                              samples=samples), timeout=0.5)
    assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: calls_answered(server, "Enroll") != before, timeout=120,
               message="the server finished the abandoned enrolment")
    assert calls_answered(server, "Enroll").get("CANCELLED") == before.get("CANCELLED", 0) + 1
    with pytest.raises(grpc.RpcError) as absent:
        server.stub().GetSubject(pb.GetSubjectRequest(subject_id="IDN0000001"), timeout=30)
    assert absent.value.code() == grpc.StatusCode.NOT_FOUND
    # The officer's retry, with the time it needs, enrols (it does not hear ALREADY_EXISTS).
    enrolled = server.stub().Enroll(pb.EnrollRequest(subject_id="IDN0000001", info=pb.SubjectInfo(name="Megawati"),
                                                     samples=samples[:1]), timeout=120)
    assert enrolled.enrolled


def test_the_desk_waits_for_its_captures_beyond_its_own_timeout() -> None:
    args = desk_parser().parse_args(["enrol", "GBR0000010", "--camera", "--scan", "right-index"])
    samples = samples_from_args(args)
    # 30 s for the call, plus the camera's 5 s and three placements of the scanner's 10 s each.
    assert call_timeout(args, samples) == 30 + 5 + 3 * 10
    timed = argparse.Namespace(timeout=12.0)
    capture = pb.Sample(modality=pb.FINGERPRINT, capture=pb.DeviceCapture(timeout_seconds=40))
    assert call_timeout(timed, [capture, face_sample("Kofi_Annan_0001.jpg")]) == 12 + 40


def test_a_scanner_that_waited_its_whole_timeout_for_the_device_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    with ZfmEmulator(PRINTS) as emulator:
        scanner = FingerprintScanner(emulator.port)
        clock = iter([100.0, 103.5])  # the wait for the device lock took the whole 3 s and more
        monkeypatch.setattr(scanner_module.time, "monotonic", lambda: next(clock))
        with pytest.raises(DeviceBusy, match="busy"):
            scanner.capture(3.0)
        monkeypatch.undo()
        assert GEN_IMG not in emulator.commands  # it did not go on to wait its 10 s default for a finger
        scanner.close()


SCAN = pb.Sample(modality=pb.FINGERPRINT, finger=pb.RIGHT_INDEX, capture=pb.DeviceCapture(timeout_seconds=10))


@pytest.mark.server
@pytest.mark.parametrize(("request_fields", "code", "words"), [
    ({"subject_id": "bad id!"}, grpc.StatusCode.INVALID_ARGUMENT, "subject id"),
    ({"info": pb.SubjectInfo(nationality="GB")}, grpc.StatusCode.INVALID_ARGUMENT, "nationality"),
    ({"info": pb.SubjectInfo(date_of_birth="1953-13-06")}, grpc.StatusCode.INVALID_ARGUMENT, "date of birth"),
    ({"allow_duplicate": True}, grpc.StatusCode.INVALID_ARGUMENT, "override_reason"),
    ({"subject_id": "IDN0000002"}, grpc.StatusCode.ALREADY_EXISTS, "already enrolled"),
])
def test_an_enrolment_request_that_cannot_pass_scans_nobody(station, request_fields, code, words) -> None:
    server, emulator = station
    stub = server.stub()
    if request_fields.get("subject_id") == "IDN0000002":
        try:
            stub.Enroll(pb.EnrollRequest(subject_id="IDN0000002", samples=[face_sample("Kofi_Annan_0001.jpg")]),
                        timeout=120)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.ALREADY_EXISTS  # enrolled by an earlier run of this case
    fields = {"subject_id": "GBR0000011", "info": pb.SubjectInfo(name="Tony Blair"), **request_fields}
    polls = emulator.commands.count(GEN_IMG)
    with pytest.raises(grpc.RpcError) as refused:
        stub.Enroll(pb.EnrollRequest(samples=[SCAN] * 3, **fields), timeout=120)
    assert refused.value.code() == code
    assert words in refused.value.details()
    assert emulator.commands.count(GEN_IMG) == polls  # the scanner was never asked for a finger


def published(server: ServerProcess, query: str) -> list[tuple]:
    """Rows of the station's event store (the published decisions and their restricted nationality rows)."""
    from biometrics.event_store import open_event_store

    events = open_event_store(server.data_dir)
    try:
        with events.backend._read() as view:
            return view.execute(query).fetchall()
    finally:
        events.close()


@pytest.mark.server
@pytest.mark.parametrize(("call", "request_fields", "words"), [
    ("Verify", {"subject_id": "bad id!"}, "subject id"),
    ("Verify", {"document_nationality": "12"}, "document_nationality"),
    ("Verify", {"document_nationality": "D<X"}, "document_nationality"),
    ("Verify", {"attempts": 2, "attempt": 3}, "attempt 3"),
    ("Identify", {"document_nationality": "INDO"}, "document_nationality"),
    ("Identify", {"max_candidates": -1}, "max_candidates"),
])
def test_a_verify_or_identify_that_cannot_pass_captures_nobody(station, call, request_fields, words) -> None:
    """Review: the finger (or the camera burst) was taken, then the request refused for its own fields; a Verify
    also published an ``error`` decision for it. Now refused before any capture, and nothing is published."""
    server, emulator = station
    if call == "Verify":
        request = pb.VerifyRequest(**{"subject_id": "GBR0000012", "samples": [SCAN], **request_fields})
    else:
        request = pb.IdentifyRequest(samples=[SCAN], **request_fields)
    polls, served = emulator.commands.count(GEN_IMG), len(emulator.served)
    events = published(server, "SELECT COUNT(*) FROM decision_events")
    with pytest.raises(grpc.RpcError) as refused:
        getattr(server.stub(), call)(request, timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in refused.value.details()
    assert emulator.commands.count(GEN_IMG) == polls and len(emulator.served) == served  # no finger asked for
    assert published(server, "SELECT COUNT(*) FROM decision_events") == events


def test_icao_mrz_nationality_codes_are_accepted() -> None:
    """The MRZ's codes are ICAO 9303's: its own three-letter codes are counted as they are, Germany's one-letter
    D (D<< with the filler) as DEU; anything else is refused (docs/transparency.md, "Nationality")."""
    from biometrics.errors import InvalidSample
    from biometrics.events import check_nationality

    for sent, counted in [("D<<", "DEU"), ("D", "DEU"), ("d<", "DEU"), (" DEU ", "DEU"), ("GBD", "GBD"),
                          ("UNO", "UNO"), ("XXA", "XXA"), ("idn", "IDN"), ("", "")]:
        assert check_nationality(sent) == counted
    for garbage in ["D<<<", "<<D", "D<X", "GB<", "12", "I1N", "GB", "INDO", "ÄGY", "X" * 5000]:
        with pytest.raises(InvalidSample, match="three-letter"):
            check_nationality(garbage)


@pytest.mark.server
def test_a_verify_with_germanys_mrz_code_is_decided_and_counted_as_deu(station) -> None:
    """Review: a kiosk sending Germany's MRZ code D<< was refused INVALID_ARGUMENT after the finger was taken.
    Now the call goes on (here to "not enrolled", after its one capture) and the arrival is counted as DEU."""
    server, emulator = station
    served = len(emulator.served)
    with pytest.raises(grpc.RpcError) as refused:
        server.stub().Verify(pb.VerifyRequest(subject_id="DEU0000013", document_nationality="D<<", samples=[SCAN]),
                             timeout=60)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(emulator.served) == served + 1
    assert ("DEU",) in published(server, "SELECT nationality FROM event_nationality")
