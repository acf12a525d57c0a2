"""Mutual TLS with roles from client certificates, against a real server process on loopback."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from checkpoint.v1 import checkpoint_pb2_grpc as pb_grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from helpers import ServerProcess, face_sample

from verify import certs
from verify.roles import OTHER_METHODS, ROLE_URI_PREFIX, ROLES, SERVICE
from verify.tls import is_loopback

INFO = pb.SubjectInfo(name="Megawati Sukarnoputri", nationality="IDN", date_of_birth="1947-01-23")
PROBE = "Megawati_Sukarnoputri_0002.jpg"

# Each call with a request that is well-formed; what a permitted role gets back is checked separately.
CALLS = {
    "Enroll": pb.EnrollRequest(subject_id="Z9", info=INFO, samples=[face_sample("Hans_Blix_0001.jpg")]),
    "Verify": pb.VerifyRequest(subject_id="A1000001", samples=[face_sample(PROBE)]),
    "Identify": pb.IdentifyRequest(samples=[face_sample(PROBE)]),
    "GetSubject": pb.GetSubjectRequest(subject_id="A1000001"),
    "DeleteSubject": pb.DeleteSubjectRequest(subject_id="NOBODY"),
    "CaptureFace": pb.CaptureRequest(),
    "CaptureFingerprint": pb.CaptureRequest(),
    "ListDevices": pb.ListDevicesRequest(),
    "GetStatistics": pb.GetStatisticsRequest(),
    "ListAlerts": pb.ListAlertsRequest(),
    "ListReviews": pb.ListReviewsRequest(),
    "ResolveReview": pb.ResolveReviewRequest(review_id="nothing", resolution=pb.REJECT, reason="a test"),
    "RateDecision": pb.RateDecisionRequest(feedback_id="0" * 32, rating=3),  # unknown: NOT_FOUND where allowed
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    done = subprocess.run([sys.executable, "-m", "verify.certs", "init", str(root / "station")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    certs.init_station(root / "other", [], [], station="elsewhere")  # another authority
    return root


@pytest.fixture(scope="module")
def odd_certificates(pki: Path) -> Path:
    """Client certificates of the station's own authority that name no role, two roles, or an unknown role."""
    ca = certs.load_ca(pki / "station" / "ca")
    odd = pki / "odd"
    role = lambda name: x509.UniformResourceIdentifier(ROLE_URI_PREFIX + name)  # noqa: E731
    for what, sans in (("no-role", [x509.DNSName("no-role.local")]),
                       ("two-roles", [role("kiosk"), role("officer")]),
                       ("unknown-role", [role("admin")])):
        certs._issue(ca, odd / what, "client", certs._name(f"checkpoint-{what}", "kiosk"), sans,
                     ExtendedKeyUsageOID.CLIENT_AUTH, 30)
    return odd


@pytest.fixture(scope="module")
def server(pki: Path, tmp_path_factory: pytest.TempPathFactory):
    proc = ServerProcess(tmp_path_factory.mktemp("tls-data"), tls=pki / "station").start()
    assert proc.stub("officer").Enroll(pb.EnrollRequest(subject_id="A1000001", info=INFO,
                                                        samples=[face_sample("Megawati_Sukarnoputri_0001.jpg")]))
    yield proc
    proc.stop()


def _call(stub: pb_grpc.CheckpointStub, method: str) -> grpc.StatusCode:
    try:
        getattr(stub, method)(CALLS[method], timeout=30)
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()


def test_every_checkpoint_method_has_roles() -> None:
    assert set(ROLES) == set(SERVICE.methods_by_name) == set(CALLS)


def test_keys_are_private_and_certificates_carry_roles(pki: Path) -> None:
    station = pki / "station"
    for key in [station / "ca" / "ca.key", station / "server" / "server.key",
                *(station / r / "client.key" for r in ("kiosk", "officer", "auditor"))]:
        assert key.stat().st_mode & 0o777 == 0o600, key
    server_cert = x509.load_pem_x509_certificate((station / "server" / "server.pem").read_bytes())
    sans = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(a) for a in sans.get_values_for_type(x509.IPAddress)}
    kiosk = x509.load_pem_x509_certificate((station / "kiosk" / "client.pem").read_bytes())
    uris = kiosk.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == ["checkpoint-role:kiosk"]


@pytest.mark.server
@pytest.mark.parametrize("role", ["kiosk", "officer", "auditor"])
def test_each_role_may_call_exactly_its_methods(server: ServerProcess, role: str) -> None:
    stub = server.stub(role)
    for method in CALLS:
        if method == "Enroll" and role == "officer":
            continue  # would enrol; the officer's enrolment is the fixture's
        code = _call(stub, method)
        if role in ROLES[method]:
            assert code != grpc.StatusCode.PERMISSION_DENIED, (role, method)
            assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (role, method, code)


@pytest.mark.server
def test_refusal_names_the_role(server: ServerProcess) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        server.stub("kiosk").Enroll(CALLS["Enroll"], timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "kiosk" in refused.value.details() and "Enroll" in refused.value.details()
    kiosk = server.stub("kiosk").Verify(CALLS["Verify"], timeout=30)
    assert kiosk.decision == pb.PROCEED


def _audit_entries(data_dir: Path) -> list[dict]:
    """The audit chain as the running server stored it (the store's audit table, read only)."""
    with contextlib.closing(sqlite3.connect(f"file:{data_dir / 'checkpoint.db'}?mode=ro", uri=True)) as db:
        return [json.loads(entry) for (entry,) in db.execute("SELECT entry FROM audit ORDER BY seq")]


@pytest.mark.server
def test_the_audit_log_names_the_certificate(server: ServerProcess) -> None:
    decision = server.stub("kiosk").Verify(CALLS["Verify"], timeout=30).decision_id
    pem = (server.tls / "kiosk" / "client.pem").read_bytes()  # type: ignore[operator]
    fingerprint = x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex()
    entries = _audit_entries(server.data_dir)
    (entry,) = [e for e in entries if e.get("decision_id") == decision]
    assert entry["actor"]["role"] == "kiosk"
    assert entry["actor"]["fingerprint_sha256"] == fingerprint
    assert "CN=checkpoint-kiosk" in entry["actor"]["identity"]


def _stub_with(server: ServerProcess, ca: Path, cert: Path | None, key: Path | None) -> pb_grpc.CheckpointStub:
    creds = grpc.ssl_channel_credentials(ca.read_bytes(), key.read_bytes() if key else None,
                                         cert.read_bytes() if cert else None)
    return pb_grpc.CheckpointStub(grpc.secure_channel(server.target, creds))


@pytest.mark.server
def test_handshake_refuses_no_certificate_and_a_foreign_authority(server: ServerProcess, pki: Path) -> None:
    station, other = pki / "station", pki / "other"
    attempts = {
        "no client certificate": _stub_with(server, station / "ca" / "ca.pem", None, None),
        "client of another authority": _stub_with(server, station / "ca" / "ca.pem", other / "officer" / "client.pem",
                                                  other / "officer" / "client.key"),
        "server not trusted": _stub_with(server, other / "ca" / "ca.pem", station / "officer" / "client.pem",
                                         station / "officer" / "client.key"),
        "plaintext": pb_grpc.CheckpointStub(grpc.insecure_channel(server.target)),
    }
    for what, stub in attempts.items():
        assert _call(stub, "GetStatistics") == grpc.StatusCode.UNAVAILABLE, what


def _channel_with(server: ServerProcess, ca: Path, cert: Path, key: Path) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(ca.read_bytes(), key.read_bytes(), cert.read_bytes())
    return grpc.secure_channel(server.target, creds)


def _health(channel: grpc.Channel) -> grpc.StatusCode:
    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()


def _reflection(channel: grpc.Channel) -> tuple[grpc.StatusCode, set[str]]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    try:
        answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                            timeout=30)
        return grpc.StatusCode.OK, {s.name for a in answers for s in a.list_services_response.service}
    except grpc.RpcError as error:
        return error.code(), set()


@pytest.mark.server
@pytest.mark.parametrize("what", ["no-role", "two-roles", "unknown-role"])
def test_a_certificate_without_a_single_known_role_is_refused_everything(
        server: ServerProcess, pki: Path, odd_certificates: Path, what: str) -> None:
    d = odd_certificates / what
    channel = _channel_with(server, pki / "station" / "ca" / "ca.pem", d / "client.pem", d / "client.key")
    stub = pb_grpc.CheckpointStub(channel)
    for method in ("GetStatistics", "Verify", "ListDevices"):
        with pytest.raises(grpc.RpcError) as refused:
            getattr(stub, method)(CALLS[method], timeout=30)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
        assert "no single known role" in refused.value.details()
    assert _health(channel) == grpc.StatusCode.PERMISSION_DENIED  # the standard services too
    assert _reflection(channel)[0] == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.server
@pytest.mark.parametrize("role", ["kiosk", "officer", "auditor"])
def test_health_answers_every_role_check_and_monitors_watch(server: ServerProcess, role: str) -> None:
    channel = server.channel(role)
    assert _health(channel) == grpc.StatusCode.OK
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE.full_name),
                                                      timeout=30)
    if role == "kiosk":  # a Watch holds a server thread while it is open: for monitors, not for kiosks
        with pytest.raises(grpc.RpcError) as refused:
            next(watch)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        return
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING  # a streaming call, let through
    watch.cancel()


@pytest.mark.server
@pytest.mark.parametrize(("role", "allowed"), [("kiosk", False), ("officer", True), ("auditor", True)])
def test_reflection_is_for_officers_and_auditors(server: ServerProcess, role: str, allowed: bool) -> None:
    code, names = _reflection(server.channel(role))
    if allowed:
        assert code == grpc.StatusCode.OK
        assert SERVICE.full_name in names
        # every service the server offers is in the tables: nothing is served by omission
        listed = {m.split("/")[1] for m in OTHER_METHODS} | {SERVICE.full_name}
        assert names <= listed, names - listed
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.server
@pytest.mark.parametrize("method", ["/checkpoint.v1.Checkpoint/Nope", "/checkpoint.v1.Checkpoint/verify",
                                    "/no.such.Service/Method", "/grpc.health.v1.Health/List", "/"])
def test_a_method_not_listed_is_refused_to_every_role(server: ServerProcess, method: str) -> None:
    for role in ("kiosk", "officer", "auditor"):
        channel = server.channel(role)
        unary = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as refused:
            unary(b"", timeout=30)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, (role, method)
        assert "not offered to any role" in refused.value.details()
        streaming = channel.stream_stream(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as refused:
            list(streaming(iter([b"", b""]), timeout=30))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, (role, method)


@pytest.mark.server
def test_clients_take_tls_options(server: ServerProcess, pki: Path) -> None:
    from helpers import FACES

    base = [sys.executable, "-m", "verify.client", "--target", f"localhost:{server.port}"]
    ok = subprocess.run([*base, "--tls-dir", str(pki / "station" / "kiosk"), "verify", "A1000001",
                         str(FACES / PROBE)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("PROCEED: "), ok.stdout + ok.stderr
    assert len(ok.stdout.splitlines()) == 1 and "score" not in ok.stdout  # a kiosk sees the decision only
    d = pki / "station" / "auditor"
    refused = subprocess.run([*base, "--cert", str(d / "client.pem"), "--key", str(d / "client.key"), "--ca",
                              str(d / "ca.pem"), "verify", "A1000001", str(FACES / PROBE)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "PERMISSION_DENIED" in refused.stdout, refused.stdout + refused.stderr


@pytest.mark.server
@pytest.mark.parametrize("listen", ["0.0.0.0:0", "10.0.0.5:0", "[::]:0", "example.org:0"])
def test_plaintext_is_refused_off_loopback(listen: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "verify.server", "--listen", listen, "--data-dir", str(tmp_path),
                           "--plaintext"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "loopback" in done.stderr


@pytest.mark.server
def test_the_server_refuses_to_start_without_a_transport_choice(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "verify.server", "--listen", "127.0.0.1:0", "--data-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--tls-dir" in done.stderr and "--plaintext" in done.stderr


@pytest.mark.parametrize(("listen", "loopback"), [
    ("127.0.0.1:50051", True), ("127.8.9.10:1", True), ("localhost:50051", True), ("[::1]:50051", True),
    ("0.0.0.0:50051", False), ("[::]:1", False), ("192.168.1.2:50051", False), ("checkpoint.local:1", False),
])
def test_loopback_addresses(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback


def test_certificate_fingerprint_is_over_der(pki: Path) -> None:
    from verify.roles import actor_from_pem

    pem = (pki / "station" / "auditor" / "client.pem").read_bytes()
    actor = actor_from_pem(pem)
    cert = x509.load_pem_x509_certificate(pem)
    assert actor.role == "auditor"
    assert actor.extra["fingerprint_sha256"] == cert.fingerprint(hashes.SHA256()).hex()
