"""Mutual TLS with roles from client certificates, against a real server process on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from checkpoint.v1 import checkpoint_pb2_grpc as pb_grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from helpers import ServerProcess, face_sample

from verify import certs
from verify.roles import ROLES, SERVICE
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


def test_refusal_names_the_role(server: ServerProcess) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        server.stub("kiosk").Enroll(CALLS["Enroll"], timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "kiosk" in refused.value.details() and "Enroll" in refused.value.details()
    kiosk = server.stub("kiosk").Verify(CALLS["Verify"], timeout=30)
    assert kiosk.match


def test_the_audit_log_names_the_certificate(server: ServerProcess) -> None:
    decision = server.stub("kiosk").Verify(CALLS["Verify"], timeout=30).decision_id
    pem = (server.tls / "kiosk" / "client.pem").read_bytes()  # type: ignore[operator]
    fingerprint = x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex()
    entries = [json.loads(line) for line in (server.data_dir / "audit" / "audit.jsonl").read_text().splitlines()]
    (entry,) = [e for e in entries if e.get("decision_id") == decision]
    assert entry["actor"]["role"] == "kiosk"
    assert entry["actor"]["fingerprint_sha256"] == fingerprint
    assert "CN=checkpoint-kiosk" in entry["actor"]["identity"]


def _stub_with(server: ServerProcess, ca: Path, cert: Path | None, key: Path | None) -> pb_grpc.CheckpointStub:
    creds = grpc.ssl_channel_credentials(ca.read_bytes(), key.read_bytes() if key else None,
                                         cert.read_bytes() if cert else None)
    return pb_grpc.CheckpointStub(grpc.secure_channel(server.target, creds))


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


def test_a_certificate_without_a_role_is_refused(server: ServerProcess, pki: Path, tmp_path: Path) -> None:
    ca = certs.load_ca(pki / "station" / "ca")
    certs._issue(ca, tmp_path, "client", certs._name("no-role", "kiosk"), [x509.DNSName("no-role.local")],
                 ExtendedKeyUsageOID.CLIENT_AUTH, 30)
    stub = _stub_with(server, pki / "station" / "ca" / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key")
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetStatistics(pb.GetStatisticsRequest(), timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "role" in refused.value.details()


def test_clients_take_tls_options(server: ServerProcess, pki: Path) -> None:
    from helpers import FACES

    base = [sys.executable, "-m", "verify.client", "--target", f"localhost:{server.port}"]
    ok = subprocess.run([*base, "--tls-dir", str(pki / "station" / "kiosk"), "verify", "A1000001",
                         str(FACES / PROBE)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "MATCH" in ok.stdout, ok.stdout + ok.stderr
    d = pki / "station" / "auditor"
    refused = subprocess.run([*base, "--cert", str(d / "client.pem"), "--key", str(d / "client.key"), "--ca",
                              str(d / "ca.pem"), "verify", "A1000001", str(FACES / PROBE)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "PERMISSION_DENIED" in refused.stdout, refused.stdout + refused.stderr


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "10.0.0.5:0", "[::]:0", "example.org:0"])
def test_plaintext_is_refused_off_loopback(listen: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "verify.server", "--listen", listen, "--data-dir", str(tmp_path),
                           "--plaintext"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "loopback" in done.stderr


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
    assert len(cert.public_bytes(Encoding.DER)) > 100
