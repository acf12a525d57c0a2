"""Fingerprints end to end through gRPC on loopback: enrolment (several impressions, ISO finger
positions), duplicate search, Verify, Identify, face + fingerprint fusion, persistence across a restart."""

from __future__ import annotations

from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import DATA, FACES, ServerProcess, face, face_sample

from biometrics.fingerprint.fusion import fuse_modalities

FINGERPRINTS = DATA / "fingerprints"
RIGHT_INDEX = 2
pytestmark = pytest.mark.server  # every test talks to a checkpoint-server process


def finger_sample(name: str, finger: int = RIGHT_INDEX) -> pb.Sample:
    return pb.Sample(modality=pb.FINGERPRINT, image=(FINGERPRINTS / f"{name}.png").read_bytes(), finger=finger)


def blank_finger() -> pb.Sample:
    ok, png = cv2.imencode(".png", np.full((288, 256), 255, np.uint8))
    assert ok
    return pb.Sample(modality=pb.FINGERPRINT, image=png.tobytes(), finger=RIGHT_INDEX)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("checkpoint-fp")


@pytest.fixture(scope="module")
def server(data_dir: Path):
    proc = ServerProcess(data_dir).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def stub(server: ServerProcess):
    stub = server.stub()
    r = stub.Enroll(pb.EnrollRequest(
        subject_id="FP000001", info=pb.SubjectInfo(name="Finger One"),
        samples=[finger_sample("DB1_B_101_1"), finger_sample("DB1_B_101_2"),
                 face_sample("Megawati_Sukarnoputri_0001.jpg")]))
    assert r.enrolled and not r.possible_duplicates
    assert sorted((q.modality, q.finger) for q in r.qualities) == [
        (pb.FACE, 0), (pb.FINGERPRINT, RIGHT_INDEX), (pb.FINGERPRINT, RIGHT_INDEX)]
    r = stub.Enroll(pb.EnrollRequest(subject_id="FP000002", info=pb.SubjectInfo(name="Finger Two"),
                                     samples=[finger_sample("DB1_B_102_1")]))
    assert r.enrolled and not r.possible_duplicates
    return stub


def test_verify_genuine_fingerprint_matches_and_impostor_does_not(stub) -> None:
    genuine = stub.Verify(pb.VerifyRequest(subject_id="FP000001", samples=[finger_sample("DB1_B_101_3")]))
    assert genuine.match
    assert genuine.score >= genuine.threshold == pytest.approx(3.0)
    # the shipped calibration (2,880 distinct pairs) cannot measure FMR 0.001: a finger alone goes to an officer
    assert (genuine.decision, genuine.referral) == (pb.SEE_OFFICER, "finger_alone_unmeasured")
    assert [(m.modality, m.finger) for m in genuine.modality_scores] == [(pb.FINGERPRINT, RIGHT_INDEX)]
    impostor = stub.Verify(pb.VerifyRequest(subject_id="FP000001", samples=[finger_sample("DB1_B_103_1")]))
    assert not impostor.match
    assert impostor.score < impostor.threshold
    other = stub.Verify(pb.VerifyRequest(subject_id="FP000002", samples=[finger_sample("DB1_B_101_3")]))
    assert not other.match


def test_finger_positions_are_kept_apart(stub) -> None:
    # the same print presented as the left index: nothing of that position is enrolled
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.Verify(pb.VerifyRequest(subject_id="FP000001", samples=[finger_sample("DB1_B_101_3", finger=7)]))
    assert excinfo.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    unknown = stub.Verify(pb.VerifyRequest(subject_id="FP000001", samples=[finger_sample("DB1_B_101_3", 0)]))
    assert unknown.match


def test_face_and_fingerprint_are_fused(stub) -> None:
    face = stub.Verify(pb.VerifyRequest(subject_id="FP000001",
                                        samples=[face_sample("Megawati_Sukarnoputri_0002.jpg")]))
    finger = stub.Verify(pb.VerifyRequest(subject_id="FP000001", samples=[finger_sample("DB1_B_101_3")]))
    both = stub.Verify(pb.VerifyRequest(subject_id="FP000001", samples=[
        face_sample("Megawati_Sukarnoputri_0002.jpg"), finger_sample("DB1_B_101_3")]))
    assert both.match and (both.decision, both.referral) == (pb.PROCEED, "")  # a face beside it: decided here
    assert {m.modality for m in both.modality_scores} == {pb.FACE, pb.FINGERPRINT}
    assert both.score == pytest.approx(fuse_modalities([("face", face.score), ("fingerprint", finger.score)]),
                                       abs=1e-6)
    assert both.score > max(face.score, finger.score)
    # an impostor finger with the genuine face: the weak evidence lowers the fused score
    mixed = stub.Verify(pb.VerifyRequest(subject_id="FP000001", samples=[
        face_sample("Megawati_Sukarnoputri_0002.jpg"), finger_sample("DB1_B_103_1")]))
    assert mixed.score < face.score


def test_identify_by_fingerprint(stub) -> None:
    r = stub.Identify(pb.IdentifyRequest(samples=[finger_sample("DB1_B_101_3")]))
    assert [c.subject_id for c in r.candidates][:1] == ["FP000001"]
    assert r.candidates[0].modality_scores[0].modality == pb.FINGERPRINT
    assert all(c.score >= r.threshold for c in r.candidates)
    assert (r.decision, r.referral) == (pb.SEE_OFFICER, "finger_alone_unmeasured")
    stranger = stub.Identify(pb.IdentifyRequest(samples=[finger_sample("DB1_B_103_1")]))
    assert list(stranger.candidates) == [] and stranger.referral == ""


def test_a_station_with_its_own_calibration_decides_on_a_finger_alone(tmp_path: Path) -> None:
    """A calibration whose distinct impostor pairs measure the operating FMR (a station's own) lets a decision on a
    finger alone send the traveller on; the shipped one does not (above)."""
    from helpers import measured_fingerprint_calibration

    proc = ServerProcess(tmp_path / "data", args=(
        "--fingerprint-calibration", str(measured_fingerprint_calibration(tmp_path)))).start()
    try:
        stub = proc.stub()
        assert stub.Enroll(pb.EnrollRequest(subject_id="FP000101", info=pb.SubjectInfo(name="Finger One"), samples=[
            finger_sample("DB1_B_101_1"), finger_sample("DB1_B_101_2")])).enrolled
        r = stub.Verify(pb.VerifyRequest(subject_id="FP000101", samples=[finger_sample("DB1_B_101_3")]))
        assert r.match and (r.decision, r.referral) == (pb.PROCEED, "")
        found = stub.Identify(pb.IdentifyRequest(samples=[finger_sample("DB1_B_101_3")]))
        assert [c.subject_id for c in found.candidates] == ["FP000101"] and found.decision == pb.PROCEED
    finally:
        proc.stop()


def test_duplicate_finger_is_held_at_enrolment(stub) -> None:
    held = stub.Enroll(pb.EnrollRequest(subject_id="FP000009", info=pb.SubjectInfo(name="Same Finger"),
                                        samples=[finger_sample("DB1_B_101_3")]))
    assert not held.enrolled
    assert [c.subject_id for c in held.possible_duplicates] == ["FP000001"]


def test_two_fingers_sent_as_one_finger_are_refused_at_the_desk(stub) -> None:
    """A review: DB1_B_101_1 and DB1_B_103_1 (two fingers) were enrolled as one right index."""
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.Enroll(pb.EnrollRequest(subject_id="FP000011", info=pb.SubjectInfo(name="Two Fingers"),
                                     samples=[finger_sample("DB1_B_101_1"), finger_sample("DB1_B_103_1")]))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert excinfo.value.details().startswith(
        "The impressions of the right index do not agree: capture that finger again")
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.GetSubject(pb.GetSubjectRequest(subject_id="FP000011"))
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND


def test_unusable_fingerprint_is_refused(stub) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.Enroll(pb.EnrollRequest(subject_id="FP000010", samples=[blank_finger()]))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "quality" in excinfo.value.details()
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.Verify(pb.VerifyRequest(subject_id="FP000001", samples=[blank_finger()]))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_face_photograph_sent_as_a_finger_is_refused_saying_so(stub) -> None:
    """``checkpoint-enroll enrol F1 --finger right-index:photo.jpg``: was enrolled at quality 94/100."""
    photo = pb.Sample(modality=pb.FINGERPRINT, image=face("Kofi_Annan_0001.jpg"), finger=RIGHT_INDEX)
    grey = cv2.imencode(".png", cv2.imread(str(FACES / "Kofi_Annan_0001.jpg"), cv2.IMREAD_GRAYSCALE))[1].tobytes()
    for sample in (photo, pb.Sample(modality=pb.FINGERPRINT, image=grey, finger=RIGHT_INDEX)):
        with pytest.raises(grpc.RpcError) as excinfo:
            stub.Enroll(pb.EnrollRequest(subject_id="FP000011", samples=[sample]))
        assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert excinfo.value.details().startswith("This is not a fingerprint scan: ")


def test_fingerprints_survive_a_restart(stub, server: ServerProcess, data_dir: Path) -> None:
    server.stop()
    again = ServerProcess(data_dir).start()
    try:
        r = again.stub().Verify(pb.VerifyRequest(subject_id="FP000001", samples=[finger_sample("DB1_B_101_3")]))
        assert r.match
        subject = again.stub().GetSubject(pb.GetSubjectRequest(subject_id="FP000001"))
        assert sorted(t.modality for t in subject.templates) == [pb.FACE, pb.FINGERPRINT, pb.FINGERPRINT]
    finally:
        again.stop()
