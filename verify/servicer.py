"""The Checkpoint gRPC servicer: a thin adapter from messages to :class:`biometrics.service.CheckpointService`.

Each handler converts the request, calls the core, and converts the answer back; refusals of the core
and device faults become one gRPC status each with the core's message (:mod:`verify.status`). No
biometric logic and no validation of its own live here: the core validates every request
(:mod:`biometrics.validation`); the servicer calls the same checks only where it must act first (a capture
is taken only for a request whose samples, finger codes and timeouts pass; for a Verify whose document number,
document nationality and attempts pass, an Identify whose document nationality and max_candidates pass, and an
enrolment whose subject id, personal fields and override reason pass and whose subject id is not enrolled here
already).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from checkpoint.v1 import checkpoint_pb2 as pb
from checkpoint.v1 import checkpoint_pb2_grpc as pb_grpc

from biometrics import validation
from biometrics.errors import InvalidSample, SubjectExists
from biometrics.imaging import encode_png
from biometrics.service import CheckpointService
from biometrics.types import Actor, Modality, Sample
from devices.errors import CaptureCancelled, DeviceError, DeviceNotConfigured, plain_message
from verify import convert
from verify.roles import OFFICER, current_actor
from verify.status import status_for

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "The server could not complete this request. Please try again, or call an officer."
RATED_MESSAGE = "Thank you for your feedback."

Handler = TypeVar("Handler", bound=Callable[..., Any])


def rpc(handler: Handler) -> Handler:
    """Map refusals to statuses, never let an exception kill the call, and record its statistics."""
    name = handler.__name__

    @functools.wraps(handler)
    def wrapper(self: CheckpointServicer, request: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        status = "OK"
        try:
            return handler(self, request, context)
        except Exception as exc:
            code = status_for(exc)
            if code is None:
                log.exception("%s failed", name)
                code, message = grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
            else:
                message = convert.redact_url(str(exc))  # a device's error may name its URL, credentials and all
                if isinstance(exc, DeviceError) and not self.full_view(context):
                    log.warning("%s: %s", name, message)  # the detail for the station's staff
                    # a plain message may keep the device's own words (busy, timed out), which name the device
                    # as configured: masked as well
                    message = convert.redact_url(plain_message(exc))
            status = code.name
            context.abort(code, message)
        finally:
            self.service.statistics.record_call(name, status, time.perf_counter() - start)

    return wrapper  # type: ignore[return-value]


class CallTime:
    """What a capture may take of its gRPC call: the time left before the call's deadline, and an event set
    when the call ends (its caller gave up, its deadline passed, or it was answered), which stops a capture
    under way (the device is then free for the next traveller, and a finger placed later is left for it).

    Without a context (a handler called in-process) captures are limited by their own timeouts only.
    """

    def __init__(self, context: grpc.ServicerContext | None) -> None:
        self.context = context
        self.ended = threading.Event()
        if context is not None and not context.add_callback(self.ended.set):
            self.ended.set()  # the call has ended already

    def active(self) -> bool:
        """Whether the call is still wanted (its caller waits for the answer)."""
        return self.context is None or (not self.ended.is_set() and self.context.is_active())

    def capture_limits(self) -> dict[str, Any]:
        """The station's ``within_s`` and ``cancel`` for the next capture; :class:`CaptureCancelled` (no capture)
        once the call has ended."""
        if self.context is None:
            return {}
        if not self.active():
            raise CaptureCancelled("The call ended before the capture: nothing was captured.")
        return {"within_s": self.context.time_remaining(), "cancel": self.ended}


class CheckpointServicer(pb_grpc.CheckpointServicer):
    """gRPC handlers over one checkpoint service and, optionally, the station's devices."""

    def __init__(self, service: CheckpointService, station: Any | None = None) -> None:
        self.service = service
        self.station = station

    # -- adapters ------------------------------------------------------------------------------

    def actor(self, context: grpc.ServicerContext) -> Actor:
        """Who is calling, as the role interceptor derived it from the client certificate (a plaintext client:
        an officer). Whether the role may make the call was checked before the handler ran (:mod:`verify.roles`).
        """
        return current_actor()

    def full_view(self, context: grpc.ServicerContext) -> bool:
        """Does the caller see whole answers (scores, candidates, device details)? Officers only: every other
        role gets the reduced view of docs/security.md, "What each role sees"."""
        return self.actor(context).role == OFFICER

    def _station(self) -> Any:
        if self.station is None:
            raise DeviceNotConfigured("This station has no capture devices configured.")
        return self.station

    def _capture(self, modality: Modality, device: str, timeout: float, call: CallTime, frames: int = 0) -> Any:
        """Pixels from the station's device for ``modality`` (device name and timeout already checked), within
        the call's time; ``frames`` > 0: a burst of that many face frames (a list)."""
        limits = call.capture_limits()
        if frames:
            return self._station().capture_face_frames(device, timeout, frames, **limits)
        if modality == Modality.FACE:
            return self._station().capture_face(device, timeout, **limits)
        return self._station().capture_fingerprint(device, timeout, **limits)

    def samples(self, messages: Any, context: grpc.ServicerContext | None = None) -> list[Sample]:
        """The core's samples from Sample messages, captures taken from the station's devices.

        Everything a capture depends on (the number of samples, each one's modality, finger code, device
        name and timeout) is checked for every sample before the first capture is taken; the rest of the
        validation is the core's (:mod:`biometrics.validation`). With the call's ``context``, each capture
        waits no longer than the call has left, none is started once the call has ended, and one under way
        stops when it ends (:class:`CallTime`).
        """
        frames = [max(1, m.capture.frames) if m.WhichOneof("source") == "capture" and m.modality == pb.FACE else 1
                  for m in messages]
        validation.check_sample_count(sum(frames), self.service.config.max_samples)
        for message in messages:
            validation.check_modality(message.modality)
            validation.check_finger(message.finger)
            source = message.WhichOneof("source")
            if source == "capture":
                validation.check_text(message.capture.device, "capture.device")
                validation.check_capture_timeout(message.capture.timeout_seconds)
            elif source != "image":
                raise InvalidSample("A sample carries neither an image nor a capture request.")
        call = CallTime(context)
        out = []
        for message, count in zip(messages, frames, strict=True):
            modality = Modality(message.modality)
            if message.WhichOneof("source") == "image":
                image: Any = message.image
            elif count > 1:  # a burst: each frame one face sample of the traveller
                burst = self._capture(modality, message.capture.device, message.capture.timeout_seconds, call, count)
                out.extend(Sample(modality, frame, int(message.finger)) for frame in burst)
                continue
            else:
                image = self._capture(modality, message.capture.device, message.capture.timeout_seconds, call)
            out.append(Sample(modality, image, int(message.finger)))
        return out

    # -- calls ---------------------------------------------------------------------------------

    @rpc
    def Enroll(self, request: pb.EnrollRequest, context: grpc.ServicerContext) -> pb.EnrollResponse:  # noqa: N802
        """See the contract. A call that has ended (its caller gave up) before the enrolment is stored stores
        nothing: the desk that saw DEADLINE_EXCEEDED finds no subject it did not hear about."""
        call = CallTime(context)
        info = convert.subject_info(request.info)
        self._check_enrolment(request, info)
        result = self.service.enrol(
            request.subject_id,
            info,
            self.samples(request.samples, context),
            allow_duplicate=request.allow_duplicate,
            override_reason=request.override_reason,
            actor=self.actor(context),
            still_wanted=call.active,
        )
        return convert.enrol_response(result)

    def _check_enrolment(self, request: pb.EnrollRequest, info: Any) -> None:
        """The core's checks of an enrolment's request, made before the traveller is captured (the core makes
        them again): the subject id, the personal fields, the override's reason, and a subject id already
        enrolled here."""
        validation.check_subject_id(request.subject_id)
        validation.check_subject_info(info)
        validation.check_reason(request.override_reason, "override_reason", required=request.allow_duplicate)
        if self.service.holds(request.subject_id):
            raise SubjectExists(f"A subject is already enrolled under {request.subject_id!r}.")

    @rpc
    def Verify(self, request: pb.VerifyRequest, context: grpc.ServicerContext) -> pb.VerifyResponse:  # noqa: N802
        """See the contract. A call that has ended (its caller gave up) once its samples are taken is not scored:
        no decision is recorded and no attempt counted (``CANCELLED`` in the server's statistics)."""
        call = CallTime(context)
        # the core's checks of the request's own fields, before any capture (the core makes them again)
        validation.check_verify_request(request.subject_id, request.document_nationality, request.attempts,
                                        request.attempt)
        modalities = {m.modality for m in request.samples}
        self.service.check_attempts_left(request.subject_id, actor=self.actor(context), modalities=modalities,
                                         nationality=request.document_nationality)  # before any capture
        started = time.perf_counter()
        try:
            samples = self.samples(request.samples, context)
        except Exception:
            self.service.verify_capture_failed(request.subject_id, request.attempt, self.actor(context), started,
                                               modalities, request.document_nationality)
            raise
        result = self.service.verify(request.subject_id, samples, actor=self.actor(context),
                                     document_nationality=request.document_nationality, attempts=request.attempts,
                                     attempt=request.attempt, still_wanted=call.active)
        return convert.verify_response(result, full=self.full_view(context))

    @rpc
    def Identify(self, request: pb.IdentifyRequest, context: grpc.ServicerContext) -> pb.IdentifyResponse:  # noqa: N802
        """See the contract. A call that has ended once its samples are taken is not scored (as Verify)."""
        call = CallTime(context)
        # the core's checks of the request's own fields, before any capture (the core makes them again)
        validation.check_identify_request(request.document_nationality, request.max_candidates)
        result = self.service.identify(
            self.samples(request.samples, context), request.max_candidates, actor=self.actor(context),
            document_nationality=request.document_nationality, still_wanted=call.active,
        )
        return convert.identify_response(result, full=self.full_view(context))

    @rpc
    def RateDecision(  # noqa: N802
        self, request: pb.RateDecisionRequest, context: grpc.ServicerContext
    ) -> pb.RateDecisionResponse:
        """See the contract."""
        self.service.rate_decision(request.feedback_id, request.rating)
        return pb.RateDecisionResponse(message=RATED_MESSAGE)

    @rpc
    def GetSubject(self, request: pb.GetSubjectRequest, context: grpc.ServicerContext) -> pb.Subject:  # noqa: N802
        """See the contract."""
        return convert.subject(self.service.get_subject(request.subject_id, actor=self.actor(context)))

    @rpc
    def DeleteSubject(  # noqa: N802
        self, request: pb.DeleteSubjectRequest, context: grpc.ServicerContext
    ) -> pb.DeleteSubjectResponse:
        """See the contract."""
        decision_id = self.service.delete_subject(request.subject_id, request.reason, actor=self.actor(context))
        return pb.DeleteSubjectResponse(deleted=True, decision_id=decision_id)

    def _capture_response(self, modality: Modality, request: pb.CaptureRequest,
                          context: grpc.ServicerContext) -> pb.CaptureResponse:
        validation.check_text(request.device, "device")
        validation.check_capture_timeout(request.timeout_seconds)
        image = self._capture(modality, request.device, request.timeout_seconds, CallTime(context))
        quality = self.service.sample_quality(Sample(modality, image))
        device = request.device or self._station().default_device(modality.name.lower())
        self.service.record_capture(modality, device, int(image.shape[1]), int(image.shape[0]),
                                    actor=self.actor(context))
        return pb.CaptureResponse(image=encode_png(image), quality=quality, device=device,
                                  width=int(image.shape[1]), height=int(image.shape[0]))

    @rpc
    def CaptureFace(self, request: pb.CaptureRequest, context: grpc.ServicerContext) -> pb.CaptureResponse:  # noqa: N802
        """See the contract."""
        return self._capture_response(Modality.FACE, request, context)

    @rpc
    def CaptureFingerprint(  # noqa: N802
        self, request: pb.CaptureRequest, context: grpc.ServicerContext
    ) -> pb.CaptureResponse:
        """See the contract."""
        return self._capture_response(Modality.FINGERPRINT, request, context)

    @rpc
    def ListDevices(  # noqa: N802
        self, request: pb.ListDevicesRequest, context: grpc.ServicerContext
    ) -> pb.ListDevicesResponse:
        """See the contract."""
        devices = self.station.list_devices() if self.station is not None else []
        full = self.full_view(context)
        return pb.ListDevicesResponse(devices=[convert.device(d, full=full) for d in devices])

    @rpc
    def GetStatistics(  # noqa: N802
        self, request: pb.GetStatisticsRequest, context: grpc.ServicerContext
    ) -> pb.Statistics:
        """See the contract."""
        stats = self.service.statistics
        subjects, templates = self.service.gallery_size()
        return pb.Statistics(
            since=stats.since,
            gallery_subjects=subjects,
            gallery_templates=templates,
            calls=[pb.CallStatistics(method=c.method, count=c.count, by_status=c.by_status, mean_ms=c.mean_ms,
                                     p50_ms=c.p50_ms, p95_ms=c.p95_ms, p99_ms=c.p99_ms) for c in stats.calls()],
            decisions=stats.decisions(),
            station=self.service.station,
            register=convert.register_sync(self.service.sync_status()),
        )

    @rpc
    def ListReviews(  # noqa: N802
        self, request: pb.ListReviewsRequest, context: grpc.ServicerContext
    ) -> pb.ListReviewsResponse:
        """See the contract."""
        reviews = self.service.list_reviews(request.limit, actor=self.actor(context))
        return pb.ListReviewsResponse(reviews=[convert.review(r) for r in reviews])

    @rpc
    def ResolveReview(  # noqa: N802
        self, request: pb.ResolveReviewRequest, context: grpc.ServicerContext
    ) -> pb.ResolveReviewResponse:
        """See the contract."""
        resolution = convert.RESOLUTIONS.get(request.resolution)
        if resolution is None:
            raise InvalidSample("The resolution must be KEEP_BOTH, LINK or REJECT.")
        review_id = self.service.resolve_review(request.review_id, resolution, request.reason,
                                                actor=self.actor(context))
        return pb.ResolveReviewResponse(review_id=review_id)

    @rpc
    def ListAlerts(  # noqa: N802
        self, request: pb.ListAlertsRequest, context: grpc.ServicerContext
    ) -> pb.ListAlertsResponse:
        """See the contract."""
        limit = validation.check_limit(request.limit, "limit", default=validation.DEFAULT_ALERTS,
                                       maximum=validation.MAX_ALERTS)
        alerts = self.service.list_alerts(limit, actor=self.actor(context))
        return pb.ListAlertsResponse(alerts=[convert.alert(a) for a in alerts])
