"""``checkpoint-certs``: a station's own certificate authority, its server certificate and role certificates.

``checkpoint-certs init DIR --host checkpoint.local --ip 10.0.0.5`` writes::

    DIR/ca/ca.pem, ca.key            the authority (keep ca.key offline; it signs every certificate)
    DIR/server/ca.pem, server.pem, server.key      for checkpoint-server --tls-dir DIR/server
    DIR/kiosk/ca.pem, client.pem, client.key       for a kiosk:   checkpoint-verify --tls-dir DIR/kiosk
    DIR/officer/...  DIR/auditor/...               the same for an officer's desk and an auditor

``checkpoint-certs client DIR --role kiosk --name kiosk-02`` adds another client under ``DIR/kiosk-02``.
A client's role is a SAN URI ``checkpoint-role:<role>`` (and the subject's OU). The server certificate's
SANs are ``localhost``, ``127.0.0.1`` and ``::1`` plus every ``--host``/``--ip``. Keys are ECDSA P-256,
written with mode 0600.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from biometrics.datadir import atomic_write
from verify.roles import ALL_ROLES, ROLE_URI_PREFIX

ORGANISATION = "checkpoint-biometrics station"


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file readable by its owner only (0600), whole and durably (``datadir.atomic_write``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))


def make_ca(directory: Path, name: str, days: int = 3650) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new self-signed authority in ``directory`` (ca.pem, ca.key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(name, "authority")
    cert = (_builder(subject, subject, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    write_private(directory / "ca.key", _key_pem(key))
    (directory / "ca.pem").write_bytes(_cert_pem(cert))
    return cert, key


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The authority in ``directory``."""
    cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key")
    return cert, key


def _issue(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], out: Path, stem: str, subject: x509.Name,
           sans: list[x509.GeneralName], usage: x509.ObjectIdentifier, days: int) -> Path:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(subject, ca_cert.subject, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    out.mkdir(parents=True, exist_ok=True)
    write_private(out / f"{stem}.key", _key_pem(key))
    (out / f"{stem}.pem").write_bytes(_cert_pem(cert))
    (out / "ca.pem").write_bytes(_cert_pem(ca_cert))
    return out


def issue_server(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], out: Path, hosts: list[str],
                 ips: list[str], days: int = 825) -> Path:
    """server.pem/server.key in ``out``, valid for localhost, loopback and the given hosts and IPs."""
    names = list(dict.fromkeys(["localhost", *hosts]))
    addresses = list(dict.fromkeys(["127.0.0.1", "::1", *ips]))
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    return _issue(ca, out, "server", _name(names[-1] if hosts else "checkpoint-server", "server"), sans,
                  ExtendedKeyUsageOID.SERVER_AUTH, days)


def issue_client(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], out: Path, role: str, name: str,
                 days: int = 825) -> Path:
    """client.pem/client.key in ``out`` for a client called ``name`` acting as ``role``."""
    if role not in ALL_ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ALL_ROLES)}")
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(ROLE_URI_PREFIX + role)]
    return _issue(ca, out, "client", _name(name, role), sans, ExtendedKeyUsageOID.CLIENT_AUTH, days)


def init_station(directory: Path, hosts: list[str], ips: list[str], station: str = "checkpoint") -> None:
    """A new authority, a server certificate and one client certificate per role under ``directory``."""
    if (directory / "ca" / "ca.key").exists():
        raise FileExistsError(f"{directory / 'ca' / 'ca.key'} exists: the station already has an authority")
    ca = make_ca(directory / "ca", f"{station} CA")
    issue_server(ca, directory / "server", hosts, ips)
    for role in ALL_ROLES:
        issue_client(ca, directory / role, role, f"{station}-{role}")


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="checkpoint-certs", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser("init", help="new authority, server certificate and one client certificate per role")
    i.add_argument("dir", type=Path)
    i.add_argument("--host", action="append", default=[], help="DNS name of the server (repeatable)")
    i.add_argument("--ip", action="append", default=[], help="IP address of the server (repeatable)")
    i.add_argument("--station", default="checkpoint", help="station name used in the certificates' names")
    c = sub.add_parser("client", help="one more client certificate, signed by DIR/ca")
    c.add_argument("dir", type=Path)
    c.add_argument("--role", required=True, choices=ALL_ROLES)
    c.add_argument("--name", required=True, help="the client's name (its certificate's CN and output directory)")
    s = sub.add_parser("server", help="a new server certificate, signed by DIR/ca")
    s.add_argument("dir", type=Path)
    s.add_argument("--host", action="append", default=[])
    s.add_argument("--ip", action="append", default=[])
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "init":
            init_station(args.dir, args.host, args.ip, args.station)
            print(f"authority {args.dir / 'ca'}; server {args.dir / 'server'}; clients "
                  + ", ".join(str(args.dir / r) for r in ALL_ROLES))
        elif args.command == "client":
            out = issue_client(load_ca(args.dir / "ca"), args.dir / args.name, args.role, args.name)
            print(f"{args.role} certificate in {out}")
        else:
            out = issue_server(load_ca(args.dir / "ca"), args.dir / "server", args.host, args.ip)
            print(f"server certificate in {out}")
    except (OSError, ValueError) as exc:
        print(f"checkpoint-certs: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
