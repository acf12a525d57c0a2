"""Operator metrics: Prometheus ``/metrics`` on a port of its own, with nothing personal in it.

Two kinds of metrics, in one registry per server (never prometheus_client's global one):

- **gRPC**, recorded by :class:`MetricsInterceptor` around every method of every service the server runs
  (Checkpoint, health, reflection), unary and streaming alike, under the names and label names of
  go-grpc-prometheus (and py-grpc-prometheus): ``grpc_server_started_total``, ``grpc_server_handled_total``
  (with ``grpc_code``), ``grpc_server_msg_received_total``, ``grpc_server_msg_sent_total`` and the
  ``grpc_server_handling_seconds`` histogram, labelled ``grpc_type`` (``unary``, ``client_stream``,
  ``server_stream``, ``bidi_stream``), ``grpc_service``, ``grpc_method`` and, on the handled counter,
  ``grpc_code``. The code values are go-grpc-prometheus's (``OK``, ``InvalidArgument``, ``NotFound``...), so
  that the usual dashboards and alert rules (``grpc_code=~"Unknown|Internal|Unavailable|..."``) work as they
  are. A method name that the server does not offer (:func:`verify.roles.permitted_roles` lists none) is
  counted as ``grpc_service="unknown", grpc_method="unknown"``: a caller cannot grow the label set.
- **The service's own**, read from the service at scrape time by :class:`ServiceCollector`: decisions by
  outcome (``checkpoint_decisions_total``), the gallery's subjects and templates, whether the station is
  ready, the register link (seconds since the last sync, connected, audit records and outbox entries waiting),
  the face workers (how many, how many ready, restarts, samples queued) and, observed as they happen,
  ``checkpoint_face_extraction_seconds`` (see :class:`TimedExtractor`) and the calls refused at admission,
  ``checkpoint_admission_refused_total`` by ``reason`` (:meth:`OperatorMetrics.count_refusal`).

Every metric carries ``station`` (the server's ``--station``, ``""`` on a single station); the service's
own carry at most one more label, ``outcome`` or ``reason``, from a fixed vocabulary of words. No subject id, name,
pseudonym, nationality, score or decision id is ever a label or a value.

The endpoint (:meth:`OperatorMetrics.serve`) is plain HTTP on its own address, loopback unless the operator
allows another address explicitly (as ``--plaintext`` is refused off loopback): a Prometheus on the station
scrapes it, or a remote one through a tunnel or a reverse proxy with TLS.

The server wires it in three places (see :func:`add_metrics_arguments` and :func:`start_metrics`): the option,
the interceptor first in ``grpc.server``'s list (so that calls the role check refuses are counted too), and
:meth:`OperatorMetrics.close` at shutdown.
"""

from __future__ import annotations

import argparse
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server

from biometrics.errors import BiometricError
from verify.admission import REASONS as ADMISSION_REASONS
from verify.roles import permitted_roles
from verify.tls import is_loopback

if TYPE_CHECKING:
    import numpy as np

    from biometrics.face import FaceTemplate

log = logging.getLogger(__name__)

UNARY, CLIENT_STREAM, SERVER_STREAM, BIDI_STREAM = "unary", "client_stream", "server_stream", "bidi_stream"
UNKNOWN_METHOD = "unknown"

#: grpc.StatusCode -> the grpc_code label value go-grpc-prometheus writes (Go's codes.Code.String()).
GRPC_CODES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}

#: Handling time buckets, seconds: Prometheus's default buckets, then 30 s (the default extraction timeout)
#: and 60 s, since a face Verify runs for about a second and a call waits for the samples queued before it.
HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Face extraction buckets, seconds (one face takes 0.1-1 s on one core; queued behind others, longer).
EXTRACTION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

# A decision outcome becomes a label only if it is a short word of the service's vocabulary (verify_match,
# identify_miss...); anything else is counted as "other", so that a future outcome carrying an identifier
# could never reach the scrape.
_OUTCOME_WORD = re.compile(r"[a-z][a-z_]{0,39}")
OTHER_OUTCOME = "other"


class MetricsConfigError(ValueError):
    """The metrics address is malformed, or not loopback without the operator's explicit consent."""


def check_metrics_listen(listen: str, *, allow_remote: bool = False) -> tuple[str, int]:
    """``(host, port)`` of a ``HOST:PORT`` metrics address (``[::1]:9464`` for IPv6; port 0: any free port).

    Raises :class:`MetricsConfigError` with a message for the operator when the address is malformed, or not
    a loopback address and ``allow_remote`` is false.
    """
    host, sep, port_text = listen.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if (not sep or not host or (":" in host and not bracketed) or not port_text.isdigit()
            or int(port_text) > 65535):
        raise MetricsConfigError(f"--metrics-listen {listen!r} is not HOST:PORT (e.g. 127.0.0.1:9464, "
                                 "[::1]:9464)")
    if not allow_remote and not is_loopback(listen):
        raise MetricsConfigError(
            f"--metrics-listen is refused on {listen}: metrics are plain HTTP, only on a loopback address "
            "(127.0.0.0/8, ::1, localhost) unless --metrics-allow-remote is given")
    return host, int(port_text)


# -- gRPC ---------------------------------------------------------------------------------------------------

class GrpcMetrics:
    """The go-grpc-prometheus server metric families, in ``registry``, each with the ``station`` label."""

    def __init__(self, registry: CollectorRegistry, station: str) -> None:
        self.station = station
        names = ["station", "grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter("grpc_server_started_total", "Total number of RPCs started on the server.",
                               names, registry=registry)
        self.handled = Counter("grpc_server_handled_total",
                               "Total number of RPCs completed on the server, regardless of success or failure.",
                               [*names, "grpc_code"], registry=registry)
        self.received = Counter("grpc_server_msg_received_total",
                                "Total number of RPC stream messages received on the server.", names,
                                registry=registry)
        self.sent = Counter("grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.",
                            names, registry=registry)
        self.seconds = Histogram("grpc_server_handling_seconds",
                                 "Histogram of response latency (seconds) of gRPC that had been application-level "
                                 "handled by the server.", names, buckets=HANDLING_BUCKETS, registry=registry)


def split_method(full_method: str) -> tuple[str, str]:
    """``(service, method)`` of ``/package.Service/Method`` if the server offers it, else ``("unknown", "unknown")``.

    Only the methods :func:`verify.roles.permitted_roles` lists become labels: any other name a caller sends
    would otherwise add a time series per name.
    """
    parts = full_method.split("/")
    if len(parts) != 3 or parts[0] or not permitted_roles(full_method):
        return UNKNOWN_METHOD, UNKNOWN_METHOD
    return parts[1], parts[2]


def _kind(handler: grpc.RpcMethodHandler) -> str:
    if handler.unary_unary is not None:
        return UNARY
    if handler.stream_unary is not None:
        return CLIENT_STREAM
    if handler.unary_stream is not None:
        return SERVER_STREAM
    return BIDI_STREAM


class _Call:
    """One RPC's bookkeeping: started once, handled once (whichever of the ends is seen first)."""

    __slots__ = ("_done", "_lock", "labels", "metrics", "start")

    def __init__(self, metrics: GrpcMetrics, labels: tuple[str, str, str, str]) -> None:
        self.metrics = metrics
        self.labels = labels
        self._lock = threading.Lock()
        self._done = False
        metrics.started.labels(*labels).inc()
        self.start = time.perf_counter()

    def received(self) -> None:
        self.metrics.received.labels(*self.labels).inc()

    def sent(self) -> None:
        self.metrics.sent.labels(*self.labels).inc()

    def done(self, code: grpc.StatusCode | None, default: grpc.StatusCode) -> None:
        """Count the call handled with ``code`` (the handler's, when it set one) or ``default``."""
        with self._lock:
            if self._done:
                return
            self._done = True
        elapsed = time.perf_counter() - self.start
        self.metrics.handled.labels(*self.labels, GRPC_CODES.get(code or default, "Unknown")).inc()
        self.metrics.seconds.labels(*self.labels).observe(elapsed)


class MetricsInterceptor(grpc.ServerInterceptor):
    """Record the go-grpc-prometheus server metrics for every call, unary and streaming.

    Put it first in ``grpc.server(interceptors=[...])``: the interceptors after it (the role check) then run
    inside it, and a refused call is counted with its ``PermissionDenied``. The status is the one the call
    ends with: ``OK`` when the handler returns without setting a code; the code of ``context.abort`` or
    ``context.set_code``; ``Unknown`` for an exception the handler let escape (gRPC answers UNKNOWN);
    ``Canceled`` when the client went away before the handler finished.
    """

    def __init__(self, metrics: GrpcMetrics) -> None:
        self.metrics = metrics

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        """Wrap the handler the rest of the chain returns (None: gRPC answers UNIMPLEMENTED, uncounted)."""
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, method = split_method(handler_call_details.method or "")
        kind = _kind(handler)
        labels = (self.metrics.station, kind, service, method)
        kwargs = {"request_deserializer": handler.request_deserializer,
                  "response_serializer": handler.response_serializer}
        if kind == UNARY:
            return grpc.unary_unary_rpc_method_handler(self._unary(labels, handler.unary_unary), **kwargs)
        if kind == CLIENT_STREAM:
            return grpc.stream_unary_rpc_method_handler(self._unary(labels, handler.stream_unary), **kwargs)
        if kind == SERVER_STREAM:
            return grpc.unary_stream_rpc_method_handler(self._stream(labels, handler.unary_stream), **kwargs)
        return grpc.stream_stream_rpc_method_handler(self._stream(labels, handler.stream_stream), **kwargs)

    def _begin(self, labels: tuple[str, str, str, str], request: Any, context: grpc.ServicerContext) -> tuple[
            _Call, Any]:
        call = _Call(self.metrics, labels)
        # Fires when the RPC is over, whatever ended it: a client that cancelled is counted here (the ends
        # below have recorded every other outcome before gRPC sends the status).
        context.add_callback(lambda: call.done(context.code(), grpc.StatusCode.CANCELLED))
        if labels[1] in (UNARY, SERVER_STREAM):
            call.received()
            return call, request
        return call, self._count_requests(call, request)

    @staticmethod
    def _count_requests(call: _Call, requests: Iterator[Any]) -> Iterator[Any]:
        for request in requests:
            call.received()
            yield request

    def _unary(self, labels: tuple[str, str, str, str], behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            call, request = self._begin(labels, request, context)
            try:
                response = behaviour(request, context)
            except BaseException:
                call.done(context.code(), grpc.StatusCode.UNKNOWN)
                raise
            if context.code() in (None, grpc.StatusCode.OK):
                call.sent()
            call.done(context.code(), grpc.StatusCode.OK)
            return response

        return handle

    def _stream(self, labels: tuple[str, str, str, str], behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call, request = self._begin(labels, request, context)
            try:
                responses = behaviour(request, context)
            except BaseException:
                call.done(context.code(), grpc.StatusCode.UNKNOWN)
                raise
            return self._responses(call, context, responses)

        return handle

    @staticmethod
    def _responses(call: _Call, context: grpc.ServicerContext, responses: Iterable[Any]) -> Iterator[Any]:
        try:
            for response in responses:
                call.sent()  # handed to gRPC to write (it may see the client gone before it asks for the next)
                yield response
        except GeneratorExit:  # the server dropped the stream: the client cancelled
            call.done(None, grpc.StatusCode.CANCELLED)
            raise
        except BaseException:
            call.done(context.code(), grpc.StatusCode.UNKNOWN)
            raise
        call.done(context.code(), grpc.StatusCode.OK)


# -- the service --------------------------------------------------------------------------------------------

class TimedExtractor:
    """A face extractor that times each extraction into ``checkpoint_face_extraction_seconds``.

    Why here, and not from the interceptor or :class:`biometrics.statistics.TrafficStatistics`: a call's
    handling time mixes extraction with matching, storage and the audit write, and the statistics keep no
    extraction time at all; the extractor is the one place every face extraction of the service passes
    (Verify, Identify, Enroll, quality checks), whether it runs in the worker pool or in the calling thread.
    The time includes the wait for a free worker, which is what a traveller waits. ``outcome``: ``ok``,
    ``refused`` (the sample's fault: no face, not an image, too large) or ``failed`` (a worker lost or timed
    out, or any other fault). Fingerprint extraction runs inside the service and is not timed here.
    """

    def __init__(self, inner: Any, histogram: Histogram, station: str) -> None:
        self.inner = inner
        self._ok = histogram.labels(station, "ok")
        self._refused = histogram.labels(station, "refused")
        self._failed = histogram.labels(station, "failed")

    def extract_face(self, image: bytes | np.ndarray, purpose: str = "probe") -> FaceTemplate:
        """The inner extractor's template of ``image``, timed."""
        start = time.perf_counter()
        try:
            template = self.inner.extract_face(image, purpose)
        except BiometricError:
            self._refused.observe(time.perf_counter() - start)
            raise
        except BaseException:
            self._failed.observe(time.perf_counter() - start)
            raise
        self._ok.observe(time.perf_counter() - start)
        return template

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (a copy being built): never recurse
            raise AttributeError(name)
        return getattr(self.inner, name)


def outcome_label(outcome: str) -> str:
    """``outcome`` if it is a plain word of the service's vocabulary, else ``"other"``."""
    return outcome if _OUTCOME_WORD.fullmatch(outcome) else OTHER_OUTCOME


class ServiceCollector:
    """The service's state, read at each scrape: decisions, gallery, register link, face workers.

    A part that cannot be read (the register's journal away, say) is left out of that scrape and logged; the
    scrape itself never fails on it.
    """

    def __init__(self, service: Any, pool: Any = None) -> None:
        self.service = service
        self.pool = pool

    @property
    def station(self) -> str:
        return str(getattr(self.service, "station", "") or "")

    def collect(self) -> Iterator[Metric]:
        """The metric families of this scrape."""
        for part in (self._decisions, self._gallery, self._register, self._workers):
            try:
                families = list(part())
            except Exception:
                log.warning("metrics: %s could not be read for this scrape", part.__name__.strip("_"), exc_info=True)
                continue
            yield from families

    def _decisions(self) -> Iterator[Metric]:
        family = CounterMetricFamily("checkpoint_decisions", "Decisions since the server started, by outcome "
                                     "(verify_match, verify_match_referred, verify_no_match, identify_hit, "
                                     "identify_miss, enrolled...).",
                                     labels=["station", "outcome"])
        counts: dict[str, int] = {}
        for outcome, n in self.service.statistics.decisions().items():
            label = outcome_label(outcome)
            counts[label] = counts.get(label, 0) + n
        for label in sorted(counts):
            family.add_metric([self.station, label], counts[label])
        yield family

    def _gallery(self) -> Iterator[Metric]:
        subjects, templates = self.service.gallery_size()
        yield _gauge("checkpoint_gallery_subjects", "Subjects in the in-memory gallery.", self.station, subjects)
        yield _gauge("checkpoint_gallery_templates", "Templates (faces and fingers) in the in-memory gallery.",
                     self.station, templates)
        yield _gauge("checkpoint_ready", "1 once the gallery is loaded and the service answers, else 0.",
                     self.station, 1 if self.service.ready() else 0)

    def _register(self) -> Iterator[Metric]:
        status = self.service.sync_status()
        yield _gauge("checkpoint_register_applied_seq", "The register change the in-memory gallery reflects.",
                     self.station, status["applied_seq"])
        if status["seconds_since_sync"] is not None:
            yield _gauge("checkpoint_register_sync_lag_seconds",
                         "Seconds since the gallery was last known to be up to date with the register.",
                         self.station, status["seconds_since_sync"])
        if status["shared"]:
            yield _gauge("checkpoint_register_connected", "1 while the link to the shared register is up, else 0.",
                         self.station, 1 if status["register_connected"] else 0)
        yield _gauge("checkpoint_audit_pending", "Audit records in the station's journal not yet in the register.",
                     self.station, status["audit_pending"])
        yield _gauge("checkpoint_outbox_pending", "Writes made offline waiting for the register (island outbox).",
                     self.station, status["outbox_pending"])
        yield _gauge("checkpoint_outbox_failed", "Offline writes whose upload failed, set aside until the next start.",
                     self.station, status.get("outbox_failed", 0))
        yield _gauge("checkpoint_provisional_enrolments", "Enrolments made offline not yet confirmed by the register.",
                     self.station, status["provisional"])
        yield _gauge("checkpoint_erasures_in_wal", "Erasures whose rows may still be in a SQLite WAL: a reader blocked "
                     "its truncation, retried after each write.", self.station, status.get("erasures_in_wal", 0))

    def _workers(self) -> Iterator[Metric]:
        pool = self.pool
        if pool is None:
            return
        yield _gauge("checkpoint_face_workers", "Face extraction worker processes configured.", self.station,
                     pool.workers)
        yield _gauge("checkpoint_face_workers_ready", "1 while every face worker is up with its models, else 0.",
                     self.station, 1 if pool.ready() else 0)
        restarts = CounterMetricFamily("checkpoint_face_worker_restarts",
                                       "Face workers replaced after a death or a timeout.", labels=["station"])
        restarts.add_metric([self.station], pool.restarts)
        yield restarts
        queue_depth = getattr(pool, "queue_depth", None)
        if callable(queue_depth):
            yield _gauge("checkpoint_face_worker_queue_depth", "Face samples waiting for a free worker.",
                         self.station, queue_depth())


def _gauge(name: str, documentation: str, station: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["station"])
    family.add_metric([station], float(value))
    return family


# -- the endpoint -------------------------------------------------------------------------------------------

class OperatorMetrics:
    """The server's metrics: the gRPC interceptor, the service collector, and the HTTP endpoint.

    Building it wraps ``service.extractor`` in a :class:`TimedExtractor` (do it before the server takes calls).
    ``pool``: the face worker pool, when extraction runs in one (its workers and queue are reported).
    """

    def __init__(self, service: Any, *, pool: Any = None, process: bool = True) -> None:
        self.station = str(getattr(service, "station", "") or "")
        self.registry = CollectorRegistry()
        if process:
            ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes...
        self.grpc = GrpcMetrics(self.registry, self.station)
        self.interceptor = MetricsInterceptor(self.grpc)
        self.extraction_seconds = Histogram(
            "checkpoint_face_extraction_seconds",
            "Time to extract one face template, waiting for a free worker included, by outcome (ok, refused, "
            "failed).", ["station", "outcome"], buckets=EXTRACTION_BUCKETS, registry=self.registry)
        self.admission_refused = Counter(
            "checkpoint_admission_refused",
            "Calls refused UNAVAILABLE at admission, by reason: busy (every slot taken), kiosk_limit (the "
            "calling kiosk at --max-calls-per-kiosk), watch_limit (long-lived streams at --max-watches).",
            ["station", "reason"], registry=self.registry)
        for reason in ADMISSION_REASONS:  # every series from the start, at 0
            self.admission_refused.labels(self.station, reason)
        if not isinstance(service.extractor, TimedExtractor):
            service.extractor = TimedExtractor(service.extractor, self.extraction_seconds, self.station)
        self.registry.register(ServiceCollector(service, pool))  # type: ignore[arg-type]
        self._httpd: Any = None
        self._thread: threading.Thread | None = None

    def count_refusal(self, reason: str) -> None:
        """One call refused at admission for ``reason`` (``verify.admission.REASONS``): the server's
        :class:`verify.admission.Admission` calls it."""
        self.admission_refused.labels(self.station, reason).inc()

    @property
    def interceptors(self) -> list[grpc.ServerInterceptor]:
        """The interceptors to put first in ``grpc.server(interceptors=[...])``."""
        return [self.interceptor]

    def scrape(self) -> bytes:
        """What ``/metrics`` answers now (the Prometheus text format)."""
        return generate_latest(self.registry)

    def serve(self, listen: str, *, allow_remote: bool = False) -> int:
        """Serve ``/metrics`` over HTTP on ``listen`` (HOST:PORT) in a background thread; returns the bound port.

        Raises :class:`MetricsConfigError` for a malformed or (without ``allow_remote``) non-loopback address,
        and ``OSError`` naming ``--metrics-listen`` when the address cannot be bound.
        """
        if self._httpd is not None:
            raise RuntimeError("the metrics endpoint is already serving")
        host, port = check_metrics_listen(listen, allow_remote=allow_remote)
        try:
            self._httpd, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:  # taken, or not an address of this machine: say which option it came from
            raise OSError(f"--metrics-listen {listen}: {exc.strerror or exc}") from exc
        bound = int(self._httpd.server_port)
        log.info("metrics on http://%s/metrics", f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}")
        return bound

    @property
    def port(self) -> int:
        """The endpoint's port (0 when not serving)."""
        return int(self._httpd.server_port) if self._httpd is not None else 0

    def close(self) -> None:
        """Stop the HTTP endpoint (idempotent). The interceptor goes on counting while the server drains."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)


def add_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    """``--metrics-listen HOST:PORT`` and ``--metrics-allow-remote`` on the server's command line."""
    parser.add_argument("--metrics-listen", metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics (loopback only unless "
                        "--metrics-allow-remote; default: no metrics endpoint)")
    parser.add_argument("--metrics-allow-remote", action="store_true",
                        help="accept a --metrics-listen address that is not loopback (plain HTTP: put it behind a "
                        "firewall or a TLS proxy)")


def start_metrics(service: Any, listen: str | None, *, pool: Any = None,
                  allow_remote: bool = False) -> OperatorMetrics | None:
    """The server's metrics serving on ``listen``, or None when ``listen`` is None or empty.

    Call it once the service is open and before :func:`verify.server.build_server` (it wraps the service's
    extractor; pass :attr:`OperatorMetrics.interceptors` to the gRPC server). Raises
    :class:`MetricsConfigError` or ``OSError`` (the port is taken) with a message for the operator.
    """
    if not listen:
        return None
    metrics = OperatorMetrics(service, pool=pool)
    metrics.serve(listen, allow_remote=allow_remote)
    return metrics
