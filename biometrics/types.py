"""The core's vocabulary: modalities, samples, subjects, candidates and decisions."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class Modality(enum.IntEnum):
    """Biometric modalities (numbered as in the gRPC contract)."""

    FACE = 1
    FINGERPRINT = 2


@dataclass(frozen=True)
class Sample:
    """One biometric sample: encoded image bytes (JPEG/PNG) or decoded pixels from a device.

    Face pixels are RGB uint8 (H, W, 3); fingerprint pixels greyscale uint8 (H, W).
    ``finger`` is the ISO/IEC 19794-2 finger position (0: unknown).
    """

    modality: Modality
    image: bytes | np.ndarray
    finger: int = 0


@dataclass(frozen=True)
class SubjectInfo:
    """Personal data from the travel document."""

    name: str = ""
    nationality: str = ""
    date_of_birth: str = ""
    watchlist: bool = False


@dataclass(frozen=True)
class TemplateInfo:
    """What is enrolled for a subject, without the template itself."""

    modality: Modality
    finger: int
    quality: float
    created_at: str


@dataclass(frozen=True)
class SubjectRecord:
    """An enrolled subject as storage returns it."""

    subject_id: str
    info: SubjectInfo
    enrolled_at: str
    templates: tuple[TemplateInfo, ...] = ()


@dataclass(frozen=True)
class ModalityScore:
    """One modality's false-match score (-log10 FMR)."""

    modality: Modality
    score: float
    finger: int = 0


@dataclass(frozen=True)
class Candidate:
    """A subject returned by a 1:N search, with its false-match score.

    ``contradicted``: one of its modalities scored under its contradiction floor while another carried it over
    the threshold (a finger that matches, a face that does not): a lead for an officer, never a PROCEED."""

    subject_id: str
    score: float
    modality_scores: tuple[ModalityScore, ...] = ()
    watchlist: bool = False
    contradicted: bool = False


@dataclass(frozen=True)
class SampleQuality:
    """The quality (0..100) measured on one submitted sample."""

    modality: Modality
    finger: int
    quality: float


@dataclass(frozen=True)
class EnrolmentResult:
    """The outcome of an enrolment: stored, or held back for possible duplicates."""

    subject_id: str
    enrolled: bool
    possible_duplicates: tuple[Candidate, ...]
    qualities: tuple[SampleQuality, ...]
    threshold: float
    decision_id: str
    # Accepted by a station working offline: stored locally, uploaded (and searched against the whole register)
    # when the link returns.
    provisional: bool = False


@dataclass(frozen=True)
class VerificationResult:
    """The outcome of a 1:1 comparison."""

    match: bool
    score: float
    threshold: float
    decision_id: str
    modality_scores: tuple[ModalityScore, ...] = ()
    # The subject is on a watchlist: for officers (an alert is raised on a match), never for a kiosk's screen.
    watchlist: bool = False
    # When this station's view of the register was last up to date (RFC 3339); "" on a single station.
    register_as_of: str = ""
    # The decision event's id, for the traveller's rating (not the decision id); "" when events are not recorded.
    feedback_id: str = ""
    # The subject was enrolled offline at this island and its upload waits for an officer's review as a possible
    # duplicate: its identity is not established, so the traveller sees an officer (never for a kiosk's screen).
    in_review: bool = False
    # The decision rests on fingerprints alone and the station's fingerprint calibration cannot measure the FMR
    # it is read at (too few distinct impostor pairs: the shipped one until a station fits its own), so the
    # traveller sees an officer whatever the score (never for a kiosk's screen).
    finger_alone_unmeasured: bool = False


@dataclass(frozen=True)
class IdentificationResult:
    """The outcome of a 1:N search: candidates at or over the threshold, best first."""

    candidates: tuple[Candidate, ...]
    threshold: float
    decision_id: str
    # When this station's view of the register was last up to date (RFC 3339); "" on a single station.
    register_as_of: str = ""
    # The decision event's id, for the traveller's rating (not the decision id); "" when events are not recorded.
    feedback_id: str = ""
    # As in VerificationResult: a candidate was scored without a face (none sent, or none enrolled), under a
    # calibration that cannot measure the 1:N threshold's FMR; the candidates stand (for officers), the traveller
    # sees an officer.
    finger_alone_unmeasured: bool = False
    # More than one subject at or over the threshold, some perhaps beyond the candidates listed (an answer cut to
    # max_candidates): one person enrolled twice, or a false match; the traveller sees an officer.
    ambiguous: bool = False


@dataclass(frozen=True)
class Alert:
    """Something an officer must see: a traveller matched a subject on a watchlist (never shown at a kiosk)."""

    alert_id: str
    raised_at: str
    kind: str  # "watchlist_verify" or "watchlist_identify"
    decision_id: str
    subject_id: str
    score: float
    caller: str  # the identity (certificate subject) of the kiosk or desk that made the call


@dataclass(frozen=True)
class Review:
    """An enrolment a station made offline whose upload found possible duplicates in the register: it waits for
    an officer (two people: keep both; one person: link the records; reject the enrolment), never merged or dropped."""

    review_id: str
    created_at: str
    station: str
    subject_id: str
    info: SubjectInfo
    enrolled_offline_at: str
    candidates: tuple[Candidate, ...]
    threshold: float
    state: str = "pending"  # pending, keep_both, link, reject
    resolution: str = ""


@dataclass(frozen=True)
class Actor:
    """Who asked: the role from the client's certificate and the certificate's subject."""

    role: str = "officer"
    identity: str = "local"
    extra: dict[str, str] = field(default_factory=dict)
