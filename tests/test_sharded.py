"""The sharded gallery (biometrics.sharded) on a real local Ray cluster: a head and two worker nodes.

The cluster (benchmarks.cluster_bench.LocalCluster: three ``ray start --block`` process groups on 127.0.0.1,
each with its own CPU, memory and object-store limits, under a private temp dir) is started once for the module
and stopped after, by its process groups only. Results are compared with the one-process
``biometrics.matcher.TemplateIndex`` on the same data. The node-kill test runs last: it leaves two nodes.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest

from benchmarks.cluster_bench import DIM, LocalCluster
from benchmarks.cluster_bench import unit_probes as unit
from biometrics.errors import RegisterUnavailable, SubjectNotFound
from biometrics.matcher import TemplateIndex
from biometrics.sharded import ActorLoader, MemorySource, ShardedGallery, ShardReplica, ShardUnavailable, shard_of

NAMESPACE = "test-sharded"


def wait_for(condition, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# -- without Ray ----------------------------------------------------------------------------------------------

def test_shard_of_is_crc32_and_stable():
    assert shard_of("P1234567", 7) == zlib.crc32(b"P1234567") % 7
    counts = np.bincount([shard_of(f"s{i}", 4) for i in range(4000)], minlength=4)
    assert counts.min() > 800  # spread


def test_replica_add_is_idempotent_and_loader_must_respect_shards():
    rows = unit(3, 1)
    ids = [s for s in (f"s{i}" for i in range(100)) if shard_of(s, 2) == 0][:3]
    replica = ShardReplica(0, 2, DIM, lambda shard, shards: [(ids, rows)])
    assert replica.size() == (3, 3)
    assert replica.add(ids[0], rows[0]) == 0  # a write the reload already brought
    assert replica.add(ids[0], unit(1, 2)) == 1
    assert replica.size() == (4, 3)
    assert replica.remove(ids[1]) == 1 and replica.remove(ids[1]) == 0
    other = next(s for s in (f"s{i}" for i in range(100)) if shard_of(s, 2) == 1)
    wrong = ShardReplica(0, 2, DIM, lambda shard, shards: [([other], rows[:1])])  # unloaded, not a failed actor
    for call in (wrong.ping, wrong.size, lambda: wrong.search(rows[:1], 1), lambda: wrong.add(ids[0], rows[0])):
        with pytest.raises(ShardUnavailable, match=r"could not load its shard.*another shard"):
            call()


def test_a_replica_whose_loader_fails_stays_up_unloaded_and_a_ping_loads_it():
    """A loader failing in the constructor (the register away during a Ray restart) must not fail it: Ray never
    restarts an actor whose creation task raised. The replica refuses every call until a ping loads it."""
    rows = unit(3, 5)
    ids = [s for s in (f"s{i}" for i in range(100)) if shard_of(s, 2) == 1][:3]
    away = [True]

    def loader(shard: int, shards: int):
        if away[0]:
            raise ConnectionError("register unreachable")
        yield ids, rows

    replica = ShardReplica(1, 2, DIM, loader)
    for call in (replica.ping, replica.size, lambda: replica.compare(rows[0], ids[0]), replica.reload):
        with pytest.raises(ShardUnavailable, match=r"could not load its shard.*register unreachable"):
            call()
    away[0] = False
    assert replica.ping() == 1
    assert replica.size() == (3, 3) and replica.load_error == ""
    away[0] = True
    with pytest.raises(ShardUnavailable):  # a reload that fails leaves it unloaded, never half loaded
        replica.reload()
    with pytest.raises(ShardUnavailable):
        replica.size()


def test_memory_source_pages_a_shard_in_insertion_order():
    source = MemorySource()
    ids = [f"s{i}" for i in range(50)]
    rows = unit(50, 3)
    source.put(ids, rows)
    source.put([ids[0]], unit(1, 4))
    source.delete(ids[1])
    got_ids, got_rows = source.page(0, 3)
    expect = [s for s in ids if s != ids[1] and shard_of(s, 3) == 0]
    assert list(dict.fromkeys(got_ids)) == expect
    assert len(got_rows) == len(got_ids)


def test_shard_unavailable_is_answered_unavailable():
    from verify.status import status_for

    error = ShardUnavailable.unreachable(1)
    assert isinstance(error, RegisterUnavailable)
    assert status_for(error) == grpc.StatusCode.UNAVAILABLE


def test_gallery_option_names_memory_ray_client_or_gcs_and_needs_a_register():
    from biometrics.compact import CompactIndex
    from biometrics.shard_loader import face_index_for, ray_address

    assert ray_address("memory") is None
    assert ray_address("ray://head.example:10001") == "ray://head.example:10001"
    assert ray_address("ray:10.0.0.5:6380") == "10.0.0.5:6380"
    for wrong in ("ray:", "ray://", "redis://x:1", "Memory"):
        with pytest.raises(ValueError, match="--gallery"):
            ray_address(wrong)
    assert isinstance(face_index_for("memory"), TemplateIndex)
    assert isinstance(face_index_for("memory", kind="compact"), CompactIndex)
    with pytest.raises(ValueError, match="--store"):
        face_index_for("ray:127.0.0.1:6380")
    with pytest.raises(ValueError, match="--face-index"):
        face_index_for("memory", kind="float16")
    assert callable(face_index_for("ray:127.0.0.1:6380", store_url="postgresql://x@127.0.0.1/db"))  # made later


# -- on a local Ray cluster -----------------------------------------------------------------------------------

@contextmanager
def local_ray_cluster(namespace: str) -> Iterator:
    """A head and two worker nodes on 127.0.0.1 (1 CPU, 1 GiB, a 100 MB object store each), this process
    connected as their driver; stopped by their process groups after. Their files go in a short directory of
    their own under /tmp, removed after: Ray's sockets there must stay under the 107-byte AF_UNIX limit, which a
    pytest temporary directory (deeper still under pytest-xdist) can pass."""
    ray = pytest.importorskip("ray")
    root = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    local = LocalCluster(root, workers=2, cpus=1, memory=1 << 30, object_store=100_000_000)
    try:
        address = local.start()
        ray.init(address=address, namespace=namespace, logging_level="WARNING", log_to_driver=False)
        local.wait_nodes(3)
        yield local
    finally:
        if ray.is_initialized():
            ray.shutdown()
        local.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator:
    with local_ray_cluster(NAMESPACE) as local:
        yield local


class Source:
    """The test's source of truth: a MemorySource actor pinned to the head node, mirrored by a TemplateIndex."""

    def __init__(self, cluster, name: str) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.name = name
        self.ids: set[str] = set()
        self.actor = ray.remote(MemorySource).options(
            name=name, num_cpus=0, max_concurrency=4,
            scheduling_strategy=NodeAffinitySchedulingStrategy(cluster.node_id("head"), soft=False)).remote()
        self.index = TemplateIndex(DIM)
        self.loader = ActorLoader(name, NAMESPACE)

    def templates_in_shard(self, shard: int, shards: int) -> int:
        names = {s for s in self.ids if s in self.index and shard_of(s, shards) == shard}
        return sum(len(self.index.templates_of(s)) for s in names)

    def put(self, ids: list[str], rows: np.ndarray) -> None:
        import ray

        ray.get(self.actor.put.remote(ids, rows))
        self.index.add_many(ids, rows)
        self.ids.update(ids)

    def delete(self, subject_id: str) -> None:
        import ray

        ray.get(self.actor.delete.remote(subject_id))
        self.index.remove(subject_id)


def filled_source(cluster, name: str, n: int = 3000) -> Source:
    source = Source(cluster, name)
    ids = [f"s{i:05d}" for i in range(n)]
    ids += [f"s{i:05d}" for i in range(0, n, 7)]  # every seventh subject holds a second template
    source.put(ids, unit(len(ids), 10))
    return source


@contextmanager
def gallery_over(cluster, name: str, n: int = 3000, **options) -> Iterator[tuple[Source, ShardedGallery]]:
    """A filled source named ``name`` and a two-replica gallery over it (``options``: the gallery's), closed
    after."""
    source = filled_source(cluster, name, n)
    gallery = ShardedGallery(DIM, source.loader, replicas=2, **options)
    try:
        yield source, gallery
    finally:
        gallery.close()


def assert_same_search(gallery: ShardedGallery, index: TemplateIndex, probes: np.ndarray, k: int = 10) -> None:
    assert gallery.search(probes, k) == index.search(probes, k)


@pytest.mark.slow
def test_search_equals_one_process_and_replicas_are_on_two_nodes(cluster):
    with gallery_over(cluster, "src-equal", shards=3, search_timeout=20) as (source, gallery):
        probes = unit(32, 11)
        assert_same_search(gallery, source.index, probes)
        assert_same_search(gallery, source.index, probes[0])
        assert_same_search(gallery, source.index, probes, k=1)
        # a probe equal to an enrolled template: that subject first, at distance 0
        assert gallery.search(source.index.templates_of("s00007")[1], 3)[0][0] == ("s00007", 0.0)
        for replicas in gallery.info():
            assert len({r["node_id"] for r in replicas}) == 2  # each shard on two nodes
            assert replicas[0]["templates"] == replicas[1]["templates"] > 0
        assert len(gallery) == len(source.index) and gallery.subject_count == source.index.subject_count
        assert gallery.search(probes, 0) == [[] for _ in range(32)]
        with pytest.raises(ValueError, match="shape"):
            gallery.search(np.zeros(64, dtype=np.float32), 10)
        with pytest.raises(ValueError, match="finite"):
            gallery.search(np.full(DIM, np.nan, dtype=np.float32), 10)


@pytest.mark.slow
def test_writes_have_template_index_semantics(cluster):
    with gallery_over(cluster, "src-writes", n=500, shards=2, search_timeout=20) as (source, gallery):
        new = unit(3, 20)
        source.put(["new1", "new1", "new2"], new)  # the source first, as the register commits first
        gallery.add("new1", new[:2])
        gallery.add_many(["new2"], new[2:])
        assert "new1" in gallery and "nobody" not in gallery
        assert gallery.compare(new[1], "new1") == source.index.compare(new[1], "new1") == 0.0
        assert np.array_equal(gallery.templates_of("new1"), new[:2])
        source.delete("s00003")
        assert gallery.remove("s00003") == 1
        assert gallery.remove("s00003") == 0
        with pytest.raises(SubjectNotFound):
            gallery.compare(new[0], "s00003")
        probes = np.vstack([new, unit(16, 21)])
        assert_same_search(gallery, source.index, probes)
        assert len(gallery) == len(source.index)


def restarted_unloaded(actor: object) -> bool:
    """Whether a replica (a Ray actor handle) answers as a new incarnation whose load failed: its ping raises
    ShardUnavailable (False while it is not restarted yet, or once it is loaded)."""
    import ray

    try:
        ray.get(actor.ping.remote(), timeout=5)
    except ShardUnavailable:
        return True
    except Exception:
        return False
    return False


def replica_pids(gallery: ShardedGallery, shard: int) -> list[int]:
    return [r["pid"] for r in gallery.info()[shard]]


@pytest.mark.slow
def test_a_restarted_replica_reloads_its_shard_with_the_writes_it_missed(cluster):
    with gallery_over(cluster, "src-restart", n=1000, shards=2, search_timeout=20) as (source, gallery):
        probes = unit(8, 31)
        old = replica_pids(gallery, 0)
        os.kill(old[0], signal.SIGKILL)  # replica 0 of shard 0 dies; Ray restarts it, it reloads
        victim = next(f"s{i:05d}" for i in range(1000) if i % 7 and shard_of(f"s{i:05d}", 2) == 0)  # one template
        source.delete(victim)
        assert gallery.remove(victim) == 1  # answered by the live replica
        late = unit(1, 32)
        newcomer = next(s for s in (f"n{i}" for i in range(100)) if shard_of(s, 2) == 0)
        source.put([newcomer], late)
        gallery.add(newcomer, late)
        wait_for(lambda: _pid(gallery, 0, 0) not in (None, old[0]), 60, "replica 0 of shard 0 back")
        # now kill the other replica: the restarted one alone answers shard 0
        os.kill(old[1], signal.SIGKILL)
        for _ in range(3):
            assert_same_search(gallery, source.index, np.vstack([late, probes]))
        info = wait_for(lambda: all(r is not None for r in gallery.info(timeout=5)[0]) and gallery.info()[0], 60,
                        "both replicas of shard 0 back")
        assert info[0]["templates"] == info[1]["templates"] == source.templates_in_shard(0, 2)
        assert_same_search(gallery, source.index, np.vstack([late, probes]))


def _pid(gallery: ShardedGallery, shard: int, replica: int) -> int | None:
    info = gallery.info(timeout=2)[shard][replica]
    return info["pid"] if info else None


@pytest.mark.slow
def test_a_write_missed_by_a_restarting_replica_is_reloaded_before_it_answers(cluster):
    """The restart reads the source, then the subject is enrolled (source, then gallery) while the replica is
    still starting: the write cannot reach it, and what it loaded lacks the subject. It must not answer a search
    until it has reloaded."""
    import ray

    with gallery_over(cluster, "src-slow", n=300, shards=1, search_timeout=30) as (source, gallery):
        ray.get(source.actor.set_delay.remote(8.0))  # the restart's page answers 8 s after it was read
        served = ray.get(source.actor.served.remote())
        os.kill(replica_pids(gallery, 0)[0], signal.SIGKILL)
        wait_for(lambda: ray.get(source.actor.served.remote()) > served, 30, "the restarted replica reading its shard")
        ray.get(source.actor.set_delay.remote(0.0))
        late = unit(1, 61)
        source.put(["late"], late)
        started = time.monotonic()
        gallery.add("late", late)
        assert time.monotonic() - started < 4.0  # answered by replica 1; replica 0 (8 s away) is not waited for
        probes = np.vstack([late, unit(4, 62)])
        wait_for(lambda: _pid(gallery, 0, 0) is not None, 60, "replica 0 restarted")
        for _ in range(4):  # both replicas in turn: the restarted one too
            assert_same_search(gallery, source.index, probes)
        assert all(r["templates"] == len(source.index) for r in gallery.info()[0])


@pytest.mark.slow
def test_a_shard_with_no_replica_left_refuses_the_search(cluster):
    with gallery_over(cluster, "src-lost", n=300, shards=2, max_restarts=0, search_timeout=10) as (source, gallery):
        assert_same_search(gallery, source.index, unit(2, 41))
        for pid in replica_pids(gallery, 1):
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(ShardUnavailable, match="cannot be reached"):
            gallery.search(unit(2, 41), 10)
        someone = next(s for s in (f"s{i:05d}" for i in range(300)) if shard_of(s, 2) == 1)
        with pytest.raises(ShardUnavailable):
            gallery.compare(unit(1, 42)[0], someone)
        started = time.monotonic()
        gallery.add(someone, unit(1, 43))  # not an error: the shard's replicas must reload before answering
        assert gallery.remove(someone) == 0
        assert time.monotonic() - started < 2.0  # every replica marked down: the writes do not wait
        assert all(r.stale for r in gallery._replicas[1])
        with pytest.raises(ShardUnavailable, match="cannot be reached"):
            gallery.search(unit(2, 41), 10)


@pytest.mark.slow
def test_a_shard_down_takes_writes_then_answers_in_full_once_its_source_is_back(cluster):
    """Both replicas of shard 1 restarted by Ray while the source cannot be reached: they come back unloaded
    (before the fix their creation task failed and Ray never restarted them). Writes to the shard meanwhile do
    not fail; every search refuses; once the source is back, the replicas load and the answers are complete."""
    import ray

    with gallery_over(cluster, "src-away", n=300, shards=2, search_timeout=10) as (source, gallery):
        probes = unit(4, 81)
        assert_same_search(gallery, source.index, probes)
        ray.get(source.actor.set_failing.remote(True))
        old = replica_pids(gallery, 1)
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        for replica in gallery._replicas[1]:
            wait_for(lambda actor=replica.actor: restarted_unloaded(actor), 60, "replica restarted unloaded", 0.5)
        with pytest.raises(ShardUnavailable):
            gallery.search(probes, 10)
        newcomer = next(s for s in (f"n{i}" for i in range(100)) if shard_of(s, 2) == 1)
        late = unit(1, 82)
        source.put([newcomer], late)  # the source first, then the gallery: as a station follows the register
        gallery.add(newcomer, late)  # the shard is down: not an error, and it is not lost
        victim = next(s for s in (f"s{i:05d}" for i in range(300)) if shard_of(s, 2) == 1)
        source.delete(victim)
        assert gallery.remove(victim) == 0
        with pytest.raises(ShardUnavailable):
            gallery.search(probes, 10)
        ray.get(source.actor.set_failing.remote(False))
        want = source.index.search(np.vstack([late, probes]), 10)

        def answers() -> bool:
            try:
                return gallery.search(np.vstack([late, probes]), 10) == want
            except ShardUnavailable:
                return False

        wait_for(answers, 60, "shard 1 loaded again", 0.5)
        assert want[0][0][0] == newcomer
        for _ in range(3):  # both replicas in turn
            assert_same_search(gallery, source.index, np.vstack([late, probes]))
        info = wait_for(lambda: all(gallery.replica_status()[1])  # pings the one still down: it loads
                        and all(r is not None for r in gallery.info(timeout=5)[1]) and gallery.info()[1], 60,
                        "both replicas of shard 1 loaded")
        assert not {r["pid"] for r in info} & set(old)  # new incarnations: restarted by Ray, not dead for good
        assert info[0]["templates"] == info[1]["templates"] == source.templates_in_shard(1, 2)


@pytest.mark.slow
def test_a_worker_node_killed_under_search_load(cluster):
    """Last in the module: the cluster keeps two nodes after it."""
    with gallery_over(cluster, "src-node", n=3000, shards=3, search_timeout=10) as (source, gallery):
        probes = unit(16, 51)
        expected = source.index.search(probes, 10)
        names = cluster.node_names()
        print("placement:", [[names[r["node_id"]] for r in g] for g in gallery.info()])
        on_worker = sum(r["node_id"] == cluster.node_id("worker1") for g in gallery.info() for r in g)
        assert on_worker >= 1  # the kill takes replicas with it
        outcomes: list[tuple[float, str]] = []  # (time, "ok" | "wrong" | error class)
        durations: list[float] = []
        stop = threading.Event()

        def load() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                started = time.monotonic()
                try:
                    got = gallery.search(probes[i % 16], 10)
                    outcomes.append((time.monotonic(), "ok" if got[0] == expected[i % 16] else "wrong"))
                except ShardUnavailable as exc:
                    outcomes.append((time.monotonic(), type(exc).__name__))
                durations.append(time.monotonic() - started)

        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        wait_for(lambda: len(outcomes) >= 20, 30, "searches before the kill")
        killed = time.monotonic()
        cluster.kill_node("worker1")
        wait_for(lambda: all(all(up) for up in gallery.replica_status())
                 and all(r is not None for g in gallery.info(timeout=5) for r in g), 90,
                 "every shard with two replicas again")
        restored = time.monotonic() - killed
        wait_for(lambda: sum(t > killed + restored for t, _ in outcomes) >= 20, 30, "searches after recovery")
        stop.set()
        thread.join(30)
        after = [o for t, o in outcomes if t > killed]
        errors = sum(o not in ("ok", "wrong") for o in after)
        print(f"node kill: {len(after)} searches after it, {errors} errors, two replicas again after {restored:.1f} s, "
              f"slowest search {max(durations):.2f} s")
        assert "wrong" not in {o for _, o in outcomes}
        assert errors <= len(after) // 2
        assert all(o == "ok" for t, o in outcomes if t > killed + restored)
        for replicas in gallery.info():
            assert len({r["node_id"] for r in replicas}) == 2  # on the head and worker2 now
        assert_same_search(gallery, source.index, probes)
