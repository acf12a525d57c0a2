"""``checkpoint-portal``: the public transparency portal, and the auditors' view on its own mutual-TLS listener.

Usage::

    checkpoint-portal --store DATA_DIR_OR_POSTGRES_URL --listen 0.0.0.0:8080 [--state-dir DIR]
    checkpoint-portal --store postgresql://... --listen 0.0.0.0:8080 \\
        --auditor-listen 10.0.0.5:8443 --auditor-tls-dir /etc/checkpoint/tls/server

The public listener serves every page through disclosure control and has no auditor route at all. The
auditors' listener (optional) serves the same pages unsuppressed plus the staffing plan, over TLS that
requires a client certificate signed by the station's CA (``checkpoint-certs``: ``--auditor-tls-dir`` holds
``ca.pem``, ``server.pem`` and ``server.key``, as for ``checkpoint-server --tls-dir``), and admits only a
certificate whose role is ``auditor`` (the SAN URI ``checkpoint-role:auditor``, as :mod:`verify.roles`
reads it). Mutual TLS rather than a token: the auditors already hold role certificates from the station's
CA, the private key never crosses the wire, no shared secret can leak into a log, a browser history or a
proxy, and the trust model is the gRPC service's own.

Every monthly nationality release and every released day's and month's protected table is written to
``--state-dir`` (:mod:`portal.releases`, :mod:`portal.table_log`) and read back, so that a restart publishes
the same values; the portal does not start when that directory cannot be written.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from biometrics.events import DEFAULT_SERVICE_TARGET_MS
from portal.disclosure import ReleasePolicy
from portal.figures import PortalConfig
from portal.releases import ReleaseLog, StateDirError, default_state_dir


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``checkpoint-portal``."""
    p = argparse.ArgumentParser(prog="checkpoint-portal", description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True, help="PostgreSQL URL of the register, or a station's data directory")
    p.add_argument("--listen", type=host_port, default=("127.0.0.1", 8080), help="public HOST:PORT")
    p.add_argument("--auditor-listen", type=host_port, default=None, help="auditors' HOST:PORT (mutual TLS)")
    p.add_argument("--auditor-tls-dir", type=Path, default=None, help="ca.pem, server.pem, server.key")
    p.add_argument("--release-method", choices=("opendp", "round5"), default="opendp",
                   help="monthly arrivals by nationality: OpenDP Laplace with threshold, or rounding to 5")
    p.add_argument("--epsilon", type=float, default=1.0, help="privacy budget per month (opendp)")
    p.add_argument("--delta", type=float, default=1e-6, help="delta of the release threshold (opendp)")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="where every nationality release is kept, so that a restart draws no new noise "
                        "(default $XDG_STATE_HOME/checkpoint-portal or ~/.local/state/checkpoint-portal)")
    p.add_argument("--utc-offset", type=float, default=7.0,
                   help="local time minus UTC, hours: 7 (WIB), the time the store keys its months and days by")
    p.add_argument("--grace-hours", type=float, default=24.0,
                   help="after a local day's (or month's) end, how long late shipments may still arrive before it "
                        "is released for good (default 24)")
    p.add_argument("--tz-name", default="WIB (UTC+7)")
    p.add_argument("--service-target-ms", type=float, default=DEFAULT_SERVICE_TARGET_MS)
    p.add_argument("--handling-seconds", type=float, default=20.0,
                   help="staffing: handling time per traveller added to the processing time")
    p.add_argument("--target-wait-seconds", type=float, default=180.0, help="staffing: target p95 wait")
    p.add_argument("--banner", default="", help="a notice on every page (e.g. SYNTHETIC DATA on a demonstration)")
    p.add_argument("--log-level", default="warning")
    return p


def config_from(args: argparse.Namespace) -> PortalConfig:
    """The portal's settings from the command line (ValueError for a combination it refuses)."""
    if args.release_method == "round5" and not args.banner.strip():
        raise ValueError("--release-method round5 is for demonstrations only (beside the exact port figures, "
                         "rounding can pin a hidden port count to within a few travellers): give --banner too, "
                         "e.g. --banner 'SYNTHETIC DATA'")
    return PortalConfig(
        utc_offset_hours=args.utc_offset, tz_name=args.tz_name,
        release=ReleasePolicy(method=args.release_method, epsilon=args.epsilon, delta=args.delta),
        service_target_ms=args.service_target_ms, handling_s=args.handling_seconds,
        target_wait_s=args.target_wait_seconds, banner=args.banner, state_dir=args.state_dir or default_state_dir(),
        grace_hours=args.grace_hours)


def store_identity(store: str) -> str:
    """The store as the state directory records it: a resolved data directory, or the URL without password."""
    if "://" not in store:
        return str(Path(store).expanduser().resolve())
    parts = urlsplit(store)
    if parts.password is not None:
        host = parts.hostname or ""
        netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "password"]
    return urlunsplit(parts._replace(query=urlencode(query)))


def tls_protocol() -> type:
    """uvicorn's h11 protocol that hands the client certificate to the app (ASGI TLS extension)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class ClientCertH11Protocol(H11Protocol):
        """Puts the verified peer certificate into ``scope["extensions"]["tls"]["client_cert_chain"]``."""

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            pem = ssl.DER_cert_to_PEM_cert(der) if der else None
            inner = self.app

            async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
                extensions = scope.setdefault("extensions", {})
                extensions["tls"] = {"client_cert_chain": [pem] if pem else [], "tls_version": None}
                await inner(scope, receive, send)

            self.app = app

    return ClientCertH11Protocol


def servers(args: argparse.Namespace) -> list[Any]:
    """The uvicorn servers: the public one, and the auditors' one when asked for."""
    import uvicorn

    from biometrics.event_store import open_event_store
    from portal.app import create_app, warm_up
    from portal.release_timer import ReleaseTimer

    config = config_from(args)

    def opener() -> Any:
        return open_event_store(args.store, readonly=True, service_target_ms=args.service_target_ms)

    host, port = args.listen
    public_app = create_app(opener, config)
    threading.Thread(target=warm_up, args=(public_app,), name="portal-warm-up", daemon=True).start()
    # every period is built when it falls due (and the due ones now), not at its first request
    ReleaseTimer(public_app.state.portal.holder.figures, config.schedule).start()
    public = uvicorn.Server(uvicorn.Config(public_app, host=host, port=port, log_level=args.log_level, http="h11",
                                           lifespan="off"))
    out = [public]
    if args.auditor_listen:
        tls = args.auditor_tls_dir
        if tls is None:
            raise SystemExit("checkpoint-portal: --auditor-listen needs --auditor-tls-dir (ca.pem, server.pem, "
                             "server.key): the auditors' view is served over mutual TLS only")
        for name in ("ca.pem", "server.pem", "server.key"):
            if not (tls / name).exists():
                raise SystemExit(f"checkpoint-portal: {tls / name} is missing")
        a_host, a_port = args.auditor_listen
        out.append(uvicorn.Server(uvicorn.Config(
            create_app(opener, config, auditor=True), host=a_host, port=a_port, log_level=args.log_level,
            http=tls_protocol(), lifespan="off", ssl_certfile=str(tls / "server.pem"),
            ssl_keyfile=str(tls / "server.key"), ssl_ca_certs=str(tls / "ca.pem"), ssl_cert_reqs=ssl.CERT_REQUIRED)))
    return out


async def serve(all_servers: list[Any]) -> None:
    """Run the servers together until interrupted."""
    await asyncio.gather(*(s.serve() for s in all_servers))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``checkpoint-portal``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from(args)
    except ValueError as exc:
        print(f"checkpoint-portal: {exc}", file=sys.stderr)
        return 2
    if "://" in args.store:  # a malformed register URL stops the portal here, its password masked
        from biometrics.register import StoreRefused, check_url

        try:
            check_url(args.store)
        except StoreRefused as exc:
            print(f"checkpoint-portal: {exc}", file=sys.stderr)
            return 2
    try:  # the state directory must be writable (and this store's) before anything is served
        ReleaseLog(config.state_dir, store=store_identity(args.store))  # type: ignore[arg-type]
        all_servers = servers(args)
    except StateDirError as exc:
        print(f"checkpoint-portal: {exc}", file=sys.stderr)
        return 2
    host, port = args.listen
    print(f"checkpoint-portal: public site on http://{host}:{port}/ over {store_identity(args.store)}", flush=True)
    if args.auditor_listen:
        print(f"checkpoint-portal: auditors' view on https://{args.auditor_listen[0]}:{args.auditor_listen[1]}/ "
              "(mutual TLS, role auditor)", flush=True)
    asyncio.run(serve(all_servers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
