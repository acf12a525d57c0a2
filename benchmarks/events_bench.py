"""Decision events: what recording one costs a Verify (on vs off, in one run), and the bulk load rate.

Usage::

    flock -x /tmp/checkpoint-bench.lock checkpoint-bench events --images ../shared/data/faces/lfw-dev \\
        --postgres postgresql://postgres@127.0.0.1:5432/postgres --json results/events.json

**Verify, recording on vs off.** Two in-process services (each its own data directory and key ring) enrol the
same ``--subjects`` LFW identities (the first image of each identity with two or more). Each of ``--verifies``
rounds then sends one probe (a genuine second image, or every other round an impostor's) to both services, the
order alternating, so both see the same images under the same load; the figures are p50/p95 of each and the
median of the paired differences. Two modes:

- ``cached``: the probe's face template is computed once beforehand, so the timed Verify is the service's
  own work (gallery comparison, the audit record's durable transaction, and the event with its aggregates):
  the cost of the event stands out against the smallest baseline there is;
- ``live``: the production path, face extraction of the probe included (dlib, in this process).

With ``--postgres`` (an admin URL: a temporary database is created and dropped) the same runs on two stations
of a PostgreSQL register; their events go to the station's local journal in the audit record's transaction
and are shipped to the register in the background, so the register is not on the Verify's path.

**Bulk load.** ``--bulk`` synthetic events (stated as synthetic: random stations, lanes, hours over a year,
outcomes, processing times and nationalities) through :meth:`SqlEventStore.record_decisions` into a fresh
SQLite file, and into a fresh PostgreSQL database with ``--postgres``: events per second, aggregates included.

The machine's load (``os.getloadavg``) before and after is recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

COMMAND = "events"
DEFAULT_IMAGES = Path("../shared/data/faces/lfw-dev")
TARGET_MS = 1.0  # the target: recording adds at most this to Verify p50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``checkpoint-bench events``."""
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                        help="LFW folder with identities.csv and images/<Name>/<Name>_NNNN.jpg")
    parser.add_argument("--subjects", type=int, default=100, help="identities enrolled in each service")
    parser.add_argument("--verifies", type=int, default=300, help="timed rounds (one Verify per service each)")
    parser.add_argument("--live-verifies", type=int, default=100,
                        help="timed rounds with live face extraction (0: skip)")
    parser.add_argument("--bulk", type=int, default=2_000_000, help="synthetic events bulk-loaded (0: skip)")
    parser.add_argument("--postgres", metavar="ADMIN_URL",
                        help="also on a PostgreSQL register: a temporary database is created there and dropped")
    parser.add_argument("--json", type=Path, required=True, help="where to write the figures")
    parser.add_argument("--seed", type=int, default=13)


# -- data --------------------------------------------------------------------------------------------


def identities(root: Path, n: int, seed: int) -> list[tuple[str, list[Path]]]:
    """``n`` identities with two or more images (a seeded choice), with their image paths."""
    with (root / "identities.csv").open() as f:
        names = [row["identity"] for row in csv.DictReader(f) if int(row["n_images"]) >= 2]
    rng = random.Random(seed)
    chosen = sorted(rng.sample(names, min(n, len(names))))
    return [(name, sorted((root / "images" / name).glob("*.jpg"))) for name in chosen]


class CachedExtractor:
    """Face templates by image bytes: computed once (in this process), then served from memory."""

    def __init__(self) -> None:
        from biometrics.service import InProcessExtractor

        self.inner = InProcessExtractor()
        self.cache: dict[bytes, Any] = {}
        self.live = False  # True: every call extracts (the production path)

    def extract_face(self, image: Any, purpose: str = "probe") -> Any:
        """See :class:`biometrics.service.FaceExtractor`."""
        if self.live:
            return self.inner.extract_face(image, purpose)
        key = bytes(image)
        hit = self.cache.get(key)
        if hit is None:
            hit = self.cache[key] = self.inner.extract_face(image, purpose)
        return hit


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` (0..100) percentile, linear between closest ranks."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# -- Verify on vs off -----------------------------------------------------------------------------------


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A temporary database on the server of ``admin_url``; dropped afterwards."""
    import psycopg
    from psycopg import sql

    if not admin_url.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"--postgres must be a postgresql:// URL, not {admin_url!r}")
    name = f"checkpoint_bench_events_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def open_services(work: Path, extractor: CachedExtractor, register_url: str | None) -> dict[str, Any]:
    """Two services, recording on and off, each with its own data directory (and station on the register)."""
    from biometrics.service import CheckpointService, ServiceConfig, StoreLocation

    services = {}
    for label, record in (("on", True), ("off", False)):
        station = f"bench-{label}"
        keys = work / ("keys" if register_url else f"{label}-keys")  # stations of one register share its ring
        where = StoreLocation(work / label, key_dir=keys, store_url=register_url,
                              station=station if register_url else "")
        service = CheckpointService.open(where, config=ServiceConfig(record_events=record), extractor=extractor)
        if register_url:
            service.start(retry_s=0.5, poll_s=2.0)
        services[label] = service
    return services


def enrol(services: dict[str, Any], people: list[tuple[str, list[Path]]], shared: bool
          ) -> list[tuple[str, list[Path]]]:
    """Enrol every identity's first image in every service (templates computed once, shared); on a ``shared``
    register through one station, the other following the register's change log. Returns the identities
    enrolled, in order (LFW images an enrolment refuses, e.g. two faces or a poor one, are left out)."""
    from biometrics.errors import BiometricError
    from biometrics.types import Modality, Sample, SubjectInfo

    enrolled = []
    for name, images in people:
        sample = Sample(Modality.FACE, images[0].read_bytes())
        subject_id = f"S{len(enrolled):07d}"
        try:
            results = [service.enrol(subject_id, SubjectInfo(name=name.replace("_", " "), nationality="AUS"),
                                     [sample]) for service in (list(services.values())[:1] if shared
                                                              else services.values())]
        except BiometricError:
            continue
        if all(r.enrolled for r in results):
            enrolled.append((name, images))
        elif any(r.enrolled for r in results):
            raise RuntimeError(f"{name} was enrolled in one service and held back in the other")
    for service in services.values():
        service.catch_up()
    return enrolled


def probes(people: list[tuple[str, list[Path]]], rounds: int) -> list[tuple[str, bytes]]:
    """(subject id, probe bytes): a genuine second image, every other round an impostor's."""
    out = []
    for r in range(rounds):
        i = r % len(people)
        other = people[i] if r % 2 == 0 else people[(i + 1) % len(people)]
        out.append((f"S{i:07d}", other[1][1].read_bytes()))
    return out


def timed_rounds(services: dict[str, Any], rounds: list[tuple[str, bytes]]) -> dict[str, list[float]]:
    """ms of each Verify, per service, the order alternating each round."""
    from biometrics.errors import BiometricError
    from biometrics.types import Actor, Modality, Sample

    kiosk = Actor(role="kiosk", identity="CN=bench-kiosk", extra={"common_name": "bench-kiosk"})
    times: dict[str, list[float]] = {label: [] for label in services}
    labels = list(services)
    for r, (subject_id, image) in enumerate(rounds):
        for label in (labels if r % 2 == 0 else labels[::-1]):
            start = time.perf_counter()
            # No face found in the probe: the refusal is timed as well (an error event when recording).
            with contextlib.suppress(BiometricError):
                services[label].verify(subject_id, [Sample(Modality.FACE, image)], actor=kiosk,
                                       document_nationality="AUS")
            times[label].append((time.perf_counter() - start) * 1000.0)
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, Any]:
    """p50/p95 of on and off, the p50 difference and the median of the paired differences (ms)."""
    on, off = times["on"], times["off"]
    paired = [a - b for a, b in zip(on, off, strict=True)]
    out = {"n": len(on), "on_p50_ms": percentile(on, 50), "off_p50_ms": percentile(off, 50),
           "on_p95_ms": percentile(on, 95), "off_p95_ms": percentile(off, 95),
           "paired_median_diff_ms": statistics.median(paired)}
    out["p50_added_ms"] = out["on_p50_ms"] - out["off_p50_ms"]
    out["ratio_p50"] = out["on_p50_ms"] / out["off_p50_ms"]
    out["p50_added_ci95_ms"] = bootstrap_p50_difference(on, off)
    out["target_met"] = out["p50_added_ms"] <= TARGET_MS
    return out


def bootstrap_p50_difference(on: Sequence[float], off: Sequence[float], resamples: int = 2000, seed: int = 1
                             ) -> tuple[float, float]:
    """A 95% interval of p50(on) - p50(off), resampling the rounds (pairs) with replacement: how much of a
    difference the noise of the run alone could make."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a, b = np.asarray(on), np.asarray(off)
    picks = rng.integers(0, len(a), size=(resamples, len(a)))
    diffs = np.median(a[picks], axis=1) - np.median(b[picks], axis=1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return round(float(low), 3), round(float(high), 3)


def verify_on_off(args: argparse.Namespace, register_url: str | None, extractor: CachedExtractor,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """Both modes on one back end (SQLite stations, or stations on a register)."""
    people = identities(args.images, args.subjects, args.seed)
    extractor.live = False
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-events-") as work:
        services = open_services(Path(work), extractor, register_url)
        try:
            people = enrol(services, people, shared=register_url is not None)
            results["subjects_enrolled"] = len(people)
            cached = probes(people, args.verifies)
            for _, image in cached:  # templates computed before timing (a probe without a face: timed refusal)
                with contextlib.suppress(Exception):
                    extractor.extract_face(image)
            timed_rounds(services, cached[:10])  # warm-up (caches, first transactions)
            results["cached"] = summarise(timed_rounds(services, cached))
            log(f"  cached templates: {_line(results['cached'])}")
            if args.live_verifies:
                extractor.live = True
                results["live"] = summarise(timed_rounds(services, probes(people, args.live_verifies)))
                log(f"  live extraction: {_line(results['live'])}")
            on = services["on"]
            if register_url and on.events is not None:  # the register gets the journal's events
                from biometrics.event_store import pending_events

                start = time.monotonic()
                while pending_events(on.events.store) and time.monotonic() - start < 60:
                    time.sleep(0.2)
                results["shipped_within_s"] = round(time.monotonic() - start, 2)
                results["pending_after"] = pending_events(on.events.store)
        finally:
            for service in services.values():
                service.close()
    return results


def _line(s: dict[str, Any]) -> str:
    return (f"p50 on {s['on_p50_ms']:.2f} ms, off {s['off_p50_ms']:.2f} ms: +{s['p50_added_ms']:.3f} ms "
            f"(95% interval {s['p50_added_ci95_ms'][0]:+.3f} .. {s['p50_added_ci95_ms'][1]:+.3f}; "
            f"x{s['ratio_p50']:.3f}; paired median +{s['paired_median_diff_ms']:.3f} ms; p95 on "
            f"{s['on_p95_ms']:.2f}, off {s['off_p95_ms']:.2f}; n={s['n']}) target <= {TARGET_MS} ms: "
            f"{'met' if s['target_met'] else 'NOT MET'}")


# -- bulk load ---------------------------------------------------------------------------------------------

STATIONS = ("rokot-airport", "tuapejat-port", "siberut-port", "sikakap-port")
NATIONALITY_MIX = ("IDN",) * 40 + ("AUS",) * 20 + ("USA",) * 8 + ("DEU",) * 6 + ("GBR",) * 6 + ("FRA",) * 4 + (
    "NLD", "ITA", "BRA", "JPN", "ESP", "NZL", "SGP", "MYS", "CHE", "")


def synthetic_events(n: int, seed: int) -> Iterator[Any]:
    """``n`` synthetic events over 2025 (SYNTHETIC: uniform hours, a fixed nationality mix), streamed."""
    from biometrics.events import DecisionEvent, category_of

    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for _ in range(n):
        nationality = rng.choice(NATIONALITY_MIX)
        yield DecisionEvent(
            minute=start + timedelta(minutes=rng.randrange(365 * 24 * 60)), station=rng.choice(STATIONS),
            lane=f"kiosk-{rng.randrange(4)}", direction="arrival" if rng.random() < 0.55 else "departure",
            category=category_of(nationality), outcome="proceed" if rng.random() < 0.9 else "see_officer",
            processing_ms=rng.lognormvariate(5.3, 0.4), quality="high", model_version="face:dlib-resnet-v1",
            calibration_version="face:bench", nationality=nationality)


def bulk_load(n: int, target: str | Path, seed: int) -> dict[str, Any]:
    """Load ``n`` synthetic events into a fresh store at ``target``; the rate, aggregates included."""
    from biometrics.event_store import open_event_store

    store = open_event_store(target, readonly=False)
    try:
        start = time.perf_counter()
        stored = store.record_decisions(synthetic_events(n, seed))
        seconds = time.perf_counter() - start
        hourly = store.hourly(datetime(2025, 1, 1).date(), datetime(2025, 12, 31).date())
        assert sum(r.count for r in hourly) == stored, "the hourly aggregates do not count every event"
    finally:
        store.close()
    return {"events": stored, "seconds": round(seconds, 2), "events_per_s": round(stored / seconds),
            "hourly_rows": len(hourly)}


# -- the command ----------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Run ``checkpoint-bench events``."""
    if not (args.images / "identities.csv").exists():
        print(f"checkpoint-bench events: no identities.csv under {args.images}")
        return 2
    out: dict[str, Any] = {"command": "checkpoint-bench events", "started": datetime.now(UTC).isoformat(
        timespec="seconds"), "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                         "load_before": os.getloadavg()},
        "parameters": {k: str(v) for k, v in vars(args).items() if k != "func"}}

    def log(line: str) -> None:
        print(line, flush=True)

    log("Verify, recording on vs off (SQLite station):")
    extractor = CachedExtractor()  # templates computed once for both back ends
    out["verify_sqlite"] = verify_on_off(args, None, extractor, log)
    if args.postgres:
        with postgres_database(args.postgres) as url:
            log("Verify, recording on vs off (stations on a PostgreSQL register; events via the local journal):")
            out["verify_register"] = verify_on_off(args, url, extractor, log)
    if args.bulk:
        with tempfile.TemporaryDirectory(prefix="bench-events-bulk-") as work:
            out["bulk_sqlite"] = bulk_load(args.bulk, Path(work) / "events.db", args.seed)
        log(f"bulk load, SQLite: {out['bulk_sqlite']['events']:,} synthetic events in "
            f"{out['bulk_sqlite']['seconds']} s = {out['bulk_sqlite']['events_per_s']:,} events/s")
        if args.postgres:
            with postgres_database(args.postgres) as url:
                out["bulk_postgres"] = bulk_load(args.bulk, url, args.seed)
            log(f"bulk load, PostgreSQL: {out['bulk_postgres']['events']:,} synthetic events in "
                f"{out['bulk_postgres']['seconds']} s = {out['bulk_postgres']['events_per_s']:,} events/s")
    out["machine"]["load_after"] = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    log(f"load average before {out['machine']['load_before']}, after {out['machine']['load_after']}; "
        f"figures in {args.json}")
    return 0
