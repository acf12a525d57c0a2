"""Decisions on fingerprints alone under a calibration that cannot measure the FMR they are read at (the shipped
one: 2,880 distinct pairs of ten fingers): referred to an officer, ending the kiosk's transaction at once (another
placement cannot change a referral), in Verify and in Identify, also when a face is sent beside the finger of a
subject who has no face enrolled. In-process service on SQLite, real samples."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import DATA, face

from biometrics.service import CheckpointService, StoreLocation
from biometrics.types import Actor, Modality, Sample, SubjectInfo
from verify import convert
from verify.client import verify_transaction

KIOSK = Actor(role="kiosk", identity="CN=kiosk-1,OU=kiosk,O=Checkpoint", extra={"common_name": "kiosk-1"})
OFFICER = Actor(role="officer", identity="CN=Siti,OU=officer")
RIGHT_INDEX = 2


def finger(name: str) -> Sample:
    return Sample(Modality.FINGERPRINT, (DATA / "fingerprints" / f"{name}.png").read_bytes(), RIGHT_INDEX)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[CheckpointService]:
    s = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"))
    try:
        assert s.enrol("F1000001", SubjectInfo(name="Finger Only"), [finger("DB1_B_101_1"), finger("DB1_B_101_2")],
                       actor=OFFICER).enrolled
        yield s
    finally:
        s.close()


def test_a_kiosk_transaction_on_a_finger_alone_ends_with_its_first_referral(service: CheckpointService) -> None:
    """A review: each call of a two-attempt transaction matched, was referred, and the kiosk asked the traveller to
    place the finger again until the document's attempts were used up."""
    first = service.verify("F1000001", [finger("DB1_B_101_3")], actor=KIOSK, attempts=2, attempt=1)
    assert first.match and first.finger_alone_unmeasured
    answer = convert.verify_response(first, full=False)
    assert answer.decision == pb.SEE_OFFICER and answer.final and not answer.referral  # no why for the kiosk
    assert first.feedback_id  # the transaction's end is published now, not left to a second call
    # the transaction is over: a new one may start (its calls are referred the same way), none is exhausted
    again = service.verify("F1000001", [finger("DB1_B_101_3")], actor=KIOSK, attempts=2, attempt=1)
    assert again.finger_alone_unmeasured and again.feedback_id
    no_match = service.verify("F1000001", [finger("DB1_B_103_1")], actor=KIOSK, attempts=2, attempt=1)
    assert not no_match.match and convert.verify_response(no_match, full=False).final  # a retry cannot proceed
    decisions = service.statistics.decisions()  # the operator metrics' checkpoint_decisions_total
    assert decisions.get("verify_finger_alone_referred") == 2 and decisions.get("verify_no_match") == 1
    assert "verify_match" not in decisions


def test_the_kiosk_tool_asks_for_no_other_placement_after_a_final_answer() -> None:
    calls: list[pb.VerifyRequest] = []

    class Stub:
        def Verify(self, request: pb.VerifyRequest, timeout: float | None = None) -> pb.VerifyResponse:  # noqa: N802
            calls.append(request)
            return pb.VerifyResponse(decision=pb.SEE_OFFICER, final=True)

    retries: list[int] = []
    answer = verify_transaction(Stub(), pb.VerifyRequest(subject_id="F1000001", attempts=3),
                                on_retry=lambda n, _: retries.append(n))
    assert answer.final and len(calls) == 1 and retries == []


def test_identify_with_a_face_beside_the_finger_of_a_subject_with_no_face_is_referred(
        service: CheckpointService) -> None:
    """A review: Identify looked at whether a face was sent, not whether the candidate was scored with one, so any
    face (a stranger's) let a finger alone send the traveller on."""
    stranger = Sample(Modality.FACE, face("Hans_Blix_0001.jpg"))
    found = service.identify([stranger, finger("DB1_B_101_3")], actor=OFFICER)
    assert [c.subject_id for c in found.candidates] == ["F1000001"]
    assert found.finger_alone_unmeasured
    assert service.statistics.decisions().get("identify_finger_alone_referred") == 1
    answer = convert.identify_response(found, full=True)
    assert answer.decision == pb.SEE_OFFICER and answer.referral == "finger_alone_unmeasured"


def test_verify_with_a_face_beside_the_finger_of_a_subject_with_no_face_is_referred(
        service: CheckpointService) -> None:
    """Verify's side of the Identify case above: a stranger's face sent beside the finger of a subject who has no
    face enrolled scores no face, so the match rests on the finger alone and is referred (a check of whether a face
    was sent, not whether one was scored, let any face send the traveller on)."""
    stranger = Sample(Modality.FACE, face("Hans_Blix_0001.jpg"))
    result = service.verify("F1000001", [stranger, finger("DB1_B_101_3")], actor=KIOSK)
    assert result.match and [m.modality for m in result.modality_scores] == [Modality.FINGERPRINT]
    assert result.finger_alone_unmeasured
    answer = convert.verify_response(result, full=True)
    assert answer.decision == pb.SEE_OFFICER and answer.referral == "finger_alone_unmeasured"
    assert service.statistics.decisions().get("verify_finger_alone_referred") == 1


def test_a_face_enrolled_and_sent_is_decided_here_with_or_without_the_finger(service: CheckpointService) -> None:
    """A face scored beside the finger (or alone) is no decision on a finger alone: the station decides it."""
    assert service.enrol("K5000005", SubjectInfo(name="Kofi"), [Sample(Modality.FACE, face("Kofi_Annan_0001.jpg")),
                                                                  finger("DB1_B_102_1")], actor=OFFICER).enrolled
    probe_face = Sample(Modality.FACE, face("Kofi_Annan_0004.jpg"))
    both = service.verify("K5000005", [probe_face, finger("DB1_B_102_1")], actor=KIOSK)
    assert {m.modality for m in both.modality_scores} == {Modality.FACE, Modality.FINGERPRINT}
    face_only = service.verify("K5000005", [probe_face], actor=KIOSK)
    assert [m.modality for m in face_only.modality_scores] == [Modality.FACE]
    for result in (both, face_only):
        assert result.match and not result.finger_alone_unmeasured
        assert convert.verify_response(result, full=False).decision == pb.PROCEED
