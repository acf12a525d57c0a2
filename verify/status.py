"""One gRPC status per kind of refusal, with the core's displayable message.

A kiosk may decide by the status alone (README, "Errors"), so each status keeps one meaning for what the
kiosk does next: ``UNAVAILABLE`` try again in a moment (a device, a worker, the register, or the server or
this kiosk busy: :mod:`verify.admission`); ``RESOURCE_EXHAUSTED`` the request is larger than the server takes,
never retried as it is (an oversized image here; a message over the cap from gRPC itself); ``FAILED_PRECONDITION``
not until someone acts (an officer: the document's kiosk attempts used, no reference for the modality...).
gRPC's own "Concurrent RPC limit exceeded!" (a burst beyond the server's refusal threads) is the one
``RESOURCE_EXHAUSTED`` to try again, told by its message (:data:`verify.channel.TRANSPORT_FAILURES`).
"""

from __future__ import annotations

import grpc

from biometrics.attempts import AttemptsExhausted
from biometrics.errors import (
    BiometricError,
    CallAbandoned,
    InvalidSample,
    OfflineLimitReached,
    RegisterUnavailable,
    ReviewConflict,
    SampleTooLarge,
    SubjectExists,
    SubjectNotFound,
)
from biometrics.events import EventNotFound, FeedbackRefused, RatingWindowClosed
from biometrics.service import NoReference
from biometrics.storage import SchemaTooNew
from biometrics.workers import WorkerLost, WorkerTimeout
from devices.errors import (
    CaptureCancelled,
    DeviceError,
    DeviceNotConfigured,
    DeviceRefused,
    DeviceTimeout,
    DeviceUnavailable,
    InvalidCaptureRequest,
)

_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (SampleTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    # the document's kiosk attempts are used: not again until an officer has seen the traveller
    (AttemptsExhausted, grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidSample, grpc.StatusCode.INVALID_ARGUMENT),
    (SubjectNotFound, grpc.StatusCode.NOT_FOUND),
    (SubjectExists, grpc.StatusCode.ALREADY_EXISTS),
    (FeedbackRefused, grpc.StatusCode.ALREADY_EXISTS),  # one rating per decision
    (EventNotFound, grpc.StatusCode.NOT_FOUND),
    (RatingWindowClosed, grpc.StatusCode.FAILED_PRECONDITION),  # too late: the kiosk shows the message
    (NoReference, grpc.StatusCode.FAILED_PRECONDITION),
    (RegisterUnavailable, grpc.StatusCode.UNAVAILABLE),
    (SchemaTooNew, grpc.StatusCode.FAILED_PRECONDITION),  # a newer station migrated the register: upgrade this one
    (OfflineLimitReached, grpc.StatusCode.FAILED_PRECONDITION),  # the officer must act: call about the link
    (ReviewConflict, grpc.StatusCode.FAILED_PRECONDITION),  # resolved already, or the resolution does not fit the case
    (InvalidCaptureRequest, grpc.StatusCode.INVALID_ARGUMENT),  # the request, not the device: checked first
    (CaptureCancelled, grpc.StatusCode.CANCELLED),
    (CallAbandoned, grpc.StatusCode.CANCELLED),  # the call ended (its caller gone): nobody reads this answer
    (DeviceTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
    (DeviceNotConfigured, grpc.StatusCode.FAILED_PRECONDITION),
    (DeviceRefused, grpc.StatusCode.FAILED_PRECONDITION),
    (DeviceUnavailable, grpc.StatusCode.UNAVAILABLE),
    (DeviceError, grpc.StatusCode.UNAVAILABLE),
    (BiometricError, grpc.StatusCode.INVALID_ARGUMENT),
    (WorkerLost, grpc.StatusCode.UNAVAILABLE),  # transient: the worker was replaced, a retry is expected to work
    (WorkerTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),  # the sample ran over the pool's per-call timeout
)


def status_for(error: Exception) -> grpc.StatusCode | None:
    """The status for a refusal of the core or a device fault; None for anything else (a bug)."""
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return None
