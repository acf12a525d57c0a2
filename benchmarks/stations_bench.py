"""Stations on one PostgreSQL register: propagation, simultaneous enrolments, SQLite vs PostgreSQL, restart, cold start.

Usage::

    checkpoint-bench stations --images ../shared/data/faces/lfw-dev/images --out results/stations
    checkpoint-bench stations ... --restart            # also restart PostgreSQL under mixed load (last)

Every phase runs real ``checkpoint-server`` processes (plaintext on 127.0.0.1, ``--workers 1``, each with its
own ``--data-dir``, one shared ``--key-dir``: all stations share one key ring) over gRPC, on a PostgreSQL
database created for the run (``checkpoint_bench_<run>``, dropped at the end) on ``--admin-url``'s server, with
real faces from ``--images`` (LFW layout; identities with two or more images give genuine pairs):

1. **propagation**: stations A, B, C; ``--enrolments`` subjects enrolled at A, one at a time; for each, the time
   from A's Enroll response until B and C each answer Verify of it (polled every ``--poll-ms``), and until
   their GetStatistics gallery count includes it; then the same for erasures (DeleteSubject at A, until
   Verify at B and C answers NOT_FOUND).
2. **race**: ``--race-trials`` trials of one person (two photos of one identity, screened to match) enrolled at
   A and at B at the same instant (two threads, a barrier) under two subject ids: exactly one must be enrolled.
3. **compare**: one SQLite station and one PostgreSQL station, the same gallery: enrolments/s and Verify
   latency (``--verify-calls`` calls from ``--verify-clients`` concurrent kiosks, alternating blocks).
4. **cold**: a register of ``--cold-subjects`` synthetic subjects sealed as in production (the service's key
   ring and row binding, written with COPY), then one station's start: to "listening" (the gallery is loaded
   before the port opens), to its first Verify, and its memory. Over the target, an in-process profile.
5. **restart** (only with ``--restart``: it disturbs everything else on that server): ``--restart-seconds`` of
   mixed load on three stations; in the middle ``--restart-command``. Every acknowledged enrolment and every
   error is recorded; afterwards every acknowledged enrolment must be in the register and in every station's
   memory, and marker enrolments after PostgreSQL's return measure how long the stations take to converge.

Writes ``report.json``, ``report.md`` and the servers' logs into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

COMMAND = "stations"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_IMAGES = Path("../shared/data/faces/lfw-dev/images")
PHASES = ("propagation", "race", "compare", "cold", "restart")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
TARGET_PROPAGATION_P95_MS = 500.0
TARGET_VERIFY_RATIO = 1.05
TARGET_COLD_START_S = 30.0
TARGET_CONVERGENCE_S = 5.0
MIB = 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``checkpoint-bench stations``."""
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                        help="folder of <identity>/<image> (LFW layout); identities with 2+ images give genuine pairs")
    parser.add_argument("--out", type=Path, default=Path("results/stations"), help="folder for report.json, report.md")
    parser.add_argument("--admin-url", default=ADMIN_URL,
                        help="a PostgreSQL server's maintenance database: the run creates (and drops) its own "
                        "databases checkpoint_bench_* there")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated subset of {','.join(PHASES)} (restart also needs --restart)")
    parser.add_argument("--enrolments", type=int, default=50, help="propagation: subjects enrolled at A")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="propagation: pause between two polls")
    parser.add_argument("--race-trials", type=int, default=50, help="race: trials")
    parser.add_argument("--race-min-score", type=float, default=4.0,
                        help="race: a pair's genuine score must reach this (screened in-process) so that the "
                        "race, not the matcher's false non-matches, decides each trial")
    parser.add_argument("--compare-subjects", type=int, default=30, help="compare: subjects in each gallery")
    parser.add_argument("--verify-calls", type=int, default=200, help="compare: Verify calls per station")
    parser.add_argument("--verify-clients", type=int, default=4, help="compare: concurrent kiosks")
    parser.add_argument("--cold-subjects", type=int, default=1_000_000, help="cold: synthetic subjects in the register")
    parser.add_argument("--cold-timeout", type=float, default=1800.0, help="cold: longest wait for the station")
    parser.add_argument("--no-profile", action="store_true", help="cold: no in-process profile even over the target")
    parser.add_argument("--restart", action="store_true",
                        help="run the restart phase: restarts the PostgreSQL server (disturbs its other users)")
    parser.add_argument("--restart-seconds", type=float, default=60.0, help="restart: length of the mixed load")
    parser.add_argument("--restart-command", default="pg_ctlcluster 15 main restart",
                        help="restart: the command run in the middle of the load")
    parser.add_argument("--restart-gallery", type=int, default=20, help="restart: subjects enrolled before the load")
    parser.add_argument("--enrol-interval", type=float, default=0.5,
                        help="restart: pause of each station's desk between two enrolments, seconds")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline of each call, seconds")
    parser.add_argument("--work-dir", type=Path, help="stations' data and key directories (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)


class StationsError(Exception):
    """The run cannot go on; the message says why."""


# ---------------------------------------------------------------------------------------------------------
# Statistics


def distribution(values: list[float]) -> dict[str, Any]:
    """n, p50, p95, max and mean of ``values`` (None when empty); percentiles interpolate linearly."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None, "mean": None}
    arr = np.asarray(values, dtype=float)
    return {"n": len(values), "p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
            "max": float(arr.max()), "mean": float(arr.mean())}


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, None when either is missing or b is 0."""
    return None if a is None or not b else a / b


# ---------------------------------------------------------------------------------------------------------
# Databases


def _admin(url: str) -> Any:
    import psycopg

    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise StationsError(f"PostgreSQL does not answer at {url}: {exc}".strip()) from None


def database_url(admin_url: str, name: str) -> str:
    """The URL of database ``name`` on the server of ``admin_url``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(admin_url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise StationsError(f"--admin-url must be a postgresql:// URL, not {admin_url!r}")
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def bench_database(admin_url: str, label: str) -> Iterator[str]:
    """A database ``checkpoint_bench_<label>_<pid>_<random>`` created for the run; dropped (with its connections)
    at the end."""
    from psycopg import sql

    name = f"checkpoint_bench_{label}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with _admin(admin_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(admin_url, name)
    finally:
        for _ in range(30):  # the server may be restarting (phase 5): wait for it
            try:
                with _admin(admin_url) as conn:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                break
            except StationsError:
                time.sleep(1)
        else:
            print(f"checkpoint-bench stations: could not drop database {name}; drop it by hand", file=sys.stderr)


def register_counts(url: str) -> tuple[int, int, int]:
    """(subjects, templates, last change seq) of the register, read directly (the truth the stations follow)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
        row = conn.execute("SELECT (SELECT COUNT(*) FROM subjects), (SELECT COUNT(*) FROM templates), "
                           "(SELECT COALESCE(MAX(seq), 0) FROM changes)").fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def server_version(admin_url: str) -> str:
    """The PostgreSQL server's version string."""
    with _admin(admin_url) as conn:
        return str(conn.execute("SHOW server_version").fetchone()[0])


# ---------------------------------------------------------------------------------------------------------
# Station servers


@dataclass
class Station:
    """One ``checkpoint-server`` process (plaintext on loopback, one face worker) with its own data directory."""

    name: str
    data_dir: Path
    key_dir: Path
    log_path: Path
    store_url: str | None = None  # None: SQLite in data_dir
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    popen_at: float = 0.0
    listening_at: float = 0.0
    ready_at: float = 0.0  # the station has loaded its gallery (GetStatistics: register.ready)
    _stub: Any = None
    _log: Any = None

    @property
    def target(self) -> str:
        """HOST:PORT of the server."""
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The server's command line."""
        cmd = [sys.executable, "-m", "verify.server", "--plaintext", "--listen", "127.0.0.1:0", "--workers", "1",
               "--data-dir", str(self.data_dir), "--key-dir", str(self.key_dir)]
        if self.store_url:
            cmd += ["--store", self.store_url, "--station", self.name]
        return cmd

    def launch(self) -> Station:
        """Start the process (see :meth:`wait_listening`)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.popen_at = time.monotonic()
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env)
        return self

    def wait_listening(self, timeout: float = 180.0) -> Station:
        """Read the output until the server says where it listens (it loads the register first)."""
        assert self.proc is not None and self.proc.stdout is not None
        result: dict[str, int] = {}

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self._log.write(line)
                self._log.flush()
                found = re.search(r"listening on [\d.]+:(\d+)", line)
                if found and "port" not in result:
                    self.listening_at = time.monotonic()
                    result["port"] = int(found.group(1))

        threading.Thread(target=read, name=f"log-{self.name}", daemon=True).start()
        deadline = time.monotonic() + timeout
        while "port" not in result:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise StationsError(f"station {self.name} did not start (see {self.log_path}):\n"
                                    + self.log_path.read_text()[-2000:])
            time.sleep(0.01)
        self.port = result["port"]
        # A station on a register opens its port at once and loads the gallery in the background.
        from checkpoint.v1 import checkpoint_pb2 as pb

        while True:
            try:
                if self.stub().GetStatistics(pb.GetStatisticsRequest(), timeout=5).register.ready:
                    break
            except Exception:  # not answering yet
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise StationsError(f"station {self.name} did not load its gallery (see {self.log_path})")
            time.sleep(0.02)
        self.ready_at = time.monotonic()
        return self

    def stub(self) -> Any:
        """A stub on this station's shared channel (thread-safe)."""
        if self._stub is None:
            self._stub = self.new_stub()
        return self._stub

    def new_stub(self) -> Any:
        """A stub on a new channel (one kiosk)."""
        import grpc
        from checkpoint.v1 import checkpoint_pb2_grpc as pb_grpc

        options = [("grpc.max_send_message_length", 16 * MIB), ("grpc.max_receive_message_length", 16 * MIB)]
        return pb_grpc.CheckpointStub(grpc.insecure_channel(self.target, options=options))

    def rss_mib(self) -> dict[str, float | None]:
        """Resident memory of the server process, its peak (VmHWM), and its face worker(s), MiB."""
        import psutil

        if self.proc is None:
            return {"server": None, "server_peak": None, "workers": None}
        try:
            process = psutil.Process(self.proc.pid)
            rss = process.memory_info().rss / MIB
            workers = sum(c.memory_info().rss for c in process.children(recursive=True)) / MIB
        except psutil.Error:
            return {"server": None, "server_peak": None, "workers": None}
        peak = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) / 1024
        return {"server": rss, "server_peak": peak, "workers": workers}

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            with contextlib.suppress(Exception):
                time.sleep(0.1)
                self._log.close()


class Stations:
    """The run's station processes: started together, stopped at the end whatever happens."""

    def __init__(self, work: Path, logs: Path) -> None:
        self.work = work
        self.logs = logs
        self.key_dir = work / "keys"
        self.all: list[Station] = []

    def start(self, names: list[str], store_url: str | None, *, warm_image: bytes, label: str = "",
              timeout: float = 180.0) -> list[Station]:
        """Start stations (together), wait until each listens and its face worker answers."""
        stations = []
        for name in names:
            tag = f"{label}-{name}" if label else name
            s = Station(name, self.work / f"data-{tag}-{uuid.uuid4().hex[:4]}", self.key_dir,
                        self.logs / f"{tag}.log", store_url)
            self.all.append(s)
            stations.append(s.launch())
        for s in stations:
            s.wait_listening(timeout)
        for s in stations:
            warm_up(s, warm_image)
        return stations

    def stop(self, stations: list[Station] | None = None) -> None:
        """Stop ``stations`` (default: every station still running)."""
        for s in list(stations if stations is not None else self.all):
            s.stop()


def prepare_keys(key_dir: Path) -> Any:
    """The shared key ring and audit signing key, created once before any station starts (no start-up race)."""
    from biometrics.audit import load_or_create_signing_key
    from biometrics.crypto import KeyRing
    from biometrics.keydir import KEYRING_NAME, prepare_key_dir

    prepare_key_dir(key_dir)
    load_or_create_signing_key(key_dir)
    return KeyRing.load_or_create(key_dir / KEYRING_NAME)


def face_sample(image: bytes) -> Any:
    """A FACE Sample message."""
    from checkpoint.v1 import checkpoint_pb2 as pb

    return pb.Sample(modality=pb.FACE, image=image)


def warm_up(station: Station, image: bytes, timeout: float = 300.0) -> None:
    """Call Verify of an unknown id until it answers NOT_FOUND (the face worker has loaded its models)."""
    import grpc
    from checkpoint.v1 import checkpoint_pb2 as pb

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            station.stub().Verify(pb.VerifyRequest(subject_id="WARMUP0000", samples=[face_sample(image)]),
                                  timeout=60)
            return
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return
            last = f"{exc.code().name}: {exc.details()}"
        time.sleep(0.2)
    raise StationsError(f"station {station.name} never answered Verify: {last}")


# ---------------------------------------------------------------------------------------------------------
# gRPC calls, timed


@dataclass
class Outcome:
    """One call: monotonic start and end, status code name, and for Enroll whether it enrolled."""

    start: float
    end: float
    code: str
    enrolled: bool = False
    details: str = ""
    duplicates: tuple[str, ...] = ()

    @property
    def ms(self) -> float:
        """Latency, ms."""
        return 1000 * (self.end - self.start)


def call(fn: Callable[[], Any]) -> tuple[Outcome, Any]:
    """Run one gRPC call, timed; (outcome, response or None)."""
    import grpc

    start = time.monotonic()
    try:
        response = fn()
    except grpc.RpcError as exc:
        return Outcome(start, time.monotonic(), exc.code().name, details=exc.details() or ""), None
    return Outcome(start, time.monotonic(), "OK"), response


def enroll(station: Station, subject_id: str, image: bytes, *, allow_duplicate: bool, timeout: float,
           stub: Any = None) -> Outcome:
    """Enroll one face at ``station``."""
    from checkpoint.v1 import checkpoint_pb2 as pb

    request = pb.EnrollRequest(
        subject_id=subject_id, info=pb.SubjectInfo(name=f"Bench {subject_id}", nationality="IDN",
                                                   date_of_birth="1980-01-01"),
        samples=[face_sample(image)], allow_duplicate=allow_duplicate,
        override_reason="checkpoint-bench stations: benchmark subjects, erased with the run's database"
        if allow_duplicate else "")
    outcome, response = call(lambda: (stub or station.stub()).Enroll(request, timeout=timeout))
    if response is not None:
        outcome.enrolled = bool(response.enrolled)
        outcome.duplicates = tuple(c.subject_id for c in response.possible_duplicates)
    return outcome


def verify(station: Station, subject_id: str, image: bytes, timeout: float, stub: Any = None) -> Outcome:
    """Verify one face against ``subject_id`` at ``station`` (OK: found, match or not)."""
    from checkpoint.v1 import checkpoint_pb2 as pb

    request = pb.VerifyRequest(subject_id=subject_id, samples=[face_sample(image)])
    return call(lambda: (stub or station.stub()).Verify(request, timeout=timeout))[0]


def delete(station: Station, subject_id: str, timeout: float) -> Outcome:
    """DeleteSubject at ``station``."""
    from checkpoint.v1 import checkpoint_pb2 as pb

    request = pb.DeleteSubjectRequest(subject_id=subject_id, reason="checkpoint-bench stations")
    return call(lambda: station.stub().DeleteSubject(request, timeout=timeout))[0]


def gallery(station: Station, timeout: float = 10.0) -> tuple[int, int]:
    """(subjects, templates) in the station's memory, from GetStatistics."""
    from checkpoint.v1 import checkpoint_pb2 as pb

    stats = station.stub().GetStatistics(pb.GetStatisticsRequest(), timeout=timeout)
    return int(stats.gallery_subjects), int(stats.gallery_templates)


def wait_for(predicate: Callable[[], Any], timeout: float, message: str, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it is truthy; StationsError naming ``message`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StationsError(f"{message}: not after {timeout:g} s (last {value!r})")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------------------
# Faces


@dataclass
class Identity:
    """One person of the image folder and the paths of their images."""

    name: str
    files: list[Path]

    def image(self, i: int) -> bytes:
        """Bytes of image ``i``."""
        return self.files[i].read_bytes()


def load_identities(images: Path, seed: int) -> tuple[list[Identity], list[Identity]]:
    """(identities with 2+ images, the others), each shuffled by ``seed``."""
    base = images / "images" if (images / "images").is_dir() else images
    if not base.is_dir():
        raise StationsError(f"--images {images} is not a folder")
    people = []
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            people.append(Identity(d.name, files))
    rng = random.Random(seed)
    multi = [p for p in people if len(p.files) >= 2]
    single = [p for p in people if len(p.files) == 1]
    rng.shuffle(multi)
    rng.shuffle(single)
    if not multi:
        raise StationsError(f"no identity with two or more images under {images} (LFW layout: <identity>/<image>)")
    return multi, single


class IdentityPool:
    """Hands out identities with 2+ images, each at most once while there are fresh ones, then again in order."""

    def __init__(self, identities: list[Identity]) -> None:
        self.identities = identities
        self.next = 0

    def take(self) -> Identity:
        """The next identity."""
        person = self.identities[self.next % len(self.identities)]
        self.next += 1
        return person

    @property
    def reused(self) -> bool:
        """Whether any identity was handed out twice."""
        return self.next > len(self.identities)


# ---------------------------------------------------------------------------------------------------------
# Phase 1: propagation


def poll_visible(station: Station, subject_id: str, probe: bytes, t0: float, want_found: bool, poll_s: float,
                 deadline_s: float, timeout: float) -> dict[str, Any]:
    """Poll Verify of ``subject_id`` at ``station`` until it is found (or, for an erasure, NOT_FOUND).

    Returns ms from ``t0`` to the response that showed it (``ms``; an upper bound: it includes that call's face
    extraction), to the last response that did not (``before_ms``; a lower bound), and the polls' codes.
    """
    stub = station.new_stub()
    codes: Counter[str] = Counter()
    before = 0.0
    while True:
        outcome = verify(station, subject_id, probe, timeout, stub=stub)
        codes[outcome.code] += 1
        found = outcome.code != "NOT_FOUND"
        if outcome.code in ("OK", "NOT_FOUND") and found == want_found:
            return {"ms": 1000 * (outcome.end - t0), "before_ms": 1000 * max(0.0, before - t0),
                    "polls": sum(codes.values()), "codes": dict(codes), "verify_ms": outcome.ms}
        before = outcome.end
        if outcome.end - t0 > deadline_s:
            return {"ms": None, "before_ms": 1000 * (before - t0), "polls": sum(codes.values()),
                    "codes": dict(codes), "verify_ms": outcome.ms}
        time.sleep(poll_s)


def poll_gallery(station: Station, expected: int, t0: float, poll_s: float, deadline_s: float) -> float | None:
    """ms from ``t0`` until the station's in-memory gallery holds ``expected`` subjects (GetStatistics)."""
    while True:
        subjects, _ = gallery(station)
        now = time.monotonic()
        if subjects == expected:
            return 1000 * (now - t0)
        if now - t0 > deadline_s:
            return None
        time.sleep(poll_s)


def propagate(a: Station, followers: list[Station], subject_id: str, probe: bytes, expected: int,
              write: Callable[[], Outcome], want_found: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One change at A, then its arrival at each follower: Verify-visible and gallery-count times."""
    outcome = write()
    t0 = outcome.end
    result: dict[str, Any] = {"subject_id": subject_id, "write_ms": outcome.ms, "write_code": outcome.code,
                              "enrolled": outcome.enrolled}
    if outcome.code != "OK":
        return result
    poll_s = args.poll_ms / 1000
    found: dict[str, Any] = {}

    def watch(s: Station) -> None:
        found[s.name] = poll_visible(s, subject_id, probe, t0, want_found, poll_s, 30.0, args.timeout)

    def count(s: Station) -> None:
        found[f"{s.name}:memory_ms"] = poll_gallery(s, expected, t0, poll_s, 30.0)

    threads = [threading.Thread(target=f, args=(s,)) for s in followers for f in (watch, count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result["stations"] = {s.name: {**found[s.name], "memory_ms": found[f"{s.name}:memory_ms"]} for s in followers}
    return result


def summarise_propagation(records: list[dict[str, Any]], followers: list[str]) -> dict[str, Any]:
    """Per follower and over all: Verify-visible ms (p50/p95/max), its lower bound, and the memory-count ms."""
    out: dict[str, Any] = {"changes": len(records),
                           "write_failures": [r for r in records if r["write_code"] != "OK"]}
    every: list[float] = []
    for name in followers:
        rows = [r["stations"][name] for r in records if "stations" in r]
        visible = [x["ms"] for x in rows if x["ms"] is not None]
        every += visible
        out[name] = {"verify_visible_ms": distribution(visible),
                     "not_yet_visible_ms": distribution([x["before_ms"] for x in rows]),
                     "memory_ms": distribution([x["memory_ms"] for x in rows if x["memory_ms"] is not None]),
                     "verify_call_ms": distribution([x["verify_ms"] for x in rows]),
                     "never_seen": sum(1 for x in rows if x["ms"] is None),
                     "poll_codes": dict(sum((Counter(x["codes"]) for x in rows), Counter()))}
    out["all"] = distribution(every)
    out["p95_target_ms"] = TARGET_PROPAGATION_P95_MS
    out["p95_met"] = out["all"]["p95"] is not None and out["all"]["p95"] <= TARGET_PROPAGATION_P95_MS
    return out


def phase_propagation(a: Station, b: Station, c: Station, pool: IdentityPool, run_id: str,
                      args: argparse.Namespace) -> dict[str, Any]:
    """Phase 1: enrolments then erasures at A, watched at B and C."""
    base = gallery(a)[0]
    enrolled: list[tuple[str, bytes]] = []
    enrolments: list[dict[str, Any]] = []
    refused: list[str] = []
    attempts = 0
    while len(enrolled) < args.enrolments and attempts < 3 * args.enrolments:
        attempts += 1
        person = pool.take()
        sid = f"PROP{run_id}{len(enrolled):04d}"
        reference, probe = person.image(0), person.image(1)
        record = propagate(a, [b, c], sid, probe, base + len(enrolled) + 1,
                           lambda sid=sid, reference=reference: enroll(
                               a, sid, reference, allow_duplicate=True, timeout=args.timeout),
                           True, args)
        if record["write_code"] != "OK" or not record["enrolled"]:
            refused.append(f"{person.name}: {record['write_code']}")  # e.g. a photo enrolment refuses
            continue
        enrolments.append(record)
        enrolled.append((sid, probe))
        print(f"  propagation: enrolment {len(enrolled)}/{args.enrolments}", file=sys.stderr, end="\r")
    erasures = []
    for i, (sid, probe) in enumerate(enrolled):
        erasures.append(propagate(a, [b, c], sid, probe, base + len(enrolled) - i - 1,
                                  lambda sid=sid: delete(a, sid, args.timeout), False, args))
        print(f"  propagation: erasure {i + 1}/{len(enrolled)}      ", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    names = [b.name, c.name]
    return {"enrolment": summarise_propagation(enrolments, names), "erasure": summarise_propagation(erasures, names),
            "refused_enrolment_images": refused, "poll_ms": args.poll_ms,
            "detail": {"enrolments": enrolments, "erasures": erasures}}


# ---------------------------------------------------------------------------------------------------------
# Phase 2: race


def screen_pairs(pool: IdentityPool, wanted: int, min_score: float, limit: int) -> tuple[list[tuple[Identity, int, int,
                                                                                                    float]], dict]:
    """Identities whose two photos both enrol and match each other at ``min_score`` or more (extracted here, by the
    production pipeline); (identity, image i, image j, score) for up to ``wanted`` of them."""
    from biometrics.errors import BiometricError
    from biometrics.face import face_template_of
    from biometrics.scores import ScoreCalibration

    calibration = ScoreCalibration.for_modality("face")
    pairs: list[tuple[Identity, int, int, float]] = []
    tried = weak = refused = 0
    while len(pairs) < wanted and tried < limit:
        person = pool.take()
        tried += 1
        try:
            first = face_template_of(person.image(0), "enrol").template
            second = face_template_of(person.image(1), "enrol").template
        except BiometricError:
            refused += 1
            continue
        score = float(calibration.score(float(np.linalg.norm(first - second))))
        if score >= min_score:
            pairs.append((person, 0, 1, score))
        else:
            weak += 1
    return pairs, {"identities_tried": tried, "pairs_kept": len(pairs), "below_min_score": weak,
                   "photo_refused_at_enrolment": refused, "min_score": min_score}


def phase_race(a: Station, b: Station, pool: IdentityPool, run_id: str, args: argparse.Namespace) -> dict[str, Any]:
    """Phase 2: one person enrolled at A and at B at the same instant, ``--race-trials`` times."""
    pairs, screening = screen_pairs(pool, args.race_trials, args.race_min_score, limit=4 * args.race_trials + 20)
    if not pairs:
        raise StationsError(f"race: no identity with two photos scoring {args.race_min_score} or more")
    base = gallery(a)[0]
    trials = []
    for trial in range(args.race_trials):
        person, i, j, score = pairs[trial % len(pairs)]
        ids = (f"RACE{run_id}{trial:03d}A", f"RACE{run_id}{trial:03d}B")
        images = (person.image(i), person.image(j))
        barrier = threading.Barrier(2)
        outcomes: dict[str, Outcome] = {}

        def desk(station: Station, sid: str, image: bytes, stub: Any, barrier: threading.Barrier,
                 outcomes: dict[str, Outcome]) -> None:
            barrier.wait()
            outcomes[sid] = enroll(station, sid, image, allow_duplicate=False, timeout=args.timeout, stub=stub)

        stubs = (a.new_stub(), b.new_stub())
        threads = [threading.Thread(target=desk, args=(s, sid, image, stub, barrier, outcomes))
                   for s, sid, image, stub in zip((a, b), ids, images, stubs, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        oa, ob = outcomes[ids[0]], outcomes[ids[1]]
        winners = [sid for sid in ids if outcomes[sid].enrolled]
        row = {"trial": trial, "identity": person.name, "pair_score": score,
               "codes": [oa.code, ob.code], "enrolled": [oa.enrolled, ob.enrolled], "winner": winners,
               "overlap": max(oa.start, ob.start) < min(oa.end, ob.end),
               "start_gap_ms": 1000 * abs(oa.start - ob.start), "ms": [oa.ms, ob.ms],
               "loser_named_winner": len(winners) == 1 and winners[0] in
               (ob.duplicates if winners[0] == ids[0] else oa.duplicates)}
        trials.append(row)
        for sid in winners:  # the next trial starts from the same gallery
            delete(a if sid == ids[0] else b, sid, args.timeout)
        for s in (a, b):
            wait_for(lambda s=s: gallery(s)[0] == base, 30, f"race: {s.name} back to {base} subjects")
        print(f"  race: trial {trial + 1}/{args.race_trials}", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    exactly_one = sum(1 for t in trials if len(t["winner"]) == 1 and "OK" == t["codes"][0] == t["codes"][1])
    return {"trials": len(trials), "exactly_one_enrolled": exactly_one,
            "both_enrolled": sum(1 for t in trials if len(t["winner"]) == 2),
            "neither_enrolled": sum(1 for t in trials if not t["winner"]),
            "errors": sum(1 for t in trials if t["codes"] != ["OK", "OK"]),
            "calls_overlapped": sum(1 for t in trials if t["overlap"]),
            "start_gap_ms": distribution([t["start_gap_ms"] for t in trials]),
            "enrol_ms": distribution([ms for t in trials for ms in t["ms"]]),
            "wins": dict(Counter("A" if w.endswith("A") else "B" for t in trials for w in t["winner"])),
            "loser_named_winner": sum(1 for t in trials if t["loser_named_winner"]),
            "distinct_identities": len({t["identity"] for t in trials}),
            "screening": screening, "detail": trials}


# ---------------------------------------------------------------------------------------------------------
# Phase 3: SQLite vs PostgreSQL


def verify_block(station: Station, probes: list[tuple[str, bytes]], calls: int, clients: int, seed: int,
                 timeout: float) -> list[Outcome]:
    """``calls`` Verify calls of random genuine probes from ``clients`` concurrent kiosks."""
    out: list[Outcome] = []
    lock = threading.Lock()
    left = [calls]

    def kiosk(index: int) -> None:
        stub = station.new_stub()
        rng = random.Random(seed * 100 + index)
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            sid, image = rng.choice(probes)
            outcome = verify(station, sid, image, timeout, stub=stub)
            with lock:
                out.append(outcome)

    threads = [threading.Thread(target=kiosk, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def phase_compare(sqlite: Station, postgres: Station, pool: IdentityPool, run_id: str,
                  args: argparse.Namespace) -> dict[str, Any]:
    """Phase 3: the same enrolments and Verify load on a SQLite station and a PostgreSQL station, interleaved."""
    stations = {"sqlite": sqlite, "postgresql": postgres}
    enrol_out: dict[str, list[Outcome]] = {k: [] for k in stations}
    probes: list[tuple[str, bytes]] = []
    attempts = 0
    while len(probes) < args.compare_subjects and attempts < 3 * args.compare_subjects:
        attempts += 1
        person = pool.take()
        sid = f"CMP{run_id}{len(probes):04d}"
        image = person.image(0)
        order = list(stations.items()) if len(probes) % 2 == 0 else list(reversed(stations.items()))
        outcomes = {k: enroll(s, sid, image, allow_duplicate=True, timeout=args.timeout) for k, s in order}
        if not all(o.enrolled for o in outcomes.values()):
            for k, o in outcomes.items():
                if o.enrolled:
                    delete(stations[k], sid, args.timeout)
            continue
        for k, o in outcomes.items():
            enrol_out[k].append(o)
        probes.append((sid, person.image(1)))
    if not probes:
        raise StationsError("compare: no subject could be enrolled at both stations")
    for s in stations.values():  # warm-up, not counted
        verify_block(s, probes, 2 * args.verify_clients, 1, args.seed, args.timeout)
    verify_out: dict[str, list[Outcome]] = {k: [] for k in stations}
    blocks = 4
    per_block = max(1, args.verify_calls // blocks)
    for block in range(blocks):
        order = list(stations.items()) if block % 2 == 0 else list(reversed(stations.items()))
        for k, s in order:
            verify_out[k] += verify_block(s, probes, per_block, args.verify_clients, args.seed + block, args.timeout)
    result: dict[str, Any] = {"subjects": len(probes), "verify_clients": args.verify_clients,
                              "blocks": blocks, "calls_per_block": per_block}
    for k, s in stations.items():
        ok = [o for o in verify_out[k] if o.code == "OK"]
        wall = sum(o.ms for o in enrol_out[k]) / 1000
        result[k] = {"enrolments": len(enrol_out[k]), "enrol_ms": distribution([o.ms for o in enrol_out[k]]),
                     "enrolments_per_s": len(enrol_out[k]) / wall if wall else None,
                     "verify_calls": len(verify_out[k]), "verify_errors": len(verify_out[k]) - len(ok),
                     "verify_codes": dict(Counter(o.code for o in verify_out[k])),
                     "verify_ms": distribution([o.ms for o in ok]), "rss_mib": s.rss_mib()}
    sq, pg = result["sqlite"], result["postgresql"]
    result["ratio_postgresql_over_sqlite"] = {
        "enrolments_per_s": ratio(pg["enrolments_per_s"], sq["enrolments_per_s"]),
        "verify_p50": ratio(pg["verify_ms"]["p50"], sq["verify_ms"]["p50"]),
        "verify_p95": ratio(pg["verify_ms"]["p95"], sq["verify_ms"]["p95"])}
    r = result["ratio_postgresql_over_sqlite"]
    result["verify_within_5_percent"] = (r["verify_p50"] is not None and r["verify_p50"] <= TARGET_VERIFY_RATIO
                                         and r["verify_p95"] is not None and r["verify_p95"] <= TARGET_VERIFY_RATIO)
    for sid, _ in probes:
        for s in stations.values():
            delete(s, sid, args.timeout)
    return result


# ---------------------------------------------------------------------------------------------------------
# Phase 4: cold start at scale


def fill_register(url: str, ring: Any, subjects: int, seed: int, batch: int = 50_000) -> dict[str, Any]:
    """``subjects`` synthetic subjects, one random unit 128-d face template each, sealed by ``ring`` with the
    service's own row binding (:mod:`biometrics.storage`) and written with COPY, with their change-log entries."""
    import psycopg

    from biometrics.register import RegisterStorage
    from biometrics.storage import CHANGE_ENROLLED, _subject_aad, _template_aad, now
    from biometrics.templates import pack_face_template
    from biometrics.types import Modality, SubjectInfo

    schema = RegisterStorage(url, ring, station="bench-fill")
    schema.open()  # the schema, migrated as a station does, and the key ring's id
    schema.close()
    rng = np.random.default_rng(seed)
    face = int(Modality.FACE)
    start = time.perf_counter()
    seal_s = 0.0
    with psycopg.connect(url, autocommit=False) as conn:
        for first in range(0, subjects, batch):
            n = min(batch, subjects - first)
            t = time.perf_counter()
            vectors = rng.standard_normal((n, 128)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            created = now()
            subject_rows, template_rows, change_rows = [], [], []
            for k in range(n):
                sid = f"COLD{first + k:09d}"
                ref = ring.pseudonym(sid)
                info = SubjectInfo(name=f"Synthetic subject {first + k}", nationality="IDN", date_of_birth="1980-01-01")
                doc = json.dumps({"subject_id": sid, **info.__dict__}).encode()
                subject_rows.append((ref, ring.seal(doc, _subject_aad(ref)), created))
                tid = uuid.uuid4().hex
                template_rows.append((tid, ref, face, 0, 80.0,
                                      ring.seal(pack_face_template(vectors[k]), _template_aad(ref, tid, face, 0)),
                                      created))
                change_rows.append((CHANGE_ENROLLED, ref, "bench-fill", created))
            seal_s += time.perf_counter() - t
            with conn.cursor() as cur:
                with cur.copy("COPY subjects (ref, sealed, created_at) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["text", "bytea", "text"])
                    for row in subject_rows:
                        copy.write_row(row)
                with cur.copy("COPY templates (template_id, ref, modality, finger, quality, sealed, created_at) "
                              "FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["text", "text", "int4", "int4", "float8", "bytea", "text"])
                    for row in template_rows:
                        copy.write_row(row)
                with cur.copy("COPY changes (kind, ref, station, at) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["text", "text", "text", "text"])
                    for row in change_rows:
                        copy.write_row(row)
            conn.commit()
            print(f"  cold: filled {first + n:,}/{subjects:,}", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    fill_s = time.perf_counter() - start
    t = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) subjects, templates, changes")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return {"subjects": subjects, "fill_s": fill_s, "sealing_and_rows_s": seal_s, "copy_s": fill_s - seal_s,
            "vacuum_analyze_s": time.perf_counter() - t, "database_mib": size / MIB}


def read_loaded_seconds(log_path: Path) -> float | None:
    """The service's own "register loaded in X s" figure from a server log."""
    found = re.findall(r"register loaded in ([\d.]+) s", log_path.read_text())
    return float(found[-1]) if found else None


def profile_cold_start(url: str, work: Path, key_dir: Path, out: Path) -> dict[str, Any]:
    """The station's start in this process under cProfile: the top functions by own and by cumulative time."""
    import cProfile
    import io
    import pstats

    from biometrics.service import CheckpointService, StoreLocation

    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    service = CheckpointService.open(StoreLocation(work / "data-cold-profile", key_dir=key_dir, store_url=url,
                                                   station="cold-profile"))
    service.start()
    profiler.disable()
    wall = time.perf_counter() - start
    subjects = service.gallery_size()[0]
    service.close()
    profiler.dump_stats(str(out / "cold-start.prof"))
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, name), (_cc, calls, own, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(filename).name}:{line}({name})", "calls": calls, "own_s": own,
                     "cumulative_s": cumulative})
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
    (out / "cold-start-profile.txt").write_text(text.getvalue())
    return {"wall_s_under_profiler": wall, "subjects": subjects,
            "top_own": sorted(rows, key=lambda r: -r["own_s"])[:15],
            "top_cumulative": sorted(rows, key=lambda r: -r["cumulative_s"])[:25],
            "files": ["cold-start.prof", "cold-start-profile.txt"]}


def phase_cold(stations: Stations, ring: Any, warm_image: bytes, args: argparse.Namespace) -> dict[str, Any]:
    """Phase 4: fill a register of ``--cold-subjects``, then time one station's start on it and read its memory."""
    with bench_database(args.admin_url, "cold") as url:
        fill = fill_register(url, ring, args.cold_subjects, args.seed)
        print(f"  cold: filled in {fill['fill_s']:.0f} s; starting a station", file=sys.stderr)
        station = Station("cold-start", stations.work / "data-cold-start", stations.key_dir,
                          stations.logs / "cold-start.log", url)
        stations.all.append(station)
        station.launch().wait_listening(args.cold_timeout)
        listening_s = station.listening_at - station.popen_at
        ready_s = station.ready_at - station.popen_at
        subjects, templates = gallery(station)
        first = verify(station, "COLD000000000", warm_image, args.timeout)
        first_s = first.end - station.popen_at
        rss = station.rss_mib()
        station.stop()
        loaded_s = read_loaded_seconds(station.log_path)
        result: dict[str, Any] = {
            "fill": fill, "start_to_listening_s": listening_s, "start_to_ready_s": ready_s,
            "register_loaded_s_from_log": loaded_s,
            "start_to_first_verify_s": first_s, "first_verify_code": first.code, "first_verify_ms": first.ms,
            "gallery_subjects": subjects, "gallery_templates": templates,
            "gallery_complete": subjects == args.cold_subjects and templates == args.cold_subjects,
            "rss_mib": rss, "target_s": TARGET_COLD_START_S, "target_met": ready_s <= TARGET_COLD_START_S}
        if not result["target_met"] and not args.no_profile:
            print("  cold: over the target: profiling the start in-process", file=sys.stderr)
            result["profile"] = profile_cold_start(url, stations.work, stations.key_dir, args.out)
    return result


# ---------------------------------------------------------------------------------------------------------
# Phase 5: PostgreSQL restarted under mixed load


@dataclass
class LoadLog:
    """Every call of the mixed load, by station and method."""

    calls: list[tuple[str, str, str, Outcome]] = field(default_factory=list)  # (station, method, subject, outcome)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, station: str, method: str, subject_id: str, outcome: Outcome) -> None:
        """Record one call."""
        with self.lock:
            self.calls.append((station, method, subject_id, outcome))


class OutageWatch(threading.Thread):
    """Connects to the server every 50 ms: when it stopped answering and when it answered again."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True, name="outage-watch")
        self.url = url
        self.down_at: float | None = None
        self.up_at: float | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        import psycopg

        while not self.halt.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=1) as conn:
                    conn.execute("SELECT 1")
                if self.down_at is not None and self.up_at is None:
                    self.up_at = time.monotonic()
            except psycopg.Error:
                if self.down_at is None:
                    self.down_at = time.monotonic()
            self.halt.wait(0.05)


def mixed_load(stations: list[Station], probes: list[tuple[str, bytes]], images: list[bytes], run_id: str,
               args: argparse.Namespace, stop: threading.Event, log: LoadLog) -> list[threading.Thread]:
    """Per station: one kiosk calling Verify back to back, one desk enrolling fresh ids every ``--enrol-interval``."""

    def kiosk(s: Station, index: int) -> None:
        stub = s.new_stub()
        rng = random.Random(args.seed * 31 + index)
        while not stop.is_set():
            sid, image = rng.choice(probes)
            log.add(s.name, "Verify", sid, verify(s, sid, image, args.timeout, stub=stub))

    def desk(s: Station, index: int) -> None:
        stub = s.new_stub()
        rng = random.Random(args.seed * 37 + index)
        k = 0
        while not stop.is_set():
            sid = f"RST{run_id}{index}{k:05d}"
            k += 1
            log.add(s.name, "Enroll", sid, enroll(s, sid, rng.choice(images), allow_duplicate=True,
                                                  timeout=args.timeout, stub=stub))
            stop.wait(args.enrol_interval)

    threads = []
    for i, s in enumerate(stations):
        threads.append(threading.Thread(target=kiosk, args=(s, i), daemon=True))
        threads.append(threading.Thread(target=desk, args=(s, i), daemon=True))
    for t in threads:
        t.start()
    return threads


def markers_after_return(stations: list[Station], image: bytes, run_id: str, up_at: float,
                         args: argparse.Namespace) -> dict[str, Any]:
    """After PostgreSQL's return: at each station, enrol a marker as soon as it is accepted; then the time until
    every other station answers Verify of it (its memory caught up). Times in s from the return."""
    out: dict[str, Any] = {}

    def marker(s: Station) -> None:
        sid = f"MARK{run_id}{s.name[-1]}"
        attempts: Counter[str] = Counter()
        while True:
            outcome = enroll(s, sid, image, allow_duplicate=True, timeout=args.timeout)
            attempts[outcome.code] += 1
            if outcome.enrolled or outcome.code == "ALREADY_EXISTS":
                break
            if time.monotonic() - up_at > 120:
                out[s.name] = {"acknowledged_s": None, "attempts": dict(attempts)}
                return
            time.sleep(0.1)
        seen: dict[str, float | None] = {}

        def watch(other: Station) -> None:
            found = poll_visible(other, sid, image, outcome.end, True, 0.01, 60.0, args.timeout)
            seen[other.name] = None if found["ms"] is None else outcome.end - up_at + found["ms"] / 1000

        watchers = [threading.Thread(target=watch, args=(o,)) for o in stations if o is not s]
        for t in watchers:
            t.start()
        for t in watchers:
            t.join()
        out[s.name] = {"subject_id": sid, "acknowledged_s": outcome.end - up_at, "attempts": dict(attempts),
                       "visible_at_s": seen}

    threads = [threading.Thread(target=marker, args=(s,)) for s in stations]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times = [v for m in out.values() for v in (m.get("visible_at_s") or {}).values()]
    out["converged_s"] = None if not times or None in times else max(times)
    return out


def count_convergence(stations: list[Station], url: str, up_at: float, timeout: float = 60.0) -> dict[str, Any]:
    """After PostgreSQL's return: the first moment (s from the return) at which the register has taken a change
    since the return and every station's gallery (GetStatistics) holds exactly the register's subjects and
    templates (read directly, just before the stations, in the same round); rounds every 50 ms."""
    import grpc
    import psycopg

    head_at_return: int | None = None
    rounds = 0
    last: dict[str, Any] = {}
    while time.monotonic() - up_at < timeout:
        rounds += 1
        try:
            subjects, templates, head = register_counts(url)
            held = {s.name: gallery(s) for s in stations}
        except (psycopg.Error, grpc.RpcError) as exc:  # a round lost to the restart: the next one retries
            last = {"error": repr(exc)[:200]}
            time.sleep(0.05)
            continue
        if head_at_return is None:
            head_at_return = head
        last = {"register": [subjects, templates, head], "stations": held}
        if head > head_at_return and all(v == (subjects, templates) for v in held.values()):
            return {"converged_s": time.monotonic() - up_at, "rounds": rounds, "head_at_return": head_at_return,
                    **last}
        time.sleep(0.05)
    return {"converged_s": None, "rounds": rounds, "head_at_return": head_at_return, **last}


def phase_restart(stations: list[Station], url: str, pool: IdentityPool, run_id: str,
                  args: argparse.Namespace) -> dict[str, Any]:
    """Phase 5: mixed load on three stations with PostgreSQL restarted in the middle; nothing acknowledged lost."""
    a = stations[0]
    probes: list[tuple[str, bytes]] = []
    images: list[bytes] = []
    base = gallery(a)[0]
    while len(probes) < args.restart_gallery and pool.next < 3 * args.restart_gallery + len(pool.identities):
        person = pool.take()
        sid = f"RSTG{run_id}{len(probes):04d}"
        if enroll(a, sid, person.image(0), allow_duplicate=True, timeout=args.timeout).enrolled:
            probes.append((sid, person.image(1)))
            images.append(person.image(0))
    for s in stations:
        wait_for(lambda s=s: gallery(s)[0] == base + len(probes), 30, f"restart: {s.name} holds the gallery")
    log = LoadLog()
    stop = threading.Event()
    watch = OutageWatch(args.admin_url)
    watch.start()
    t0 = time.monotonic()
    threads = mixed_load(stations, probes, images, run_id, args, stop, log)
    time.sleep(args.restart_seconds / 2)
    cmd_start = time.monotonic()
    done = subprocess.run(shlex.split(args.restart_command), capture_output=True, text=True, timeout=300)
    cmd_end = time.monotonic()
    wait_for(lambda: watch.up_at is not None or watch.down_at is None, 120, "restart: PostgreSQL back")
    up_at = watch.up_at if watch.up_at is not None else cmd_end
    counted: dict[str, Any] = {}
    counter = threading.Thread(target=lambda: counted.update(count_convergence(stations, url, up_at)))
    counter.start()
    markers = markers_after_return(stations, images[0], run_id, up_at, args)
    counter.join()
    time.sleep(max(0.0, t0 + args.restart_seconds - time.monotonic()))
    stop.set()
    for t in threads:
        t.join(args.timeout + 5)
    load_end = time.monotonic()
    watch.halt.set()
    # Afterwards: compared, not assumed.
    acknowledged = sorted({sid for _, m, sid, o in log.calls if m == "Enroll" and o.enrolled}
                          | {m["subject_id"] for m in markers.values() if isinstance(m, dict) and "subject_id" in m})
    expected = {sid for sid, _ in probes} | set(acknowledged)
    subjects, templates, head = register_counts(url)
    stored_missing = {}
    for s in stations:
        stored_missing[s.name] = [sid for sid in acknowledged
                                  if call(lambda sid=sid, s=s: s.stub().GetSubject(
                                      _get_subject_request(sid), timeout=args.timeout))[0].code != "OK"]
    sync_deadline = time.monotonic() + 30
    counts = {}
    for s in stations:
        counts[s.name] = wait_for_value(lambda s=s: gallery(s), (subjects, templates), sync_deadline)
    spot = random.Random(args.seed).sample(acknowledged, min(len(acknowledged), 20))
    memory_missing = {s.name: [sid for sid in spot if verify(s, sid, images[0], args.timeout).code != "OK"]
                      for s in stations}
    by = Counter((st, m, o.code) for st, m, _, o in log.calls)
    outage = [o for _, m, _, o in log.calls if m == "Enroll" and o.code != "OK"]
    verify_errors = {f"{st}:{code}": n for (st, m, code), n in by.items() if m == "Verify" and code != "OK"}
    result = {
        "command": args.restart_command, "command_rc": done.returncode,
        "command_output": (done.stdout + done.stderr)[-500:],
        "seconds": load_end - t0, "restart_at_s": cmd_start - t0, "command_s": cmd_end - cmd_start,
        "postgresql_down_at_s": None if watch.down_at is None else watch.down_at - t0,
        "postgresql_back_at_s": up_at - t0, "outage_observed": watch.down_at is not None,
        "outage_s": None if watch.down_at is None else up_at - watch.down_at,
        "calls": {f"{st}:{m}:{code}": n for (st, m, code), n in sorted(by.items())},
        "enroll_codes": dict(Counter(o.code for _, m, _, o in log.calls if m == "Enroll")),
        "enroll_refusals_during_outage": dict(Counter(o.code for o in outage)),
        "enroll_refusal_messages": sorted({o.details[:160] for o in outage})[:5],
        "verify_calls": sum(n for (_, m, _), n in by.items() if m == "Verify"),
        "verify_errors": verify_errors,
        "acknowledged_enrolments": len(acknowledged),
        "register": {"subjects": subjects, "templates": templates, "head_seq": head},
        "expected_subjects": len(expected) + base,
        "acknowledged_missing_from_register": {k: v for k, v in stored_missing.items() if v},
        "station_galleries": {k: list(v) if v else None for k, v in counts.items()},
        "spot_checked_in_memory": len(spot),
        "spot_missing_from_memory": {k: v for k, v in memory_missing.items() if v},
        "markers": markers, "count_convergence": counted,
        "convergence_s": counted.get("converged_s"), "marker_convergence_s": markers.get("converged_s"),
        "convergence_target_s": TARGET_CONVERGENCE_S,
    }
    result["nothing_lost"] = (not result["acknowledged_missing_from_register"] and subjects == len(expected) + base
                              and all(v == (subjects, templates) for v in counts.values())
                              and not result["spot_missing_from_memory"])
    result["zero_verify_errors"] = not verify_errors
    result["convergence_met"] = result["convergence_s"] is not None and result["convergence_s"] <= TARGET_CONVERGENCE_S
    return result


def _get_subject_request(subject_id: str) -> Any:
    from checkpoint.v1 import checkpoint_pb2 as pb

    return pb.GetSubjectRequest(subject_id=subject_id)


def wait_for_value(read: Callable[[], Any], want: Any, deadline: float) -> Any:
    """Poll ``read()`` until it equals ``want`` or the deadline passes; the last value."""
    while True:
        value = read()
        if value == want or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------------------
# The run


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run."""
    parts = ["checkpoint-bench", "stations", "--images", str(args.images), "--out", str(args.out),
             "--phases", args.phases, "--enrolments", str(args.enrolments), "--race-trials", str(args.race_trials),
             "--compare-subjects", str(args.compare_subjects), "--verify-calls", str(args.verify_calls),
             "--verify-clients", str(args.verify_clients), "--cold-subjects", str(args.cold_subjects)]
    if args.admin_url != ADMIN_URL:
        parts += ["--admin-url", args.admin_url]
    if args.restart:
        parts += ["--restart", "--restart-seconds", f"{args.restart_seconds:g}",
                  "--restart-command", shlex.quote(args.restart_command)]
    return " ".join(parts)


def check_arguments(args: argparse.Namespace) -> list[str]:
    """The phases to run; StationsError for a bad argument."""
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        raise StationsError(f"--phases: unknown phase(s) {', '.join(unknown)}; choose among {', '.join(PHASES)}")
    for name in ("enrolments", "race_trials", "compare_subjects", "verify_calls", "verify_clients", "cold_subjects",
                 "restart_gallery"):
        if getattr(args, name) < 1:
            raise StationsError(f"--{name.replace('_', '-')} must be at least 1")
    if args.restart_seconds <= 0 or args.poll_ms <= 0:
        raise StationsError("--restart-seconds and --poll-ms must be positive")
    if "restart" in phases and not args.restart:
        phases.remove("restart")
    return phases


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the phases; write report.json and report.md into ``args.out``."""
    from benchmarks.report import describe_machine, write_stations_report

    phases = check_arguments(args)
    multi, _ = load_identities(args.images, args.seed)
    pool = IdentityPool(multi)
    warm_image = multi[0].image(0)
    run_id = uuid.uuid4().hex[:6].upper()
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    started = time.time()
    result: dict[str, Any] = {"command": command_line(args), "machine": describe_machine(),
                              "postgresql": server_version(args.admin_url), "phases": phases,
                              "identities_with_two_images": len(multi)}
    with contextlib.ExitStack() as stack:
        work = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="checkpoint-stations-")))
        work.mkdir(parents=True, exist_ok=True)
        stations = Stations(work, logs)
        stack.callback(stations.stop)
        ring = prepare_keys(stations.key_dir)
        timings: dict[str, float] = {}
        if {"propagation", "race"} & set(phases):
            with bench_database(args.admin_url, "register") as url:
                result["register_database"] = url.rsplit("/", 1)[-1]
                a, b, c = stations.start(["station-a", "station-b", "station-c"], url, warm_image=warm_image)
                if "propagation" in phases:
                    t = time.monotonic()
                    print("propagation ...", file=sys.stderr)
                    result["propagation"] = phase_propagation(a, b, c, pool, run_id, args)
                    timings["propagation"] = time.monotonic() - t
                if "race" in phases:
                    t = time.monotonic()
                    print("race ...", file=sys.stderr)
                    result["race"] = phase_race(a, b, pool, run_id, args)
                    timings["race"] = time.monotonic() - t
                stations.stop([a, b, c])
        if "compare" in phases:
            t = time.monotonic()
            print("compare ...", file=sys.stderr)
            with bench_database(args.admin_url, "compare") as url:
                sqlite, = stations.start(["sqlite"], None, warm_image=warm_image, label="compare")
                postgres, = stations.start(["station-pg"], url, warm_image=warm_image, label="compare")
                result["compare"] = phase_compare(sqlite, postgres, pool, run_id, args)
                stations.stop([sqlite, postgres])
            timings["compare"] = time.monotonic() - t
        if "cold" in phases:
            t = time.monotonic()
            print("cold ...", file=sys.stderr)
            result["cold_start"] = phase_cold(stations, ring, warm_image, args)
            timings["cold"] = time.monotonic() - t
        if "restart" in phases:
            t = time.monotonic()
            print(f"restart ... (PostgreSQL restarted with {args.restart_command!r})", file=sys.stderr)
            with bench_database(args.admin_url, "restart") as url:
                trio = stations.start(["station-a", "station-b", "station-c"], url, warm_image=warm_image,
                                      label="restart")
                result["restart"] = phase_restart(trio, url, pool, run_id, args)
                result["restart"]["at_utc"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
                stations.stop(trio)
            timings["restart"] = time.monotonic() - t
        elif "restart" in [p.strip() for p in args.phases.split(",")]:
            result["restart"] = {"skipped": "not run: --restart not given (it restarts the PostgreSQL server)"}
    result["identities_reused"] = pool.reused
    result["phase_seconds"] = timings
    result["wall_s"] = time.time() - started
    from benchmarks.accuracy import json_safe

    (args.out / "report.json").write_text(json.dumps(json_safe(result), indent=1) + "\n")
    write_stations_report(args.out / "report.md", "Stations on one PostgreSQL register", result, summary_lines(result))
    return result


# ---------------------------------------------------------------------------------------------------------
# Reporting


def _ms(d: dict[str, Any] | None, key: str) -> str:
    value = (d or {}).get(key)
    return "n/a" if value is None else f"{value:.0f}"


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The headline figures of a run, as Markdown."""
    lines: list[str] = []
    p = result.get("propagation")
    if p:
        lines += ["## Propagation (A -> B, C)", "",
                  "| change | station | Verify answers: p50 / p95 / max ms | not yet (lower bound) p95 ms | "
                  "gallery count p50 / p95 ms |", "|---|---|---|---|---|"]
        for kind in ("enrolment", "erasure"):
            for name, s in p[kind].items():
                if isinstance(s, dict) and "verify_visible_ms" in s:
                    v = s["verify_visible_ms"]
                    lines.append(f"| {kind} | {name} | {_ms(v, 'p50')} / {_ms(v, 'p95')} / {_ms(v, 'max')} | "
                                 f"{_ms(s['not_yet_visible_ms'], 'p95')} | {_ms(s['memory_ms'], 'p50')} / "
                                 f"{_ms(s['memory_ms'], 'p95')} |")
            a = p[kind]["all"]
            lines.append(f"| {kind} | all | {_ms(a, 'p50')} / {_ms(a, 'p95')} / {_ms(a, 'max')} "
                         f"(n={a['n']}; target p95 <= 500: {'met' if p[kind]['p95_met'] else 'NOT met'}) | | |")
        lines.append("")
    r = result.get("race")
    if r:
        lines += ["## Simultaneous enrolments of one person at A and B", "",
                  f"{r['exactly_one_enrolled']} of {r['trials']} trials with exactly one enrolled "
                  f"(both: {r['both_enrolled']}, neither: {r['neither_enrolled']}, errors: {r['errors']}); calls "
                  f"overlapped in {r['calls_overlapped']}; start gap p95 {_ms(r['start_gap_ms'], 'p95')} ms; wins "
                  f"{r['wins']}; the held desk named the winner as its duplicate in {r['loser_named_winner']}; "
                  f"{r['distinct_identities']} identities.", ""]
    c = result.get("compare")
    if c:
        q = c["ratio_postgresql_over_sqlite"]
        lines += ["## SQLite vs PostgreSQL (one station each, same gallery, same run)", "",
                  "| store | enrolments/s | enrol p50 ms | Verify p50 ms | Verify p95 ms | Verify errors |",
                  "|---|---|---|---|---|---|"]
        for k in ("sqlite", "postgresql"):
            s = c[k]
            rate = "n/a" if s["enrolments_per_s"] is None else f"{s['enrolments_per_s']:.2f}"
            lines.append(f"| {k} | {rate} | {_ms(s['enrol_ms'], 'p50')} | {_ms(s['verify_ms'], 'p50')} | "
                         f"{_ms(s['verify_ms'], 'p95')} | {s['verify_errors']} |")

        def fmt(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.3f}"

        lines += ["", f"PostgreSQL / SQLite: enrolments/s {fmt(q['enrolments_per_s'])}, Verify p50 "
                  f"{fmt(q['verify_p50'])}, p95 {fmt(q['verify_p95'])} (within 5%: "
                  f"{'yes' if c['verify_within_5_percent'] else 'no'}).", ""]
    k = result.get("cold_start")
    if k:
        rss = k["rss_mib"]
        lines += ["## Cold start", "",
                  f"{k['fill']['subjects']:,} subjects filled in {k['fill']['fill_s']:.0f} s (database "
                  f"{k['fill']['database_mib']:.0f} MiB); station start to ready {k['start_to_ready_s']:.1f} s "
                  f"(service's own load figure {k['register_loaded_s_from_log']} s), to first Verify "
                  f"{k['start_to_first_verify_s']:.1f} s; gallery {k['gallery_subjects']:,} subjects; RSS "
                  f"{rss['server'] or 0:.0f} MiB (peak {rss['server_peak'] or 0:.0f}) + worker "
                  f"{rss['workers'] or 0:.0f} MiB; target 30 s {'met' if k['target_met'] else 'NOT met'}.", ""]
        if "profile" in k:
            lines += ["Where the start's time goes (cProfile, in-process; the profiler inflates Python-heavy "
                      f"code; {k['profile']['wall_s_under_profiler']:.0f} s under it), by own time:", "",
                      "| function | calls | own s | cumulative s |", "|---|---|---|---|"]
            lines += [f"| `{row['function']}` | {row['calls']:,} | {row['own_s']:.1f} | {row['cumulative_s']:.1f} |"
                      for row in k["profile"]["top_own"][:12]]
            lines.append("")
    s = result.get("restart")
    if s:
        if "skipped" in s:
            lines += ["## PostgreSQL restart under load", "", s["skipped"], ""]
        else:
            lines += ["## PostgreSQL restart under load", "",
                      f"`{s['command']}` at {s['restart_at_s']:.1f} s of {s['seconds']:.0f} s ({s.get('at_utc', '')}); "
                      f"outage observed: {s['outage_observed']} ({_s(s['outage_s'])} s); "
                      f"{s['acknowledged_enrolments']} enrolments acknowledged, missing from the register: "
                      f"{s['acknowledged_missing_from_register'] or 'none'}; galleries {s['station_galleries']} vs "
                      f"register {s['register']}; spot checks missing from memory: "
                      f"{s['spot_missing_from_memory'] or 'none'}; Verify calls {s['verify_calls']}, errors "
                      f"{s['verify_errors'] or 'none'}; Enroll refusals during the outage "
                      f"{s['enroll_refusals_during_outage']}; convergence after the return "
                      f"{_s(s['convergence_s'])} s by gallery counts against the register, "
                      f"{_s(s['marker_convergence_s'])} s until a marker enrolled at each station after the return "
                      "answered Verify at the two others (target 5 s).", ""]
    return lines


def _s(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def failures(result: dict[str, Any]) -> list[str]:
    """The correctness checks that failed (timing targets are reported, not failed)."""
    out = []
    r = result.get("race")
    if r and r["exactly_one_enrolled"] != r["trials"]:
        out.append(f"race: exactly one enrolled in {r['exactly_one_enrolled']} of {r['trials']} trials")
    p = result.get("propagation")
    if p:
        for kind in ("enrolment", "erasure"):
            never = sum(v.get("never_seen", 0) for v in p[kind].values() if isinstance(v, dict))
            if never or p[kind]["write_failures"]:
                out.append(f"propagation: {kind}s never seen at a station: {never}, failed: "
                           f"{len(p[kind]['write_failures'])}")
    s = result.get("restart")
    if s and "skipped" not in s:
        if not s["nothing_lost"]:
            out.append("restart: the register and the stations do not hold every acknowledged enrolment")
        if not s["zero_verify_errors"]:
            out.append(f"restart: Verify errors {s['verify_errors']}")
    k = result.get("cold_start")
    if k and not k["gallery_complete"]:
        out.append(f"cold: the station loaded {k['gallery_subjects']} subjects, not {k['fill']['subjects']}")
    return out


def run(args: argparse.Namespace) -> int:
    """Entry point of ``checkpoint-bench stations``."""
    try:
        result = evaluate(args)
    except StationsError as exc:
        print(f"checkpoint-bench stations: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(result)))
    print(f"written: {args.out / 'report.json'}, {args.out / 'report.md'}, logs in {args.out / 'logs'}")
    failed = failures(result)
    for f in failed:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if failed else 0
