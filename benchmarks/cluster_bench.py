"""The 1:N search sharded over a local Ray cluster (three nodes) against one process, and a node killed under load.

Usage::

    flock -x /tmp/checkpoint-bench.lock checkpoint-bench cluster --templates 10000000 \
        --json results/cluster/cluster.json

Gallery: N random unit vectors, D=128 float32, one subject per template, generated in chunks each from its own
seed (so every replica generates its own shard, nothing is shipped); probes: random unit vectors. Phases, in one
run:

1. **One process**: :class:`biometrics.matcher.TemplateIndex` over the whole gallery: one-probe latency and
   64-probe batch (medians of ``--repeats`` after a warm-up), its memory; the expected top-10 of every probe
   used later is kept, then the index is freed (the machine does not hold both at once).
2. **Cluster**: a head and two worker nodes (``ray start --block`` on 127.0.0.1, each with its own ``--num-cpus``,
   ``--memory`` and ``--object-store-memory``, all under a private ``--temp-dir``), a
   :class:`biometrics.sharded.ShardedGallery` of ``--shards`` shards x 2 replicas (STRICT_SPREAD): the same
   latency and batch figures, the slowest shard's own search time (so the scatter-gather overhead = wall time
   minus it), memory per node (RSS of the replica processes on it) and whether every top-10 equals the one
   process's (ids and order).
3. **A node killed**: ``--clients`` threads search for ``--load-seconds``; at ``--kill-at`` seconds one worker
   node's processes (``ray start``, raylet, its replicas) get SIGKILL. Every answer is checked against the
   expected top-10 (a wrong answer is counted apart from an error); reported: errors, the time from the kill
   to the last error and to the first correct answer after it, and when every shard had two replicas again.

Memory: the one process needs about N x 600 bytes (the float32 matrix 512 B a template, its norm and owner 8 B,
the subject table about 50 B); the cluster twice that plus about 0.5 GiB per node. The command refuses a
size that does not fit the memory available now and says the largest that does.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._util import free_port, free_ports, log
from benchmarks.matcher_bench import DIM, machine, unit_vectors
from biometrics.sharded import shards_of

COMMAND = "cluster"
CHUNK = 262_144
# measured (2,000,000 templates, process RSS): 512 B of float32, 8 B of norm and owner, ~50 B of subject table
BYTES_PER_TEMPLATE = 600
NODE_OVERHEAD = 550 * 2**20  # RSS of one idle Ray node's processes (raylet, agents, log monitor)


# -- a local Ray cluster ---------------------------------------------------------------------------------------

@dataclass
class _Node:
    name: str
    process: subprocess.Popen[bytes]
    manager_port: int
    log: Path


class LocalCluster:
    """A head and worker nodes on 127.0.0.1, each a ``ray start --block`` process group of its own.

    Only the process groups this object started are ever signalled (never ``ray stop``, which would stop every
    Ray process on the machine). ``kill_node(i)`` is a node lost: SIGKILL to the whole group (``ray start``,
    raylet, agents and the workers and actors the raylet started). Failure detection is shortened (health
    checks every 500 ms, 3 misses) so a lost node is declared dead in seconds.
    """

    def __init__(self, root: Path, *, workers: int = 2, cpus: int = 1, memory: int = 2 * 2**30,
                 object_store: int = 200_000_000) -> None:
        self.root = Path(root)
        self.workers, self.cpus, self.memory, self.object_store = workers, cpus, memory, object_store
        self.port = free_port()
        self.used_ports = {self.port}  # handed to this cluster's nodes: never twice
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[_Node] = []
        # One authentication mode for every node and for this process's driver: Ray (2.60 here) enables token
        # authentication on a head that finds ~/.ray/auth_token (left by any earlier `ray` use on the machine)
        # while its workers do not, and they cannot join. A loopback test cluster runs without tokens unless the
        # caller says otherwise.
        os.environ["RAY_AUTH_MODE"] = os.environ.get("RAY_AUTH_MODE", "disabled")
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_health_check_period_ms="500",
                        RAY_health_check_timeout_ms="1000", RAY_health_check_failure_threshold="3",
                        RAY_health_check_initial_delay_ms="0")

    def _ray(self) -> str:
        return str(Path(sys.executable).with_name("ray"))

    def _start(self, name: str, head: bool) -> None:
        # every component of every node its own port (Ray refuses a node whose components share one)
        ports = free_ports(7, avoid=self.used_ports)
        self.used_ports.update(ports)
        manager_port = ports[0]
        args = [self._ray(), "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}",
                f"--memory={self.memory}", f"--object-store-memory={self.object_store}",
                f"--node-manager-port={manager_port}", f"--object-manager-port={ports[1]}",
                f"--dashboard-agent-listen-port={ports[2]}", f"--metrics-export-port={ports[3]}",
                f"--runtime-env-agent-port={ports[4]}", "--disable-usage-stats",
                f"--temp-dir={self.root / 'ray'}", f"--resources={json.dumps({'node:' + name: 1})}"]
        if head:
            args += ["--head", f"--port={self.port}", "--include-dashboard=false",
                     f"--ray-client-server-port={ports[5]}", f"--dashboard-port={ports[6]}"]
        else:
            args += [f"--address={self.address}"]
        log_path = self.root / f"{name}.log"
        with open(log_path, "wb") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=self.env, start_new_session=True)
        self.nodes.append(_Node(name, process, manager_port, log_path))
        deadline = time.monotonic() + 90
        while b"Ray runtime started" not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray node {name} did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)

    def start(self) -> str:
        """Start the head then the workers; the GCS address to ``ray.init``."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._start("head", head=True)
        for i in range(self.workers):
            self._start(f"worker{i + 1}", head=False)
        return self.address

    def wait_nodes(self, count: int, timeout: float = 60.0) -> None:
        """Wait (connected driver) until ``count`` nodes are alive."""
        import ray

        deadline = time.monotonic() + timeout
        while sum(n["Alive"] for n in ray.nodes()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {sum(n['Alive'] for n in ray.nodes())} of {count} ray nodes are alive")
            time.sleep(0.2)

    def node_id(self, name: str) -> str:
        """The Ray node id of one of this cluster's nodes."""
        import ray

        node = next(n for n in self.nodes if n.name == name)
        for n in ray.nodes():
            if n["Alive"] and n["NodeManagerPort"] == node.manager_port:
                return str(n["NodeID"])
        raise KeyError(name)

    def node_names(self) -> dict[str, str]:
        """Ray node id -> this cluster's node name, for the nodes alive."""
        import ray

        ports = {n.manager_port: n.name for n in self.nodes}
        return {str(n["NodeID"]): ports.get(n["NodeManagerPort"], "?") for n in ray.nodes() if n["Alive"]}

    def kill_node(self, name: str) -> None:
        """A node lost: SIGKILL to every process of that node (its process group)."""
        node = next(n for n in self.nodes if n.name == name)
        family = _descendants([node])
        _signal_group(node, signal.SIGKILL)
        _kill(family)
        node.process.wait(timeout=30)

    def stop(self) -> None:
        """Stop every node this object started: SIGTERM to its group, SIGKILL to what is left after 10 s."""
        family = _descendants(self.nodes)
        for node in reversed(self.nodes):
            _signal_group(node, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for node in reversed(self.nodes):
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for node in self.nodes:  # the group may outlive its leader (raylet, workers): kill what is left
            _signal_group(node, signal.SIGKILL)
        _kill(family)


def _descendants(nodes: Sequence[_Node]) -> list[Any]:
    """The processes descended from the nodes' ``ray start`` (psutil processes), found by ancestry before a kill:
    the raylet's workers run in sessions of their own, outside the node's process group."""
    import psutil

    family: list[psutil.Process] = []
    for node in nodes:
        with contextlib.suppress(psutil.NoSuchProcess):
            family += psutil.Process(node.process.pid).children(recursive=True)
    return family


def _signal_group(node: _Node, signum: int) -> None:
    """``signum`` to the node's process group (nothing if it is gone)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.process.pid, signum)


def _kill(processes: Sequence[Any]) -> None:
    """SIGKILL to each of ``processes`` still alive."""
    import psutil

    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


# -- synthetic gallery ------------------------------------------------------------------------------------------

def _chunk_ids(start: int, stop: int) -> list[str]:
    return [f"t{r:09d}" for r in range(start, stop)]


def _chunk_rows(seed: int, chunk: int, start: int, stop: int) -> np.ndarray:
    return unit_vectors(np.random.default_rng([seed, chunk]), stop - start)


@dataclass(frozen=True)
class SyntheticLoader:
    """``n`` random unit templates (subject ``t{row:09d}`` each), generated chunk by chunk from ``seed``.

    Called as a :data:`biometrics.sharded.Loader`: yields the shard's subjects a chunk at a time, in row order
    (``size_hint`` tells the replica how many to make room for, so no page is held twice).
    """

    n: int
    seed: int = 0

    def _spans(self) -> Iterator[tuple[int, int, int]]:
        """(chunk number, first row, end row) of each chunk, in row order."""
        for c, start in enumerate(range(0, self.n, CHUNK)):
            yield c, start, min(start + CHUNK, self.n)

    def _picks(self, shard: int, shards: int) -> Iterator[tuple[int, int, int, list[str], np.ndarray]]:
        """Per chunk: its span, its subject ids and the positions of those in ``shard``."""
        for c, start, stop in self._spans():
            ids = _chunk_ids(start, stop)
            yield c, start, stop, ids, np.flatnonzero(shards_of(ids, shards) == shard)

    def size_hint(self, shard: int, shards: int) -> int:
        """How many templates the shard holds."""
        return sum(len(pick) for *_, pick in self._picks(shard, shards))

    def __call__(self, shard: int, shards: int) -> Iterator[tuple[Sequence[str], np.ndarray]]:
        for c, start, stop, ids, pick in self._picks(shard, shards):
            yield [ids[i] for i in pick], _chunk_rows(self.seed, c, start, stop)[pick]

    def chunks(self) -> Iterator[tuple[list[str], np.ndarray]]:
        """Every subject id and template, a chunk at a time in row order (for the one-process index)."""
        for c, start, stop in self._spans():
            yield _chunk_ids(start, stop), _chunk_rows(self.seed, c, start, stop)


def unit_probes(count: int, seed: int) -> np.ndarray:
    """``count`` random unit probes."""
    return unit_vectors(np.random.default_rng(seed), count)


# -- the benchmark ---------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``checkpoint-bench cluster``."""
    parser.add_argument("--templates", type=int, default=10_000_000, help="gallery size N (one template a subject)")
    parser.add_argument("--shards", type=int, default=3, help="shards (each on two nodes)")
    parser.add_argument("--json", type=Path, required=True, help="where to write the figures")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median; warm-up excluded)")
    parser.add_argument("--batch", type=int, default=64, help="probes in the batch case")
    parser.add_argument("--k", type=int, default=10, help="candidates per probe")
    parser.add_argument("--seed", type=int, default=0, help="seed of the gallery (probes: seed + 1)")
    parser.add_argument("--load-seconds", type=float, default=60.0, help="length of the search load with the kill")
    parser.add_argument("--kill-at", type=float, default=15.0, help="seconds into the load when a worker node dies")
    parser.add_argument("--clients", type=int, default=2, help="threads searching during the load")
    parser.add_argument("--node-memory", type=int, default=8 * 2**30, help="--memory of each Ray node (bytes)")
    parser.add_argument("--object-store", type=int, default=200_000_000, help="--object-store-memory of each node")
    parser.add_argument("--workdir", type=Path, default=None, help="the cluster's temp dir (default: a new one)")
    parser.add_argument("--force", action="store_true", help="run even if the memory estimate says it will not fit")
    parser.add_argument("--thresholds", type=Path, default=None, metavar="CACHE.npz",
                        help="instead of the cluster: the 1:N threshold arithmetic at gallery sizes up to 5e8, from "
                             "the face calibration and the genuine pairs of the templates in CACHE.npz (written by "
                             "checkpoint-bench identify --cache)")


def memory_needed(n: int, shards: int) -> int:
    """Peak bytes the run needs: the larger of the one-process phase and the cluster (two replicas + nodes)."""
    one = n * BYTES_PER_TEMPLATE + 2**30  # the index (reserved at once) + one chunk, the probes, slack
    cluster = 2 * n * BYTES_PER_TEMPLATE + 3 * NODE_OVERHEAD + 2**30  # + one chunk a loading replica, the driver
    return max(one, cluster)


def _median_search(search: Any, probes: np.ndarray, repeats: int, single: bool,
                   after: Any = None) -> tuple[float, list[float], list[float]]:
    """Median seconds of ``repeats`` searches after one warm-up; all timings; ``after()`` of each (or [])."""
    times, extra = [], []
    for i in range(repeats + 1):
        q = probes[i % len(probes)] if single else probes
        started = time.perf_counter()
        search(q)
        elapsed = time.perf_counter() - started
        if i:
            times.append(elapsed)
            if after is not None:
                extra.append(after())
    return statistics.median(times), times, extra


def one_process(n: int, seed: int, batch: int, k: int, repeats: int) -> dict[str, Any]:
    """Phase 1, in a process of its own (so its memory is all returned when it ends)."""
    import psutil

    from biometrics.matcher import TemplateIndex

    rss0 = psutil.Process().memory_info().rss
    started = time.perf_counter()
    index = TemplateIndex(DIM)
    index.reserve(n)
    for ids, rows in SyntheticLoader(n, seed).chunks():
        index.add_many(ids, rows)
    del rows, ids
    load = time.perf_counter() - started
    probes = unit_probes(batch, seed + 1)
    single, single_all, _ = _median_search(lambda q: index.search(q, k), probes, repeats, single=True)
    whole, whole_all, _ = _median_search(lambda q: index.search(q, k), probes, repeats, single=False)
    expected = index.search(probes, k)
    return {"load_seconds": load, "single_seconds": single, "single_all": single_all, "batch_seconds": whole,
            "batch_all": whole_all, "index_bytes": int(index.nbytes),
            "rss_bytes": psutil.Process().memory_info().rss - rss0, "expected": expected}


def _node_memory(cluster: LocalCluster, info: list[list[dict[str, Any] | None]]) -> dict[str, dict[str, int]]:
    """Per node: RSS of all its processes, of its replicas, and the replicas' index bytes."""
    import psutil

    names = cluster.node_names()
    replicas: dict[int, dict[str, Any]] = {r["pid"]: r for group in info for r in group if r}
    out: dict[str, dict[str, int]] = {}
    for node in cluster.nodes:
        if node.process.poll() is not None:
            continue
        try:
            tree = [psutil.Process(node.process.pid), *psutil.Process(node.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        total = replica_rss = index_bytes = 0
        count = 0
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                rss = p.memory_info().rss
                total += rss
                if p.pid in replicas and names.get(replicas[p.pid]["node_id"]) == node.name:
                    replica_rss += rss
                    index_bytes += replicas[p.pid]["index_bytes"]
                    count += 1
        out[node.name] = {"rss_all_processes": total, "rss_replicas": replica_rss, "index_bytes": index_bytes,
                          "replicas": count}
    return out


def _same(got: list[list[tuple[str, float]]], expected: list[list[tuple[str, float]]]) -> dict[str, Any]:
    ids_equal = all([s for s, _ in a] == [s for s, _ in b] for a, b in zip(got, expected, strict=True))
    gap = max((abs(x - y) for a, b in zip(got, expected, strict=True)
               for (_, x), (_, y) in zip(a, b, strict=False)), default=0.0)
    return {"ids_and_order_equal": ids_equal, "max_distance_difference": gap, "exactly_equal": got == expected}


def _kill_under_load(cluster: LocalCluster, gallery: Any, probes: np.ndarray, expected: list[Any],
                     args: argparse.Namespace) -> dict[str, Any]:
    """Phase 3: ``--clients`` threads search; a worker node is killed at ``--kill-at``; outcomes and recovery."""
    outcomes: list[tuple[float, float, str]] = []  # (start, seconds, "ok" | "wrong" | error class)
    lock = threading.Lock()
    stop = threading.Event()

    def client(c: int) -> None:
        i = c
        while not stop.is_set():
            i += args.clients
            q = i % len(probes)
            started = time.monotonic()
            try:
                got = gallery.search(probes[q], args.k)[0]
                outcome = "ok" if [s for s, _ in got] == [s for s, _ in expected[q]] else "wrong"
            except Exception as exc:  # counted, never retried
                outcome = type(exc).__name__
            with lock:
                outcomes.append((started, time.monotonic() - started, outcome))

    info = gallery.info()
    names = cluster.node_names()
    per_node: dict[str, int] = {}
    for group in info:
        for r in group:
            if r:
                per_node[names[r["node_id"]]] = per_node.get(names[r["node_id"]], 0) + 1
    victim = max((n for n in per_node if n != "head"), key=lambda n: per_node[n])
    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(args.clients)]
    begin = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(args.kill_at)
    killed = time.monotonic()
    log(f"killing node {victim} ({per_node[victim]} replicas) at {killed - begin:.1f} s")
    cluster.kill_node(victim)
    restored = None
    while time.monotonic() < begin + args.load_seconds or (restored is None and time.monotonic() < killed + 600):
        if restored is None:
            status = gallery.replica_status()
            if all(all(up) for up in status):
                now_info = gallery.info(timeout=2)
                if all(r is not None for g in now_info for r in g) and all(
                        len({r["node_id"] for r in g if r}) == len(g) for g in now_info):
                    restored = time.monotonic() - killed
                    log(f"every shard has two replicas again {restored:.1f} s after the kill")
        if time.monotonic() >= begin + args.load_seconds:
            stop.set()
        time.sleep(0.25)
    stop.set()
    for t in threads:
        t.join(120)
    before = [o for o in outcomes if o[0] < killed]
    after = [o for o in outcomes if o[0] >= killed]
    errors_after = [o for o in after if o[2] not in ("ok", "wrong")]
    first_ok = min((s + d for s, d, o in outcomes if o == "ok" and s + d > killed), default=None)
    in_flight = [d for s, d, _ in outcomes if s < killed < s + d]
    ends = sorted(s + d for s, d, _ in outcomes if s + d > killed - 5)
    longest_pause = max((b - a for a, b in itertools.pairwise(ends)), default=None)
    last_error = max((s + d for s, d, o in errors_after), default=None)
    kinds: dict[str, int] = {}
    for _, _, o in outcomes:
        kinds[o] = kinds.get(o, 0) + 1

    def pct(rows: list[tuple[float, float, str]], p: float) -> float | None:
        times = sorted(d for _, d, o in rows if o == "ok")
        return times[min(len(times) - 1, int(p * len(times)))] if times else None

    return {
        "victim": victim, "replicas_on_victim": per_node[victim], "searches": len(outcomes),
        "outcomes": kinds, "wrong": kinds.get("wrong", 0),
        "errors": sum(v for o, v in kinds.items() if o not in ("ok", "wrong")),
        "searches_after_kill": len(after), "errors_after_kill": len(errors_after),
        "first_ok_after_kill_seconds": None if first_ok is None else first_ok - killed,
        "last_error_after_kill_seconds": None if last_error is None else last_error - killed,
        "slowest_search_after_kill_seconds": max((d for _, d, _ in after), default=None),
        "in_flight_at_kill": len(in_flight), "slowest_in_flight_at_kill_seconds": max(in_flight, default=None),
        "longest_pause_between_answers_seconds": longest_pause,
        "replicas_restored_seconds": restored,
        "p50_before": pct(before, 0.5), "p95_before": pct(before, 0.95),
        "p50_after": pct(after, 0.5), "p95_after": pct(after, 0.95),
        "load_seconds": args.load_seconds, "kill_at": args.kill_at, "clients": args.clients,
    }


def run(args: argparse.Namespace) -> int:
    """Run the three phases and write ``--json``; a summary on stdout."""
    import concurrent.futures
    import multiprocessing
    import tempfile

    import psutil

    if args.thresholds is not None:
        table = thresholds(args.thresholds)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(table, indent=1) + "\n")
        print(thresholds_summary(table))
        return 0
    n = args.templates
    need, available = memory_needed(n, args.shards), psutil.virtual_memory().available
    if need > 0.8 * available and not args.force:
        fits = 0
        while memory_needed(fits + 500_000, args.shards) <= 0.8 * available:
            fits += 500_000
        print(f"checkpoint-bench cluster: {n:,} templates need about {need / 2**30:.1f} GiB at the peak (one process "
              f"{BYTES_PER_TEMPLATE} B a template, the cluster twice that), {available / 2**30:.1f} GiB is available "
              f"now: the largest size that fits is about {fits:,} (--templates {fits}); --force runs anyway.",
              file=sys.stderr)
        return 2
    result: dict[str, Any] = {"templates": n, "dim": DIM, "shards": args.shards, "replicas": 2, "k": args.k,
                              "batch": args.batch, "repeats": args.repeats, "machine": machine(),
                              "memory_estimate_bytes": need, "memory_available_bytes": available,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    log(f"one process: {n:,} templates")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        one = pool.submit(one_process, n, args.seed, args.batch, args.k, args.repeats).result()
    expected = one.pop("expected")
    result["one_process"] = one
    log(f"one process: single {one['single_seconds'] * 1e3:.1f} ms, batch {one['batch_seconds'] * 1e3:.1f} ms")

    import ray

    from biometrics.sharded import ShardedGallery

    root = args.workdir or Path(tempfile.mkdtemp(prefix="checkpoint-cluster-"))
    cluster = LocalCluster(root, workers=2, cpus=1, memory=args.node_memory, object_store=args.object_store)
    probes = unit_probes(args.batch, args.seed + 1)
    try:
        address = cluster.start()
        ray.init(address=address, namespace="checkpoint-bench", logging_level="WARNING", log_to_driver=False)
        cluster.wait_nodes(3)
        log(f"cluster up at {address}; loading {args.shards} shards x 2 replicas")
        started = time.perf_counter()
        gallery = ShardedGallery(DIM, SyntheticLoader(n, args.seed), shards=args.shards, replicas=2,
                                 search_timeout=120, write_timeout=120, start_timeout=3600, load_concurrency=2)
        load = time.perf_counter() - started
        info = gallery.info()
        single, single_all, single_shard = _median_search(
            lambda q: gallery.search(q, args.k), probes, args.repeats, single=True,
            after=lambda: gallery.last_search.slowest_shard_seconds)
        whole, whole_all, whole_shard = _median_search(
            lambda q: gallery.search(q, args.k), probes, args.repeats, single=False,
            after=lambda: gallery.last_search.slowest_shard_seconds)
        got = gallery.search(probes, args.k)
        result["cluster"] = {
            "load_seconds": load, "single_seconds": single, "single_all": single_all,
            "single_slowest_shard": single_shard, "batch_seconds": whole, "batch_all": whole_all,
            "batch_slowest_shard": whole_shard,
            "single_overhead_seconds": statistics.median(a - b for a, b in zip(single_all, single_shard, strict=True)),
            "batch_overhead_seconds": statistics.median(a - b for a, b in zip(whole_all, whole_shard, strict=True)),
            "top_k": _same(got, expected),
            "nodes": _node_memory(cluster, info),
            "replicas": [[{key: r[key] for key in ("node_id", "pid", "templates", "index_bytes", "rss",
                                                   "load_seconds")} for r in g if r] for g in info],
            "node_names": cluster.node_names(),
        }
        c = result["cluster"]
        log(f"cluster: single {single * 1e3:.1f} ms, batch {whole * 1e3:.1f} ms, top-k {c['top_k']}")
        result["kill"] = _kill_under_load(cluster, gallery, probes, expected, args)
        log(f"kill: {result['kill']}")
        after = gallery.search(probes, args.k)
        result["kill"]["top_k_after_recovery"] = _same(after, expected)
        result["kill"]["nodes_after"] = _node_memory(cluster, gallery.info())
        gallery.close()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(summary(result))
    return 0


def _s(seconds: float | None) -> str:
    return "none" if seconds is None else f"{seconds:.2f} s"


def summary(result: dict[str, Any]) -> str:
    """A Markdown summary of a result."""
    one, c, k = result["one_process"], result["cluster"], result["kill"]
    lines = [
        f"{result['templates']:,} templates, {result['shards']} shards x 2 replicas over 3 local Ray nodes",
        "",
        "| | one process | cluster | ratio |",
        "|---|---|---|---|",
        f"| one probe (median ms) | {one['single_seconds'] * 1e3:.1f} | {c['single_seconds'] * 1e3:.1f} | "
        f"{c['single_seconds'] / one['single_seconds']:.2f} |",
        f"| {result['batch']} probes (median ms) | {one['batch_seconds'] * 1e3:.1f} | {c['batch_seconds'] * 1e3:.1f} | "
        f"{c['batch_seconds'] / one['batch_seconds']:.2f} |",
        f"| {result['batch']}-probe throughput (probes/s) | {result['batch'] / one['batch_seconds']:.0f} | "
        f"{result['batch'] / c['batch_seconds']:.0f} | |",
        f"| scatter-gather overhead (median ms: wall - slowest shard) | | "
        f"single {c['single_overhead_seconds'] * 1e3:.1f}, batch {c['batch_overhead_seconds'] * 1e3:.1f} | |",
        f"| load (s) | {one['load_seconds']:.1f} | {c['load_seconds']:.1f} | |",
        f"| top-{result['k']} equal (ids and order; exactly) | | {c['top_k']['ids_and_order_equal']}; "
        f"{c['top_k']['exactly_equal']} | |",
        "",
        "| node | replicas | index MiB | RSS replicas MiB | RSS all MiB |",
        "|---|---|---|---|---|",
    ]
    for name, m in c["nodes"].items():
        lines.append(f"| {name} | {m['replicas']} | {m['index_bytes'] / 2**20:.0f} | {m['rss_replicas'] / 2**20:.0f} |"
                     f" {m['rss_all_processes'] / 2**20:.0f} |")
    lines += [
        f"| one process | | {one['index_bytes'] / 2**20:.0f} | | {one['rss_bytes'] / 2**20:.0f} |",
        "",
        f"Node {k['victim']} ({k['replicas_on_victim']} replicas) killed at {k['kill_at']:.0f} s of "
        f"{k['load_seconds']:.0f} s of search load ({k['clients']} clients): {k['searches']} searches, "
        f"{k['wrong']} wrong, {k['errors']} errors ({k['errors_after_kill']} of {k['searches_after_kill']} after the "
        f"kill); {k['in_flight_at_kill']} searches in flight at the kill took up to "
        f"{_s(k['slowest_in_flight_at_kill_seconds'])}; longest pause between two answers "
        f"{_s(k['longest_pause_between_answers_seconds'])}; first correct answer completed "
        f"{_s(k['first_ok_after_kill_seconds'])} after the kill, last error "
        f"{_s(k['last_error_after_kill_seconds'])}, slowest search after the kill "
        f"{_s(k['slowest_search_after_kill_seconds'])}, two replicas of every shard again after "
        f"{_s(k['replicas_restored_seconds'])}; p50/p95 before {_s(k['p50_before'])}/{_s(k['p95_before'])}, after "
        f"{_s(k['p50_after'])}/{_s(k['p95_after'])}; top-{result['k']} after recovery equal: "
        f"{k['top_k_after_recovery']['exactly_equal']}.",
    ]
    return "\n".join(lines)


# -- the 1:N threshold at scale ----------------------------------------------------------------------------------

SIZES = (958, 10_000, 1_000_000, 10_000_000, 100_000_000, 500_000_000)


def thresholds(cache: Path, fpir: float = 0.01, fmr: float = 0.001) -> dict[str, Any]:
    """The service's 1:N threshold at each gallery size, its dlib distance by the face calibration, and the
    share of genuine pairs (every same-identity pair of the cached lfw-dev templates) it would miss."""
    from biometrics.scores import CALIBRATION_DIR, ScoreCalibration, threshold_for_fmr, threshold_for_fpir

    calibration = ScoreCalibration.load(CALIBRATION_DIR / "face.json")
    c = np.load(cache, allow_pickle=False)
    names, templates, ok = c["names"], c["templates"].astype(np.float64), c["ok"]
    owner = np.array([str(n).split("/")[-2] if "/" in str(n) else str(n).rsplit("_", 1)[0] for n in names])
    keep = np.flatnonzero(ok)
    t, o = templates[keep], owner[keep]
    sq = (t * t).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * t @ t.T, 0.0)
    upper = np.triu_indices(len(t), 1)
    dist = np.sqrt(d2[upper])
    same = o[upper[0]] == o[upper[1]]
    genuine, impostor = np.sort(dist[same]), np.sort(dist[~same])
    best_score = float(calibration.score(0.0))
    rows = []
    for n in SIZES:
        s = threshold_for_fpir(fpir, n, floor=threshold_for_fmr(fmr))
        raw = calibration.raw_threshold(10.0 ** -s)
        reachable = s <= best_score
        rows.append({
            "gallery": n, "score_threshold": s, "distance_threshold": raw if reachable else None,
            "measured": bool(s <= -np.log10(calibration.measured_fmr_floor)),
            "fnmr": float(1.0 - np.searchsorted(genuine, raw, side="right") / len(genuine)) if reachable else 1.0,
            "impostors_at_or_below": int(np.searchsorted(impostor, raw, side="right")) if reachable else 0,
        })
    quantiles = {str(q): float(np.quantile(genuine, q)) for q in (0.001, 0.01, 0.05, 0.1, 0.5)}
    return {"cache": str(cache), "fpir": fpir, "fmr": fmr, "genuine_pairs": len(genuine),
            "impostor_pairs": len(impostor), "smallest_impostor_distances": impostor[:10].tolist(),
            "score_at_distance_zero": best_score,
            "measured_score_limit": float(-np.log10(calibration.measured_fmr_floor)),
            "genuine_distance_quantiles": quantiles, "rows": rows}


def thresholds_summary(table: dict[str, Any]) -> str:
    """The threshold table as Markdown."""
    lines = ["| gallery N | threshold s | dlib distance | measured or extrapolated | FNMR of genuine pairs |",
             "|---|---|---|---|---|"]
    for r in table["rows"]:
        d = "unreachable" if r["distance_threshold"] is None else f"{r['distance_threshold']:.3f}"
        lines.append(f"| {r['gallery']:,} | {r['score_threshold']:.2f} | {d} | "
                     f"{'measured' if r['measured'] else 'extrapolated'} | {r['fnmr'] * 100:.1f}% |")
    lines.append(f"\n{table['genuine_pairs']:,} genuine and {table['impostor_pairs']:,} impostor pairs; smallest "
                 f"impostor distances {[round(x, 3) for x in table['smallest_impostor_distances']]}; score at distance "
                 f"0: {table['score_at_distance_zero']:.2f}; genuine distance quantiles "
                 f"{ {k: round(v, 3) for k, v in table['genuine_distance_quantiles'].items()} }")
    return "\n".join(lines)
