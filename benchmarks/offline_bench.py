"""An island station cut off from the register for real, then reconnected (and killed in the middle of its drain).

Usage::

    checkpoint-bench offline --images ../shared/data/faces/lfw-dev/images --out results/offline

Real ``checkpoint-server`` processes (plaintext on 127.0.0.1, ``--workers 1``, one shared ``--key-dir``) on a
PostgreSQL database made for the run (dropped at the end), with real faces from ``--images`` (LFW layout):

- **central**: a station straight on PostgreSQL;
- **island-a**, **island-b**: stations with ``--replica DIR``, each through its own link proxy
  (:mod:`benchmarks.linkcut`) that the benchmark cuts and restores: a real TCP link, no mocked driver.

Phase 1 (**offline**): ``--register`` subjects enrolled at central before the cut. Island A's link is cut for
``--offline-seconds``; meanwhile A enrols ``--enrolments`` subjects (acknowledged provisionally) and answers
``--verifications`` Verify calls (genuine probes of subjects it can know: the register before the cut and its own
provisional enrolments), while central enrols ``--central-enrolments``, ``--shared`` of them people A also enrolled
in that time (same LFW identity, another photo, another document number; pairs screened in-process to score at
least ``--shared-min-score`` so that the matcher, not the sync, decides nothing), and erases ``--erasures`` subjects
of the register. Then A's link is restored and the benchmark measures how long until A no longer verifies an erased
subject, until its outbox is empty (the drain), and until every station holds the register. Checked against the
register itself (read through a RegisterStorage with the shared key ring) and the islands' replica files:
every acknowledged enrolment at A is in the register or waiting for review (none lost, none stored twice);
exactly the shared pairs wait for review, any other review listed against what the 1:N threshold's FPIR
predicts; the stations' subject sets. The reviews are then resolved as an officer would (link: same person;
keep both: two people) and the stations compared again.

Phase 2 (**kill**, ``--kill-enrolments`` > 0): A cut again, ``--kill-enrolments`` enrolments, link restored, A
killed with SIGKILL once its outbox has started to fall but is not empty, restarted on the same ``--data-dir``,
``--replica`` and ``--key-dir``: the drain must resume and finish with nothing lost or stored twice (each outbox
entry uploaded once: the register's upload record against the replica's outbox).

Writes ``report.json``, ``report.md`` and the servers' logs into ``--out``. Exit status 1 if a check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import queue
import random
import re
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.linkcut import LinkProxy
from benchmarks.stations_bench import (
    ADMIN_URL,
    DEFAULT_IMAGES,
    Identity,
    Station,
    Stations,
    StationsError,
    bench_database,
    call,
    distribution,
    face_sample,
    gallery,
    load_identities,
    prepare_keys,
    register_counts,
    server_version,
    wait_for,
    warm_up,
)

COMMAND = "offline"
OVERRIDE_REASON = "checkpoint-bench offline: the officer judged the candidates to be other people (LFW identities)"
LINK_REASON = "checkpoint-bench offline: one person, two documents (same LFW identity)"
KEEP_REASON = "checkpoint-bench offline: two people (different LFW identities)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``checkpoint-bench offline``."""
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                        help="folder of <identity>/<image> (LFW layout); identities with 2+ images give genuine pairs")
    parser.add_argument("--out", type=Path, default=Path("results/offline"), help="folder for report.json, report.md")
    parser.add_argument("--admin-url", default=ADMIN_URL,
                        help="a PostgreSQL server's maintenance database: the run creates (and drops) its own "
                        "database checkpoint_bench_offline_* there")
    parser.add_argument("--register", type=int, default=100, help="subjects enrolled at central before the cut")
    parser.add_argument("--enrolments", type=int, default=200, help="enrolments at island A while it is offline")
    parser.add_argument("--verifications", type=int, default=500, help="Verify calls at island A while it is offline")
    parser.add_argument("--central-enrolments", type=int, default=200,
                        help="enrolments at central while A is offline (--shared of them people A also enrols)")
    parser.add_argument("--shared", type=int, default=20, help="people enrolled both at A and at central offline")
    parser.add_argument("--shared-min-score", type=float, default=5.5,
                        help="a shared person's two photos must score this much (screened in-process), above the "
                        "1:N threshold at the register's size, so that the sync, not the matcher, is measured")
    parser.add_argument("--erasures", type=int, default=5,
                        help="register subjects erased at central while A is offline")
    parser.add_argument("--offline-seconds", type=float, default=600.0,
                        help="how long A's link stays cut (longer if the offline work takes longer)")
    parser.add_argument("--kill-enrolments", type=int, default=100,
                        help="phase 2: enrolments at A in a second cut, whose drain SIGKILL interrupts (0: skip)")
    parser.add_argument("--max-pending", type=int, default=1000, help="the islands' --max-pending")
    parser.add_argument("--spot-checks", type=int, default=40,
                        help="register subjects checked by Verify at each station at the end")
    parser.add_argument("--poll-ms", type=float, default=20.0, help="pause between two GetStatistics polls")
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="longest wait for a drain, seconds")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline of each call, seconds")
    parser.add_argument("--work-dir", type=Path, help="stations' data and key directories (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)


# ---------------------------------------------------------------------------------------------------------
# Island stations


@dataclass
class IslandStation(Station):
    """A station with ``--replica`` (it keeps working offline); its ``store_url`` goes through a link proxy."""

    replica_dir: Path | None = None
    max_pending: int = 1000

    def command(self) -> list[str]:
        """The server's command line: a station's, plus the replica and the offline budget."""
        cmd = super().command()
        if self.replica_dir is not None:
            cmd += ["--replica", str(self.replica_dir), "--max-offline", "24", "--max-pending", str(self.max_pending)]
        return cmd

    def kill(self) -> dict[str, Any]:
        """SIGKILL the server (a crash: no shutdown code runs). Its face-worker processes, which may outlive it,
        are then ended by their ids (after 5 s); returns what happened to them."""
        import psutil

        assert self.proc is not None
        children = []
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(self.proc.pid).children(recursive=True)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        gone, alive = psutil.wait_procs(children, timeout=5)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        return {"pid": self.proc.pid, "returncode": self.proc.returncode, "children": len(children),
                "children_exited_by_themselves": len(gone), "children_killed": len(alive)}


def statistics(station: Station, timeout: float = 10.0) -> Any:
    """GetStatistics of ``station``."""
    from checkpoint.v1 import checkpoint_pb2 as pb

    return station.stub().GetStatistics(pb.GetStatisticsRequest(), timeout=timeout)


def sync_of(station: Station) -> dict[str, Any]:
    """The station's gallery count and register link, from GetStatistics."""
    s = statistics(station)
    r = s.register
    return {"gallery_subjects": int(s.gallery_subjects), "connected": bool(r.connected),
            "outbox_pending": int(r.outbox_pending), "provisional": int(r.provisional),
            "applied_seq": int(r.applied_seq), "audit_pending": int(r.audit_pending)}


# ---------------------------------------------------------------------------------------------------------
# Calls


@dataclass
class Enrolment:
    """One enrolment as the desk saw it (after an override, if the officer made one)."""

    subject_id: str
    identity: str
    station: str
    code: str
    enrolled: bool = False
    provisional: bool = False
    overridden: list[dict[str, Any]] = field(default_factory=list)  # the candidates an officer overrode
    ms: float = 0.0
    end: float = 0.0
    details: str = ""


def enrol_call(station: Station, subject_id: str, image: bytes, *, allow_duplicate: bool, timeout: float,
               stub: Any = None) -> tuple[Any, Any]:
    """Enroll one face; (stations_bench Outcome, EnrollResponse or None)."""
    from checkpoint.v1 import checkpoint_pb2 as pb

    request = pb.EnrollRequest(
        subject_id=subject_id, info=pb.SubjectInfo(name=f"Bench {subject_id}", nationality="IDN",
                                                   date_of_birth="1980-01-01"),
        samples=[face_sample(image)], allow_duplicate=allow_duplicate,
        override_reason=OVERRIDE_REASON if allow_duplicate else "")
    return call(lambda: (stub or station.stub()).Enroll(request, timeout=timeout))


def acknowledge(station: Station, subject_id: str, person: Identity, image: bytes, names: dict[str, str],
                timeout: float, stub: Any = None) -> Enrolment:
    """Enrol as a desk does: a held enrolment whose candidates are all other people (the LFW identities say so) is
    enrolled again with the officer's override and reason; one held for the same person is left held."""
    outcome, response = enrol_call(station, subject_id, image, allow_duplicate=False, timeout=timeout, stub=stub)
    record = Enrolment(subject_id, person.name, station.name, outcome.code, ms=outcome.ms, end=outcome.end,
                       details=outcome.details[:200])
    if response is None:
        return record
    if not response.enrolled:
        candidates = [{"subject_id": c.subject_id, "identity": names.get(c.subject_id, "?"), "score": c.score}
                      for c in response.possible_duplicates]
        if any(c["identity"] == person.name for c in candidates):
            record.overridden = candidates
            record.details = "held: the same person is enrolled already"
            return record
        outcome, response = enrol_call(station, subject_id, image, allow_duplicate=True, timeout=timeout, stub=stub)
        record.code, record.ms, record.end = outcome.code, record.ms + outcome.ms, outcome.end
        record.overridden = candidates
        if response is None:
            record.details = outcome.details[:200]
            return record
    record.enrolled, record.provisional = bool(response.enrolled), bool(response.provisional)
    if record.enrolled:
        names[subject_id] = person.name
    return record


@dataclass
class Verification:
    """One Verify call at the island while it is offline."""

    subject_id: str
    kind: str  # "register" (enrolled before the cut) or "provisional" (enrolled at A offline)
    code: str
    match: bool
    ms: float
    register_as_of: str
    end_wall: float


def verify_call(station: Station, subject_id: str, image: bytes, timeout: float, stub: Any = None) -> tuple[Any, Any]:
    """Verify one face against ``subject_id``; (Outcome, VerifyResponse or None)."""
    from checkpoint.v1 import checkpoint_pb2 as pb

    request = pb.VerifyRequest(subject_id=subject_id, samples=[face_sample(image)])
    return call(lambda: (stub or station.stub()).Verify(request, timeout=timeout))


def found_at(station: Station, subject_id: str, image: bytes, timeout: float) -> str:
    """Verify's status code name at ``station`` (OK: the station holds the subject; NOT_FOUND: it does not)."""
    return verify_call(station, subject_id, image, timeout)[0].code


def parse_rfc3339(value: str) -> float | None:
    """Unix time of an RFC 3339 string, or None."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------------
# Faces


class Supply:
    """Hands out identities in order, each once, from any thread; StationsError when none is left."""

    def __init__(self, identities: list[Identity], label: str) -> None:
        self.identities = list(identities)
        self.label = label
        self.next = 0
        self._lock = threading.Lock()

    def take(self) -> Identity:
        """The next identity."""
        with self._lock:
            if self.next >= len(self.identities):
                raise StationsError(f"--images has too few {self.label} for these sizes ({len(self.identities)} "
                                    "used up): lower the sizes or give a bigger folder")
            person = self.identities[self.next]
            self.next += 1
            return person

    @property
    def left(self) -> int:
        """How many are left."""
        return len(self.identities) - self.next


@dataclass(frozen=True)
class SharedPerson:
    """A person enrolled at A (photo ``a``) and at central (photo ``c``): the photos' screened score."""

    person: Identity
    a: int
    c: int
    score: float


def screen_shared(supply: Supply, wanted: int, min_score: float) -> tuple[list[SharedPerson], list[Identity],
                                                                          dict[str, Any]]:
    """``wanted`` people whose two photos both enrol and score ``min_score`` or more against each other (extracted
    here by the production pipeline); also the identities tried and put back (for other uses) and a summary."""
    from biometrics.errors import BiometricError
    from biometrics.face import face_template_of
    from biometrics.scores import ScoreCalibration

    calibration = ScoreCalibration.for_modality("face")
    kept: list[SharedPerson] = []
    put_back: list[Identity] = []
    tried = refused = 0
    scores: list[float] = []
    while len(kept) < wanted:
        person = supply.take()
        tried += 1
        try:
            first = face_template_of(person.image(0), "enrol").template
            second = face_template_of(person.image(1), "enrol").template
        except BiometricError:
            refused += 1
            put_back.append(person)
            continue
        score = float(calibration.score(float(np.linalg.norm(first - second))))
        scores.append(score)
        if score >= min_score:
            kept.append(SharedPerson(person, 0, 1, score))
        else:
            put_back.append(person)
    return kept, put_back, {"identities_tried": tried, "kept": len(kept), "photo_refused": refused,
                            "below_min_score": tried - refused - len(kept), "min_score": min_score,
                            "kept_scores": distribution([p.score for p in kept]),
                            "tried_scores": distribution(scores)}


# ---------------------------------------------------------------------------------------------------------
# The truth: the register and the islands' replica files, read directly


def read_register(url: str, ring: Any) -> dict[str, Any]:
    """The register as stored: subject ids (counted, opened with the key ring), templates per subject, the pending
    reviews (documents opened), and the upload records of the stations' drains."""
    from biometrics.register import RegisterStorage, Reviews

    register = RegisterStorage(url, ring, station="offline-bench-check")
    register.open()
    try:
        rows, head = register.snapshot()
        ids = Counter(record.subject_id for _, record, _ in rows)
        templates = {record.subject_id: len(stored) for _, record, stored in rows}
        pending = Reviews(register).pending(1_000_000)
        uploads = register._query("SELECT upload_id, station, kind, content_hash, outcome FROM uploads")
        resolved = register._query("SELECT state, COUNT(*) FROM reviews GROUP BY state")
    finally:
        register.close()
    return {"ids": ids, "templates": templates, "head_seq": head,
            "reviews": [{"review_id": rid, "station": station, "created_at": created,
                         "subject_id": doc["subject_id"], "threshold": float(doc["threshold"]),
                         "document_number_taken": doc.get("document_number_taken"),
                         "candidates": [(c["subject_id"], float(c["score"])) for c in doc["candidates"]]}
                        for rid, station, created, doc in pending],
            "uploads": [{"upload_id": u, "station": s, "kind": k, "content_hash": h, "outcome": o}
                        for u, s, k, h, o in uploads],
            "reviews_by_state": {str(state): int(n) for state, n in resolved}}


def read_replica(replica_dir: Path, ring: Any) -> dict[str, Any]:
    """An island's replica file, read-only: the subject ids of its copy, and its outbox (no payloads)."""
    from biometrics.storage import _subject_aad

    path = replica_dir / "replica.db"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        subjects = conn.execute("SELECT ref, sealed FROM subjects").fetchall()
        outbox = conn.execute("SELECT n, upload_id, kind, ref, content_hash, state, outcome FROM outbox ORDER BY n"
                              ).fetchall()
    finally:
        conn.close()
    ids = Counter(json.loads(ring.open(bytes(sealed), _subject_aad(ref)))["subject_id"] for ref, sealed in subjects)
    return {"ids": ids, "outbox": [{"n": n, "upload_id": u, "kind": k, "ref": r, "content_hash": h, "state": s,
                                    "outcome": o} for n, u, k, r, h, s, o in outbox]}


def accounting(acknowledged: list[str], register: dict[str, Any], station: str) -> dict[str, Any]:
    """Every acknowledged enrolment of ``station``: in the register, waiting for review, lost, or doubled."""
    ids: Counter[str] = register["ids"]
    in_review = Counter(r["subject_id"] for r in register["reviews"] if r["station"] == station)
    stored = [s for s in acknowledged if ids.get(s, 0) >= 1 and not in_review.get(s)]
    waiting = [s for s in acknowledged if in_review.get(s) and not ids.get(s)]
    lost = [s for s in acknowledged if not ids.get(s) and not in_review.get(s)]
    doubled = sorted({s for s in acknowledged if ids.get(s, 0) > 1 or in_review.get(s, 0) > 1
                      or (ids.get(s) and in_review.get(s))}
                     | {s for s in acknowledged if register["templates"].get(s, 1) != 1})
    return {"acknowledged": len(acknowledged), "in_register": len(stored), "waiting_for_review": len(waiting),
            "lost": lost, "stored_twice": doubled}


def check_uploads(outbox: list[dict[str, Any]], register: dict[str, Any], since_n: int = 0) -> dict[str, Any]:
    """Each outbox entry after ``since_n`` against the register's upload records: uploaded once, same content, an
    outcome that matches the state the island settled it in."""
    from biometrics.island import STATE_OF_OUTCOME

    records = Counter(u["upload_id"] for u in register["uploads"])
    by_id = {u["upload_id"]: u for u in register["uploads"]}
    entries = [e for e in outbox if e["n"] > since_n]
    states = Counter(e["state"] for e in entries)
    missing = [e["upload_id"] for e in entries if e["state"] != "cancelled" and not records.get(e["upload_id"])]
    twice = [u for u, n in records.items() if n > 1]
    other_content = [e["upload_id"] for e in entries if e["upload_id"] in by_id
                     and by_id[e["upload_id"]]["content_hash"] != e["content_hash"]]
    mismatch = [e["upload_id"] for e in entries if e["upload_id"] in by_id and e["state"] != "pending"
                and STATE_OF_OUTCOME.get(by_id[e["upload_id"]]["outcome"]) != e["state"]]
    return {"entries": len(entries), "states": dict(states), "not_uploaded": missing, "upload_recorded_twice": twice,
            "other_content_under_same_id": other_content, "outcome_differs_from_island_state": mismatch}


# ---------------------------------------------------------------------------------------------------------
# Small helpers


def run_threads(targets: list[tuple[str, Callable[[], None]]]) -> None:
    """Run each target in a thread; re-raise the first exception once all have ended."""
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(fn,), name=name) for name, fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def paced(ops: list[Callable[[], None]], start: float, span: float, halt: threading.Event) -> None:
    """Run ``ops`` in order, op ``i`` not before ``start + i * span / len(ops)`` (at once when behind)."""
    for i, op in enumerate(ops):
        if halt.is_set():
            return
        wait = start + i * span / max(1, len(ops)) - time.monotonic()
        if wait > 0:
            halt.wait(wait)
        op()


def spread(n: int, k: int) -> set[int]:
    """``k`` positions spread evenly over ``range(n)``."""
    return {min(n - 1, int((i + 0.5) * n / k)) for i in range(k)} if k and n else set()


def poisson_tail(observed: int, mean: float) -> float:
    """P(X >= observed) for X ~ Poisson(mean)."""
    if observed <= 0:
        return 1.0
    below = sum(math.exp(-mean) * mean ** j / math.factorial(j) for j in range(observed))
    return max(0.0, 1.0 - below)


def poisson_upper(mean: float, q: float = 0.99) -> int:
    """The smallest k with P(X <= k) >= q for X ~ Poisson(mean)."""
    k, total = 0, math.exp(-mean)
    while total < q and k < 10_000:
        k += 1
        total += math.exp(-mean) * mean ** k / math.factorial(k)
    return k


def log_lines(path: Path, pattern: str) -> list[str]:
    """Lines of a server log matching ``pattern``."""
    if not path.is_file():
        return []
    return [line.rstrip() for line in path.read_text(errors="replace").splitlines() if re.search(pattern, line)]


# ---------------------------------------------------------------------------------------------------------
# The run


class Run:
    """One run: the stations, the links, the people and everything observed."""

    def __init__(self, args: argparse.Namespace, stations: Stations, ring: Any, url: str, run_id: str) -> None:
        self.args = args
        self.stations = stations
        self.ring = ring
        self.url = url
        self.run_id = run_id
        self.names: dict[str, str] = {}  # subject id -> LFW identity (the ground truth)
        self.probes: dict[str, bytes] = {}  # subject id -> a genuine probe photo (another photo of the person)
        self.any_face = b""
        self.central: Station
        self.a: IslandStation
        self.b: IslandStation
        self.link_a: LinkProxy
        self.link_b: LinkProxy
        self.poll_s = args.poll_ms / 1000

    # -- stations --------------------------------------------------------------------------------

    def island(self, name: str, link: LinkProxy, *, data_dir: Path | None = None, replica_dir: Path | None = None,
               log_name: str | None = None) -> IslandStation:
        """A (not yet started) island station through ``link``."""
        work = self.stations.work
        station = IslandStation(name, data_dir or work / f"data-{name}", self.stations.key_dir,
                                self.stations.logs / f"{log_name or name}.log", link.url(self.url),
                                replica_dir=replica_dir or work / f"replica-{name}", max_pending=self.args.max_pending)
        self.stations.all.append(station)
        return station

    def start(self, stations: list[Station]) -> None:
        """Launch ``stations`` together, wait until each is ready and its face worker answers."""
        for s in stations:
            s.launch()
        for s in stations:
            s.wait_listening(240)
        for s in stations:
            warm_up(s, self.any_face)

    def wait_offline(self, station: Station, timeout: float = 60.0) -> float:
        """Seconds until ``station`` reports its register link down."""
        t = time.monotonic()
        wait_for(lambda: not sync_of(station)["connected"], timeout, f"{station.name} notices the cut link",
                 self.poll_s)
        return time.monotonic() - t

    def wait_register_everywhere(self, expected_extra: dict[str, int], timeout: float) -> dict[str, Any]:
        """Seconds until every station's gallery holds the register's subject count (plus ``expected_extra`` of
        a station: its enrolments still waiting for review)."""
        t = time.monotonic()
        last: dict[str, Any] = {}

        def equal() -> bool:
            subjects = register_counts(self.url)[0]
            held = {s.name: gallery(s)[0] for s in (self.central, self.a, self.b)}
            last.update(register=subjects, stations=held)
            return all(n == subjects + expected_extra.get(name, 0) for name, n in held.items())

        try:
            wait_for(equal, timeout, "every station holds the register", self.poll_s)
            return {"seconds": time.monotonic() - t, **last}
        except StationsError:
            return {"seconds": None, **last}

    # -- the register before the cut ---------------------------------------------------------------

    def enrol_register(self, supply: Supply) -> list[Enrolment]:
        """``--register`` subjects at central (genuine probes kept), before anything is cut."""
        done: list[Enrolment] = []
        refused: list[Enrolment] = []
        while len(done) < self.args.register:
            person = supply.take()
            sid = f"R{self.run_id}{len(done):04d}"
            record = acknowledge(self.central, sid, person, person.image(0), self.names, self.args.timeout)
            if record.enrolled:
                done.append(record)
                self.probes[sid] = person.image(1)
            else:
                refused.append(record)
        for s in (self.a, self.b):
            wait_for(lambda s=s: gallery(s)[0] == self.args.register, 60, f"{s.name} holds the register", self.poll_s)
        return done

    # -- phase 1 ---------------------------------------------------------------------------------

    def phase_offline(self, multi: Supply, single: Supply, shared: list[SharedPerson],
                      register: list[Enrolment]) -> dict[str, Any]:
        """Phase 1: A offline with enrolments and verifications, central enrols and erases; then the return."""
        args = self.args
        rng = random.Random(args.seed)
        erased = [r.subject_id for r in rng.sample(register, min(args.erasures, len(register)))]
        known: list[tuple[str, str]] = [(r.subject_id, "register") for r in register]
        known_lock = threading.Lock()
        a_records: list[Enrolment] = []
        a_refused: list[Enrolment] = []
        c_records: list[Enrolment] = []
        c_refused: list[Enrolment] = []
        erasures: list[dict[str, Any]] = []
        verifications: list[Verification] = []
        shared_done: queue.Queue[tuple[SharedPerson, str | None]] = queue.Queue()
        shared_pairs: list[dict[str, Any]] = []
        halt = threading.Event()

        before = sync_of(self.a)
        register_before = register_counts(self.url)
        cut_wall = time.time()
        cut_at = self.link_a.cut()
        detected_s = self.wait_offline(self.a)
        span = 0.9 * args.offline_seconds
        start = time.monotonic()
        a_stub, kiosk_stub, c_stub = self.a.new_stub(), self.a.new_stub(), self.central.new_stub()
        shared_slots_a = spread(args.enrolments, len(shared))
        shared_slots_c = spread(args.central_enrolments, len(shared))
        erase_slots = spread(args.central_enrolments + len(erased), len(erased))
        shared_queue = list(shared)

        def a_enrol(i: int) -> None:
            sid = f"A{self.run_id}{i:04d}"
            if i in shared_slots_a:
                pair = shared_queue.pop(0)
                record = acknowledge(self.a, sid, pair.person, pair.person.image(pair.a), self.names, args.timeout,
                                     a_stub)
                a_records.append(record)
                if record.enrolled:
                    self.probes[sid] = pair.person.image(pair.c)
                    with known_lock:
                        known.append((sid, "provisional"))
                shared_done.put((pair, sid if record.enrolled else None))  # central's desk waits for it
                return
            while True:
                person = multi.take() if multi.left else single.take()
                record = acknowledge(self.a, sid, person, person.image(0), self.names, args.timeout, a_stub)
                if record.enrolled or record.code not in ("INVALID_ARGUMENT", "OK"):
                    break
                a_refused.append(record)  # a photo the enrolment refuses, or the same person held: next person
            a_records.append(record)
            if record.enrolled and len(person.files) > 1:
                self.probes[sid] = person.image(1)
                with known_lock:
                    known.append((sid, "provisional"))

        def a_verify(_: int) -> None:
            with known_lock:
                sid, kind = rng.choice(known)
            outcome, response = verify_call(self.a, sid, self.probes[sid], args.timeout, kiosk_stub)
            verifications.append(Verification(sid, kind, outcome.code, bool(response and response.match), outcome.ms,
                                              response.register_as_of if response is not None else "", time.time()))

        c_ops: list[Callable[[], None]] = []
        c_index = [0]

        def c_enrol(shared_slot: bool) -> None:
            i = c_index[0]
            c_index[0] += 1
            sid = f"C{self.run_id}{i:04d}"
            pair, a_sid = shared_done.get(timeout=args.offline_seconds + 600) if shared_slot else (None, None)
            if pair is not None and a_sid is not None:
                record = acknowledge(self.central, sid, pair.person, pair.person.image(pair.c), self.names,
                                     args.timeout, c_stub)
                c_records.append(record)
                shared_pairs.append({"identity": pair.person.name, "island_subject": a_sid, "central_subject": sid,
                                     "screened_score": pair.score, "central_enrolled": record.enrolled})
                return
            while True:
                person = single.take()
                record = acknowledge(self.central, sid, person, person.image(0), self.names, args.timeout, c_stub)
                if record.enrolled or record.code not in ("INVALID_ARGUMENT", "OK"):
                    break
                c_refused.append(record)
            c_records.append(record)

        def c_erase(sid: str) -> None:
            from checkpoint.v1 import checkpoint_pb2 as pb

            request = pb.DeleteSubjectRequest(subject_id=sid, reason="checkpoint-bench offline: erasure while an "
                                              "island is offline")
            outcome, _ = call(lambda: c_stub.DeleteSubject(request, timeout=args.timeout))
            erasures.append({"subject_id": sid, "code": outcome.code, "ms": outcome.ms,
                             "at_s": outcome.end - cut_at})

        erase_queue = list(erased)
        enrol_k = 0
        for slot in range(args.central_enrolments + len(erased)):
            if slot in erase_slots and erase_queue:
                sid = erase_queue.pop(0)
                c_ops.append(lambda sid=sid: c_erase(sid))
            else:
                c_ops.append(lambda shared_slot=enrol_k in shared_slots_c: c_enrol(shared_slot))
                enrol_k += 1

        print(f"  offline: A cut at {time.strftime('%H:%M:%S')}; working for {args.offline_seconds:g} s",
              file=sys.stderr)
        run_threads([
            ("desk-a", lambda: paced([lambda i=i: a_enrol(i) for i in range(args.enrolments)], start, span, halt)),
            ("kiosk-a", lambda: paced([lambda i=i: a_verify(i) for i in range(args.verifications)], start, span,
                                      halt)),
            ("desk-central", lambda: paced(c_ops, start, span, halt)),
        ])
        work_s = time.monotonic() - start
        pending_before = sync_of(self.a)
        halt.wait(max(0.0, cut_at + args.offline_seconds - time.monotonic()))
        register_at_restore = register_counts(self.url)

        # -- the return ----------------------------------------------------------------------------
        print(f"  offline: A's link restored after {time.monotonic() - cut_at:.0f} s; "
              f"{pending_before['outbox_pending']} writes waiting", file=sys.stderr)
        restore_at = self.link_a.restore()
        sync = self.watch_return(restore_at, pending_before["outbox_pending"], erased)
        everywhere = self.wait_register_everywhere(
            {self.a.name: sum(1 for r in read_register(self.url, self.ring)["reviews"] if r["station"] == self.a.name)},
            60)
        everywhere["seconds_from_restore"] = (None if everywhere["seconds"] is None
                                              else time.monotonic() - restore_at)

        acknowledged = [r.subject_id for r in a_records if r.enrolled]
        result: dict[str, Any] = {
            "offline": {"planned_s": args.offline_seconds, "actual_s": restore_at - cut_at, "work_s": work_s,
                        "cut_detected_s": detected_s, "cut_at_utc": dt.datetime.fromtimestamp(cut_wall, dt.UTC)
                        .isoformat(timespec="seconds"), "island_before": before,
                        "register_before": dict(zip(("subjects", "templates", "head_seq"), register_before,
                                                    strict=True)),
                        "register_at_restore": dict(zip(("subjects", "templates", "head_seq"), register_at_restore,
                                                        strict=True)),
                        "island_at_restore": pending_before},
            "island_enrolments": self.enrolment_summary(a_records, a_refused),
            "island_verifications": self.verification_summary(verifications, cut_wall),
            "central_enrolments": self.enrolment_summary(c_records, c_refused),
            "central_erasures": erasures,
            "shared_pairs": shared_pairs,
            "return": sync, "register_everywhere": everywhere,
            "acknowledged_ids": acknowledged,
            "central_acknowledged_ids": [r.subject_id for r in c_records if r.enrolled],
            "register_ids": [r.subject_id for r in register],
            "erased_ids": [e["subject_id"] for e in erasures if e["code"] == "OK"],
        }
        result["checks"] = self.check_offline(result)
        return result

    def watch_return(self, restore_at: float, pending: int, erased: list[str]) -> dict[str, Any]:
        """After the link returns: A's link state and outbox (GetStatistics every ``--poll-ms``), and Verify of an
        erased subject until A answers NOT_FOUND; times in s from the restore."""
        series: list[tuple[float, bool, int, int]] = []
        answers: list[tuple[float, float, str]] = []  # (start s, end s, code) of Verify of the erased subject
        deadline = restore_at + self.args.drain_timeout

        def stats() -> None:
            stub = self.a.new_stub()
            from checkpoint.v1 import checkpoint_pb2 as pb

            while time.monotonic() < deadline:
                try:
                    s = stub.GetStatistics(pb.GetStatisticsRequest(), timeout=10)
                except Exception:  # a poll lost: the next one retries
                    time.sleep(self.poll_s)
                    continue
                r = s.register
                series.append((time.monotonic() - restore_at, bool(r.connected), int(r.outbox_pending),
                               int(r.provisional)))
                if r.connected and r.outbox_pending == 0:
                    return
                time.sleep(self.poll_s)

        def erasure() -> None:
            if not erased:
                return
            stub = self.a.new_stub()
            sid = erased[0]
            while time.monotonic() < deadline:
                outcome, _ = verify_call(self.a, sid, self.probes[sid], self.args.timeout, stub)
                answers.append((outcome.start - restore_at, outcome.end - restore_at, outcome.code))
                if outcome.code == "NOT_FOUND":
                    return

        run_threads([("return-stats", stats), ("return-erasure", erasure)])
        connected = next((t for t, c, _, _ in series if c), None)
        started = next((t for t, _, p, _ in series if p < pending), None)
        drained = next((t for t, c, p, _ in series if c and p == 0), None)
        gone = next((end for _, end, code in answers if code == "NOT_FOUND"), None)
        still = [a for a in answers if a[2] == "OK"]
        others = {sid: found_at(self.a, sid, self.probes[sid], self.args.timeout) for sid in erased[1:]}
        return {
            "outbox_pending_at_restore": pending,
            "connected_s": connected, "drain_started_s": started, "drain_s": drained,
            "erased_not_found_s": gone,
            "erased_last_found_s": still[-1][1] if still else None,
            "erased_found_answers": len(still),
            "erased_found_after_drain_began": [a for a in still if started is not None and a[0] > started],
            "other_erased_codes": others,
            "polls": len(series),
            "series": [{"s": round(t, 3), "connected": c, "outbox_pending": p, "provisional": v}
                       for t, c, p, v in series[:: max(1, len(series) // 200)]],
            "server_drain_lines": log_lines(self.a.log_path, r"outbox drained")[-5:],
        }

    def enrolment_summary(self, records: list[Enrolment], refused: list[Enrolment]) -> dict[str, Any]:
        """Counts and latencies of a desk's enrolments."""
        ok = [r for r in records if r.enrolled]
        return {"attempted": len(records), "acknowledged": len(ok),
                "provisional": sum(1 for r in ok if r.provisional),
                "not_provisional": [r.subject_id for r in ok if not r.provisional],
                "codes": dict(Counter(r.code for r in records)),
                "not_acknowledged": [{"subject_id": r.subject_id, "code": r.code, "details": r.details}
                                     for r in records if not r.enrolled],
                "overridden": [{"subject_id": r.subject_id, "identity": r.identity, "candidates": r.overridden}
                               for r in ok if r.overridden],
                "photos_refused": [{"identity": r.identity, "code": r.code, "details": r.details} for r in refused],
                "ms": distribution([r.ms for r in ok])}

    def verification_summary(self, calls: list[Verification], cut_wall: float) -> dict[str, Any]:
        """Codes, matches, latency and the stated age of the register of the island's Verify calls."""
        ok = [v for v in calls if v.code == "OK"]
        as_of = [parse_rfc3339(v.register_as_of) for v in ok]
        ages = [v.end_wall - t for v, t in zip(ok, as_of, strict=True) if t is not None]
        by_kind = {kind: {"calls": sum(1 for v in calls if v.kind == kind),
                          "match": sum(1 for v in ok if v.kind == kind and v.match)}
                   for kind in ("register", "provisional")}
        return {"calls": len(calls), "codes": dict(Counter(v.code for v in calls)),
                "errors": [{"subject_id": v.subject_id, "code": v.code} for v in calls if v.code != "OK"],
                "match": sum(1 for v in ok if v.match), "no_match": sum(1 for v in ok if not v.match),
                "by_kind": by_kind, "ms": distribution([v.ms for v in ok]),
                "register_as_of_missing": sum(1 for t in as_of if t is None),
                "register_as_of_after_cut": sum(1 for t in as_of if t is not None and t > cut_wall + 1),
                "register_as_of_age_s": distribution(ages)}

    # -- checks ------------------------------------------------------------------------------------

    def expected_false_reviews(self, uploads: int, register_at_restore: int, island_gallery: int) -> dict[str, Any]:
        """How many of ``uploads`` non-mated enrolments the drain's 1:N search is expected to flag: each searches
        the register (``register_at_restore`` plus those stored before it) at the threshold the island uses for
        its gallery of ``island_gallery`` subjects; a comparison reaches score ``t`` with probability ``10**-t``
        (the calibrated scale), so a search flags with probability about ``N * 10**-t`` (= FPIR when the
        threshold is the FPIR one)."""
        from biometrics.scores import threshold_for_fmr, threshold_for_fpir

        floor = threshold_for_fmr(0.001)
        threshold = threshold_for_fpir(0.01, island_gallery, floor)
        mean = sum(min(1.0, (register_at_restore + i) * 10 ** -threshold) for i in range(uploads))
        return {"non_mated_uploads": uploads, "threshold": threshold, "island_gallery": island_gallery,
                "register_at_restore": register_at_restore, "expected": mean,
                "poisson_99_upper": poisson_upper(mean), "fpir_configured": 0.01,
                "fpir_measured_readme": "0.99% (958 enrolled, 2,223 non-mated searches on lfw-dev)"}

    def check_offline(self, r: dict[str, Any]) -> dict[str, Any]:
        """Phase 1's checks against the register and the replicas."""
        register = read_register(self.url, self.ring)
        a_name = self.a.name
        account = accounting(r["acknowledged_ids"], register, a_name)
        a_reviews = [v for v in register["reviews"] if v["station"] == a_name]
        pairs = {p["island_subject"]: p["central_subject"] for p in r["shared_pairs"] if p["central_enrolled"]}
        found_pairs, missed_pairs, extras = [], [], []
        reviewed = {v["subject_id"]: v for v in a_reviews}
        for a_sid, c_sid in pairs.items():
            review = reviewed.get(a_sid)
            if review is not None and c_sid in [c for c, _ in review["candidates"]]:
                found_pairs.append(a_sid)
            else:
                missed_pairs.append({"island_subject": a_sid, "central_subject": c_sid,
                                     "in_register": register["ids"].get(a_sid, 0),
                                     "review": review})
        overridden = {o["subject_id"] for o in r["island_enrolments"]["overridden"]}
        for v in a_reviews:
            if v["subject_id"] in pairs:
                continue
            extras.append({"subject_id": v["subject_id"], "identity": self.names.get(v["subject_id"], "?"),
                           "threshold": v["threshold"], "overridden_offline": v["subject_id"] in overridden,
                           "candidates": [{"subject_id": c, "identity": self.names.get(c, "?"), "score": s,
                                           "same_person": self.names.get(c) == self.names.get(v["subject_id"])}
                                          for c, s in v["candidates"]]})
        offline_info = r["offline"]
        expected = self.expected_false_reviews(
            max(0, account["acknowledged"] - len(pairs)), offline_info["register_at_restore"]["subjects"],
            offline_info["island_at_restore"]["gallery_subjects"])
        false_extras = [e for e in extras if not any(c["same_person"] for c in e["candidates"])]
        expected["observed"] = len(extras)
        expected["p_at_least_observed"] = poisson_tail(len(extras), expected["expected"])
        # The register's content: what it should hold.
        erased = set(r["erased_ids"])
        should = ((set(r["register_ids"]) - erased) | set(r["central_acknowledged_ids"])
                  | (set(r["acknowledged_ids"]) - set(reviewed)))
        held = set(register["ids"])
        replica_a = read_replica(self.a.replica_dir, self.ring)  # type: ignore[arg-type]
        replica_b = read_replica(self.b.replica_dir, self.ring)  # type: ignore[arg-type]
        stats = {s.name: sync_of(s) for s in (self.central, self.a, self.b)}
        return {
            "accounting": account,
            "central_acknowledged_missing": sorted(set(r["central_acknowledged_ids"]) - held),
            "register_missing": sorted(should - held), "register_unexpected": sorted(held - should),
            "erased_still_in_register": sorted(erased & held),
            "reviews_of_island": len(a_reviews), "reviews_other_stations": len(register["reviews"]) - len(a_reviews),
            "shared_pairs": len(pairs), "pairs_waiting_for_review": len(found_pairs), "pairs_missed": missed_pairs,
            "extra_reviews": extras, "extra_reviews_same_person": len(extras) - len(false_extras),
            "fpir_explanation": expected,
            "extras_explained_by_fpir": not (len(extras) - len(false_extras))
            and len(extras) <= expected["poisson_99_upper"],
            "stations": stats,
            "replica_a_equals_register_plus_reviews": set(replica_a["ids"]) == held | set(reviewed),
            "replica_a_extra": sorted(set(replica_a["ids"]) - held - set(reviewed)),
            "replica_a_missing": sorted((held | set(reviewed)) - set(replica_a["ids"])),
            "replica_b_equals_register": set(replica_b["ids"]) == held,
            "replica_b_difference": sorted(set(replica_b["ids"]) ^ held),
            "gallery_counts_as_expected": stats[self.central.name]["gallery_subjects"] == len(held)
            and stats[self.b.name]["gallery_subjects"] == len(held)
            and stats[a_name]["gallery_subjects"] == len(held) + len(reviewed)
            and stats[a_name]["provisional"] == len(reviewed),
            "outbox": check_uploads(replica_a["outbox"], register),
            "register_subjects": len(held), "register_head_seq": register["head_seq"],
        }

    # -- resolution and comparison -------------------------------------------------------------

    def resolve_all(self) -> dict[str, Any]:
        """Resolve every pending review at central as an officer would: link (same LFW identity) or keep both."""
        from checkpoint.v1 import checkpoint_pb2 as pb

        stub = self.central.stub()
        listed = stub.ListReviews(pb.ListReviewsRequest(limit=500), timeout=self.args.timeout).reviews
        done: Counter[str] = Counter()
        codes: Counter[str] = Counter()
        t = time.monotonic()
        for review in listed:
            same = any(self.names.get(c.subject_id) == self.names.get(review.subject_id) for c in review.candidates)
            resolution = pb.LINK if same else pb.KEEP_BOTH
            request = pb.ResolveReviewRequest(review_id=review.review_id, resolution=resolution,
                                              reason=LINK_REASON if same else KEEP_REASON)
            outcome, _ = call(lambda request=request: stub.ResolveReview(request, timeout=self.args.timeout))
            codes[outcome.code] += 1
            done["link" if same else "keep_both"] += 1
        resolve_s = time.monotonic() - t
        everywhere = self.wait_register_everywhere({}, 60)
        provisional = wait_for_value(lambda: sync_of(self.a)["provisional"], 0, time.monotonic() + 30)
        return {"listed": len(listed), "resolutions": dict(done), "codes": dict(codes), "resolve_s": resolve_s,
                "register_everywhere": everywhere, "island_provisional_after": provisional}

    def compare_stations(self, erased: list[str], extra_ids: list[str]) -> dict[str, Any]:
        """The stations' subject sets against the register's: the islands' replica files, every station's gallery
        count, and Verify at every station of a sample of the register, ``extra_ids`` and the erased subjects."""
        register = read_register(self.url, self.ring)
        held = set(register["ids"])
        replicas = {s.name: read_replica(s.replica_dir, self.ring) for s in (self.a, self.b)}  # type: ignore[arg-type]
        counts = {s.name: sync_of(s) for s in (self.central, self.a, self.b)}
        rng = random.Random(self.args.seed + 7)
        sample = rng.sample(sorted(held), min(self.args.spot_checks, len(held)))
        sample = sorted(set(sample) | (set(extra_ids) & held))
        spot: dict[str, Any] = {}
        for s in (self.central, self.a, self.b):
            missing = [sid for sid in sample if found_at(s, sid, self.probes.get(sid, self.any_face),
                                                         self.args.timeout) != "OK"]
            still = [sid for sid in erased if found_at(s, sid, self.probes.get(sid, self.any_face),
                                                       self.args.timeout) != "NOT_FOUND"]
            spot[s.name] = {"checked": len(sample), "missing": missing, "erased_checked": len(erased),
                            "erased_still_found": still}
        same = (all(set(rep["ids"]) == held for rep in replicas.values())
                and all(c["gallery_subjects"] == len(held) for c in counts.values())
                and not any(v["missing"] or v["erased_still_found"] for v in spot.values()))
        return {"register_subjects": len(held), "register_head_seq": register["head_seq"],
                "subjects_stored_twice": sorted(s for s, n in register["ids"].items() if n > 1),
                "subjects_without_one_template": sorted(s for s, n in register["templates"].items() if n != 1),
                "replica_differences": {name: sorted(set(rep["ids"]) ^ held) for name, rep in replicas.items()},
                "gallery": {name: c["gallery_subjects"] for name, c in counts.items()},
                "provisional": {name: c["provisional"] for name, c in counts.items()},
                "spot_checks": spot, "pending_reviews": len(register["reviews"]),
                "reviews_by_state": register["reviews_by_state"], "same_register": same}

    # -- phase 2 ---------------------------------------------------------------------------------

    def phase_kill(self, single: Supply, multi: Supply) -> dict[str, Any]:
        """Phase 2: a drain interrupted by SIGKILL, the station restarted, the drain resumed."""
        args = self.args
        outbox_before = read_replica(self.a.replica_dir, self.ring)["outbox"]  # type: ignore[arg-type]
        since_n = max((e["n"] for e in outbox_before), default=0)
        self.link_a.cut()
        detected_s = self.wait_offline(self.a)
        records: list[Enrolment] = []
        refused: list[Enrolment] = []
        stub = self.a.new_stub()
        t = time.monotonic()
        for i in range(args.kill_enrolments):
            sid = f"K{self.run_id}{i:04d}"
            while True:
                person = single.take() if single.left else multi.take()
                record = acknowledge(self.a, sid, person, person.image(0), self.names, args.timeout, stub)
                if record.enrolled or record.code not in ("INVALID_ARGUMENT", "OK"):
                    break
                refused.append(record)
            records.append(record)
        enrol_s = time.monotonic() - t
        pending = sync_of(self.a)["outbox_pending"]
        print(f"  kill: {pending} writes waiting; restoring the link, SIGKILL once the drain has begun",
              file=sys.stderr)
        restore_at = self.link_a.restore()
        stub = self.a.new_stub()
        from checkpoint.v1 import checkpoint_pb2 as pb

        seen: list[tuple[float, int]] = []
        killed: dict[str, Any] = {}
        deadline = restore_at + args.drain_timeout
        while time.monotonic() < deadline:
            try:
                r = stub.GetStatistics(pb.GetStatisticsRequest(), timeout=10).register
            except Exception:  # a poll lost: the next one retries
                continue
            seen.append((time.monotonic() - restore_at, int(r.outbox_pending)))
            if 0 < r.outbox_pending < pending:
                killed = self.a.kill()
                killed.update(at_s=time.monotonic() - restore_at, outbox_pending_seen=int(r.outbox_pending))
                break
            if r.outbox_pending == 0:
                killed = {"missed": "the drain finished between two polls: raise --kill-enrolments"}
                break
            time.sleep(0.005)
        try:  # the file as the crash left it (a read-only reader: nothing recovered or changed)
            replica_after_kill = read_replica(self.a.replica_dir, self.ring)  # type: ignore[arg-type]
            pending_in_file: int | str = sum(1 for e in replica_after_kill["outbox"] if e["state"] == "pending")
        except sqlite3.Error as exc:
            pending_in_file = f"not readable read-only after the crash: {exc}"
        # The restart: same data directory, replica and key directory, link up.
        old = self.a
        self.a = self.island(old.name, self.link_a, data_dir=old.data_dir, replica_dir=old.replica_dir,
                             log_name=f"{old.name}-restart")
        launched = time.monotonic()
        self.a.launch().wait_listening(240)
        ready_s = time.monotonic() - launched
        first = sync_of(self.a)
        drained = None
        try:
            wait_for(lambda: (lambda s: s["connected"] and s["outbox_pending"] == 0)(sync_of(self.a)),
                     args.drain_timeout, "island A's outbox drained after the restart", self.poll_s)
            drained = time.monotonic() - launched
        except StationsError as exc:
            killed["drain_error"] = str(exc)
        warm_up(self.a, self.any_face)
        register = read_register(self.url, self.ring)
        replica = read_replica(self.a.replica_dir, self.ring)  # type: ignore[arg-type]
        acknowledged = [r.subject_id for r in records if r.enrolled]
        mine = set(acknowledged)
        reviews = [v for v in register["reviews"] if v["station"] == self.a.name and v["subject_id"] in mine]
        everywhere = self.wait_register_everywhere({self.a.name: len(reviews)}, 60)
        result = {
            "cut_detected_s": detected_s, "enrolments": self.enrolment_summary(records, refused), "enrol_s": enrol_s,
            "outbox_pending_at_restore": pending, "kill": killed, "polls_before_kill": seen[-20:],
            "outbox_pending_in_file_after_kill": pending_in_file,
            "restart_to_ready_s": ready_s, "after_restart": first, "restart_to_drained_s": drained,
            "restore_to_drained_s": None if drained is None else launched + drained - restore_at,
            "reuploads_recognised": log_lines(self.a.log_path, r"already in the register"),
            "server_drain_lines": log_lines(self.a.log_path, r"outbox drained")[-5:],
            "register_everywhere": everywhere,
            "accounting": accounting(acknowledged, register, self.a.name),
            "outbox": check_uploads(replica["outbox"], register, since_n),
            "reviews": [{"subject_id": v["subject_id"], "identity": self.names.get(v["subject_id"], "?"),
                         "candidates": [{"subject_id": c, "identity": self.names.get(c, "?"), "score": s}
                                        for c, s in v["candidates"]]} for v in reviews],
            "island_provisional": sync_of(self.a)["provisional"],
            "island_reviews_pending": len([v for v in register["reviews"] if v["station"] == self.a.name]),
            "acknowledged_ids": acknowledged,
        }
        return result


def stop_all(stations: Stations) -> None:
    """Stop every station still running, all at once (each: SIGTERM, SIGKILL after 30 s)."""
    run_threads([(f"stop-{s.name}", s.stop) for s in stations.all])


def wait_for_value(read: Callable[[], Any], want: Any, deadline: float, interval: float = 0.05) -> Any:
    """Poll ``read()`` until it equals ``want`` or the deadline passes; the last value."""
    while True:
        value = read()
        if value == want or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------------------
# Evaluation


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run."""
    parts = ["checkpoint-bench", "offline", "--images", str(args.images), "--out", str(args.out),
             "--register", str(args.register), "--enrolments", str(args.enrolments),
             "--verifications", str(args.verifications), "--central-enrolments", str(args.central_enrolments),
             "--shared", str(args.shared), "--shared-min-score", f"{args.shared_min_score:g}",
             "--erasures", str(args.erasures), "--offline-seconds", f"{args.offline_seconds:g}",
             "--kill-enrolments", str(args.kill_enrolments), "--seed", str(args.seed)]
    if args.admin_url != ADMIN_URL:
        parts += ["--admin-url", args.admin_url]
    return " ".join(parts)


def check_arguments(args: argparse.Namespace) -> None:
    """StationsError for a bad size."""
    for name in ("register", "enrolments", "central_enrolments", "spot_checks"):
        if getattr(args, name) < 1:
            raise StationsError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("verifications", "shared", "erasures", "kill_enrolments"):
        if getattr(args, name) < 0:
            raise StationsError(f"--{name.replace('_', '-')} cannot be negative")
    if args.shared > min(args.enrolments, args.central_enrolments):
        raise StationsError("--shared cannot exceed --enrolments or --central-enrolments")
    if args.erasures > args.register:
        raise StationsError("--erasures cannot exceed --register")
    if args.offline_seconds <= 0 or args.poll_ms <= 0 or args.drain_timeout <= 0:
        raise StationsError("--offline-seconds, --poll-ms and --drain-timeout must be positive")
    if args.max_pending < args.enrolments + args.erasures + 1 or args.max_pending <= args.kill_enrolments:
        raise StationsError("--max-pending must exceed the enrolments made offline (or the budget refuses them)")


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run both phases; write report.json and report.md into ``args.out``."""
    from benchmarks.accuracy import json_safe
    from benchmarks.report import describe_machine, write_stations_report

    check_arguments(args)
    multi_all, single_all = load_identities(args.images, args.seed)
    multi, single = Supply(multi_all, "identities with two or more photos"), Supply(single_all, "identities")
    run_id = uuid.uuid4().hex[:6].upper()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    result: dict[str, Any] = {"command": command_line(args), "machine": describe_machine(),
                              "postgresql": server_version(args.admin_url), "run_id": run_id,
                              "identities_with_two_images": len(multi_all),
                              "identities_with_one_image": len(single_all)}
    timings: dict[str, float] = {}
    mark = [time.monotonic()]

    def lap(name: str) -> None:
        now = time.monotonic()
        timings[name] = round(now - mark[0], 2)
        mark[0] = now

    print("screening the shared people's photo pairs ...", file=sys.stderr)
    shared, put_back, screening = screen_shared(multi, args.shared, args.shared_min_score)
    multi = Supply(put_back + multi.identities[multi.next:], multi.label)
    result["shared_screening"] = screening
    lap("screening")
    with contextlib.ExitStack() as stack:
        work = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="checkpoint-offline-")))
        work.mkdir(parents=True, exist_ok=True)
        stations = Stations(work, args.out / "logs")
        ring = prepare_keys(stations.key_dir)
        url = stack.enter_context(bench_database(args.admin_url, "offline"))
        result["register_database"] = url.rsplit("/", 1)[-1]
        bench = Run(args, stations, ring, url, run_id)
        bench.any_face = multi_all[0].image(0)
        bench.link_a = stack.enter_context(LinkProxy.to_url(url, name="island-a"))
        bench.link_b = stack.enter_context(LinkProxy.to_url(url, name="island-b"))
        stack.callback(stop_all, stations)  # first out: the stations stop while their register and links are up
        bench.central = Station("central", work / "data-central", stations.key_dir, stations.logs / "central.log", url)
        stations.all.append(bench.central)
        bench.a = bench.island("island-a", bench.link_a)
        bench.b = bench.island("island-b", bench.link_b)
        t = time.monotonic()
        bench.start([bench.central, bench.a, bench.b])
        result["start_s"] = time.monotonic() - t
        lap("start")
        print(f"register: {args.register} subjects at central ...", file=sys.stderr)
        register = bench.enrol_register(multi)
        lap("register")
        print("phase 1: island A offline ...", file=sys.stderr)
        offline = bench.phase_offline(multi, single, shared, register)
        result["offline"] = offline
        lap("offline")
        print("comparing the stations, resolving the reviews ...", file=sys.stderr)
        erased = offline["erased_ids"]
        pair_ids = [p[k] for p in offline["shared_pairs"] for k in ("island_subject", "central_subject")]
        result["resolution"] = bench.resolve_all()
        lap("resolution")
        result["after_resolution"] = bench.compare_stations(erased, pair_ids)
        lap("compare")
        if args.kill_enrolments:
            print("phase 2: SIGKILL in the middle of the drain ...", file=sys.stderr)
            result["kill"] = bench.phase_kill(single, multi)
            lap("kill")
            result["kill"]["resolution"] = bench.resolve_all()
            result["final"] = bench.compare_stations(erased, pair_ids + result["kill"]["acknowledged_ids"][:10])
            lap("final")
        result["links"] = [bench.link_a.stats(), bench.link_b.stats()]
        stop_all(stations)
        lap("stop")
        result["unshipped_audit_at_shutdown"] = [line for s in stations.all
                                                 for line in log_lines(s.log_path, r"not shipped to the register")]
    result["phase_seconds"] = timings
    result["wall_s"] = time.time() - started
    result["failures"] = failures(result)
    (args.out / "report.json").write_text(json.dumps(json_safe(result), indent=1) + "\n")
    write_stations_report(args.out / "report.md", "An island station offline, then reconnected", result,
                          summary_lines(result))
    return result


def failures(result: dict[str, Any]) -> list[str]:
    """The correctness checks that failed (timings are reported, not failed)."""
    out: list[str] = []
    o = result.get("offline")
    if o:
        c = o["checks"]
        a = c["accounting"]
        if a["lost"] or a["stored_twice"]:
            out.append(f"offline: acknowledged enrolments lost {a['lost'][:10]}, stored twice {a['stored_twice'][:10]}")
        if o["island_enrolments"]["not_provisional"]:
            out.append(f"offline: enrolments at A acknowledged but not provisional: "
                       f"{o['island_enrolments']['not_provisional'][:10]}")
        if c["pairs_missed"] or c["pairs_waiting_for_review"] != c["shared_pairs"]:
            out.append(f"offline: {c['pairs_waiting_for_review']} of {c['shared_pairs']} shared pairs wait for "
                       f"review; missed {c['pairs_missed'][:5]}")
        if not c["extras_explained_by_fpir"]:
            out.append(f"offline: {len(c['extra_reviews'])} extra reviews, more than the FPIR explains "
                       f"(expected {c['fpir_explanation']['expected']:.2f}) or naming the same person")
        if c["register_missing"] or c["register_unexpected"] or c["erased_still_in_register"]:
            out.append(f"offline: the register differs from what was acknowledged: missing {c['register_missing'][:5]}"
                       f", unexpected {c['register_unexpected'][:5]}, erased still there "
                       f"{c['erased_still_in_register'][:5]}")
        if not (c["replica_a_equals_register_plus_reviews"] and c["replica_b_equals_register"]
                and c["gallery_counts_as_expected"]):
            out.append("offline: after the drain the stations do not hold the register (replica and gallery counts)")
        ob = c["outbox"]
        if ob["not_uploaded"] or ob["upload_recorded_twice"] or ob["other_content_under_same_id"]:
            out.append(f"offline: outbox entries not uploaded or uploaded twice: {ob}")
        v = o["island_verifications"]
        if v["errors"] or v["register_as_of_missing"] or v["register_as_of_after_cut"]:
            out.append(f"offline: Verify at A offline: {len(v['errors'])} errors, register_as_of missing "
                       f"{v['register_as_of_missing']}, newer than the cut {v['register_as_of_after_cut']}")
        r = o["return"]
        if r["drain_s"] is None:
            out.append("offline: A's outbox never drained")
        if o["central_erasures"] and (r["erased_not_found_s"] is None
                                      or any(code != "NOT_FOUND" for code in r["other_erased_codes"].values())):
            out.append(f"offline: an erasure made centrally still verifies at A: {r['other_erased_codes']}")
        if r["erased_found_after_drain_began"]:
            out.append("offline: A verified an erased subject after its drain had begun")
    for key in ("after_resolution", "final"):
        s = result.get(key)
        if s and not s["same_register"]:
            out.append(f"{key}: the stations do not hold the same register: galleries {s['gallery']}, replica "
                       f"differences { {k: v[:5] for k, v in s['replica_differences'].items()} }, spot checks "
                       f"{ {k: (v['missing'][:5], v['erased_still_found']) for k, v in s['spot_checks'].items()} }")
        if s and (s["subjects_stored_twice"] or s["subjects_without_one_template"]):
            out.append(f"{key}: subjects stored twice {s['subjects_stored_twice'][:5]}, without exactly one "
                       f"template {s['subjects_without_one_template'][:5]}")
        if s and any(s["provisional"].values()):
            out.append(f"{key}: stations still count provisional subjects after every review was resolved: "
                       f"{s['provisional']}")
    k = result.get("kill")
    if k:
        if "missed" in k["kill"]:
            out.append(f"kill: {k['kill']['missed']}")
        a = k["accounting"]
        if a["lost"] or a["stored_twice"]:
            out.append(f"kill: acknowledged enrolments lost {a['lost'][:10]}, stored twice {a['stored_twice'][:10]}")
        ob = k["outbox"]
        if ob["not_uploaded"] or ob["upload_recorded_twice"] or ob["other_content_under_same_id"] \
                or ob["outcome_differs_from_island_state"]:
            out.append(f"kill: outbox against the register's upload records: {ob}")
        if k["restart_to_drained_s"] is None:
            out.append("kill: the drain did not resume and finish after the restart")
    return out


# ---------------------------------------------------------------------------------------------------------
# Reporting


def _s(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The headline figures of a run, as Markdown."""
    lines: list[str] = []
    o = result.get("offline")
    if o:
        off, ie, iv, ce, r, c = (o["offline"], o["island_enrolments"], o["island_verifications"],
                                 o["central_enrolments"], o["return"], o["checks"])
        a = c["accounting"]
        fp = c["fpir_explanation"]
        ms = iv["ms"]
        lines += [
            "## Phase 1: island A offline", "",
            f"A's link cut for {off['actual_s']:.0f} s (planned {off['planned_s']:g} s; the offline work took "
            f"{off['work_s']:.0f} s; A noticed the cut in {off['cut_detected_s']:.2f} s). Register before the cut: "
            f"{off['register_before']['subjects']} subjects.", "",
            "| while offline | figure |", "|---|---|",
            f"| enrolments at A | {ie['acknowledged']} acknowledged ({ie['provisional']} provisional), "
            f"{len(ie['overridden'])} after an officer's override, {len(ie['photos_refused'])} photos refused, "
            f"p50 / p95 {_s(ie['ms']['p50'], 0)} / {_s(ie['ms']['p95'], 0)} ms |",
            f"| Verify at A | {iv['calls']} calls: {iv['codes']}; match {iv['match']}, no match {iv['no_match']} "
            f"({iv['by_kind']}); p50 / p95 {_s(ms['p50'], 0)} / {_s(ms['p95'], 0)} ms; register_as_of on every "
            f"answer: {'yes' if not iv['register_as_of_missing'] else 'NO'}, age at the answer "
            f"{_s(iv['register_as_of_age_s']['p50'], 0)} s (p50) to {_s(iv['register_as_of_age_s']['max'], 0)} s |",
            f"| enrolments at central | {ce['acknowledged']} acknowledged, {len(ce['overridden'])} after an override; "
            f"{c['shared_pairs']} of them people also enrolled at A |",
            f"| erasures at central | {len(o['central_erasures'])}: "
            f"{dict(Counter(e['code'] for e in o['central_erasures']))} |",
            "", "| after the link returned (s from the restore) | figure |", "|---|---|",
            f"| A reports the link up | {_s(r['connected_s'])} |",
            f"| Verify at A of an erased subject answers NOT_FOUND | {_s(r['erased_not_found_s'])} (last still found: "
            f"{_s(r['erased_last_found_s'])}; other erased subjects then: {r['other_erased_codes']}) |",
            f"| drain began (outbox_pending fell) | {_s(r['drain_started_s'])} |",
            f"| **drain time** (outbox_pending 0, from {r['outbox_pending_at_restore']} writes) | "
            f"**{_s(r['drain_s'])}** |",
            f"| every station holds the register (gallery counts) | "
            f"{_s(o['register_everywhere']['seconds_from_restore'])} |",
            "", "| check | result |", "|---|---|",
            f"| A's acknowledged enrolments | {a['acknowledged']}: {a['in_register']} in the register, "
            f"{a['waiting_for_review']} waiting for review, **lost {len(a['lost'])}, stored twice "
            f"{len(a['stored_twice'])}** |",
            f"| shared pairs waiting for review | **{c['pairs_waiting_for_review']} of {c['shared_pairs']}** |",
            f"| other reviews | {len(c['extra_reviews'])} (expected from the 1:N threshold {fp['threshold']:.2f} over "
            f"{fp['non_mated_uploads']} non-mated uploads against {fp['register_at_restore']}+ subjects: "
            f"{fp['expected']:.2f}, 99% of runs <= {fp['poisson_99_upper']}; same person: "
            f"{c['extra_reviews_same_person']}) |",
            f"| register against what was acknowledged and erased | missing {len(c['register_missing'])}, unexpected "
            f"{len(c['register_unexpected'])}, erased still there {len(c['erased_still_in_register'])} |",
            f"| stations after the drain | galleries { {k: v['gallery_subjects'] for k, v in c['stations'].items()} } "
            f"(register {c['register_subjects']}; A also holds its {c['reviews_of_island']} enrolments in review); "
            f"A's replica = register + reviews: {c['replica_a_equals_register_plus_reviews']}; B's replica = "
            f"register: {c['replica_b_equals_register']} |",
            f"| outbox against the register's upload records | {c['outbox']['states']}; not uploaded "
            f"{len(c['outbox']['not_uploaded'])}, recorded twice {len(c['outbox']['upload_recorded_twice'])} |", ""]
        if c["extra_reviews"]:
            lines += ["Extra reviews (not a shared pair):", ""]
            for e in c["extra_reviews"]:
                cands = ", ".join(f"{x['subject_id']} ({x['identity']}, score {x['score']:.2f})"
                                  for x in e["candidates"])
                lines.append(f"- {e['subject_id']} ({e['identity']}; threshold {e['threshold']:.2f}"
                             f"{'; overridden offline' if e['overridden_offline'] else ''}): {cands}")
            lines.append("")
    for key, title in (("after_resolution", "After every review was resolved"), ("final", "After phase 2")):
        s = result.get(key)
        if s:
            spot = {k: f"{v['checked'] - len(v['missing'])}/{v['checked']} found, erased gone "
                       f"{v['erased_checked'] - len(v['erased_still_found'])}/{v['erased_checked']}"
                    for k, v in s["spot_checks"].items()}
            lines += [f"## {title}", "",
                      f"Register {s['register_subjects']} subjects (stored twice: {len(s['subjects_stored_twice'])}); "
                      f"galleries {s['gallery']}; replica differences "
                      f"{ {k: len(v) for k, v in s['replica_differences'].items()} }; provisional {s['provisional']}; "
                      f"Verify spot checks {spot}; reviews pending {s['pending_reviews']}. **Same register at every "
                      f"station: {'yes' if s['same_register'] else 'NO'}.**", ""]
            if key == "after_resolution":
                res = result["resolution"]
                lines += [f"Resolved {res['listed']} reviews {res['resolutions']} ({res['codes']}) in "
                          f"{res['resolve_s']:.2f} s; every station held the register "
                          f"{_s(res['register_everywhere']['seconds'])} s later.", ""]
    k = result.get("kill")
    if k:
        kill = k["kill"]
        a = k["accounting"]
        lines += ["## Phase 2: SIGKILL in the middle of the drain", "",
                  f"{k['enrolments']['acknowledged']} enrolments at A offline; link restored with "
                  f"{k['outbox_pending_at_restore']} writes waiting; "
                  + (f"SIGKILL at {kill['at_s']:.2f} s with {kill['outbox_pending_seen']} still pending "
                     f"({k['outbox_pending_in_file_after_kill']} pending in the replica file after the kill); "
                     if "at_s" in kill else f"NOT killed mid-drain: {kill.get('missed')}; ")
                  + f"restart to ready {k['restart_to_ready_s']:.2f} s (pending then "
                  f"{k['after_restart']['outbox_pending']}), drained {_s(k['restart_to_drained_s'])} s after the "
                  f"restart; re-uploads recognised (already in the register): {len(k['reuploads_recognised'])}. "
                  f"Acknowledged {a['acknowledged']}: {a['in_register']} in the register, {a['waiting_for_review']} "
                  f"waiting for review, **lost {len(a['lost'])}, stored twice {len(a['stored_twice'])}**; outbox "
                  f"against the register's upload records: {k['outbox']['states']}, not uploaded "
                  f"{len(k['outbox']['not_uploaded'])}, recorded twice {len(k['outbox']['upload_recorded_twice'])}, "
                  f"outcome differing {len(k['outbox']['outcome_differs_from_island_state'])}.", ""]
    if result.get("failures"):
        lines += ["## FAILED checks", "", *[f"- {f}" for f in result["failures"]], ""]
    return lines


def run(args: argparse.Namespace) -> int:
    """Entry point of ``checkpoint-bench offline``."""
    try:
        result = evaluate(args)
    except StationsError as exc:
        print(f"checkpoint-bench offline: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(result)))
    print(f"written: {args.out / 'report.json'}, {args.out / 'report.md'}, logs in {args.out / 'logs'}")
    for f in result["failures"]:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if result["failures"] else 0


if __name__ == "__main__":  # pragma: no cover
    from benchmarks.cli import main

    sys.exit(main([COMMAND, *sys.argv[1:]]))
