"""Mapping between the gRPC messages and the core's types: no logic beyond the shapes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from checkpoint.v1 import checkpoint_pb2 as pb

from biometrics.types import (
    Candidate,
    EnrolmentResult,
    IdentificationResult,
    ModalityScore,
    SubjectInfo,
    SubjectRecord,
    VerificationResult,
)

if TYPE_CHECKING:
    from devices.station import DeviceStatus

MAX_STRING = 256

_DEVICE_STATES = {
    "ready": pb.READY,
    "busy": pb.BUSY,
    "fault": pb.FAULT,
    "disconnected": pb.DISCONNECTED,
}
_DEVICE_MODALITIES = {"face": pb.FACE, "fingerprint": pb.FINGERPRINT}


def subject_info(info: pb.SubjectInfo) -> SubjectInfo:
    """The core's SubjectInfo from the message (strings bounded by the caller's checks)."""
    return SubjectInfo(info.name, info.nationality, info.date_of_birth, info.watchlist)


def modality_scores(scores: tuple[ModalityScore, ...]) -> list[pb.ModalityScore]:
    """Messages of per-modality scores."""
    return [pb.ModalityScore(modality=int(s.modality), score=s.score, finger=s.finger) for s in scores]


def candidate(c: Candidate) -> pb.Candidate:
    """A Candidate message."""
    return pb.Candidate(subject_id=c.subject_id, score=c.score,
                        modality_scores=modality_scores(c.modality_scores), watchlist=c.watchlist)


def enrol_response(r: EnrolmentResult) -> pb.EnrollResponse:
    """The EnrollResponse of an enrolment result."""
    return pb.EnrollResponse(
        subject_id=r.subject_id,
        possible_duplicates=[candidate(c) for c in r.possible_duplicates],
        enrolled=r.enrolled,
        decision_id=r.decision_id,
        qualities=[pb.SampleQuality(modality=int(q.modality), finger=q.finger, quality=q.quality)
                   for q in r.qualities],
        threshold=r.threshold,
    )


def verify_response(r: VerificationResult) -> pb.VerifyResponse:
    """The VerifyResponse of a verification result."""
    return pb.VerifyResponse(match=r.match, score=r.score, threshold=r.threshold, decision_id=r.decision_id,
                             modality_scores=modality_scores(r.modality_scores))


def identify_response(r: IdentificationResult) -> pb.IdentifyResponse:
    """The IdentifyResponse of an identification result."""
    return pb.IdentifyResponse(candidates=[candidate(c) for c in r.candidates], decision_id=r.decision_id,
                               threshold=r.threshold)


def subject(record: SubjectRecord) -> pb.Subject:
    """The Subject message of a stored subject."""
    info = record.info
    return pb.Subject(
        subject_id=record.subject_id,
        info=pb.SubjectInfo(name=info.name, nationality=info.nationality, date_of_birth=info.date_of_birth,
                            watchlist=info.watchlist),
        templates=[pb.TemplateInfo(modality=int(t.modality), finger=t.finger, quality=t.quality,
                                   created_at=t.created_at) for t in record.templates],
        enrolled_at=record.enrolled_at,
    )


def device(status: DeviceStatus) -> pb.Device:
    """The Device message of a device's status."""
    return pb.Device(
        name=status.name,
        modality=_DEVICE_MODALITIES.get(status.modality, pb.MODALITY_UNSPECIFIED),
        state=_DEVICE_STATES.get(status.state, pb.DEVICE_STATE_UNSPECIFIED),
        detail=status.detail,
        parameters=status.parameters,
        is_default=status.is_default,
    )
