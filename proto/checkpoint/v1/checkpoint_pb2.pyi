from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Modality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODALITY_UNSPECIFIED: _ClassVar[Modality]
    FACE: _ClassVar[Modality]
    FINGERPRINT: _ClassVar[Modality]

class FingerPosition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN_FINGER: _ClassVar[FingerPosition]
    RIGHT_THUMB: _ClassVar[FingerPosition]
    RIGHT_INDEX: _ClassVar[FingerPosition]
    RIGHT_MIDDLE: _ClassVar[FingerPosition]
    RIGHT_RING: _ClassVar[FingerPosition]
    RIGHT_LITTLE: _ClassVar[FingerPosition]
    LEFT_THUMB: _ClassVar[FingerPosition]
    LEFT_INDEX: _ClassVar[FingerPosition]
    LEFT_MIDDLE: _ClassVar[FingerPosition]
    LEFT_RING: _ClassVar[FingerPosition]
    LEFT_LITTLE: _ClassVar[FingerPosition]

class TravellerDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAVELLER_DECISION_UNSPECIFIED: _ClassVar[TravellerDecision]
    PROCEED: _ClassVar[TravellerDecision]
    SEE_OFFICER: _ClassVar[TravellerDecision]

class DeviceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_STATE_UNSPECIFIED: _ClassVar[DeviceState]
    READY: _ClassVar[DeviceState]
    BUSY: _ClassVar[DeviceState]
    FAULT: _ClassVar[DeviceState]
    DISCONNECTED: _ClassVar[DeviceState]

class ReviewResolution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVIEW_RESOLUTION_UNSPECIFIED: _ClassVar[ReviewResolution]
    KEEP_BOTH: _ClassVar[ReviewResolution]
    LINK: _ClassVar[ReviewResolution]
    REJECT: _ClassVar[ReviewResolution]
MODALITY_UNSPECIFIED: Modality
FACE: Modality
FINGERPRINT: Modality
UNKNOWN_FINGER: FingerPosition
RIGHT_THUMB: FingerPosition
RIGHT_INDEX: FingerPosition
RIGHT_MIDDLE: FingerPosition
RIGHT_RING: FingerPosition
RIGHT_LITTLE: FingerPosition
LEFT_THUMB: FingerPosition
LEFT_INDEX: FingerPosition
LEFT_MIDDLE: FingerPosition
LEFT_RING: FingerPosition
LEFT_LITTLE: FingerPosition
TRAVELLER_DECISION_UNSPECIFIED: TravellerDecision
PROCEED: TravellerDecision
SEE_OFFICER: TravellerDecision
DEVICE_STATE_UNSPECIFIED: DeviceState
READY: DeviceState
BUSY: DeviceState
FAULT: DeviceState
DISCONNECTED: DeviceState
REVIEW_RESOLUTION_UNSPECIFIED: ReviewResolution
KEEP_BOTH: ReviewResolution
LINK: ReviewResolution
REJECT: ReviewResolution

class DeviceCapture(_message.Message):
    __slots__ = ("device", "timeout_seconds", "frames")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    device: str
    timeout_seconds: float
    frames: int
    def __init__(self, device: _Optional[str] = ..., timeout_seconds: _Optional[float] = ..., frames: _Optional[int] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("modality", "image", "capture", "finger")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_FIELD_NUMBER: _ClassVar[int]
    FINGER_FIELD_NUMBER: _ClassVar[int]
    modality: Modality
    image: bytes
    capture: DeviceCapture
    finger: FingerPosition
    def __init__(self, modality: _Optional[_Union[Modality, str]] = ..., image: _Optional[bytes] = ..., capture: _Optional[_Union[DeviceCapture, _Mapping]] = ..., finger: _Optional[_Union[FingerPosition, str]] = ...) -> None: ...

class SubjectInfo(_message.Message):
    __slots__ = ("name", "nationality", "date_of_birth", "watchlist")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NATIONALITY_FIELD_NUMBER: _ClassVar[int]
    DATE_OF_BIRTH_FIELD_NUMBER: _ClassVar[int]
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    name: str
    nationality: str
    date_of_birth: str
    watchlist: bool
    def __init__(self, name: _Optional[str] = ..., nationality: _Optional[str] = ..., date_of_birth: _Optional[str] = ..., watchlist: _Optional[bool] = ...) -> None: ...

class ModalityScore(_message.Message):
    __slots__ = ("modality", "score", "finger")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    FINGER_FIELD_NUMBER: _ClassVar[int]
    modality: Modality
    score: float
    finger: FingerPosition
    def __init__(self, modality: _Optional[_Union[Modality, str]] = ..., score: _Optional[float] = ..., finger: _Optional[_Union[FingerPosition, str]] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("subject_id", "score", "modality_scores", "watchlist")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MODALITY_SCORES_FIELD_NUMBER: _ClassVar[int]
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    score: float
    modality_scores: _containers.RepeatedCompositeFieldContainer[ModalityScore]
    watchlist: bool
    def __init__(self, subject_id: _Optional[str] = ..., score: _Optional[float] = ..., modality_scores: _Optional[_Iterable[_Union[ModalityScore, _Mapping]]] = ..., watchlist: _Optional[bool] = ...) -> None: ...

class SampleQuality(_message.Message):
    __slots__ = ("modality", "finger", "quality")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    FINGER_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    modality: Modality
    finger: FingerPosition
    quality: float
    def __init__(self, modality: _Optional[_Union[Modality, str]] = ..., finger: _Optional[_Union[FingerPosition, str]] = ..., quality: _Optional[float] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("subject_id", "info", "samples", "allow_duplicate", "override_reason")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_REASON_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    info: SubjectInfo
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    allow_duplicate: bool
    override_reason: str
    def __init__(self, subject_id: _Optional[str] = ..., info: _Optional[_Union[SubjectInfo, _Mapping]] = ..., samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ..., allow_duplicate: _Optional[bool] = ..., override_reason: _Optional[str] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("subject_id", "possible_duplicates", "enrolled", "decision_id", "qualities", "threshold", "provisional")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    POSSIBLE_DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    QUALITIES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PROVISIONAL_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    possible_duplicates: _containers.RepeatedCompositeFieldContainer[Candidate]
    enrolled: bool
    decision_id: str
    qualities: _containers.RepeatedCompositeFieldContainer[SampleQuality]
    threshold: float
    provisional: bool
    def __init__(self, subject_id: _Optional[str] = ..., possible_duplicates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., enrolled: _Optional[bool] = ..., decision_id: _Optional[str] = ..., qualities: _Optional[_Iterable[_Union[SampleQuality, _Mapping]]] = ..., threshold: _Optional[float] = ..., provisional: _Optional[bool] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("subject_id", "samples", "document_nationality", "attempts", "attempt")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_NATIONALITY_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    document_nationality: str
    attempts: int
    attempt: int
    def __init__(self, subject_id: _Optional[str] = ..., samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ..., document_nationality: _Optional[str] = ..., attempts: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("match", "score", "threshold", "decision_id", "modality_scores", "decision", "traveller_message", "register_as_of", "feedback_id", "referral", "final")
    MATCH_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    MODALITY_SCORES_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    TRAVELLER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REGISTER_AS_OF_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_ID_FIELD_NUMBER: _ClassVar[int]
    REFERRAL_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    match: bool
    score: float
    threshold: float
    decision_id: str
    modality_scores: _containers.RepeatedCompositeFieldContainer[ModalityScore]
    decision: TravellerDecision
    traveller_message: str
    register_as_of: str
    feedback_id: str
    referral: str
    final: bool
    def __init__(self, match: _Optional[bool] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., decision_id: _Optional[str] = ..., modality_scores: _Optional[_Iterable[_Union[ModalityScore, _Mapping]]] = ..., decision: _Optional[_Union[TravellerDecision, str]] = ..., traveller_message: _Optional[str] = ..., register_as_of: _Optional[str] = ..., feedback_id: _Optional[str] = ..., referral: _Optional[str] = ..., final: _Optional[bool] = ...) -> None: ...

class IdentifyRequest(_message.Message):
    __slots__ = ("samples", "max_candidates", "document_nationality")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_NATIONALITY_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    max_candidates: int
    document_nationality: str
    def __init__(self, samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ..., max_candidates: _Optional[int] = ..., document_nationality: _Optional[str] = ...) -> None: ...

class IdentifyResponse(_message.Message):
    __slots__ = ("candidates", "decision_id", "threshold", "decision", "traveller_message", "register_as_of", "feedback_id", "referral")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    TRAVELLER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REGISTER_AS_OF_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_ID_FIELD_NUMBER: _ClassVar[int]
    REFERRAL_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    decision_id: str
    threshold: float
    decision: TravellerDecision
    traveller_message: str
    register_as_of: str
    feedback_id: str
    referral: str
    def __init__(self, candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., decision_id: _Optional[str] = ..., threshold: _Optional[float] = ..., decision: _Optional[_Union[TravellerDecision, str]] = ..., traveller_message: _Optional[str] = ..., register_as_of: _Optional[str] = ..., feedback_id: _Optional[str] = ..., referral: _Optional[str] = ...) -> None: ...

class RateDecisionRequest(_message.Message):
    __slots__ = ("feedback_id", "rating")
    FEEDBACK_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    feedback_id: str
    rating: int
    def __init__(self, feedback_id: _Optional[str] = ..., rating: _Optional[int] = ...) -> None: ...

class RateDecisionResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class GetSubjectRequest(_message.Message):
    __slots__ = ("subject_id",)
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    def __init__(self, subject_id: _Optional[str] = ...) -> None: ...

class TemplateInfo(_message.Message):
    __slots__ = ("modality", "finger", "quality", "created_at")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    FINGER_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    modality: Modality
    finger: FingerPosition
    quality: float
    created_at: str
    def __init__(self, modality: _Optional[_Union[Modality, str]] = ..., finger: _Optional[_Union[FingerPosition, str]] = ..., quality: _Optional[float] = ..., created_at: _Optional[str] = ...) -> None: ...

class Subject(_message.Message):
    __slots__ = ("subject_id", "info", "templates", "enrolled_at")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_AT_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    info: SubjectInfo
    templates: _containers.RepeatedCompositeFieldContainer[TemplateInfo]
    enrolled_at: str
    def __init__(self, subject_id: _Optional[str] = ..., info: _Optional[_Union[SubjectInfo, _Mapping]] = ..., templates: _Optional[_Iterable[_Union[TemplateInfo, _Mapping]]] = ..., enrolled_at: _Optional[str] = ...) -> None: ...

class DeleteSubjectRequest(_message.Message):
    __slots__ = ("subject_id", "reason")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    reason: str
    def __init__(self, subject_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DeleteSubjectResponse(_message.Message):
    __slots__ = ("deleted", "decision_id")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    decision_id: str
    def __init__(self, deleted: _Optional[bool] = ..., decision_id: _Optional[str] = ...) -> None: ...

class CaptureRequest(_message.Message):
    __slots__ = ("device", "timeout_seconds")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    device: str
    timeout_seconds: float
    def __init__(self, device: _Optional[str] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class CaptureResponse(_message.Message):
    __slots__ = ("image", "quality", "device", "width", "height")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    quality: float
    device: str
    width: int
    height: int
    def __init__(self, image: _Optional[bytes] = ..., quality: _Optional[float] = ..., device: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("name", "modality", "state", "detail", "parameters", "is_default")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    modality: Modality
    state: DeviceState
    detail: str
    parameters: _containers.ScalarMap[str, str]
    is_default: bool
    def __init__(self, name: _Optional[str] = ..., modality: _Optional[_Union[Modality, str]] = ..., state: _Optional[_Union[DeviceState, str]] = ..., detail: _Optional[str] = ..., parameters: _Optional[_Mapping[str, str]] = ..., is_default: _Optional[bool] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    def __init__(self, devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ...) -> None: ...

class GetStatisticsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CallStatistics(_message.Message):
    __slots__ = ("method", "count", "by_status", "mean_ms", "p50_ms", "p95_ms", "p99_ms")
    class ByStatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    METHOD_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    BY_STATUS_FIELD_NUMBER: _ClassVar[int]
    MEAN_MS_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    method: str
    count: int
    by_status: _containers.ScalarMap[str, int]
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    def __init__(self, method: _Optional[str] = ..., count: _Optional[int] = ..., by_status: _Optional[_Mapping[str, int]] = ..., mean_ms: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ...) -> None: ...

class Statistics(_message.Message):
    __slots__ = ("since", "gallery_subjects", "gallery_templates", "calls", "decisions", "station", "register")
    class DecisionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SINCE_FIELD_NUMBER: _ClassVar[int]
    GALLERY_SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    GALLERY_TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    STATION_FIELD_NUMBER: _ClassVar[int]
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    since: str
    gallery_subjects: int
    gallery_templates: int
    calls: _containers.RepeatedCompositeFieldContainer[CallStatistics]
    decisions: _containers.ScalarMap[str, int]
    station: str
    register: RegisterSync
    def __init__(self, since: _Optional[str] = ..., gallery_subjects: _Optional[int] = ..., gallery_templates: _Optional[int] = ..., calls: _Optional[_Iterable[_Union[CallStatistics, _Mapping]]] = ..., decisions: _Optional[_Mapping[str, int]] = ..., station: _Optional[str] = ..., register: _Optional[_Union[RegisterSync, _Mapping]] = ...) -> None: ...

class RegisterSync(_message.Message):
    __slots__ = ("shared", "ready", "applied_seq", "seconds_since_sync", "connected", "audit_pending", "outbox_pending", "provisional")
    SHARED_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    SECONDS_SINCE_SYNC_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    AUDIT_PENDING_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_PENDING_FIELD_NUMBER: _ClassVar[int]
    PROVISIONAL_FIELD_NUMBER: _ClassVar[int]
    shared: bool
    ready: bool
    applied_seq: int
    seconds_since_sync: float
    connected: bool
    audit_pending: int
    outbox_pending: int
    provisional: int
    def __init__(self, shared: _Optional[bool] = ..., ready: _Optional[bool] = ..., applied_seq: _Optional[int] = ..., seconds_since_sync: _Optional[float] = ..., connected: _Optional[bool] = ..., audit_pending: _Optional[int] = ..., outbox_pending: _Optional[int] = ..., provisional: _Optional[int] = ...) -> None: ...

class Review(_message.Message):
    __slots__ = ("review_id", "created_at", "station", "enrolled_offline_at", "subject_id", "info", "candidates", "threshold")
    REVIEW_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STATION_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_OFFLINE_AT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    review_id: str
    created_at: str
    station: str
    enrolled_offline_at: str
    subject_id: str
    info: SubjectInfo
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    threshold: float
    def __init__(self, review_id: _Optional[str] = ..., created_at: _Optional[str] = ..., station: _Optional[str] = ..., enrolled_offline_at: _Optional[str] = ..., subject_id: _Optional[str] = ..., info: _Optional[_Union[SubjectInfo, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., threshold: _Optional[float] = ...) -> None: ...

class ListReviewsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListReviewsResponse(_message.Message):
    __slots__ = ("reviews",)
    REVIEWS_FIELD_NUMBER: _ClassVar[int]
    reviews: _containers.RepeatedCompositeFieldContainer[Review]
    def __init__(self, reviews: _Optional[_Iterable[_Union[Review, _Mapping]]] = ...) -> None: ...

class ResolveReviewRequest(_message.Message):
    __slots__ = ("review_id", "resolution", "reason")
    REVIEW_ID_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    review_id: str
    resolution: ReviewResolution
    reason: str
    def __init__(self, review_id: _Optional[str] = ..., resolution: _Optional[_Union[ReviewResolution, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class ResolveReviewResponse(_message.Message):
    __slots__ = ("review_id",)
    REVIEW_ID_FIELD_NUMBER: _ClassVar[int]
    review_id: str
    def __init__(self, review_id: _Optional[str] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("alert_id", "raised_at", "kind", "decision_id", "subject_id", "score", "caller")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    RAISED_AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    raised_at: str
    kind: str
    decision_id: str
    subject_id: str
    score: float
    caller: str
    def __init__(self, alert_id: _Optional[str] = ..., raised_at: _Optional[str] = ..., kind: _Optional[str] = ..., decision_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., score: _Optional[float] = ..., caller: _Optional[str] = ...) -> None: ...

class ListAlertsResponse(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    def __init__(self, alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ...) -> None: ...
