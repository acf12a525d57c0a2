"""A station whose face gallery is sharded over a real local Ray cluster (``--gallery ray:HEAD:PORT``), against a
station with the in-memory gallery, both on one real PostgreSQL register.

The cluster is tests/test_sharded.py's (a head and two worker nodes on 127.0.0.1, each its own process group
with its own memory limit and explicit ports). Face extraction is replaced by an extractor that takes the
template itself as the sample's pixels, so that the galleries hold chosen templates (near-duplicates, groups);
everything else is the service as it runs: the register, the change log, the shards' replicas loading from the
register (:class:`biometrics.shard_loader.RegisterShardLoader`), Identify and the enrolment duplicate search.
The tests run in order and share the stations: the node kill leaves two nodes, the last test destroys a shard.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pg import fresh_database
from test_sharded import local_ray_cluster, restarted_unloaded, wait_for

from benchmarks.cluster_bench import unit_probes as unit
from biometrics.errors import RegisterUnavailable
from biometrics.face import FaceBox, FaceTemplate
from biometrics.service import CheckpointService, StoreLocation
from biometrics.shard_loader import face_index_for
from biometrics.sharded import ShardedGallery, shard_of
from biometrics.types import Modality, Sample, SubjectInfo

pytestmark = pytest.mark.slow

DIM = 128
SHARDS = 2


@dataclass
class TemplateAsImage:
    """An extractor for tests: a FACE sample's pixels ARE its 128-d template."""

    def extract_face(self, image: np.ndarray, purpose: str = "probe") -> FaceTemplate:
        return FaceTemplate(np.asarray(image, dtype=np.float32), FaceBox(0, 1, 1, 0, 1.0, "test"), 90.0)


def face(template: np.ndarray) -> list[Sample]:
    return [Sample(Modality.FACE, np.asarray(template, dtype=np.float32))]


def near(template: np.ndarray, distance: float, seed: int) -> np.ndarray:
    """A template at exactly ``distance`` from ``template`` (a genuine-like probe)."""
    step = unit(1, seed)[0]
    return (template + distance * step).astype(np.float32)


@dataclass
class Stations:
    cluster: object
    memory: CheckpointService  # the in-memory gallery (the reference)
    sharded: CheckpointService  # --gallery ray:HEAD:PORT
    templates: dict[str, np.ndarray]  # every enrolled subject's template
    probes: np.ndarray
    key_file: Path  # the key ring the replicas' loader reads

    @property
    def gallery(self) -> ShardedGallery:
        return self.sharded.face_index

    def caught_up(self) -> None:
        wait_for(lambda: self.sharded.applied_seq == self.memory.applied_seq, 20, "the sharded station caught up")


def station(tmp_path: Path, name: str, url: str, **kwargs) -> CheckpointService:
    service = CheckpointService.open(StoreLocation(tmp_path / name, key_dir=tmp_path / "keys", store_url=url,
                                                   station=name), extractor=TemplateAsImage(), **kwargs)
    service.start(retry_s=0.2, poll_s=0.3)
    return service


@pytest.fixture(scope="module")
def stations(tmp_path_factory) -> Iterator[Stations]:
    root = Path(tmp_path_factory.mktemp("svc"))
    with local_ray_cluster("test-sharded-service") as cluster, \
            fresh_database() as url:
        memory = station(root, "desk-memory", url)
        sharded = None
        try:
            # 60 subjects: 40 alone, and 20 in groups of 4 within 0.25 of each other (each group's later members
            # are held by the duplicate search, then enrolled with an officer's override).
            templates: dict[str, np.ndarray] = {}
            loners = unit(40, 1)
            for i, t in enumerate(loners):
                templates[f"L{i:03d}"] = t
            for g, centre in enumerate(unit(5, 2)):
                for j in range(4):
                    templates[f"G{g}{j}"] = near(centre, 0.12, 100 + 10 * g + j)
            for subject_id, t in templates.items():
                result = memory.enrol(subject_id, SubjectInfo(name=subject_id), face(t), allow_duplicate=True,
                                      override_reason="test group")
                assert result.enrolled
            key_file = root / "keys" / "keyring.json"
            sharded = station(root, "desk-sharded", url,
                              face_index=face_index_for(f"ray:{cluster.address}", store_url=url, key_file=key_file,
                                                        shards=SHARDS, search_timeout=20))
            wait_for(sharded.ready, 120, "the sharded station loaded")
            probes = np.vstack([[near(t, 0.2, 1000 + i) for i, t in enumerate(templates.values())][::3],
                                unit(5, 3)])  # near an enrolled face (a third of them), and strangers
            yield Stations(cluster, memory, sharded, templates, probes, key_file)
        finally:
            if sharded is not None:
                sharded.close()
            memory.close()


def same_answers(stations: Stations, probes: np.ndarray) -> None:
    """Identify and the enrolment duplicate search answer as the in-memory station, probe by probe."""
    m, s = stations.memory, stations.sharded
    for probe in probes:
        want = m.identify(face(probe), max_candidates=10).candidates
        assert s.identify(face(probe), max_candidates=10).candidates == want
        assert s.screen([probe], [], False)[:3] == m.screen([probe], [], False)[:3]


def test_identify_and_duplicate_search_equal_the_in_memory_gallery(stations: Stations) -> None:
    gallery = stations.gallery
    assert isinstance(gallery, ShardedGallery) and gallery.shards == SHARDS
    assert len(stations.sharded.face_index) == len(stations.memory.face_index) == 60
    for replicas in gallery.info():  # each shard on two nodes, loaded from the register
        assert len({r["node_id"] for r in replicas}) == 2 and replicas[0]["templates"] == replicas[1]["templates"]
    hits = [len(stations.memory.identify(face(p)).candidates) for p in stations.probes]
    assert max(hits) >= 4 and min(hits) == 0  # groups, loners and strangers: the comparison is not vacuous
    same_answers(stations, stations.probes)
    # An enrolment at the sharded station: its duplicate search holds back a near-copy of a group member.
    copy = near(stations.templates["G21"], 0.1, 7)
    held = stations.sharded.enrol("DUP0001", SubjectInfo(name="dup"), face(copy))
    assert not held.enrolled
    assert held.possible_duplicates == stations.memory.screen([copy], [], False)[1]
    assert {c.subject_id for c in held.possible_duplicates} >= {"G20", "G21", "G22", "G23"}


def test_changes_from_another_station_and_a_restarted_replica_reloading_from_the_register(
        stations: Stations) -> None:
    m, s, gallery = stations.memory, stations.sharded, stations.gallery
    newcomer = unit(1, 50)[0]
    assert m.enrol("NEW0001", SubjectInfo(name="new"), face(newcomer)).enrolled
    m.delete_subject("L000", "erasure request")
    stations.caught_up()
    probe = near(newcomer, 0.2, 51)
    assert [c.subject_id for c in s.identify(face(probe)).candidates] == ["NEW0001"]
    assert not s.identify(face(near(stations.templates["L000"], 0.2, 52))).candidates
    same_answers(stations, np.vstack([probe, stations.probes[:6]]))

    # Replica 0 of the newcomer's shard dies; while Ray restarts it (it reloads from the register), another
    # subject of that shard is enrolled elsewhere. Then replica 1 dies: the restarted one answers alone.
    shard = shard_of("NEW0001", SHARDS)
    old = [r["pid"] for r in gallery.info()[shard]]
    os.kill(old[0], signal.SIGKILL)
    late_id = next(f"LATE{i:03d}" for i in range(100) if shard_of(f"LATE{i:03d}", SHARDS) == shard)
    late = unit(1, 53)[0]
    assert m.enrol(late_id, SubjectInfo(name="late"), face(late)).enrolled
    stations.caught_up()
    wait_for(lambda: (gallery.info(timeout=2)[shard][0] or {}).get("pid") not in (None, old[0]), 60,
             "replica 0 restarted")
    os.kill(old[1], signal.SIGKILL)
    for _ in range(2):
        assert [c.subject_id for c in s.identify(face(near(late, 0.2, 54))).candidates] == [late_id]
        same_answers(stations, np.vstack([probe, stations.probes[:6]]))
    held_by_shard = sum(1 for sid in m.gallery.watchlist if shard_of(sid, SHARDS) == shard)
    info = wait_for(lambda: all(gallery.info(timeout=5)[shard]) and gallery.info()[shard], 60, "both replicas back")
    assert info[0]["templates"] == info[1]["templates"] == held_by_shard


def test_a_worker_node_killed_under_identify_load_gives_no_wrong_answer(stations: Stations) -> None:
    m, s, cluster = stations.memory, stations.sharded, stations.cluster
    probes = stations.probes[:12]
    expected = [m.identify(face(p)).candidates for p in probes]
    outcomes: list[tuple[float, str]] = []
    stop = threading.Event()

    def load(offset: int) -> None:
        i = offset
        while not stop.is_set():
            i += 1
            try:
                got = s.identify(face(probes[i % len(probes)])).candidates
                outcomes.append((time.monotonic(), "ok" if got == expected[i % len(probes)] else "wrong"))
            except RegisterUnavailable as exc:
                outcomes.append((time.monotonic(), type(exc).__name__))

    threads = [threading.Thread(target=load, args=(k,), daemon=True) for k in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: len(outcomes) >= 10, 30, "identifications before the kill")
    killed = time.monotonic()
    cluster.kill_node("worker1")
    gallery = stations.gallery
    wait_for(lambda: all(all(up) for up in gallery.replica_status())
             and all(r is not None for g in gallery.info(timeout=5) for r in g), 90, "two replicas of every shard")
    restored = time.monotonic()
    wait_for(lambda: sum(t > restored for t, _ in outcomes) >= 10, 30, "identifications after recovery")
    stop.set()
    for t in threads:
        t.join(30)
    after = [o for t, o in outcomes if t > killed]
    print(f"node kill: {len(after)} identifications after it, {sum(o != 'ok' for o in after)} errors, "
          f"two replicas again after {restored - killed:.1f} s")
    assert "wrong" not in {o for _, o in outcomes}
    assert all(o == "ok" for t, o in outcomes if t > restored)


def test_a_shard_down_holds_up_no_erasure_and_answers_in_full_once_back(stations: Stations) -> None:
    """Both replicas of shard 1 restarted by Ray while the key file is missing on their node (so their register
    loader fails): they come back unloaded and the shard is down. Meanwhile another station enrols a subject of
    shard 1, then erases one of the healthy shard 0: the sharded station applies both at once (the erased subject
    is NOT_FOUND), erases at its own desk in both shards, refuses every Identify, and stays connected to the
    register. Once the key file is back the replicas load, and Identify answers as the in-memory station.
    (Before: the enrolment's face write raised ShardUnavailable and the change log stopped there: the erased
    subject still matched; and the replicas, whose constructor raised, were never restarted.)"""
    from biometrics.errors import SubjectNotFound

    m, s, gallery = stations.memory, stations.sharded, stations.gallery
    enrolled = [sid for sid in stations.templates if sid.startswith("L") and sid in m.gallery.watchlist]
    erased_elsewhere, erased_here = [sid for sid in enrolled if shard_of(sid, SHARDS) == 0][:2]
    erased_here_1 = next(sid for sid in enrolled if shard_of(sid, SHARDS) == 1)
    own = stations.templates[erased_elsewhere]
    assert s.verify(erased_elsewhere, face(near(own, 0.2, 90))).match
    away = stations.key_file.with_name("keyring.json.away")
    old = [r["pid"] for r in gallery.info()[1]]
    stations.key_file.rename(away)
    try:
        for pid in old:
            os.kill(pid, signal.SIGKILL)

        for replica in gallery._replicas[1]:
            wait_for(lambda actor=replica.actor: restarted_unloaded(actor), 60, "a replica restarted unloaded", 0.5)
        newcomer_id = next(f"D{i:03d}" for i in range(100) if shard_of(f"D{i:03d}", SHARDS) == 1)
        newcomer = unit(1, 91)[0]
        assert m.enrol(newcomer_id, SubjectInfo(name="down"), face(newcomer)).enrolled
        m.delete_subject(erased_elsewhere, "erasure request")
        stations.caught_up()
        with pytest.raises(SubjectNotFound):
            s.verify(erased_elsewhere, face(near(own, 0.2, 90)))
        s.delete_subject(erased_here, "erasure request")
        s.delete_subject(erased_here_1, "erasure request")
        for gone in (erased_elsewhere, erased_here, erased_here_1):
            assert gone not in s.gallery.watchlist  # at once at its own desk; the other station learns it from the log
            wait_for(lambda gone=gone: gone not in m.gallery.watchlist, 20, f"the other station erased {gone}")
        for refused in (lambda: s.identify(face(near(newcomer, 0.2, 92))),
                        lambda: s.verify(newcomer_id, face(near(newcomer, 0.2, 92)))):  # its face is in shard 1
            with pytest.raises(RegisterUnavailable, match="Shard 1 of the gallery cannot be reached"):
                refused()
        assert s.sync_status()["register_connected"]
    finally:
        away.rename(stations.key_file)

    def identified() -> bool:
        try:
            return [c.subject_id for c in s.identify(face(near(newcomer, 0.2, 92))).candidates] == [newcomer_id]
        except RegisterUnavailable:
            return False

    wait_for(identified, 60, "shard 1 loaded again", 0.5)
    stations.caught_up()
    for sid in (erased_elsewhere, erased_here, erased_here_1):
        assert not s.identify(face(near(stations.templates[sid], 0.2, 93))).candidates
    same_answers(stations, np.vstack([near(newcomer, 0.2, 92), stations.probes]))
    assert s.sync_status()["register_connected"]


def test_a_shard_with_no_replica_left_answers_unavailable_never_a_partial_answer(stations: Stations) -> None:
    import grpc
    import ray

    from verify.status import status_for

    m, s, gallery = stations.memory, stations.sharded, stations.gallery
    probe = stations.probes[0]
    assert s.identify(face(probe)).candidates == m.identify(face(probe)).candidates
    for replica in gallery._replicas[1]:  # every replica of shard 1, for good (no restart)
        ray.kill(replica.actor, no_restart=True)

    def gone(actor: object) -> bool:  # a Ray actor handle
        try:
            ray.get(actor.ping.remote(), timeout=30)
        except ray.exceptions.RayActorError:
            return True
        return False

    for replica in gallery._replicas[1]:  # the kill takes effect asynchronously: wait until each is gone
        wait_for(lambda actor=replica.actor: gone(actor), 60, "the killed replica to stop answering", 0.2)
    for attempt in (lambda: s.identify(face(probe)),
                    lambda: s.enrol("NEVER01", SubjectInfo(name="never"), face(unit(1, 60)[0]))):
        with pytest.raises(RegisterUnavailable, match="Shard 1 of the gallery cannot be reached") as refused:
            attempt()
        assert status_for(refused.value) == grpc.StatusCode.UNAVAILABLE
    assert "NEVER01" not in m.gallery.watchlist and "NEVER01" not in s.gallery.watchlist


def test_the_register_loader_pages_its_shard_read_only_and_catches_up_on_the_log(tmp_path: Path, monkeypatch) -> None:
    """Without Ray: what a replica loads. Changes committed after the loader's snapshot (an erasure of a subject
    in it, an enrolment) are in what it yields, as the register holds them once the loader is done."""
    import psycopg

    from biometrics.crypto import KeyRing
    from biometrics.shard_loader import RegisterShardLoader
    from biometrics.storage import KeyRingMismatch

    with fresh_database() as url:
        desk = station(tmp_path, "desk-a", url)
        try:
            templates = dict(zip([f"S{i:03d}" for i in range(12)], unit(12, 70), strict=True))
            for subject_id, t in templates.items():
                assert desk.enrol(subject_id, SubjectInfo(name=subject_id), face(t)).enrolled
            loader = RegisterShardLoader(url, str(tmp_path / "keys" / "keyring.json"), page=5)
            register = loader._open()
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), register.transaction() as tx:
                tx.execute("CREATE TABLE nothing_to_write (i int)")
            register.close()
            other_ring = tmp_path / "other-keyring.json"
            KeyRing.generate().save(other_ring)
            with pytest.raises(KeyRingMismatch):
                RegisterShardLoader(url, str(other_ring))._open()

            real_open = RegisterShardLoader._open

            def opened_then_changed(self):
                register = real_open(self)
                real_pages = register.gallery_pages

                def pages(page: int):
                    found = real_pages(page)
                    first = next(found)  # the snapshot is taken: now the register changes
                    desk.delete_subject("S003", "erasure request")
                    templates["S100"] = unit(1, 71)[0]
                    assert desk.enrol("S100", SubjectInfo(name="late"), face(templates["S100"])).enrolled
                    yield first
                    yield from found

                register.gallery_pages = pages
                return register

            monkeypatch.setattr(RegisterShardLoader, "_open", opened_then_changed)
            del templates["S003"]
            loaded: dict[str, np.ndarray] = {}
            for shard in range(2):
                for ids, rows in loader(shard, 2):
                    assert all(shard_of(s, 2) == shard for s in ids)
                    loaded.update(zip(ids, rows, strict=True))
                monkeypatch.setattr(RegisterShardLoader, "_open", real_open)  # the second shard: no new change
            assert sorted(loaded) == sorted(templates)
            for subject_id, t in templates.items():
                np.testing.assert_array_equal(loaded[subject_id], t)
        finally:
            desk.close()
