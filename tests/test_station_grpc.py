"""The station's devices through a real checkpoint-server on loopback: the Tony Blair video as the camera,
the ZFM emulator (in this process, on a pty) as the scanner, real dlib models."""

from __future__ import annotations

from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import ServerProcess, face_sample, measured_fingerprint_calibration

from devices.zfm_emulator import Fault, ZfmEmulator
from devices.zfm_protocol import quantize_4bit
from verify import client as kiosk

DATA = Path(__file__).resolve().parent / "data"
VIDEO = DATA / "camera" / "fake_camera_Tony_Blair.avi"
PRINTS = DATA / "scanner"
pytestmark = pytest.mark.server  # every test here talks to a real checkpoint-server process

TONY = pb.SubjectInfo(name="Tony Blair", nationality="GBR", date_of_birth="1953-05-06")


def camera_sample(timeout_s: float = 10.0) -> pb.Sample:
    return pb.Sample(modality=pb.FACE, capture=pb.DeviceCapture(timeout_seconds=timeout_s))


def decode(png: bytes, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, dtype=np.uint8), flags)


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as excinfo:
        call(*args, **kwargs)
    return excinfo.value


@pytest.fixture(scope="module")
def emulator():
    with ZfmEmulator(PRINTS) as emu:
        yield emu


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, emulator: ZfmEmulator):
    calibration = measured_fingerprint_calibration(tmp_path_factory.mktemp("calibration"))  # a station's own
    proc = ServerProcess(tmp_path_factory.mktemp("station"), args=(
        "--camera", str(VIDEO), "--scanner", emulator.port, "--fingerprint-calibration", str(calibration))).start()
    yield proc
    proc.stop()


@pytest.fixture
def stub(server: ServerProcess):
    return server.stub()


def test_list_devices(stub) -> None:
    devices = {d.name: d for d in stub.ListDevices(pb.ListDevicesRequest(), timeout=30).devices}
    assert set(devices) == {"camera0", "scanner0"}
    assert devices["camera0"].modality == pb.FACE and devices["camera0"].state == pb.READY
    assert devices["camera0"].parameters["width"] == "640"
    assert devices["camera0"].parameters["scorer"] == "injected"  # the server's face-quality scorer
    assert devices["scanner0"].modality == pb.FINGERPRINT and devices["scanner0"].state == pb.READY
    assert devices["scanner0"].parameters["packet_size"] == "128"
    assert all(d.is_default for d in devices.values())


def test_enrol_from_the_camera_then_verify_from_the_camera(stub) -> None:
    enrolled = stub.Enroll(pb.EnrollRequest(subject_id="GBR0000001", info=TONY, samples=[camera_sample()]),
                           timeout=60)
    assert enrolled.enrolled, enrolled
    # Three captures from the looping video: bursts of 5 frames, so the third comes from another photo.
    for _ in range(3):
        genuine = stub.Verify(pb.VerifyRequest(subject_id="GBR0000001", samples=[camera_sample()]), timeout=60)
        assert genuine.match and genuine.score >= genuine.threshold, genuine
    impostor = stub.Verify(pb.VerifyRequest(subject_id="GBR0000001", samples=[face_sample("Hans_Blix_0001.jpg")]),
                           timeout=60)
    assert not impostor.match and impostor.score < impostor.threshold
    # Another identity enrolled from an image; the camera (Tony Blair) does not match it.
    other = stub.Enroll(pb.EnrollRequest(subject_id="IDN0000002", info=pb.SubjectInfo(name="Megawati Sukarnoputri"),
                                         samples=[face_sample("Megawati_Sukarnoputri_0001.jpg")]), timeout=60)
    assert other.enrolled
    crossed = stub.Verify(pb.VerifyRequest(subject_id="IDN0000002", samples=[camera_sample()]), timeout=60)
    assert not crossed.match and crossed.score < crossed.threshold
    found = stub.Identify(pb.IdentifyRequest(samples=[camera_sample()]), timeout=60)
    assert [c.subject_id for c in found.candidates][:1] == ["GBR0000001"]


def test_a_burst_of_frames_verifies_and_too_many_frames_are_refused(stub) -> None:
    enrolled = stub.Enroll(pb.EnrollRequest(subject_id="GBR0000003", info=TONY, samples=[camera_sample()]),
                           timeout=60)
    assert enrolled.enrolled or enrolled.possible_duplicates, enrolled
    burst = pb.Sample(modality=pb.FACE, capture=pb.DeviceCapture(timeout_seconds=10, frames=3))
    subject = "GBR0000003" if enrolled.enrolled else enrolled.possible_duplicates[0].subject_id
    genuine = stub.Verify(pb.VerifyRequest(subject_id=subject, samples=[burst]), timeout=60)
    assert genuine.match, genuine
    too_many = pb.Sample(modality=pb.FACE, capture=pb.DeviceCapture(timeout_seconds=10, frames=11))
    e = rpc_error(stub.Verify, pb.VerifyRequest(subject_id=subject, samples=[too_many]), timeout=60)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "11 samples" in e.details(), e.details()


def test_capture_face_returns_a_frame_of_the_video(stub) -> None:
    r = stub.CaptureFace(pb.CaptureRequest(timeout_seconds=10), timeout=60)
    frame = decode(r.image)
    assert (r.width, r.height) == (640, 480) and frame.shape == (480, 640, 3)
    assert r.device == "camera0"  # the default device, named
    assert r.quality > 0


def test_capture_fingerprint_is_the_served_image(stub, emulator: ZfmEmulator) -> None:
    r = stub.CaptureFingerprint(pb.CaptureRequest(device="scanner0", timeout_seconds=5), timeout=60)
    image = decode(r.image, cv2.IMREAD_GRAYSCALE)
    assert (r.width, r.height) == (256, 288) and r.device == "scanner0"
    np.testing.assert_array_equal(image, quantize_4bit(emulator.sensor_image(emulator.served[-1])))


def test_scanner_faults_map_to_statuses_with_messages(stub, emulator: ZfmEmulator) -> None:
    capture = stub.CaptureFingerprint
    try:
        emulator.inject(Fault.NO_FINGER)
        e = rpc_error(capture, pb.CaptureRequest(timeout_seconds=0.5), timeout=30)
        assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "no finger" in e.details()
        emulator.clear()

        emulator.inject(Fault.BAD_CHECKSUM)
        e = rpc_error(capture, pb.CaptureRequest(timeout_seconds=5), timeout=30)
        assert e.code() == grpc.StatusCode.UNAVAILABLE and "bad packet" in e.details()
        emulator.clear()

        emulator.inject(Fault.SILENT)
        e = rpc_error(capture, pb.CaptureRequest(timeout_seconds=5), timeout=30)
        assert e.code() == grpc.StatusCode.UNAVAILABLE and "does not answer" in e.details()
        emulator.clear()

        emulator.inject(Fault.WRONG_PASSWORD)
        e = rpc_error(capture, pb.CaptureRequest(timeout_seconds=5), timeout=30)
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "password" in e.details()
        emulator.clear()

        assert capture(pb.CaptureRequest(timeout_seconds=5), timeout=30).width == 256  # recovered
        emulator.inject(Fault.UNPLUGGED)
        e = rpc_error(capture, pb.CaptureRequest(timeout_seconds=5), timeout=30)
        assert e.code() == grpc.StatusCode.UNAVAILABLE and "disconnected" in e.details()
        devices = {d.name: d for d in stub.ListDevices(pb.ListDevicesRequest(), timeout=30).devices}
        assert devices["scanner0"].state == pb.DISCONNECTED and devices["camera0"].state == pb.READY
        assert stub.CaptureFace(pb.CaptureRequest(timeout_seconds=10), timeout=60).width == 640  # face still serves
    finally:
        emulator.clear()
    assert capture(pb.CaptureRequest(timeout_seconds=5), timeout=30).height == 288  # plugged back in


def test_unknown_device_is_a_failed_precondition(stub) -> None:
    e = rpc_error(stub.CaptureFace, pb.CaptureRequest(device="camera7"), timeout=30)
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "camera7" in e.details()


@pytest.fixture(scope="module")
def empty_booth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A camera looking at a scene with no face: a fingerprint photo filling the frame, 30 frames."""
    path = tmp_path_factory.mktemp("booth") / "empty_booth.avi"
    scene = cv2.cvtColor(cv2.resize(cv2.imread(str(PRINTS / "DB1_B_103_1.png")), (640, 480)), cv2.COLOR_BGR2RGB)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (640, 480))
    for _ in range(30):
        writer.write(scene)
    writer.release()
    return path


def test_camera_faults_map_to_statuses_with_messages(tmp_path_factory, empty_booth: Path) -> None:
    no_face = ServerProcess(tmp_path_factory.mktemp("booth-server"), args=("--camera", str(empty_booth))).start()
    missing = ServerProcess(tmp_path_factory.mktemp("missing-server"),
                            args=("--camera", str(empty_booth.parent / "absent.avi"))).start()
    try:
        stub = no_face.stub()
        e = rpc_error(stub.CaptureFace, pb.CaptureRequest(timeout_seconds=1), timeout=30)
        assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "no usable face" in e.details()
        e = rpc_error(stub.Verify, pb.VerifyRequest(subject_id="GBR0000001", samples=[camera_sample(1)]), timeout=30)
        assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        e = rpc_error(stub.CaptureFingerprint, pb.CaptureRequest(timeout_seconds=1), timeout=30)
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "no fingerprint scanner" in e.details()

        stub = missing.stub()
        e = rpc_error(stub.CaptureFace, pb.CaptureRequest(timeout_seconds=1), timeout=30)
        assert e.code() == grpc.StatusCode.UNAVAILABLE and "not found" in e.details()
        devices = stub.ListDevices(pb.ListDevicesRequest(), timeout=30).devices
        assert [(d.name, d.state) for d in devices] == [("camera0", pb.DISCONNECTED)]
    finally:
        no_face.stop()
        missing.stop()


def test_the_desk_sends_a_photo_with_the_camera_capture(server: ServerProcess, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """checkpoint-enroll enrol DOC photo.jpg --camera: the photo and the camera's capture are both enrolled (review:
    the photo was dropped silently); a photo of someone else is refused with the capture, nothing enrolled."""
    from enroll import cli as desk

    video = cv2.VideoCapture(str(VIDEO))
    ok, frame = video.read()
    video.release()
    assert ok
    photo = tmp_path / "tony.jpg"
    assert cv2.imwrite(str(photo), frame)
    override = ["--allow-duplicate", "--reason", "Tony Blair is enrolled by other tests of this module"]
    argv = ["--target", server.target, "enrol", "GBR0000020", str(photo), "--camera", "--name", "Tony Blair"]
    assert desk.main([*argv, *override]) == 0
    out = capsys.readouterr().out
    assert out.count("(face)") == 2 and "enrolled GBR0000020" in out, out
    argv = ["--target", server.target, "enrol", "GBR0000021", str(DATA / "faces" / "Hans_Blix_0001.jpg"), "--camera"]
    assert desk.main([*argv, *override]) == 2
    assert capsys.readouterr().out.startswith("refused: INVALID_ARGUMENT")


def test_enrol_a_finger_from_the_scanner_then_verify(stub, emulator: ZfmEmulator) -> None:
    def finger() -> pb.Sample:
        return pb.Sample(modality=pb.FINGERPRINT, finger=pb.RIGHT_INDEX, capture=pb.DeviceCapture(timeout_seconds=5))

    emulator.place(PRINTS / "DB4_B_101_1.png")
    enrolled = stub.Enroll(pb.EnrollRequest(subject_id="IDN0000101", info=pb.SubjectInfo(name="Finger 101"),
                                            samples=[finger()]), timeout=60)
    assert enrolled.enrolled, enrolled
    emulator.place(PRINTS / "DB4_B_101_2.png")  # the same finger, another impression
    genuine = stub.Verify(pb.VerifyRequest(subject_id="IDN0000101", samples=[finger()]), timeout=60)
    assert genuine.match and genuine.score >= genuine.threshold, genuine
    emulator.place(PRINTS / "DB4_B_102_1.png")  # another finger
    impostor = stub.Verify(pb.VerifyRequest(subject_id="IDN0000101", samples=[finger()]), timeout=60)
    assert not impostor.match and impostor.score < impostor.threshold
    assert [p.name for p in emulator.served[-3:]] == ["DB4_B_101_1.png", "DB4_B_101_2.png", "DB4_B_102_1.png"]


def test_the_desk_takes_each_impression_from_a_new_placement_though_the_finger_stays_down(
        server: ServerProcess, emulator: ZfmEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    """checkpoint-enroll --scan right-index --impressions 2, the traveller leaving the finger on the scanner after
    each capture (the sensor images it for 8 polls): the desk tells the traveller to lift the finger between the
    impressions, the server logs "lift your finger" while it stays down, and the two impressions are two
    placements (review: the first placement was taken twice)."""
    from enroll import cli as desk

    emulator.place(PRINTS / "DB4_B_101_1.png")
    emulator.place(PRINTS / "DB4_B_101_2.png")
    before, logged = len(emulator.placements), len(server.output)
    emulator.hold_polls = 8
    try:
        assert desk.main(["--target", server.target, "enrol", "IDN0000601", "--scan", "right-index",
                          "--impressions", "2", "--name", "Finger 101, held down", "--allow-duplicate", "--reason",
                          "the same test finger as other subjects of this module"]) == 0
    finally:
        emulator.hold_polls = 1
        emulator.lift()
    assert [p.name for p in emulator.placements[before:]] == ["DB4_B_101_1.png", "DB4_B_101_2.png"]
    out = capsys.readouterr().out
    assert "SCAN: place the right-index finger on the scanner 2 times, lifting it between the impressions" in out
    assert "enrolled IDN0000601" in out
    assert any("scanner0: lift your finger" in line for line in server.output[logged:])


def test_the_kiosk_asks_for_another_placement_when_the_first_is_not_accepted(
        server: ServerProcess, stub, emulator: ZfmEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    """checkpoint-verify --attempts 2: a wrong placement, then the right finger: PROCEED on the second call; two
    wrong placements: SEE OFFICER after exactly two scans; a match at once: one scan only."""
    emulator.place(PRINTS / "DB4_B_101_1.png")
    enrolled = stub.Enroll(pb.EnrollRequest(
        subject_id="IDN0000301", info=pb.SubjectInfo(name="Finger 101, second desk"), allow_duplicate=True,
        override_reason="the same test finger as another subject of this module",
        samples=[pb.Sample(modality=pb.FINGERPRINT, finger=pb.RIGHT_INDEX, capture=pb.DeviceCapture())]),
        timeout=60)
    assert enrolled.enrolled, enrolled
    argv = ["--target", server.target, "verify", "IDN0000301", "--scan", "right-index"]  # two attempts by default
    cases = [(["DB4_B_102_1.png", "DB4_B_101_2.png"], 0, 1),  # wrong finger, then his: accepted on the second
             (["DB4_B_102_1.png", "DB4_B_102_1.png"], 1, 1),  # wrong twice: an officer, after two scans
             (["DB4_B_101_2.png"], 0, 0)]  # his at once: one scan, no second placement asked
    for placed, status, retries in cases:
        before = len(emulator.served)
        for name in placed:
            emulator.place(PRINTS / name)
        capsys.readouterr()
        assert kiosk.main(argv) == status, placed
        out = capsys.readouterr().out
        assert out.count("TRY AGAIN") == retries, out
        decisions = [line for line in out.splitlines() if line.startswith(("PROCEED", "SEE OFFICER"))]
        assert decisions == [decisions[0]] and decisions[0].startswith("PROCEED" if status == 0 else "SEE"), out
        assert [p.name for p in emulator.served[before:]] == placed
    before = len(emulator.served)
    emulator.place(PRINTS / "DB4_B_102_1.png")
    assert kiosk.main([*argv, "--attempts", "1"]) == 1  # one call only: no second placement asked
    assert "TRY AGAIN" not in capsys.readouterr().out and len(emulator.served) == before + 1


def test_a_transaction_whose_second_capture_fails_is_still_published(server: ServerProcess, stub,
                                                                     emulator: ZfmEmulator) -> None:
    """The first call, not accepted, publishes nothing (the kiosk calls again); when the traveller then never
    places the finger, the second call's capture times out before reaching the service, and that refusal is
    published as the transaction's outcome: the portal does not lose a traveller sent to an officer."""
    from biometrics.event_store import open_event_store

    def outcomes() -> list[str]:
        events = open_event_store(server.data_dir)
        try:
            with events.backend._read() as view:
                return [r[0] for r in view.execute("SELECT outcome FROM decision_events").fetchall()]
        finally:
            events.close()

    emulator.place(PRINTS / "DB4_B_101_1.png")
    assert stub.Enroll(pb.EnrollRequest(
        subject_id="IDN0000401", info=pb.SubjectInfo(name="Finger 101, third desk"), allow_duplicate=True,
        override_reason="the same test finger as another subject of this module",
        samples=[pb.Sample(modality=pb.FINGERPRINT, finger=pb.RIGHT_INDEX, capture=pb.DeviceCapture())]),
        timeout=60).enrolled
    scan = pb.Sample(modality=pb.FINGERPRINT, finger=pb.RIGHT_INDEX, capture=pb.DeviceCapture(timeout_seconds=0.5))
    before = outcomes()
    emulator.place(PRINTS / "DB4_B_102_1.png")  # another finger: not accepted
    first = stub.Verify(pb.VerifyRequest(subject_id="IDN0000401", samples=[scan], attempts=2, attempt=1), timeout=60)
    assert first.decision == pb.SEE_OFFICER and not first.feedback_id
    assert outcomes() == before  # a step: nothing published yet
    try:
        emulator.inject(Fault.NO_FINGER)
        e = rpc_error(stub.Verify, pb.VerifyRequest(subject_id="IDN0000401", samples=[scan], attempts=2, attempt=2),
                      timeout=60)
    finally:
        emulator.clear()
    assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert outcomes() == [*before, "error"]  # the transaction's end, published


@pytest.mark.parametrize("timeout_s", [float("inf"), float("nan"), -1.0, 61.0, 1e9])
def test_a_capture_timeout_out_of_bounds_is_an_invalid_argument(stub, timeout_s: float) -> None:
    for capture in (stub.CaptureFace, stub.CaptureFingerprint):
        e = rpc_error(capture, pb.CaptureRequest(timeout_seconds=timeout_s), timeout=30)
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (capture, e.details())
        assert "timeout" in e.details() and "60 seconds" in e.details()
    e = rpc_error(stub.Verify, pb.VerifyRequest(subject_id="GBR0000001", samples=[camera_sample(timeout_s)]),
                  timeout=30)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "60 seconds" in e.details()
    assert stub.CaptureFingerprint(pb.CaptureRequest(timeout_seconds=5), timeout=30).width == 256  # still serving



def test_a_kiosk_certificate_gets_its_transactions_attempts_and_no_more(
        tmp_path_factory: pytest.TempPathFactory, emulator: ZfmEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    """Over mutual TLS with a kiosk certificate (the station counts a kiosk's calls per document): two wrong
    placements end the transaction at SEE OFFICER; the kiosk run again at once is refused before any scan is
    scored, with a message for the traveller; an officer's desk can still verify the traveller."""
    import subprocess
    import sys

    pki = tmp_path_factory.mktemp("kiosk-pki")
    done = subprocess.run([sys.executable, "-m", "verify.certs", "init", str(pki)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    calibration = measured_fingerprint_calibration(tmp_path_factory.mktemp("calibration"))  # a station's own
    proc = ServerProcess(tmp_path_factory.mktemp("kiosk-station"), tls=pki, args=(
        "--scanner", emulator.port, "--fingerprint-calibration", str(calibration))).start()
    try:
        officer = proc.stub("officer")
        emulator.place(PRINTS / "DB4_B_101_1.png")
        assert officer.Enroll(pb.EnrollRequest(
            subject_id="IDN0000501", info=pb.SubjectInfo(name="Finger 101, kiosk station"),
            samples=[pb.Sample(modality=pb.FINGERPRINT, finger=pb.RIGHT_INDEX, capture=pb.DeviceCapture())]),
            timeout=60).enrolled
        argv = ["--target", proc.target, "--tls-dir", str(pki / "kiosk"), "verify", "IDN0000501",
                "--scan", "right-index"]
        for name in ("DB4_B_102_1.png", "DB4_B_102_1.png"):
            emulator.place(PRINTS / name)
        capsys.readouterr()
        assert kiosk.main(argv) == 1
        assert capsys.readouterr().out.count("TRY AGAIN") == 1
        emulator.place(PRINTS / "DB4_B_101_2.png")  # now his own finger, but the transaction is over
        assert kiosk.main(argv) != 0
        captured = capsys.readouterr()
        assert "see an officer" in captured.out + captured.err and "PROCEED" not in captured.out
        assert emulator.served[-1].name == "DB4_B_102_1.png"  # refused before the scanner was asked for a finger
        at_desk = officer.Verify(pb.VerifyRequest(subject_id="IDN0000501", samples=[pb.Sample(
            modality=pb.FINGERPRINT, finger=pb.RIGHT_INDEX, capture=pb.DeviceCapture())]), timeout=60)
        assert at_desk.decision == pb.PROCEED
        # A device fault: the kiosk hears it in plain words, the officer gets the detail (port and all).
        emulator.inject(Fault.UNPLUGGED)
        for _ in range(2):  # disconnected mid-session, then the port missing
            e = rpc_error(proc.stub("kiosk").CaptureFingerprint, pb.CaptureRequest(timeout_seconds=5), timeout=30)
            assert e.code() == grpc.StatusCode.UNAVAILABLE
            assert e.details().startswith("The fingerprint scanner ") and "call an officer" in e.details()
            assert emulator.port not in e.details() and "Errno" not in e.details()
        e = rpc_error(officer.CaptureFingerprint, pb.CaptureRequest(timeout_seconds=5), timeout=30)
        assert e.code() == grpc.StatusCode.UNAVAILABLE and emulator.port in e.details()
    finally:
        emulator.clear()
        proc.stop()
