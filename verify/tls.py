"""Mutual TLS material: the server's credentials (client certificates required) and a client's channel.

A TLS directory, as ``checkpoint-certs init`` writes it, holds ``ca.pem`` (the station's authority) and
either ``server.pem``/``server.key`` (the server's) or ``client.pem``/``client.key`` (a client's, whose
role is in its certificate). ``--cert``/``--key``/``--ca`` name the three files one by one instead.
"""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


class TLSConfigError(Exception):
    """The TLS files are missing, unreadable or incomplete."""


@dataclass(frozen=True)
class TLSFiles:
    """A certificate, its private key and the authority that signs the peers."""

    cert: Path
    key: Path
    ca: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(certificate chain, private key, CA certificates) as PEM bytes."""
        out = []
        for what, path in (("certificate", self.cert), ("private key", self.key), ("CA certificate", self.ca)):
            try:
                out.append(path.read_bytes())
            except OSError as exc:
                raise TLSConfigError(f"cannot read the TLS {what} {path}: {exc.strerror}") from exc
        return out[0], out[1], out[2]


def add_tls_arguments(parser: argparse.ArgumentParser, *, side: str) -> None:
    """--tls-dir, or --cert --key --ca."""
    name = "server" if side == "server" else "client"
    parser.add_argument("--tls-dir", type=Path,
                        help=f"directory with ca.pem, {name}.pem and {name}.key (from checkpoint-certs init)")
    parser.add_argument("--cert", type=Path, help=f"the {name}'s certificate (PEM)")
    parser.add_argument("--key", type=Path, help=f"the {name}'s private key (PEM)")
    parser.add_argument("--ca", type=Path, help="the station's CA certificate (PEM)")


def tls_files(args: argparse.Namespace, *, side: str) -> TLSFiles | None:
    """The TLS files the command line names, or None when it names none."""
    name = "server" if side == "server" else "client"
    singles = (args.cert, args.key, args.ca)
    if args.tls_dir is None and not any(singles):
        return None
    if args.tls_dir is not None:
        d = args.tls_dir
        return TLSFiles(args.cert or d / f"{name}.pem", args.key or d / f"{name}.key", args.ca or d / "ca.pem")
    if not all(singles):
        raise TLSConfigError("--cert, --key and --ca go together (or use --tls-dir)")
    return TLSFiles(*singles)  # type: ignore[arg-type]


def server_credentials(files: TLSFiles) -> grpc.ServerCredentials:
    """Server credentials that present ``files.cert`` and require a client certificate signed by ``files.ca``."""
    cert, key, ca = files.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(files: TLSFiles) -> grpc.ChannelCredentials:
    """Client credentials: trust only ``files.ca``, present ``files.cert``."""
    cert, key, ca = files.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def is_loopback(listen: str) -> bool:
    """Is the host of HOST:PORT a loopback address (127.0.0.0/8, ::1, localhost)?"""
    host = listen.rsplit(":", 1)[0] if ":" in listen else listen
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
