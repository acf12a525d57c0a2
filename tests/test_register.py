"""Stations on one PostgreSQL register: changes reach every station, simultaneous enrolments of one person
never both succeed, a cut link (a real TCP proxy) stops writes but not verification, and a station catches up
by itself when the link returns."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import face
from pg import fresh_database
from waiting import wait_until

from benchmarks.linkcut import LinkProxy
from biometrics.audit import load_public_key, verify_store
from biometrics.crypto import KeyRing
from biometrics.errors import RegisterUnavailable
from biometrics.register import RegisterStorage
from biometrics.service import CheckpointService, StoreLocation
from biometrics.types import Modality, Sample, SubjectInfo

pytestmark = pytest.mark.slow

PAIRS = [("Megawati_Sukarnoputri_0001.jpg", "Megawati_Sukarnoputri_0002.jpg"),
         ("Kofi_Annan_0001.jpg", "Kofi_Annan_0004.jpg"),
         ("Hans_Blix_0001.jpg", "Hans_Blix_0002.jpg") if Path(__file__).with_name("data").joinpath(
             "faces", "Hans_Blix_0002.jpg").exists() else ("Megawati_Sukarnoputri_0004.jpg",
                                                           "Megawati_Sukarnoputri_0002.jpg")]


def sample(name: str) -> Sample:
    return Sample(Modality.FACE, face(name))


@pytest.fixture
def register_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def station(tmp_path: Path, name: str, url: str, *, start: bool = True) -> CheckpointService:
    service = CheckpointService.open(StoreLocation(tmp_path / name, key_dir=tmp_path / "keys", store_url=url,
                                                   station=name), checkpoint_every=5)
    if start:
        service.start(retry_s=0.2, poll_s=0.5)
    return service


def test_an_enrolment_and_an_erasure_reach_every_station(tmp_path: Path, register_url: str) -> None:
    a, b, c = (station(tmp_path, n, register_url) for n in ("rokot-airport", "tuapejat-port", "siberut-port"))
    try:
        reference, probe = PAIRS[0]
        assert a.enrol("A1000001", SubjectInfo(name="Megawati"), [sample(reference)]).enrolled
        for s in (b, c):
            wait_until(lambda s=s: s.gallery_size()[0] == 1, timeout=10, message="the enrolment reached a station")
            assert s.verify("A1000001", [sample(probe)]).match
        b.delete_subject("A1000001", "erasure request")
        for s in (a, c):
            wait_until(lambda s=s: s.gallery_size() == (0, 0), timeout=10, message="the erasure reached a station")
            assert not s.identify([sample(probe)]).candidates
    finally:
        for s in (a, b, c):
            s.close()


def test_one_person_enrolled_at_two_stations_at_once_is_enrolled_once(tmp_path: Path, register_url: str) -> None:
    a, b = station(tmp_path, "rokot-airport", register_url), station(tmp_path, "sikakap-port", register_url)
    try:
        for trial, (first, second) in enumerate(PAIRS):
            barrier = threading.Barrier(2)
            results: dict[str, bool] = {}

            def desk(service: CheckpointService, subject_id: str, image: str, barrier: threading.Barrier,
                     results: dict[str, bool]) -> None:
                barrier.wait()
                results[subject_id] = service.enrol(subject_id, SubjectInfo(name=subject_id), [sample(image)]).enrolled

            threads = [threading.Thread(target=desk, args=(a, f"T{trial}A", first, barrier, results)),
                       threading.Thread(target=desk, args=(b, f"T{trial}B", second, barrier, results))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert sorted(results.values()) == [False, True], f"trial {trial}: {results}"
            winner = next(sid for sid, ok in results.items() if ok)
            (a if winner.endswith("A") else b).delete_subject(winner, "next trial")
    finally:
        a.close()
        b.close()


def test_a_cut_link_stops_writes_not_verification_and_the_station_catches_up(
        tmp_path: Path, register_url: str) -> None:
    with LinkProxy.to_url(register_url) as proxy:
        island = station(tmp_path, "siberut-port", proxy.url(register_url))
        central = station(tmp_path, "central-office", register_url)
        try:
            (m1, m2), (k1, k2) = PAIRS[0], PAIRS[1]
            assert island.enrol("A1000001", SubjectInfo(name="Megawati"), [sample(m1)]).enrolled
            wait_until(lambda: central.gallery_size()[0] == 1, timeout=10, message="central has the enrolment")
            proxy.cut()
            wait_until(lambda: not island.sync_status()["register_connected"], timeout=10,
                       message="the station noticed the cut")
            for _ in range(3):  # verification goes on, from memory, each decision in the local journal
                assert island.verify("A1000001", [sample(m2)]).match
            with pytest.raises(RegisterUnavailable, match="enrolment and erasure are paused"):
                island.enrol("B2000002", SubjectInfo(name="Kofi"), [sample(k1)])
            # Meanwhile the central office enrols one person and erases another.
            assert central.enrol("B2000002", SubjectInfo(name="Kofi"), [sample(k1)]).enrolled
            central.delete_subject("A1000001", "erasure request")
            assert island.gallery_size()[0] == 1, "the island cannot know yet"
            assert island.sync_status()["audit_pending"] >= 3
            proxy.restore()
            wait_until(lambda: island.holds("B2000002") and not island.holds("A1000001"),
                       timeout=20, message="the island caught up after the link returned")
            assert island.verify("B2000002", [sample(k2)]).match
            wait_until(lambda: island.sync_status()["audit_pending"] == 0, timeout=20,
                       message="the island's journal shipped to the register")
        finally:
            island.close()
            central.close()
    # The island's chain in the register holds every decision, in order, and verifies.
    check = RegisterStorage(register_url, KeyRing.load(tmp_path / "keys" / "keyring.json"), station="auditor")
    check.open()
    try:
        entries = list(check.audit_entries(station="siberut-port"))
    finally:
        check.close()
    kinds = [json.loads(e).get("kind") for e in entries]
    assert kinds.count("verify") >= 4 and kinds[0] == "enrol"
    report = verify_store(entries, load_public_key(tmp_path / "keys" / "audit-signing.pub"))
    assert report.ok and report.records == len(entries), report.finding


def test_a_station_started_while_the_register_is_unreachable_waits_then_loads(
        tmp_path: Path, register_url: str) -> None:
    seed = station(tmp_path, "central-office", register_url)
    assert seed.enrol("A1000001", SubjectInfo(name="Megawati"), [sample(PAIRS[0][0])]).enrolled
    seed.close()
    with LinkProxy.to_url(register_url) as proxy:
        proxy.cut()
        late = station(tmp_path, "sikakap-port", proxy.url(register_url))
        try:
            assert not late.ready()
            with pytest.raises(RegisterUnavailable, match="still loading the register"):
                late.verify("A1000001", [sample(PAIRS[0][1])])
            proxy.restore()
            wait_until(late.ready, timeout=20, message="the station loaded the register")
            assert late.verify("A1000001", [sample(PAIRS[0][1])]).match
        finally:
            late.close()


def test_a_shard_of_the_face_gallery_down_is_not_the_register_lost(register_url: str) -> None:
    """The listener's catch-up failing on a face-gallery shard (ShardUnavailable, a RegisterUnavailable) keeps the
    connection and reports no disconnection (it did: DISCONNECTED, then a reconnection, at every poll)."""
    from biometrics.register import ChangeListener
    from biometrics.sharded import ShardUnavailable

    calls: list[float] = []
    states: list[bool] = []

    def catch_up() -> None:
        calls.append(0.0)
        if len(calls) < 4:
            raise ShardUnavailable.unreachable(1)

    listener = ChangeListener(register_url, catch_up, poll_s=0.1, on_state=states.append,
                              backoff_s=(0.05, 0.1)).start()
    try:
        wait_until(lambda: len(calls) >= 6, timeout=10, message="the listener kept catching up")
        assert states == [True]
        assert listener.connected and listener.last_contact > 0  # the catch-ups after the shard came back count
    finally:
        listener.stop()
