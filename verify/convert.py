"""Mapping between the gRPC messages and the core's types, and each role's view of an answer.

No biometric logic: the traveller's decision comes from :mod:`biometrics.decisions`; this module only
leaves out of a response what a role may not see (``full=False``: the kiosk's and auditor's view; see
docs/security.md, "What each role sees") and masks credentials in device URLs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from checkpoint.v1 import checkpoint_pb2 as pb

from biometrics.decisions import (
    identification_outcome,
    identification_referral,
    verification_outcome,
    verification_referral,
)
from biometrics.redact import redact_url
from biometrics.types import (
    Alert,
    Candidate,
    EnrolmentResult,
    IdentificationResult,
    ModalityScore,
    Review,
    SubjectInfo,
    SubjectRecord,
    VerificationResult,
)

if TYPE_CHECKING:
    from devices.station import DeviceStatus



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
        provisional=r.provisional,
    )


def verify_response(r: VerificationResult, *, full: bool) -> pb.VerifyResponse:
    """The VerifyResponse of a verification result: the traveller's decision and message, decision id and
    threshold; with ``full`` (an officer) also match, score, per-modality scores and why a match is referred."""
    outcome = verification_outcome(r)
    response = pb.VerifyResponse(threshold=r.threshold, decision_id=r.decision_id,
                                 decision=int(outcome.decision), traveller_message=outcome.message,
                                 register_as_of=r.register_as_of, feedback_id=r.feedback_id,
                                 final=r.finger_alone_unmeasured)
    if full:
        response.match = r.match
        response.score = r.score
        response.modality_scores.extend(modality_scores(r.modality_scores))
        response.referral = verification_referral(r)
    return response


def identify_response(r: IdentificationResult, *, full: bool) -> pb.IdentifyResponse:
    """The IdentifyResponse of an identification result: the traveller's decision and message, decision id
    and threshold; with ``full`` (an officer) also the candidates and why they are referred."""
    outcome = identification_outcome(r)
    response = pb.IdentifyResponse(decision_id=r.decision_id, threshold=r.threshold,
                                   decision=int(outcome.decision), traveller_message=outcome.message,
                                   register_as_of=r.register_as_of, feedback_id=r.feedback_id)
    if full:
        response.candidates.extend(candidate(c) for c in r.candidates)
        response.referral = identification_referral(r)
    return response


def alert(a: Alert) -> pb.Alert:
    """The Alert message of a watchlist alert."""
    return pb.Alert(alert_id=a.alert_id, raised_at=a.raised_at, kind=a.kind, decision_id=a.decision_id,
                    subject_id=a.subject_id, score=a.score, caller=a.caller)


def review(r: Review) -> pb.Review:
    """The Review message of an enrolment waiting for an officer."""
    info = r.info
    return pb.Review(review_id=r.review_id, created_at=r.created_at, station=r.station,
                     enrolled_offline_at=r.enrolled_offline_at, subject_id=r.subject_id,
                     info=pb.SubjectInfo(name=info.name, nationality=info.nationality,
                                         date_of_birth=info.date_of_birth, watchlist=info.watchlist),
                     candidates=[candidate(c) for c in r.candidates], threshold=r.threshold)


RESOLUTIONS = {pb.KEEP_BOTH: "keep_both", pb.LINK: "link", pb.REJECT: "reject"}


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


def device(status: DeviceStatus, *, full: bool) -> pb.Device:
    """The Device message of a device's status: name, modality, state and whether it is the default; with
    ``full`` (an officer) also its detail and parameters, credentials in URLs masked."""
    message = pb.Device(
        name=status.name,
        modality=_DEVICE_MODALITIES.get(status.modality, pb.MODALITY_UNSPECIFIED),
        state=_DEVICE_STATES.get(status.state, pb.DEVICE_STATE_UNSPECIFIED),
        is_default=status.is_default,
    )
    if full:
        message.detail = redact_url(status.detail)
        message.parameters.update({key: redact_url(value) for key, value in status.parameters.items()})
    return message


def register_sync(status: dict[str, Any]) -> pb.RegisterSync:
    """The RegisterSync message of :meth:`biometrics.service.CheckpointService.sync_status`."""
    seconds = status.get("seconds_since_sync")
    return pb.RegisterSync(shared=bool(status.get("shared")), ready=bool(status.get("ready")),
                           applied_seq=int(status.get("applied_seq", 0)),
                           seconds_since_sync=-1.0 if seconds is None else float(seconds),
                           connected=bool(status.get("register_connected")),
                           audit_pending=int(status.get("audit_pending", 0)),
                           outbox_pending=int(status.get("outbox_pending", 0)),
                           provisional=int(status.get("provisional", 0)))
