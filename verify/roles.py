"""Who may call what: the role from the client's certificate, checked in one place (a server interceptor).

A client certificate carries its role as a SAN URI ``checkpoint-role:<role>`` (``checkpoint-certs`` writes
it, and the same role as the subject's OU). The table :data:`ROLES` maps each Checkpoint method to the roles
allowed to call it; a method not in the table is refused to everyone. A plaintext server (loopback only,
``--plaintext``) treats every caller as an officer: development and demos.

The interceptor also parses each Checkpoint request itself, so that bytes that are not a valid message are
answered ``INVALID_ARGUMENT`` (grpc's own deserialiser would answer ``INTERNAL``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from typing import Any

import grpc
from checkpoint.v1 import checkpoint_pb2 as pb
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from google.protobuf.message import DecodeError

from biometrics.types import Actor

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


def actor_of(context: grpc.ServicerContext) -> Actor:
    """The caller of a call: from its TLS client certificate, or the plaintext officer.

    Raises :class:`NoRole` for a TLS peer whose certificate carries no role.
    """
    auth = context.auth_context() or {}
    pems = auth.get("x509_pem_cert")
    if pems:
        return actor_from_pem(bytes(pems[0]))
    if auth.get("transport_security_type") in (None, [], [b"insecure"]):
        return PLAINTEXT_ACTOR
    raise NoRole("The connection carries no client certificate.")


def allowed(method: str, role: str) -> bool:
    """May ``role`` call the Checkpoint ``method`` (its short name)?"""
    return role in ROLES.get(method, frozenset())


class RoleInterceptor(grpc.ServerInterceptor):
    """Refuse Checkpoint calls whose caller's role the table does not allow, and parse requests safely."""

    def __init__(self, *, plaintext: bool) -> None:
        self.plaintext = plaintext

    def _caller(self, context: grpc.ServicerContext) -> Actor:
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

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        """Wrap each Checkpoint unary handler with the role check and a safe request parser."""
        full = handler_call_details.method or ""
        handler = continuation(handler_call_details)
        if not full.startswith(SERVICE_PREFIX) or handler is None or handler.unary_unary is None:
            return handler
        method = full[len(SERVICE_PREFIX):]
        descriptor = SERVICE.methods_by_name.get(method)
        if descriptor is None:
            return handler
        request_class = _message_class(descriptor.input_type.full_name)
        behaviour = handler.unary_unary

        def checked(raw: bytes, context: grpc.ServicerContext) -> Any:
            actor = self._caller(context)
            if not allowed(method, actor.role):
                log.warning("refused %s to %s (%s)", method, actor.role, actor.identity)
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"The role {actor.role!r} may not call {method}; it is allowed to: "
                              f"{', '.join(sorted(ROLES.get(method, ())))}.")
            try:
                request = request_class.FromString(raw)
            except (DecodeError, ValueError, RuntimeError):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"The {method} request is not a valid {descriptor.input_type.name} message.")
            return behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            checked, request_deserializer=None, response_serializer=handler.response_serializer)


def _message_class(full_name: str) -> Any:
    return getattr(pb, full_name.rsplit(".", 1)[-1])
