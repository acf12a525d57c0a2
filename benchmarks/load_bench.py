"""Load on a running server: kiosks calling Verify and Identify concurrently with real images over gRPC.

Usage::

    checkpoint-server --listen 127.0.0.1:50051 --data-dir /tmp/cp --plaintext &
    checkpoint-bench load --target 127.0.0.1:50051 --clients 16 --seconds 60 \\
        --images ../shared/data/faces/lfw-dev/images --baseline-clients 1 --out results/load

It enrols its own subjects first (``Enroll``, which needs the officer role: a plaintext loopback server
treats every caller as an officer; with mutual TLS pass an officer's certificate), then runs one phase per
client count (``--baseline-clients`` first, then ``--clients``), each bounded by ``--seconds`` and by
``--max-requests``. Every client is a thread with its own channel (a kiosk), calling back to back: Verify
with a genuine image of a random enrolled subject, or (a fraction ``--identify-fraction`` of calls)
Identify. It reports throughput, latency percentiles, errors by status code and the server's memory
(psutil: ``--server-pid``, or the process listening on the target port), then deletes its subjects.
Loopback targets only.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.provenance import run_provenance

COMMAND = "load"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
MIB = 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``checkpoint-bench load``."""
    from verify.tls import add_tls_arguments

    parser.add_argument("--target", required=True, help="server HOST:PORT (loopback only)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent kiosks in the main phase")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    parser.add_argument("--images", required=True, type=Path,
                        help="folder of <identity>/<image> (LFW layout), or a flat folder of images")
    parser.add_argument("--out", type=Path, default=Path("results/load"), help="folder for metrics.json, load.png")
    parser.add_argument("--baseline-clients", type=int, default=1,
                        help="clients of the comparison phase run first (0: none)")
    parser.add_argument("--max-requests", type=int, default=20000, help="hard cap of calls per phase")
    parser.add_argument("--subjects", type=int, default=32, help="subjects to enrol for the run")
    parser.add_argument("--identify-fraction", type=float, default=0.2, help="share of calls that are Identify")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline of each call, seconds")
    parser.add_argument("--server-pid", type=int, help="the server's process id (default: found by port)")
    parser.add_argument("--seed", type=int, default=0)
    add_tls_arguments(parser, side="client")


# ---------------------------------------------------------------------------------------------------------
# Target and server process


class LoadError(Exception):
    """The load run cannot start; the message says why."""


def loopback_target(target: str) -> tuple[str, int]:
    """(host, port) of ``target``, refused unless the host is loopback (127.0.0.0/8, ::1, localhost)."""
    host, sep, port_text = target.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise LoadError(f"--target {target!r} is not HOST:PORT")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare != "localhost":
        try:
            address = ipaddress.ip_address(bare)
        except ValueError:
            raise LoadError(f"--target {target!r}: only loopback targets are allowed (an IP address "
                            "in 127.0.0.0/8, ::1 or localhost)") from None
        if not address.is_loopback:
            raise LoadError(f"--target {target!r} is not a loopback address; this benchmark loads only "
                            "a local server")
    return bare, int(port_text)


def find_server_pid(port: int) -> int | None:
    """The process listening on TCP ``port``, if psutil can see it."""
    import psutil

    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return int(conn.pid)
    except psutil.AccessDenied:
        return None
    return None


class MemorySampler(threading.Thread):
    """The server's resident memory every ``interval`` seconds, while running."""

    def __init__(self, pid: int | None, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (monotonic time, RSS MiB)
        self._halt = threading.Event()
        self._process = None
        if pid is not None:
            import psutil

            try:
                self._process = psutil.Process(pid)
            except psutil.Error:
                self._process = None

    def rss_mib(self) -> float | None:
        """The server's RSS now, MiB (None when the process cannot be read)."""
        if self._process is None:
            return None
        import psutil

        try:
            return self._process.memory_info().rss / MIB
        except psutil.Error:
            return None

    def run(self) -> None:
        while not self._halt.is_set():
            rss = self.rss_mib()
            if rss is not None:
                self.samples.append((time.monotonic(), rss))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


# ---------------------------------------------------------------------------------------------------------
# Workload


@dataclass
class Workload:
    """Enrolment images by subject id, and genuine probe images (subject id, bytes)."""

    enrol: dict[str, bytes]
    probes: list[tuple[str, bytes]]


def build_workload(images: Path, subjects: int, seed: int) -> Workload:
    """Pick ``subjects`` identities with two or more images: the first image enrols, the others probe.

    A flat folder of images: each image enrols a subject and is also its probe.
    """
    base = images / "images" if (images / "images").is_dir() else images
    if not base.is_dir():
        raise LoadError(f"--images {images} is not a folder")
    folders = sorted(p for p in base.iterdir() if p.is_dir())
    run_id = uuid.uuid4().hex[:8]
    rng = random.Random(seed)
    enrol: dict[str, bytes] = {}
    probes: list[tuple[str, bytes]] = []
    if folders:
        per_id = {d: sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) for d in folders}
        multi = [d for d, files in per_id.items() if len(files) >= 2]
        rng.shuffle(multi)
        for i, d in enumerate(multi[:subjects]):
            sid = f"loadbench-{run_id}-{i:03d}"
            files = per_id[d]
            enrol[sid] = files[0].read_bytes()
            probes += [(sid, f.read_bytes()) for f in files[1:4]]
    else:
        files = sorted(f for f in base.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        rng.shuffle(files)
        for i, f in enumerate(files[:subjects]):
            sid = f"loadbench-{run_id}-{i:03d}"
            enrol[sid] = f.read_bytes()
            probes.append((sid, enrol[sid]))
    if not enrol:
        raise LoadError(f"no usable images under {images} (need JPEG/PNG files; identities with 2+ images)")
    return Workload(enrol, probes)


def _stub(args: argparse.Namespace):  # -> pb_grpc.CheckpointStub
    from verify.channel import open_stub

    return open_stub(args)


def enrol_subjects(stub, workload: Workload, timeout: float) -> tuple[list[str], list[str]]:
    """Enrol the workload's subjects; (enrolled ids, messages of the ones refused)."""
    import grpc
    from checkpoint.v1 import checkpoint_pb2 as pb

    enrolled, refused = [], []
    for sid, image in workload.enrol.items():
        request = pb.EnrollRequest(
            subject_id=sid,
            info=pb.SubjectInfo(name=f"Load benchmark subject {sid[-3:]}", nationality="IDN",
                                date_of_birth="1980-01-01"),
            samples=[pb.Sample(modality=pb.FACE, image=image)],
            allow_duplicate=True,
            override_reason="checkpoint-bench load: synthetic subjects, deleted at the end of the run",
        )
        try:
            response = stub.Enroll(request, timeout=timeout)
        except grpc.RpcError as exc:
            refused.append(f"{sid}: {exc.code().name}: {exc.details()}")
            continue
        (enrolled if response.enrolled else refused).append(sid)
    return enrolled, refused


def delete_subjects(stub, subject_ids: list[str], timeout: float) -> list[str]:
    """Delete the run's subjects; the messages of the deletions that failed."""
    import grpc
    from checkpoint.v1 import checkpoint_pb2 as pb

    failures = []
    for sid in subject_ids:
        try:
            stub.DeleteSubject(pb.DeleteSubjectRequest(subject_id=sid, reason="checkpoint-bench load cleanup"),
                               timeout=timeout)
        except grpc.RpcError as exc:
            failures.append(f"{sid}: {exc.code().name}: {exc.details()}")
    return failures


@dataclass
class Call:
    """One call: start (seconds since the phase began), latency, method and status code name."""

    start: float
    latency_ms: float
    method: str
    code: str


@dataclass
class Phase:
    """The calls of one phase and its wall time."""

    clients: int
    calls: list[Call] = field(default_factory=list)
    seconds: float = 0.0
    memory: list[tuple[float, float]] = field(default_factory=list)
    rss_start_mib: float | None = None
    rss_end_mib: float | None = None


def run_phase(args: argparse.Namespace, clients: int, probes: list[tuple[str, bytes]],
              sampler: MemorySampler, desc: str) -> Phase:
    """``clients`` kiosks calling back to back for ``args.seconds`` (or ``args.max_requests`` calls)."""
    import grpc
    from checkpoint.v1 import checkpoint_pb2 as pb
    from tqdm import tqdm

    phase = Phase(clients=clients, rss_start_mib=sampler.rss_mib())
    lock = threading.Lock()
    issued = [0]
    t0 = time.monotonic()
    deadline = t0 + args.seconds
    bar = tqdm(total=int(args.seconds), desc=desc, unit="s", file=sys.stderr)

    def kiosk(index: int) -> None:
        stub = _stub(args)
        rng = random.Random(args.seed * 1000 + index)
        while time.monotonic() < deadline:
            with lock:
                if issued[0] >= args.max_requests:
                    return
                issued[0] += 1
            sid, image = rng.choice(probes)
            sample = pb.Sample(modality=pb.FACE, image=image)
            identify = rng.random() < args.identify_fraction
            start = time.monotonic()
            try:
                if identify:
                    stub.Identify(pb.IdentifyRequest(samples=[sample]), timeout=args.timeout)
                else:
                    stub.Verify(pb.VerifyRequest(subject_id=sid, samples=[sample]), timeout=args.timeout)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            end = time.monotonic()
            with lock:
                phase.calls.append(Call(start - t0, 1000 * (end - start), "Identify" if identify else "Verify",
                                        code))

    threads = [threading.Thread(target=kiosk, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(1.0)
        bar.n = min(int(time.monotonic() - t0), int(args.seconds))
        bar.refresh()
    for t in threads:
        t.join()
    bar.close()
    phase.seconds = time.monotonic() - t0
    phase.rss_end_mib = sampler.rss_mib()
    phase.memory = [(t - t0, rss) for t, rss in sampler.samples if t0 <= t <= t0 + phase.seconds]
    return phase


def phase_summary(phase: Phase) -> dict:
    """Throughput, latency percentiles and errors of one phase."""
    ok = [c.latency_ms for c in phase.calls if c.code == "OK"]
    out: dict = {
        "clients": phase.clients,
        "seconds": phase.seconds,
        "calls": len(phase.calls),
        "ok": len(ok),
        "errors": len(phase.calls) - len(ok),
        "by_status": dict(Counter(c.code for c in phase.calls)),
        "by_method": dict(Counter(c.method for c in phase.calls)),
        "throughput_per_s": len(ok) / phase.seconds if phase.seconds else 0.0,
        "server_rss_mib": {"start": phase.rss_start_mib, "end": phase.rss_end_mib,
                           "max": max((r for _, r in phase.memory), default=None)},
    }
    for name, values in (("latency_ms", ok),):
        if values:
            arr = np.asarray(values)
            out[name] = {"mean": float(arr.mean()), "p50": float(np.percentile(arr, 50)),
                         "p95": float(np.percentile(arr, 95)), "p99": float(np.percentile(arr, 99)),
                         "max": float(arr.max())}
    for method in ("Verify", "Identify"):
        values = [c.latency_ms for c in phase.calls if c.code == "OK" and c.method == method]
        if values:
            out[f"{method.lower()}_latency_ms"] = {"p50": float(np.percentile(values, 50)),
                                                   "p95": float(np.percentile(values, 95))}
    return out


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (TLS files named, not read)."""
    parts = ["checkpoint-bench", "load", "--target", args.target, "--clients", str(args.clients),
             "--seconds", f"{args.seconds:g}", "--images", str(args.images), "--out", str(args.out),
             "--baseline-clients", str(args.baseline_clients), "--max-requests", str(args.max_requests),
             "--subjects", str(args.subjects), "--identify-fraction", f"{args.identify_fraction:g}"]
    if args.tls_dir:
        parts += ["--tls-dir", str(args.tls_dir)]
    return " ".join(parts)


def evaluate(args: argparse.Namespace) -> dict:
    """Enrol, run the phases, clean up; write metrics.json and load.png into ``args.out``."""
    from checkpoint.v1 import checkpoint_pb2 as pb

    _, port = loopback_target(args.target)
    if args.clients < 1 or args.seconds <= 0 or args.max_requests < 1:
        raise LoadError("--clients, --seconds and --max-requests must be positive")
    pid = args.server_pid or find_server_pid(port)
    sampler = MemorySampler(pid)
    workload = build_workload(args.images, args.subjects, args.seed)
    stub = _stub(args)
    rss_before = sampler.rss_mib()
    enrolled, refused = enrol_subjects(stub, workload, args.timeout)
    if not enrolled:
        raise LoadError("no subject could be enrolled: " + "; ".join(refused[:3]))
    probes = [(sid, image) for sid, image in workload.probes if sid in set(enrolled)]
    sampler.start()
    phases: list[Phase] = []
    try:
        # Warm-up (not counted): one call of each kind, so lazily loaded models are in place.
        stub.Verify(pb.VerifyRequest(subject_id=probes[0][0], samples=[pb.Sample(modality=pb.FACE,
                                                                                  image=probes[0][1])]),
                    timeout=args.timeout)
        stub.Identify(pb.IdentifyRequest(samples=[pb.Sample(modality=pb.FACE, image=probes[0][1])]),
                      timeout=args.timeout)
        counts = ([args.baseline_clients] if args.baseline_clients > 0 else []) + [args.clients]
        for n in counts:
            phases.append(run_phase(args, n, probes, sampler, f"{n} client{'s' if n > 1 else ''}"))
    finally:
        import grpc

        statistics = None
        try:  # the memory and the statistics are a bonus, never a reason to skip the cleanup
            sampler.stop()
            statistics = stub.GetStatistics(pb.GetStatisticsRequest(), timeout=args.timeout)
        except grpc.RpcError:
            statistics = None
        finally:
            cleanup_failures = delete_subjects(stub, enrolled, args.timeout)
    summaries = [phase_summary(p) for p in phases]
    result: dict = {
        "target": args.target,
        "command": command_line(args),
        "provenance": run_provenance({}, {}),  # the client's tree; the server it calls may run other code
        "server_pid": pid,
        "server_rss_mib_before_enrolment": rss_before,
        "server_rss_mib_after_run": sampler.rss_mib(),
        "subjects_enrolled": len(enrolled),
        "subjects_refused": refused,
        "probe_images": len(probes),
        "cleanup_failures": cleanup_failures,
        "phases": summaries,
    }
    if len(summaries) == 2:
        base, main = summaries
        result["comparison"] = {
            "clients": [base["clients"], main["clients"]],
            "throughput_ratio": main["throughput_per_s"] / base["throughput_per_s"]
            if base["throughput_per_s"] else None,
            "p95_ratio": main["latency_ms"]["p95"] / base["latency_ms"]["p95"]
            if "latency_ms" in main and "latency_ms" in base else None,
        }
    if statistics is not None:
        from google.protobuf.json_format import MessageToDict

        result["server_statistics"] = MessageToDict(statistics)
    args.out.mkdir(parents=True, exist_ok=True)
    from benchmarks import plots
    from benchmarks.accuracy import json_safe

    series, memory = {}, {}
    for p in phases:
        label = f"{p.clients} client{'s' if p.clients > 1 else ''}"
        series[label] = {"t": np.array([c.start for c in p.calls]),
                         "latency_ms": np.array([c.latency_ms for c in p.calls]),
                         "ok": np.array([c.code == "OK" for c in p.calls], dtype=bool)}
        memory[label] = (np.array([t for t, _ in p.memory]), np.array([r for _, r in p.memory]))
    plots.load_plot(series, memory, args.out / "load.png", f"Load on {args.target}")
    (args.out / "metrics.json").write_text(json.dumps(json_safe(result), indent=1) + "\n")
    with (args.out / "calls.csv").open("w") as f:
        f.write("clients,start_s,latency_ms,method,code\n")
        for p in phases:
            f.writelines(f"{p.clients},{c.start:.4f},{c.latency_ms:.2f},{c.method},{c.code}\n" for c in p.calls)
    write_report(args.out, result)
    return result


def summary_lines(result: dict) -> list[str]:
    """The headline table of a load run."""
    lines = ["| clients | calls (ok / errors) | throughput /s | p50 ms | p95 ms | p99 ms | errors by status | "
             "server RSS MiB start -> end |", "|---|---|---|---|---|---|---|---|"]
    for s in result["phases"]:
        lat = s.get("latency_ms", {})
        rss = s["server_rss_mib"]
        mem = "n/a" if rss["start"] is None else f"{rss['start']:.0f} -> {rss['end']:.0f}"
        errors = {k: v for k, v in s["by_status"].items() if k != "OK"} or "none"
        lines.append(f"| {s['clients']} | {s['ok']} / {s['errors']} | {s['throughput_per_s']:.2f} | "
                     f"{lat.get('p50', float('nan')):.0f} | {lat.get('p95', float('nan')):.0f} | "
                     f"{lat.get('p99', float('nan')):.0f} | {errors} | {mem} |")
    c = result.get("comparison")
    if c:
        tr = "n/a" if c["throughput_ratio"] is None else f"{c['throughput_ratio']:.2f}x"
        pr = "n/a" if c["p95_ratio"] is None else f"{c['p95_ratio']:.2f}x"
        lines += ["", f"{c['clients'][1]} clients against {c['clients'][0]} in the same run: throughput {tr}, "
                  f"p95 latency {pr}."]
    return lines


def write_report(out: Path, result: dict) -> Path:
    """``report.md`` of a load run."""
    lines = [
        "# Load: Verify and Identify over gRPC",
        "",
        f"Target `{result['target']}`. Command: `{result['command']}`",
        "",
        f"{result['subjects_enrolled']} subjects enrolled for the run (deleted afterwards"
        f"{'; failures: ' + '; '.join(result['cleanup_failures']) if result['cleanup_failures'] else ''}), "
        f"{result['probe_images']} genuine probe images. Throughput counts successful calls per second of "
        "wall time; latencies are of successful calls, measured by the client (queueing included).",
        "",
        *summary_lines(result),
        "",
        "![load over time](load.png)",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(args: argparse.Namespace) -> int:
    """Entry point of ``checkpoint-bench load``."""
    try:
        result = evaluate(args)
    except LoadError as exc:
        print(f"checkpoint-bench load: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(result)))
    print(f"\nwritten: {args.out / 'metrics.json'}, {args.out / 'report.md'}, calls.csv, load.png")
    return 0 if all(s["errors"] == 0 for s in result["phases"]) else 1
