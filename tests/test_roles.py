"""What each role sees (docs/security.md, "What each role sees"), through a real mutual-TLS server.

A kiosk gets a decision for the traveller and the message to show, never a score, a candidate or a watchlist
flag; a watchlist hit looks exactly like a no-match on its screen and becomes an alert for officers. Device
details (a camera URL may hold a password) are for officers, with the credentials masked.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import ServerProcess, face, face_sample

from biometrics.decisions import PROCEED_MESSAGE, SEE_OFFICER_MESSAGE
from biometrics.types import Actor
from verify.convert import device, redact_url
from verify.roles import (
    OTHER_METHODS,
    ROLES,
    SERVICE,
    NoActor,
    _iterate_as,
    acting_as,
    allowed,
    current_actor,
    permitted_roles,
)

CAMERA = "http://admin:s3cret@127.0.0.1:9/video.mjpg"  # nothing listens on port 9: the camera is disconnected
SECRETS = ("s3cret", "admin:")
ATTEMPT_WINDOW = 1.0  # s: a kiosk transaction's window on this server (120 by default), so a test can wait it out
INFO_A = pb.SubjectInfo(name="Megawati Sukarnoputri", nationality="IDN", date_of_birth="1947-01-23")
INFO_B = pb.SubjectInfo(name="Kofi Annan", nationality="GHA", date_of_birth="1938-04-08", watchlist=True)
KIOSK_FIELDS = {"decision", "traveller_message", "decision_id", "threshold", "feedback_id"}

# -- the tables and the caller's identity (no server) ------------------------------------------------------


def test_every_method_of_every_service_is_listed_explicitly() -> None:
    assert set(ROLES) == set(SERVICE.methods_by_name)
    assert set(OTHER_METHODS) == {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
                                  "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"}
    assert permitted_roles("/grpc.health.v1.Health/Watch") == {"officer", "auditor"}  # a stream holds a thread
    assert permitted_roles("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") == {"officer",
                                                                                                 "auditor"}
    assert permitted_roles("/checkpoint.v1.Checkpoint/ListAlerts") == {"officer"}
    for unknown in ("/checkpoint.v1.Checkpoint/Nope", "/grpc.health.v1.Health/List", "/x.Y/Check", "", "/"):
        assert permitted_roles(unknown) == frozenset(), unknown
    assert allowed("Verify", "kiosk") and not allowed("Enroll", "kiosk") and not allowed("Nope", "officer")
    assert allowed("/grpc.health.v1.Health/Check", "auditor")


def test_the_current_actor_exists_only_inside_a_call() -> None:
    with pytest.raises(NoActor):
        current_actor()
    kiosk = Actor(role="kiosk", identity="CN=k")
    with acting_as(kiosk):
        assert current_actor() is kiosk
        with acting_as(Actor(role="officer")):
            assert current_actor().role == "officer"
        assert current_actor() is kiosk
    with pytest.raises(NoActor):
        current_actor()


def test_a_streaming_handler_sees_its_caller_while_it_produces_each_response() -> None:
    seen: list[str] = []

    def responses():
        for i in range(3):
            seen.append(current_actor().identity)
            yield i

    stream = _iterate_as(Actor(role="officer", identity="CN=desk"), responses(), lambda: None)
    assert next(stream) == 0
    with pytest.raises(NoActor):  # between responses the thread is gRPC's, not the caller's
        current_actor()
    assert list(stream) == [1, 2]
    assert seen == ["CN=desk"] * 3


@pytest.mark.parametrize(("text", "masked"), [
    ("rtsp://admin:s3cret@10.0.0.7:554/stream1", "rtsp://***@10.0.0.7:554/stream1"),
    ("http://admin@cam.local/video", "http://***@cam.local/video"),
    ("rtsp://admin:p@ss@10.0.0.7/live", "rtsp://***@10.0.0.7/live"),  # an unescaped @ in the password
    ("camera camera0 cannot open stream http://u:pw@h:9/v.mjpg (timeout)",
     "camera camera0 cannot open stream http://***@h:9/v.mjpg (timeout)"),
    ("http://cam/video.cgi?user=admin&pwd=s3cret&resolution=640", "http://cam/video.cgi?user=***&pwd=***&resolution=640"),
    ("http://cam/snap?token=abc123", "http://cam/snap?token=***"),
    ("rtsp://10.0.0.7:554/stream1", "rtsp://10.0.0.7:554/stream1"),
    ("/dev/video0", "/dev/video0"),
    ("tests/data/camera/fake_camera_Tony_Blair.avi", "tests/data/camera/fake_camera_Tony_Blair.avi"),
    ("a@b.example is not a URL", "a@b.example is not a URL"),
])
def test_redact_url_masks_credentials_only(text: str, masked: str) -> None:
    assert redact_url(text) == masked


def test_the_device_view_depends_on_the_role() -> None:
    from devices.station import DeviceStatus

    status = DeviceStatus("camera0", "face", "ready", f"stream {CAMERA}", {"source": CAMERA, "fps": "25"}, True)
    reduced = device(status, full=False)
    assert _fields(reduced) == {"name", "modality", "state", "is_default"}
    full = device(status, full=True)
    assert full.detail == "stream http://***@127.0.0.1:9/video.mjpg"
    assert dict(full.parameters) == {"source": "http://***@127.0.0.1:9/video.mjpg", "fps": "25"}


# -- through a real server ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    done = subprocess.run([sys.executable, "-m", "verify.certs", "init", str(root)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture(scope="module")
def server(pki: Path, tmp_path_factory: pytest.TempPathFactory):
    proc = ServerProcess(tmp_path_factory.mktemp("roles"), tls=pki,
                         args=("--camera", CAMERA, "--attempt-window", str(ATTEMPT_WINDOW))).start()
    officer = proc.stub("officer")
    for subject_id, info, image in (("A1000001", INFO_A, "Megawati_Sukarnoputri_0001.jpg"),
                                    ("B2000002", INFO_B, "Kofi_Annan_0001.jpg")):
        assert officer.Enroll(pb.EnrollRequest(subject_id=subject_id, info=info, samples=[face_sample(image)]),
                              timeout=60).enrolled
    yield proc
    proc.stop()


def _fields(message) -> set[str]:  # type: ignore[no-untyped-def]
    return {f.name for f, _ in message.ListFields()}


def _verify(server: ServerProcess, role: str, subject_id: str, image: str) -> pb.VerifyResponse:
    return server.stub(role).Verify(pb.VerifyRequest(subject_id=subject_id, samples=[face_sample(image)]),
                                    timeout=60)


def _identify(server: ServerProcess, role: str, image: str) -> pb.IdentifyResponse:
    return server.stub(role).Identify(pb.IdentifyRequest(samples=[face_sample(image)]), timeout=60)


def _without_decision_id(message):  # type: ignore[no-untyped-def]
    copy = type(message)()
    copy.CopyFrom(message)
    copy.ClearField("decision_id")
    copy.ClearField("feedback_id")  # random, like the decision id
    return copy.SerializeToString(deterministic=True)


@pytest.mark.server
def test_a_kiosk_gets_a_decision_and_nothing_else(server: ServerProcess) -> None:
    r = _verify(server, "kiosk", "A1000001", "Megawati_Sukarnoputri_0002.jpg")
    assert _fields(r) == KIOSK_FIELDS
    assert (r.decision, r.traveller_message, r.threshold) == (pb.PROCEED, PROCEED_MESSAGE, pytest.approx(3.0))
    officer = _verify(server, "officer", "A1000001", "Megawati_Sukarnoputri_0002.jpg")
    assert officer.match and officer.score >= officer.threshold and officer.modality_scores
    assert officer.decision == pb.PROCEED


@pytest.mark.server
def test_a_watchlist_match_looks_like_a_no_match_at_the_kiosk(server: ServerProcess) -> None:
    watchlist_match = _verify(server, "kiosk", "B2000002", "Kofi_Annan_0004.jpg")
    no_match = _verify(server, "kiosk", "A1000001", "Hans_Blix_0001.jpg")
    for r in (watchlist_match, no_match):
        assert _fields(r) == KIOSK_FIELDS
        assert (r.decision, r.traveller_message) == (pb.SEE_OFFICER, SEE_OFFICER_MESSAGE)
    assert _without_decision_id(watchlist_match) == _without_decision_id(no_match)
    officer = _verify(server, "officer", "B2000002", "Kofi_Annan_0004.jpg")
    assert officer.match and officer.decision == pb.SEE_OFFICER  # the officer sees why


@pytest.mark.server
def test_a_kiosk_identify_names_nobody(server: ServerProcess) -> None:
    watchlisted = _identify(server, "kiosk", "Kofi_Annan_0004.jpg")
    stranger = _identify(server, "kiosk", "Hans_Blix_0001.jpg")
    known = _identify(server, "kiosk", "Megawati_Sukarnoputri_0002.jpg")
    for r in (watchlisted, stranger, known):
        assert _fields(r) == KIOSK_FIELDS, r
    assert known.decision == pb.PROCEED
    assert watchlisted.decision == stranger.decision == pb.SEE_OFFICER
    assert _without_decision_id(watchlisted) == _without_decision_id(stranger)
    officer = _identify(server, "officer", "Kofi_Annan_0004.jpg")
    assert [(c.subject_id, c.watchlist) for c in officer.candidates][:1] == [("B2000002", True)]
    assert officer.decision == pb.SEE_OFFICER


@pytest.mark.server
def test_a_watchlist_hit_at_a_kiosk_is_an_alert_for_officers(server: ServerProcess) -> None:
    time.sleep(ATTEMPT_WINDOW)  # an earlier test's kiosk transaction for this document is over
    verified = _verify(server, "kiosk", "B2000002", "Kofi_Annan_0002.jpg")
    with pytest.raises(grpc.RpcError) as refused:  # the kiosk asks again: its one attempt is used
        _verify(server, "kiosk", "B2000002", "Kofi_Annan_0002.jpg")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "see an officer" in refused.value.details()
    identified = _identify(server, "kiosk", "Kofi_Annan_0004.jpg")
    alerts = server.stub("officer").ListAlerts(pb.ListAlertsRequest(limit=500), timeout=30).alerts
    by_decision = {a.decision_id: a for a in alerts}
    for decision_id, kind in ((verified.decision_id, "watchlist_verify"), (identified.decision_id,
                                                                           "watchlist_identify")):
        alert = by_decision[decision_id]
        assert (alert.kind, alert.subject_id) == (kind, "B2000002")
        assert alert.score >= 3.0 and alert.alert_id and alert.raised_at
        assert "checkpoint-kiosk" in alert.caller
    assert [a.raised_at for a in alerts] == sorted((a.raised_at for a in alerts), reverse=True)  # newest first
    newest = server.stub("officer").ListAlerts(pb.ListAlertsRequest(limit=1), timeout=30).alerts
    assert len(newest) == 1


@pytest.mark.server
@pytest.mark.parametrize("limit", [-1, 501, 2**31 - 1])
def test_alert_limits_are_bounded(server: ServerProcess, limit: int) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        server.stub("officer").ListAlerts(pb.ListAlertsRequest(limit=limit), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit" in refused.value.details()


@pytest.mark.server
def test_an_unknown_document_number_costs_a_full_verify(server: ServerProcess) -> None:
    """The image is processed before the subject is looked up: a bad image is refused as such, whoever is named."""
    kiosk = server.stub("kiosk")
    for image in (b"this is not an image", face("Hans_Blix_0001.jpg")[:2000]):
        for subject_id in ("NOPE0000", "A1000001"):
            with pytest.raises(grpc.RpcError) as refused:
                kiosk.Verify(pb.VerifyRequest(subject_id=subject_id, samples=[pb.Sample(modality=pb.FACE,
                                                                                         image=image)]), timeout=60)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, subject_id
    with pytest.raises(grpc.RpcError) as refused:
        _verify(server, "kiosk", "NOPE0000", "Hans_Blix_0001.jpg")
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND  # only a usable probe learns it


@pytest.mark.server
@pytest.mark.parametrize("role", ["kiosk", "auditor"])
def test_kiosks_and_auditors_see_no_device_detail(server: ServerProcess, role: str) -> None:
    r = server.stub(role).ListDevices(pb.ListDevicesRequest(), timeout=30)
    (camera,) = r.devices
    assert _fields(camera) == {"name", "modality", "state", "is_default"}
    assert (camera.name, camera.modality, camera.state) == ("camera0", pb.FACE, pb.DISCONNECTED)
    assert not any(secret.encode() in r.SerializeToString() for secret in SECRETS)


@pytest.mark.server
def test_officers_see_device_detail_with_credentials_masked(server: ServerProcess) -> None:
    r = server.stub("officer").ListDevices(pb.ListDevicesRequest(), timeout=30)
    (camera,) = r.devices
    assert camera.parameters["source"] == "http://***@127.0.0.1:9/video.mjpg"
    assert "127.0.0.1:9" in camera.detail
    assert not any(secret.encode() in r.SerializeToString() for secret in SECRETS)


@pytest.mark.server
@pytest.mark.parametrize("role", ["kiosk", "officer"])
def test_a_device_error_never_carries_the_cameras_credentials(server: ServerProcess, role: str) -> None:
    stub = server.stub(role)
    calls = [lambda: stub.CaptureFace(pb.CaptureRequest(), timeout=60),
             lambda: stub.Verify(pb.VerifyRequest(subject_id="A1000001", samples=[
                 pb.Sample(modality=pb.FACE, capture=pb.DeviceCapture())]), timeout=60)]
    for call in calls:
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "camera" in refused.value.details()
        assert not any(secret in refused.value.details() for secret in SECRETS), refused.value.details()


@pytest.mark.server
@pytest.mark.parametrize("timeout", [math.inf, -math.inf, math.nan, -1.0, 1e9, 60.5])
def test_capture_timeouts_are_bounded_before_any_capture(server: ServerProcess, timeout: float) -> None:
    stub = server.stub("kiosk")
    with pytest.raises(grpc.RpcError) as refused:
        stub.CaptureFace(pb.CaptureRequest(timeout_seconds=timeout), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "capture timeout" in refused.value.details()
    with pytest.raises(grpc.RpcError) as refused:
        stub.Verify(pb.VerifyRequest(subject_id="A1000001", samples=[
            pb.Sample(modality=pb.FACE, capture=pb.DeviceCapture(timeout_seconds=timeout))]), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
