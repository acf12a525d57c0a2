"""Who may call what: the caller's identity taken once, and every method denied unless listed.

A client certificate carries its role as a SAN URI ``checkpoint-role:<role>`` (``checkpoint-certs`` writes
it, and the same role as the subject's OU). :class:`RoleInterceptor` wraps every method of every service on
the server, unary and streaming alike: it derives the caller's :class:`~biometrics.types.Actor` from the
certificate once, refuses the call unless :func:`permitted_roles` lists the caller's role for it, and runs
the handler with the actor available through :func:`current_actor` (a context variable set only while the
handler's own code runs). A method the tables do not list is refused to every role, whether or not a
service implements it. A plaintext server (loopback only, ``--plaintext``) treats every caller as an
officer: development and demos.

The tables: :data:`ROLES` for the Checkpoint service (a kiosk verifies, identifies, captures and passes on the
traveller's rating; an officer also enrols, reads, erases, sees watchlist alerts and reviews offline enrolments; an
auditor reads statistics and device states, never personal data; docs/security.md lists them),
and :data:`OTHER_METHODS` for the standard services: health Check to every role
(a kiosk or a monitor checks that the server is up), health Watch to officers and auditors (a stream holds a
server thread while it is open: monitors, not kiosks), server reflection to officers and auditors (tools
such as grpcurl at the desk or in an audit; a kiosk runs one fixed client and needs no discovery).

The interceptor also parses each Checkpoint request itself, so that bytes that are not a valid message are
answered ``INVALID_ARGUMENT`` (grpc's own deserialiser would answer ``INTERNAL``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from checkpoint.v1 import checkpoint_pb2 as pb
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from google.protobuf.message import DecodeError

from biometrics.types import Actor
from verify.admission import Admission

log = logging.getLogger(__name__)

ROLE_URI_PREFIX = "checkpoint-role:"
KIOSK, OFFICER, AUDITOR = "kiosk", "officer", "auditor"
ALL_ROLES = (KIOSK, OFFICER, AUDITOR)
SERVICE = pb.DESCRIPTOR.services_by_name["Checkpoint"]
SERVICE_PREFIX = f"/{SERVICE.full_name}/"

#: Checkpoint method -> roles allowed to call it (auditors see no personal data).
ROLES: dict[str, frozenset[str]] = {
    "Verify": frozenset({KIOSK, OFFICER}),
    "Identify": frozenset({KIOSK, OFFICER}),
    "CaptureFace": frozenset({KIOSK, OFFICER}),
    "CaptureFingerprint": frozenset({KIOSK, OFFICER}),
    "ListDevices": frozenset({KIOSK, OFFICER, AUDITOR}),
    "Enroll": frozenset({OFFICER}),
    "GetSubject": frozenset({OFFICER}),
    "DeleteSubject": frozenset({OFFICER}),
    "GetStatistics": frozenset({OFFICER, AUDITOR}),
    "ListAlerts": frozenset({OFFICER}),
    "ListReviews": frozenset({OFFICER}),
    "ResolveReview": frozenset({OFFICER}),
    "RateDecision": frozenset({KIOSK, OFFICER}),
}

HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"

#: Methods of the other services the server runs (full names, as gRPC routes them) -> roles allowed.
OTHER_METHODS: dict[str, frozenset[str]] = {
    f"/{HEALTH_SERVICE}/Check": frozenset(ALL_ROLES),
    # A Watch stream holds a server thread while it is open: for monitors, not for the many kiosks.
    f"/{HEALTH_SERVICE}/Watch": frozenset({OFFICER, AUDITOR}),
    f"/{REFLECTION_SERVICE}/ServerReflectionInfo": frozenset({OFFICER, AUDITOR}),
}

PLAINTEXT_ACTOR = Actor(role=OFFICER, identity="plaintext")


class NoRole(Exception):
    """The client's certificate names no (single, known) role."""


@functools.lru_cache(maxsize=256)
def actor_from_pem(pem: bytes) -> Actor:
    """The actor a client certificate names: its role, subject and SHA-256 fingerprint."""
    cert = x509.load_pem_x509_certificate(pem)
    roles: set[str] = set()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        roles = {uri[len(ROLE_URI_PREFIX):] for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
                 if uri.startswith(ROLE_URI_PREFIX)}
    except x509.ExtensionNotFound:
        pass
    subject = cert.subject.rfc4514_string()
    if len(roles) != 1 or not roles <= set(ALL_ROLES):
        raise NoRole(f"The client certificate {subject!r} names no single known role "
                     f"(a SAN URI {ROLE_URI_PREFIX}kiosk, officer or auditor).")
    (role,) = roles
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return Actor(role=role, identity=subject, extra={
        "fingerprint_sha256": hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
        "serial": format(cert.serial_number, "x"),
        "common_name": str(names[0].value) if names else "",
    })


_CURRENT_ACTOR: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("checkpoint_actor", default=None)


class NoActor(RuntimeError):
    """A handler asked who is calling outside :class:`RoleInterceptor` (a wiring bug, never a client's fault)."""


def current_actor() -> Actor:
    """The caller of the call being handled, as :class:`RoleInterceptor` derived it from its certificate.

    Raises :class:`NoActor` outside a call the interceptor admitted: a handler never guesses an identity.
    """
    actor = _CURRENT_ACTOR.get()
    if actor is None:
        raise NoActor("No caller identity: the handler runs outside the role interceptor.")
    return actor


@contextlib.contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    """Make ``actor`` the :func:`current_actor` for the block (the interceptor, and tests of handlers)."""
    token = _CURRENT_ACTOR.set(actor)
    try:
        yield
    finally:
        _CURRENT_ACTOR.reset(token)


def permitted_roles(full_method: str) -> frozenset[str]:
    """The roles allowed to call ``full_method`` (``/package.Service/Method``); empty: refused to everyone."""
    if full_method.startswith(SERVICE_PREFIX):
        return ROLES.get(full_method[len(SERVICE_PREFIX):], frozenset())
    return OTHER_METHODS.get(full_method, frozenset())


def allowed(method: str, role: str) -> bool:
    """May ``role`` call the Checkpoint ``method`` (its short name) or the method of another service (its
    full name ``/package.Service/Method``)?"""
    full = method if method.startswith("/") else SERVICE_PREFIX + method
    return role in permitted_roles(full)


def _short(full_method: str) -> str:
    return full_method[len(SERVICE_PREFIX):] if full_method.startswith(SERVICE_PREFIX) else full_method


def _iterate_as(actor: Actor, responses: Iterator[Any], release: Callable[[], None]) -> Iterator[Any]:
    """The responses of a streaming handler, each produced with ``actor`` as the current actor; ``release`` (the
    call's admission slot) once they are exhausted, fail, or are dropped by gRPC (the generator is closed)."""
    try:
        iterator = iter(responses)
        while True:
            with acting_as(actor):
                try:
                    response = next(iterator)
                except StopIteration:
                    return
            yield response
    finally:
        release()


def _no_slot() -> None:
    """The release of a call admitted without an admission limit."""


class RoleInterceptor(grpc.ServerInterceptor):
    """Deny by default: admit a call only when its caller's role is listed for its method, and tell the
    handler who the caller is (:func:`current_actor`)."""

    def __init__(self, *, plaintext: bool, admission: Admission | None = None) -> None:
        self.plaintext = plaintext
        self.admission = admission

    def _caller(self, context: grpc.ServicerContext) -> Actor:
        """The caller's actor, from its client certificate (the one place certificates are read)."""
        if self.plaintext:
            return PLAINTEXT_ACTOR
        pems = (context.auth_context() or {}).get("x509_pem_cert")
        if not pems:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "A client certificate is required.")
        try:
            return actor_from_pem(bytes(pems[0]))
        except NoRole as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except ValueError:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "The client certificate could not be read.")
        raise AssertionError("unreachable")  # context.abort raises

    def _admit(self, full_method: str, context: grpc.ServicerContext) -> tuple[Actor, Callable[[], None]]:
        """The caller's actor, and the release of the call's admission slot, if its role may call
        ``full_method`` and the server has room for the call, and a kiosk for one more call of its own
        (:mod:`verify.admission`); otherwise the call is aborted. The handler calls the release when its thread
        is done with the call."""
        actor = self._caller(context)
        permitted = permitted_roles(full_method)
        if actor.role not in permitted:
            method = _short(full_method)
            log.warning("refused %s to %s (%s)", method, actor.role, actor.identity)
            if not permitted:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method} is not offered to any role.")
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"The role {actor.role!r} may not call {method} (allowed to: "
                          f"{', '.join(sorted(permitted))}).")
        if self.admission is None:
            return actor, _no_slot
        # Only kiosks are held to a share of the slots (verify.admission): the plaintext caller is an officer.
        return actor, self.admission.enter(full_method, context, kiosk=actor if actor.role == KIOSK else None)

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        """Wrap every handler, of every kind, with the role check and the caller's identity."""
        full = handler_call_details.method or ""
        if not permitted_roles(full):
            return self._refusal(full)
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # listed but not served here: gRPC answers UNIMPLEMENTED
        if full.startswith(SERVICE_PREFIX) and handler.unary_unary is not None:
            return self._checkpoint_unary(full, handler)
        return self._wrapped(full, handler)

    def _refusal(self, full: str) -> grpc.RpcMethodHandler:
        """A handler that refuses a method the tables do not list, whether or not a service implements it.

        Streaming on both sides, so that it answers whatever kind of call the client makes; the caller's
        certificate is still checked first, so a certificate without a role hears only that.
        """

        def refuse(_requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
            self._admit(full, context)  # aborts: no role is permitted
            raise AssertionError("unreachable")  # pragma: no cover

        return grpc.stream_stream_rpc_method_handler(refuse)

    def _checkpoint_unary(self, full: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """A Checkpoint call: the role check, then the request parsed here (bad bytes: INVALID_ARGUMENT)."""
        method = full[len(SERVICE_PREFIX):]
        descriptor = SERVICE.methods_by_name[method]
        request_class = _message_class(descriptor.input_type.full_name)
        behaviour = handler.unary_unary

        refusal = f"The {method} request is not a valid {descriptor.input_type.name} message."

        def checked(raw: bytes, context: grpc.ServicerContext) -> Any:
            actor, release = self._admit(full, context)
            try:
                request = _parse(raw, request_class.FromString, refusal, context)
                with acting_as(actor):
                    return behaviour(request, context)
            finally:
                release()

        return grpc.unary_unary_rpc_method_handler(
            checked, request_deserializer=None, response_serializer=handler.response_serializer)

    def _wrapped(self, full: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """Any other handler, unary or streaming, with its own (de)serialisers, behind the role check.

        A single request (Health Check and Watch) is parsed here, after the role check, with the handler's own
        deserialiser: bytes that are not a valid message are answered INVALID_ARGUMENT, as for the Checkpoint
        service (grpc's own deserialisation would answer INTERNAL). A request stream (reflection) is parsed by
        grpc.
        """
        deserialize = handler.request_deserializer
        kwargs = {"request_deserializer": deserialize, "response_serializer": handler.response_serializer}
        single = (handler.unary_unary is not None or handler.unary_stream is not None) and deserialize is not None
        if single:
            kwargs["request_deserializer"] = None
        refusal = f"The {_short(full)} request is not a valid message."

        def parse(request: Any, context: grpc.ServicerContext) -> Any:
            return _parse(request, deserialize, refusal, context) if single else request

        if handler.unary_unary is not None or handler.stream_unary is not None:
            unary_behaviour = handler.unary_unary or handler.stream_unary

            def unary_response(request: Any, context: grpc.ServicerContext) -> Any:
                actor, release = self._admit(full, context)
                try:
                    request = parse(request, context)
                    with acting_as(actor):
                        return unary_behaviour(request, context)
                finally:
                    release()

            make = (grpc.unary_unary_rpc_method_handler if handler.unary_unary is not None
                    else grpc.stream_unary_rpc_method_handler)
            return make(unary_response, **kwargs)
        stream_behaviour = handler.unary_stream or handler.stream_stream

        def stream_response(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            actor, release = self._admit(full, context)
            try:
                request = parse(request, context)
                with acting_as(actor):
                    responses = stream_behaviour(request, context)
            except BaseException:
                release()
                raise
            return _iterate_as(actor, responses, release)

        make = (grpc.unary_stream_rpc_method_handler if handler.unary_stream is not None
                else grpc.stream_stream_rpc_method_handler)
        return make(stream_response, **kwargs)


def _parse(raw: bytes, deserialize: Callable[[bytes], Any], refusal: str, context: grpc.ServicerContext) -> Any:
    """``raw`` deserialised, or the call aborted INVALID_ARGUMENT with ``refusal``."""
    try:
        return deserialize(raw)
    except (DecodeError, ValueError, RuntimeError):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, refusal)
    raise AssertionError("unreachable")  # context.abort raises


def _message_class(full_name: str) -> Any:
    return getattr(pb, full_name.rsplit(".", 1)[-1])
