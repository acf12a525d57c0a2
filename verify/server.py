"""``checkpoint-server``: the checkpoint's gRPC server on its embedded default (SQLite in the data dir).

gRPC on a thread pool, the standard health service (grpc.health.v1) and server reflection; on SIGTERM
or SIGINT the server stops taking calls, lets the calls in flight finish, and exits.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from checkpoint.v1 import checkpoint_pb2 as pb
from checkpoint.v1 import checkpoint_pb2_grpc as pb_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from biometrics.attempts import DEFAULT_WINDOW_S
from biometrics.audit import HeadNotHeld
from biometrics.datadir import DataDirLocked, DataDirUnusable
from biometrics.events import (
    ARRIVAL,
    DEFAULT_NATIONALITY_RETENTION_DAYS,
    DEFAULT_SERVICE_TARGET_MS,
    DIRECTIONS,
)
from biometrics.face import frame_quality, load_models
from biometrics.imaging import MAX_FINGERPRINT_PIXELS, MAX_FINGERPRINT_SAMPLE, ImageLimits
from biometrics.island import OfflinePolicy
from biometrics.keydir import KeyLocationError, default_key_dir_text
from biometrics.recording import parse_lanes
from biometrics.register import StoreRefused
from biometrics.scores import ScoreCalibration
from biometrics.service import CheckpointService, ServiceConfig, StoreLocation
from biometrics.storage import KeyRingMismatch, SchemaTooNew
from biometrics.workers import FaceWorkerPool
from verify.admission import DEFAULT_CALLS_PER_KIOSK, DEFAULT_WATCHES, REFUSAL_THREADS, Admission, check_limits
from verify.health import start_health_watch
from verify.metrics import add_metrics_arguments, check_metrics_listen, start_metrics
from verify.roles import RoleInterceptor
from verify.servicer import CheckpointServicer
from verify.tls import TLSConfigError, add_tls_arguments, is_loopback, server_credentials, tls_files

log = logging.getLogger("checkpoint.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Checkpoint"].full_name
MIB = 1024 * 1024
#: The --log-level choices (the logging module's levels).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def build_parser() -> argparse.ArgumentParser:
    """The server's command line."""
    p = argparse.ArgumentParser(prog="checkpoint-server", description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT (port 0: any free port)")
    p.add_argument("--data-dir", type=Path, default=Path("data"),
                   help="where the SQLite database lives (with --store: the station's audit journal)")
    p.add_argument("--store", metavar="URL",
                   help="a shared register of many stations: postgresql://USER@HOST:PORT/DB (default: SQLite in "
                   "DATA_DIR, one station)")
    p.add_argument("--replica", type=Path, metavar="DIR",
                   help="with --store: keep working when the link to the register drops (a local copy of the "
                   "register and an outbox in DIR/replica.db, synced when the link returns)")
    p.add_argument("--max-offline", type=float, default=24.0, metavar="HOURS",
                   help="with --replica: hours without the register after which enrolment pauses (default 24)")
    p.add_argument("--max-pending", type=int, default=1000,
                   help="with --replica: writes waiting for the register after which enrolment pauses (default 1000)")
    p.add_argument("--station", default="",
                   help="this checkpoint's name (rokot-airport, tuapejat-port...): on every decision and audit "
                   "record; required with --store")
    p.add_argument("--key-dir", type=Path,
                   help="where the key ring and the audit signing key live, never inside DATA_DIR (default "
                   f"$CHECKPOINT_KEY_DIR or $XDG_CONFIG_HOME/checkpoint/keys: here {default_key_dir_text()}); created "
                   "0700 on a first start")
    p.add_argument("--key-file", type=Path, help="key ring file (default KEY_DIR/keyring.json, created)")
    p.add_argument("--audit-anchor", type=Path,
                   help="where each signed audit head is exported, to prove later that the chain was not cut "
                   "(default KEY_DIR/audit-heads/<store id>.json; better: a mount off the station)")
    p.add_argument("--dev-keys-in-data-dir", action="store_true",
                   help="development only: accept keys inside DATA_DIR (a copy of DATA_DIR then opens every row)")
    p.add_argument("--fmr", type=float, default=0.001,
                   help="operating false-match rate; the threshold is the score -log10(FMR) (default 0.001)")
    p.add_argument("--fpir", type=float, default=0.01,
                   help="1:N searches (Identify, duplicates): largest share of searches of someone not enrolled "
                   "that may return a candidate; the threshold grows with the gallery (default 0.01)")
    p.add_argument("--fingerprint-calibration", type=Path, metavar="FILE",
                   help="this station's fingerprint score calibration, fitted on captures of its own scanner "
                   "(checkpoint-bench calibrate --modality fingerprint); default: the shipped one (FVC2002 DB1_B), "
                   "whose stated FMR was 0.3 to 5 times the measured one on other FVC2002 sensors")
    p.add_argument("--attempt-window", type=float, default=DEFAULT_WINDOW_S, metavar="SECONDS",
                   help="a kiosk's Verify call within this many seconds of the last one for the same document is a "
                   "call of the same transaction, which scores at most the attempts its first call allowed; "
                   f"after them the document is refused at kiosks for this long (default {DEFAULT_WINDOW_S:g})")
    p.add_argument("--threads", type=int, default=16,
                   help="calls answered at once (gRPC worker threads); one more is refused UNAVAILABLE (busy: try "
                   "again) at once, never queued")
    p.add_argument("--max-watches", type=int, default=DEFAULT_WATCHES,
                   help="grpc.health.v1 Watch streams open at once, each holding a thread (below --threads; default "
                   f"{DEFAULT_WATCHES}); one more is refused UNAVAILABLE")
    p.add_argument("--max-calls-per-kiosk", type=int, metavar="N",
                   help="calls of one kiosk certificate answered at once (1 to --threads - 1; default "
                   f"{DEFAULT_CALLS_PER_KIOSK}, or --threads - 1 if fewer: a kiosk serves one traveller at a time); "
                   "one more of that kiosk's is refused UNAVAILABLE at once, so that one kiosk never holds "
                   "every thread. Officers and auditors are not limited so")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="face extraction processes (default: one per core); 0: extract in the calling gRPC thread, "
                        "one call at a time (dlib's models are not safe on two threads at once)")
    p.add_argument("--extract-timeout", type=float, default=30.0,
                   help="longest one face extraction may run, seconds (its worker is then killed and replaced)")
    p.add_argument("--max-message-mb", type=float, default=16.0, help="largest request accepted, MiB")
    p.add_argument("--max-image-mb", type=float, default=8.0, help="largest image accepted, MB")
    p.add_argument("--max-megapixels", type=float, default=24.0, help="largest image accepted, megapixels")
    p.add_argument("--max-fingerprint-megapixels", type=float, default=MAX_FINGERPRINT_SAMPLE / 1e6,
                   help="largest fingerprint image extracted, megapixels (default "
                   f"{MAX_FINGERPRINT_SAMPLE / 1e6:g}: 800 x 800, a whole finger at 500 dpi; a scanner gives far "
                   "less); a larger one is refused INVALID_ARGUMENT before any extraction. At most "
                   f"{MAX_FINGERPRINT_PIXELS / 1e6:.1f} (2048 x 2048, the pipeline's largest image)")
    p.add_argument("--camera", help="camera: a device index, a stream URL or a video file")
    p.add_argument("--scanner", help="fingerprint scanner: a serial port[:BAUD], or emulator:DIR")
    p.add_argument("--grace", type=float, default=30.0, help="seconds in-flight calls get to finish on SIGTERM")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                   help=f"the log's threshold, one of {', '.join(LOG_LEVELS)} (any case; default INFO)")
    add_tls_arguments(p, side="server")
    p.add_argument("--plaintext", action="store_true",
                   help="no TLS, every caller an officer: development only, refused unless --listen is loopback")
    p.add_argument("--audit-checkpoint-every", type=int, default=100,
                   help="sign an audit checkpoint every N decisions (and at shutdown)")
    p.add_argument("--gallery", default="memory", metavar="memory|ray://HEAD:PORT|ray:HEAD:PORT",
                   help="where the face gallery is searched: memory (this process, default), or sharded over a Ray "
                   "cluster (ray://HEAD:PORT through Ray Client, ray:HEAD:PORT the head's GCS from a node of it); "
                   "the shards load from --store (see docs/scale.md)")
    p.add_argument("--shards", type=int, default=3, help="with --gallery ray...: shards (each on two nodes)")
    p.add_argument("--ray-insecure-network", action="store_true",
                   help="with --gallery ray... on a non-loopback head: accept a cluster without Ray's TLS "
                   "(RAY_USE_TLS=1): only on a dedicated, firewalled network that nothing else reaches; every node "
                   "holds the key ring (docs/security.md)")
    p.add_argument("--face-index", choices=("exact", "compact"), default="exact",
                   help="how faces are scanned: exact (float32) or compact (int8 codes, float32 re-rank; same "
                   "results, faster for one probe, more memory: docs/performance.md)")
    add_event_arguments(p)
    add_metrics_arguments(p)
    return p


def face_index_from(args: argparse.Namespace, location: StoreLocation) -> Any:
    """The face index (or its factory) of ``--gallery``, ``--face-index`` and ``--shards``; ValueError if wrong."""
    from biometrics.keydir import KEYRING_NAME
    from biometrics.shard_loader import face_index_for, ray_address

    if ray_address(args.gallery) is None:
        return face_index_for(args.gallery, kind=args.face_index)
    if args.replica is not None:
        raise ValueError("--gallery ray... and --replica: a sharded gallery needs the register, it cannot work "
                         "offline; use one or the other")
    key_file = location.key_file or location.resolved_key_dir() / KEYRING_NAME
    return face_index_for(args.gallery, kind=args.face_index, store_url=args.store, key_file=key_file,
                          shards=args.shards)


#: What Ray's own TLS needs in the environment of every process of the cluster (and of this station, its client).
RAY_TLS_FILES = ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")


def check_ray_gallery(gallery: str, *, insecure_network: bool = False,
                      environ: Any = os.environ) -> None:
    """Refuse (ValueError) a ``--gallery ray...`` whose head is not a loopback address while Ray's TLS is off.

    Ray has no authentication of its own: whoever reaches its ports runs code on a node, and every node holds the
    key ring. On another machine the cluster must use Ray's mutual TLS (``RAY_USE_TLS=1`` and the three
    ``RAY_TLS_*`` files, in this process's environment as in every node's), unless ``insecure_network`` says it
    runs on a dedicated, firewalled network."""
    from biometrics.shard_loader import ray_address

    address = ray_address(gallery)
    if address is None:
        return
    hostport = address.removeprefix("ray://")
    if is_loopback(hostport) or insecure_network:
        return
    if environ.get("RAY_USE_TLS", "0").strip().lower() not in ("1", "true"):
        raise ValueError(
            f"--gallery {gallery}: the Ray head is not on this machine and RAY_USE_TLS=1 is not set: Ray has no "
            "authentication, so anyone who reaches its ports runs code on a node and reads the key ring every node "
            "holds. Start every node and this server with RAY_USE_TLS=1 and RAY_TLS_SERVER_CERT, RAY_TLS_SERVER_KEY, "
            "RAY_TLS_CA_CERT (certificates of the station's CA), or, on a dedicated firewalled network that nothing "
            "else reaches, give --ray-insecure-network (docs/security.md, docs/scale.md)")
    missing = [name for name in RAY_TLS_FILES if not environ.get(name)]
    if missing:
        raise ValueError(f"--gallery {gallery}: RAY_USE_TLS=1 needs {', '.join(missing)} set too (the node's "
                         "certificate, its key and the CA that signed every node's: docs/scale.md)")


def add_event_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the decision events recorded for the transparency portal (biometrics.recording)."""
    g = p.add_argument_group("decision events (the transparency portal)")
    g.add_argument("--lane", action="append", default=[], metavar="KIOSK=DIRECTION",
                   help="the direction a kiosk's lane faces, arrival or departure (KIOSK: its certificate's subject "
                        "or common name); repeat per kiosk")
    g.add_argument("--default-direction", choices=DIRECTIONS, default=ARRIVAL,
                   help="the direction of a lane not named by --lane (default arrival)")
    g.add_argument("--service-target-ms", type=float, default=DEFAULT_SERVICE_TARGET_MS,
                   help="a decision processed within this many ms counts as within the service target "
                        f"(default {DEFAULT_SERVICE_TARGET_MS:g})")
    g.add_argument("--nationality-retention-days", type=int, default=DEFAULT_NATIONALITY_RETENTION_DAYS,
                   help="days the restricted nationality rows are kept before they are folded into the monthly "
                        f"aggregates and deleted (default {DEFAULT_NATIONALITY_RETENTION_DAYS})")
    g.add_argument("--no-events", action="store_true", help="record no decision events (benchmarks)")


def event_config(args: argparse.Namespace) -> dict[str, Any]:
    """ServiceConfig fields of the event options (ValueError naming a bad one)."""
    if args.service_target_ms <= 0:
        raise ValueError("--service-target-ms must be positive")
    if args.nationality_retention_days < 1:
        raise ValueError("--nationality-retention-days must be at least 1")
    return {"record_events": not args.no_events, "lanes": parse_lanes(args.lane),
            "default_direction": args.default_direction, "service_target_ms": args.service_target_ms,
            "nationality_retention_days": args.nationality_retention_days}


def server_credentials_for(args: argparse.Namespace) -> grpc.ServerCredentials | None:
    """Mutual-TLS credentials from the command line, or None for --plaintext (loopback only)."""
    files = tls_files(args, side="server")
    if files is not None:
        if args.plaintext:
            raise TLSConfigError("--plaintext and TLS files are exclusive")
        return server_credentials(files)
    if not args.plaintext:
        raise TLSConfigError("give --tls-dir DIR (or --cert, --key and --ca) for mutual TLS, or --plaintext "
                             "on a loopback address for development")
    if not is_loopback(args.listen):
        raise TLSConfigError(f"--plaintext is refused on {args.listen}: only on a loopback address "
                             "(127.0.0.0/8, ::1, localhost)")
    return None


def _configure_station(args: argparse.Namespace, pool: FaceWorkerPool | None) -> Any:
    """The station's devices as the flags name them, none opened or asked anything yet, or None; a flag that can
    never work raises ``DeviceSettingError`` (a ValueError naming it). The camera's frames are scored for a face
    in the face workers (dlib's detection holds the GIL: in this process it would stall every other call), in
    this process only with ``--workers 0``."""
    if not args.camera and not args.scanner:
        return None
    from devices.station import Station

    scorer = pool.frame_quality if pool is not None else frame_quality
    return Station.configured(camera=args.camera, scanner=args.scanner, frame_scorer=scorer)


def _start_face_workers(workers: int, limits: ImageLimits, call_timeout: float = 30.0) -> FaceWorkerPool | None:
    """The face extraction pool (None for 0 workers), warming up in the background: the port opens at once."""
    if workers == 0:
        log.info("face extraction in the gRPC threads (--workers 0)")
        return None
    start = time.perf_counter()
    pool = FaceWorkerPool(workers, limits, call_timeout=call_timeout)
    log.info("face extraction on %d worker processes", workers)

    def _report_ready() -> None:
        try:
            pool.warm_up(timeout=300)
        except Exception as exc:  # the calls will say it too; this only reports start-up
            log.warning("face workers did not warm up: %r", exc)
            return
        log.info("face workers ready: %d processes, models loaded in %.1f s", workers, time.perf_counter() - start)

    threading.Thread(target=_report_ready, name="face-warm-up", daemon=True).start()
    return pool


def build_server(
    service: CheckpointService, listen: str, *, station: Any = None, threads: int = 16, max_message_mb: float = 16,
    credentials: grpc.ServerCredentials | None = None, health_checks: Sequence[Callable[[], bool]] = (),
    health_stop: threading.Event | None = None, interceptors: Sequence[grpc.ServerInterceptor] = (),
    max_watches: int = DEFAULT_WATCHES, max_calls_per_kiosk: int | None = None,
    on_refused: Callable[[str], None] | None = None,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A started gRPC server with the checkpoint, health and reflection services; returns the bound port.

    With ``credentials`` the port is mutual TLS and each call's role comes from its client certificate;
    without, it is plaintext and every caller acts as an officer (see :mod:`verify.roles`). At most ``threads``
    calls run at once, ``max_watches`` of them Health Watch streams and ``max_calls_per_kiosk`` (None: the
    default) of them one kiosk certificate's; a call beyond is refused ``UNAVAILABLE`` at once, never
    queued (:mod:`verify.admission`), and ``on_refused`` is told its reason (the operator metrics' count).
    """
    limit = int(max_message_mb * MIB)
    admission = Admission(threads, max_watches, max_calls_per_kiosk, on_refused=on_refused)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads + REFUSAL_THREADS, thread_name_prefix="rpc"),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ],
        interceptors=[*interceptors, RoleInterceptor(plaintext=credentials is None, admission=admission)],
        maximum_concurrent_rpcs=threads + REFUSAL_THREADS,
    )
    pb_grpc.add_CheckpointServicer_to_server(CheckpointServicer(service, station), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    port = server.add_secure_port(listen, credentials) if credentials else server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    # SERVING only while every check holds (the service has loaded its gallery, the face workers are up); set
    # before the port opens, so that no Check sees the servicer's default SERVING.
    start_health_watch(health_servicer, ("", SERVICE_NAME), [service.ready, *health_checks],
                       health_stop or threading.Event())
    server.start()
    return server, port, health_servicer


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.umask(0o077)  # every file the server writes (databases, exported heads, keys) is its owner's alone
    limits = ImageLimits(max_bytes=int(args.max_image_mb * 1e6), max_pixels=int(args.max_megapixels * 1e6),
                         max_fingerprint_sample=int(args.max_fingerprint_megapixels * 1e6))
    try:
        if not 0 < limits.max_fingerprint_sample <= MAX_FINGERPRINT_PIXELS:
            raise ValueError(f"--max-fingerprint-megapixels must be above 0 and at most "
                             f"{MAX_FINGERPRINT_PIXELS / 1e6:.1f}, got {args.max_fingerprint_megapixels:g}")
        if not args.attempt_window > 0:
            raise ValueError(f"--attempt-window must be positive, got {args.attempt_window:g}")
        config = ServiceConfig(fmr=args.fmr, fpir=args.fpir, limits=limits, attempt_window_seconds=args.attempt_window,
                               **event_config(args))
    except ValueError as exc:
        print(f"checkpoint-server: {exc}", file=sys.stderr)
        return 2
    try:  # None: the shipped calibration
        fingerprint_calibration = (ScoreCalibration.load_checked(args.fingerprint_calibration, "fingerprint")
                                   if args.fingerprint_calibration else None)
        if fingerprint_calibration is not None:
            fingerprint_calibration.check_measures(args.fmr)
    except (OSError, ValueError) as exc:
        print(f"checkpoint-server: --fingerprint-calibration: {exc}", file=sys.stderr)
        return 2
    face_calibration = ScoreCalibration.for_modality("face")
    try:  # a threshold no face comparison can score: every Verify or Identify on a face alone would fail to match
        face_calibration.check_reaches(args.fmr)
    except ValueError as exc:
        print(f"checkpoint-server: --fmr {args.fmr:g}: {exc}. Choose an FMR of "
              f"{10.0 ** -face_calibration.ceiling:.2g} or more (docs/operations.md)", file=sys.stderr)
        return 2
    try:
        credentials = server_credentials_for(args)
    except TLSConfigError as exc:
        print(f"checkpoint-server: {exc}", file=sys.stderr)
        return 2
    if args.replica is not None and not args.store:
        print("checkpoint-server: --replica needs --store (it keeps a copy of a shared register)", file=sys.stderr)
        return 2
    if args.max_offline <= 0 or args.max_pending <= 0:
        print("checkpoint-server: --max-offline and --max-pending must be positive", file=sys.stderr)
        return 2
    if args.metrics_listen:
        try:
            check_metrics_listen(args.metrics_listen, allow_remote=args.metrics_allow_remote)
        except ValueError as exc:
            print(f"checkpoint-server: {exc}", file=sys.stderr)
            return 2
    if args.workers < 0:
        print("checkpoint-server: --workers cannot be negative", file=sys.stderr)
        return 2
    try:  # before the data directory: a cluster anyone on the network could run code on is refused
        check_ray_gallery(args.gallery, insecure_network=args.ray_insecure_network)
    except ValueError as exc:
        print(f"checkpoint-server: {exc}", file=sys.stderr)
        return 2
    try:
        check_limits(args.threads, args.max_watches, args.max_calls_per_kiosk)
    except ValueError as exc:
        print(f"checkpoint-server: {exc}", file=sys.stderr)
        return 2
    pool = _start_face_workers(args.workers, limits, args.extract_timeout)
    try:  # before the data directory: a device flag that can never work is refused with nothing opened
        station = _configure_station(args, pool)
    except ValueError as exc:
        print(f"checkpoint-server: {exc}", file=sys.stderr)
        if pool is not None:
            pool.close(wait=False)
        return 2
    if pool is None:
        load_models()  # extraction and the camera's frame scoring in this process
    location = StoreLocation(args.data_dir, key_dir=args.key_dir, key_file=args.key_file, anchor=args.audit_anchor,
                             dev_keys_in_data_dir=args.dev_keys_in_data_dir, store_url=args.store,
                             station=args.station, replica_dir=args.replica,
                             offline_policy=OfflinePolicy(args.max_offline * 3600.0, args.max_pending))
    service = metrics = None
    try:
        service = CheckpointService.open(location, config=config, extractor=pool,
                                         checkpoint_every=args.audit_checkpoint_every,
                                         face_index=face_index_from(args, location),
                                         face_calibration=face_calibration,
                                         fingerprint_calibration=fingerprint_calibration)
        service.start(background=True)  # the port opens now; NOT_SERVING until the gallery is loaded
        metrics = start_metrics(service, args.metrics_listen, pool=pool, allow_remote=args.metrics_allow_remote)
    except (DataDirLocked, DataDirUnusable, HeadNotHeld, KeyLocationError, KeyRingMismatch, SchemaTooNew,
            StoreRefused, ValueError, OSError) as exc:
        if service is not None:
            service.close()
        print(f"checkpoint-server: {exc}", file=sys.stderr)
        if station is not None:
            station.close()
        if pool is not None:
            pool.close(wait=False)
        return 2
    if station is not None:  # the devices are asked only now, with the data directory held: a second server
        station.log_devices()  # started on it by mistake is refused before it touches the first one's devices
    stop = threading.Event()
    signals: list[int] = []

    def _on_signal(signum: int, _frame: Any) -> None:
        # Only a list append: a handler that took a lock (Event.set, logging) could be interrupted by a second
        # signal whose handler waits for that lock in the same thread, and the server would never stop.
        signals.append(signum)

    signal.signal(signal.SIGTERM, _on_signal)  # before the port is announced: a signal then stops it gracefully
    signal.signal(signal.SIGINT, _on_signal)
    try:
        server, port, health_servicer = build_server(
            service, args.listen, station=station, threads=args.threads, max_message_mb=args.max_message_mb,
            credentials=credentials, health_checks=[pool.ready] if pool is not None else [], health_stop=stop,
            interceptors=metrics.interceptors if metrics is not None else (), max_watches=args.max_watches,
            max_calls_per_kiosk=args.max_calls_per_kiosk,
            on_refused=metrics.count_refusal if metrics is not None else None,
        )
    except RuntimeError as exc:  # grpc cannot bind --listen (in use, or not an address of this machine)
        print(f"checkpoint-server: --listen {args.listen}: {exc}", file=sys.stderr)
        stop.set()
        for part in (metrics, station, pool):
            if part is not None:
                part.close()
        service.close()
        return 2
    host = args.listen.rsplit(":", 1)[0]
    subjects, templates = service.gallery_size()
    print(f"checkpoint-server listening on {host}:{port} "
          f"({subjects} subjects, {templates} templates; threshold {service.threshold:.2f} at FMR {args.fmr}, "
          f"1:N {service.search_threshold():.2f} at FPIR {args.fpir})",
          flush=True)

    try:
        face_calibration.check_measures(args.fmr)
    except ValueError as exc:  # reachable, but on the tail extrapolated past the rarest impostor measured
        log.warning("the face calibration cannot state FMR %g: %s; a face's score at this threshold is extrapolated, "
                    "so the FMR of a decision on a face alone is not measured (docs/operations.md)", args.fmr, exc)
    if fingerprint_calibration is not None:
        log.info("fingerprint scores calibrated by %s: %s (%d impostor comparisons)", args.fingerprint_calibration,
                 fingerprint_calibration.source, fingerprint_calibration.n_impostor)
    else:
        try:
            ScoreCalibration.for_modality("fingerprint").check_measures(args.fmr)
        except ValueError as exc:  # a face-only station needs none; a finger's score at this FMR is extrapolated
            log.warning("the shipped fingerprint calibration cannot state FMR %g: %s; a Verify or Identify on "
                        "fingerprints alone (no face) sends the traveller to an officer until the station's own "
                        "is given (--fingerprint-calibration; docs/operations.md)", args.fmr, exc)

    while not signals:
        time.sleep(0.2)
    log.info("signal %d: stopping; in-flight calls get %.0f s", signals[0], args.grace)
    stop.set()
    health_servicer.enter_graceful_shutdown()
    server.stop(args.grace).wait()
    if metrics is not None:
        metrics.close()
    if station is not None:
        station.close()
    if pool is not None:
        pool.close()
    service.close()
    for signum in (signal.SIGTERM, signal.SIGINT):  # stopped: a late signal must not kill the exiting interpreter
        signal.signal(signum, signal.SIG_IGN)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
