"""The face worker pool: same templates and refusals as in-process extraction; it survives dead and hung workers,
a sample that kills its worker fails alone, and the pool says when it is ready.

Faults are injected through the pool's private ``_call(fn, args)``, which runs any importable function in a worker
as a sample runs: ``os._exit`` (a worker that dies on its sample) and ``time.sleep`` (a sample that hangs)."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import DATA, ServerProcess, face, face_sample

import biometrics.errors as errors
import biometrics.service as service
from biometrics.errors import BiometricError, MultipleFaces, NoFaceFound, SampleTooLarge, UnsupportedImage
from biometrics.face import FaceTemplate, face_template_from_bytes
from biometrics.fingerprint.template import TemplateFormatError
from biometrics.imaging import ImageLimits, decode_rgb, encode_png
from biometrics.workers import SINGLE_THREAD_ENV, FaceWorkerPool, WorkerLost, WorkerTimeout

NAMES = ["Hans_Blix_0001.jpg", "Kofi_Annan_0001.jpg", "Kofi_Annan_0002.jpg", "Megawati_Sukarnoputri_0001.jpg",
         "Megawati_Sukarnoputri_0004.jpg"]
FINGERPRINT = (DATA / "fingerprints" / "DB1_B_101_1.png").read_bytes()
BLANK = encode_png(np.full((96, 96, 3), 255, np.uint8))  # no face, and cheap for every detector stage


@pytest.fixture(scope="module")
def pool():
    with FaceWorkerPool(2) as p:
        p.warm_up(timeout=120)
        yield p


@pytest.fixture(scope="module")
def expected() -> dict[str, FaceTemplate]:
    return {name: face_template_from_bytes(face(name)) for name in NAMES}


def _same(a: FaceTemplate, b: FaceTemplate) -> None:
    assert np.allclose(a.template, b.template, atol=1e-6)
    assert a.box == b.box
    assert a.quality == b.quality


def _refusal(fn, *args) -> BiometricError:
    with pytest.raises(BiometricError) as info:
        fn(*args)
    return info.value


def test_the_pool_gives_the_in_process_templates(pool, expected) -> None:
    for name in NAMES:
        _same(pool.extract_face(face(name)), expected[name])
    pixels = decode_rgb(face(NAMES[1]))
    _same(pool.extract_face(pixels), expected[NAMES[1]])
    _same(pool.extract_face(face(NAMES[0]), "enrol"), face_template_from_bytes(face(NAMES[0]), "enrol"))


def test_workers_are_pinned_to_one_thread(pool) -> None:
    infos = pool.warm_up(timeout=60)
    assert len({i["pid"] for i in infos}) == 2
    assert sorted(i["pid"] for i in infos) == pool.worker_pids()
    for info in infos:
        assert info["OMP_NUM_THREADS"] == info["OPENBLAS_NUM_THREADS"] == "1"
        assert info["cv2_threads"] == 1
    assert os.getpid() not in pool.worker_pids()


def _all_subclasses(cls: type) -> set[type]:
    return {cls} | {s for sub in cls.__subclasses__() for s in _all_subclasses(sub)}


def test_every_refusal_survives_pickling() -> None:
    assert {errors.NoFaceFound, errors.SampleTooLarge, service.NoReference, TemplateFormatError} <= \
        _all_subclasses(BiometricError)
    for cls in _all_subclasses(BiometricError) | {WorkerLost, WorkerTimeout}:
        again = pickle.loads(pickle.dumps(cls("a message to show")))
        assert type(again) is cls
        assert str(again) == "a message to show"


def test_refusals_arrive_with_their_class_and_message(pool) -> None:
    two = np.hstack([decode_rgb(face("Kofi_Annan_0001.jpg")), decode_rgb(face("Hans_Blix_0001.jpg"))])
    cases = [
        (FINGERPRINT, "probe", NoFaceFound),
        (BLANK, "probe", NoFaceFound),
        (b"not an image at all", "probe", UnsupportedImage),
        (face(NAMES[0])[:400], "probe", UnsupportedImage),  # truncated JPEG
        (encode_png(two), "enrol", MultipleFaces),
        (encode_png(two), "search", MultipleFaces),  # a second traveller at an Identify, refused in the worker too
    ]
    for data, purpose, cls in cases:
        remote = _refusal(pool.extract_face, data, purpose)
        local = _refusal(face_template_from_bytes, data, purpose)
        assert type(remote) is type(local) is cls
        assert str(remote) == str(local) and str(remote)


def test_the_pool_applies_its_image_limits_in_the_worker() -> None:
    limits = ImageLimits(max_bytes=1_000_000, max_pixels=50_000)  # LFW images are 250x250 = 62,500 pixels
    with FaceWorkerPool(1, limits) as small:
        remote = _refusal(small.extract_face, face(NAMES[0]))
    local = _refusal(face_template_from_bytes, face(NAMES[0]), "probe", limits)
    assert type(remote) is type(local) is SampleTooLarge
    assert str(remote) == str(local)


def test_map_faces_keeps_order_and_returns_refusals_in_place(pool, expected) -> None:
    images = [face(NAMES[2]), b"junk", face(NAMES[0]), BLANK, decode_rgb(face(NAMES[4])), face(NAMES[1])]
    results = pool.map_faces(images)
    assert len(results) == len(images)
    _same(results[0], expected[NAMES[2]])
    assert isinstance(results[1], UnsupportedImage)
    _same(results[2], expected[NAMES[0]])
    assert isinstance(results[3], NoFaceFound)
    _same(results[4], expected[NAMES[4]])
    _same(results[5], expected[NAMES[1]])
    assert pool.map_faces([]) == []


def test_map_faces_raises_what_is_not_a_refusal(pool) -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        pool.map_faces([face(NAMES[0]), np.zeros((64, 64), np.uint8)])


def test_concurrent_callers_all_get_their_own_template(pool, expected) -> None:
    jobs = NAMES * 4
    with ThreadPoolExecutor(8) as threads:
        results = list(threads.map(pool.extract_face, [face(n) for n in jobs]))
    for name, result in zip(jobs, results, strict=True):
        _same(result, expected[name])


def _until(condition, timeout: float = 120.0) -> None:
    """Poll ``condition`` until it holds (AssertionError after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{condition} still false after {timeout} s"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_idle_worker_is_replaced_and_the_next_call_works(expected) -> None:
    with FaceWorkerPool(2) as p:
        p.warm_up(timeout=120)
        before = p.worker_pids()
        os.kill(before[0], signal.SIGKILL)
        _until(lambda: p.restarts == 1)  # noticed while idle, not by the next caller
        _same(p.extract_face(face(NAMES[1])), expected[NAMES[1]])
        _until(p.ready)
        assert before[1] in p.worker_pids() and before[0] not in p.worker_pids()


@pytest.mark.slow
def test_calls_in_flight_when_a_worker_is_killed_are_retried(expected) -> None:
    jobs = NAMES * 8
    with FaceWorkerPool(2) as p:
        p.warm_up(timeout=120)
        victim = p.worker_pids()[0]
        batch: list = []
        runner = threading.Thread(target=lambda: batch.extend(p.map_faces([face(n) for n in jobs])))
        runner.start()
        _until(lambda: len(p._jobs) <= len(jobs) - 4)  # both workers busy, most of the batch still queued
        os.kill(victim, signal.SIGKILL)
        runner.join(120)
        assert len(batch) == len(jobs)
        for name, result in zip(jobs, batch, strict=True):
            _same(result, expected[name])
        assert p.restarts == 1


def test_a_call_whose_worker_dies_twice_gets_worker_lost_and_the_pool_goes_on(expected) -> None:
    with FaceWorkerPool(1) as p:
        with pytest.raises(WorkerLost, match="try again"):
            p._call(os._exit, (3,))  # a sample that kills its worker every time
        assert p.restarts == 2
        _same(p.extract_face(face(NAMES[3])), expected[NAMES[3]])


@pytest.mark.slow
def test_a_poison_sample_fails_alone_and_the_calls_beside_it_succeed(expected) -> None:
    """Good samples from other threads, queued and running beside one that kills its worker every time."""
    jobs = NAMES * 3
    with FaceWorkerPool(2) as p, ThreadPoolExecutor(8) as threads:
        p.warm_up(timeout=120)
        good = [threads.submit(p.extract_face, face(n)) for n in jobs[:6]]
        poison = threads.submit(p._call, os._exit, (3,))
        good += [threads.submit(p.extract_face, face(n)) for n in jobs[6:]]
        with pytest.raises(WorkerLost, match="stopped twice"):
            poison.result(timeout=300)
        for name, future in zip(jobs, good, strict=True):
            _same(future.result(timeout=300), expected[name])  # none failed, none was lost
        assert p.restarts == 2  # the poison's first worker, and the fresh one it was retried alone on
        _until(p.ready)


@pytest.mark.slow
def test_a_hung_worker_is_killed_at_the_call_timeout_and_replaced(expected) -> None:
    with FaceWorkerPool(2, call_timeout=2.0) as p, ThreadPoolExecutor(2) as threads:
        p.warm_up(timeout=120)
        before = set(p.worker_pids())
        started = time.monotonic()
        hung = threads.submit(p._call, time.sleep, (3600,))  # a sample that never finishes
        _until(lambda: len(p._jobs) == 0)
        # meanwhile the other worker goes on serving
        _same(p.extract_face(face(NAMES[0])), expected[NAMES[0]])
        with pytest.raises(WorkerTimeout, match="longer than 2 s"):
            hung.result(timeout=60)
        assert time.monotonic() - started < 2.0 + 10  # the bound, and some slack for a loaded machine
        assert p.restarts == 1
        killed = before - set(p.worker_pids())
        assert len(killed) == 1 and not _alive(killed.pop())
        _until(p.ready)
        _same(p.extract_face(face(NAMES[2])), expected[NAMES[2]])
        assert len(p.worker_pids()) == 2


def test_the_pool_is_ready_only_with_every_worker_up() -> None:
    p = FaceWorkerPool(2, warm=False)
    try:
        assert not p.ready()  # not warmed up
        p.warm_up(timeout=120)
        assert p.ready()
        os.kill(p.worker_pids()[0], signal.SIGKILL)
        _until(lambda: not p.ready(), timeout=10)  # a worker is being replaced
        _until(p.ready)
    finally:
        p.close()
    assert not p.ready()  # closed


@pytest.mark.slow
def test_a_pool_whose_workers_cannot_start_is_broken_and_answers_at_once() -> None:
    with FaceWorkerPool(1, start_timeout=0.001) as p:  # no worker loads its models that fast
        with pytest.raises(RuntimeError, match="cannot start"):
            p.warm_up(timeout=120)
        assert not p.ready() and "cannot start" in p.broken
        started = time.monotonic()
        with pytest.raises(WorkerLost, match="cannot start"):
            p.extract_face(face(NAMES[0]))
        assert time.monotonic() - started < 1


def test_the_timeouts_must_be_positive_numbers() -> None:
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive"):
            FaceWorkerPool(1, warm=False, call_timeout=bad)


def test_a_pool_needs_a_worker_and_a_safe_start_method() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        FaceWorkerPool(0)
    with pytest.raises(ValueError, match="never fork"):
        FaceWorkerPool(1, start_method="fork")


def test_a_closed_pool_refuses_calls() -> None:
    p = FaceWorkerPool(1, warm=False)
    with p:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        p.extract_face(face(NAMES[0]))
    p.close()  # twice is harmless


@pytest.mark.server
def test_grpc_server_with_two_face_workers(tmp_path) -> None:
    server = ServerProcess(tmp_path / "data", args=("--workers", "2")).start()
    try:
        stub = server.stub()
        enrolled = stub.Enroll(pb.EnrollRequest(subject_id="A1000001", samples=[
            face_sample("Megawati_Sukarnoputri_0001.jpg")], info=pb.SubjectInfo(name="Megawati Sukarnoputri")))
        assert enrolled.enrolled
        genuine = stub.Verify(pb.VerifyRequest(subject_id="A1000001",
                                               samples=[face_sample("Megawati_Sukarnoputri_0002.jpg")]))
        impostor = stub.Verify(pb.VerifyRequest(subject_id="A1000001", samples=[face_sample("Hans_Blix_0001.jpg")]))
        assert genuine.match and not impostor.match
        with pytest.raises(grpc.RpcError) as refused:
            stub.Verify(pb.VerifyRequest(subject_id="A1000001", samples=[pb.Sample(modality=pb.FACE, image=BLANK)]))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == str(_refusal(face_template_from_bytes, BLANK))
    finally:
        assert server.stop() == 0
    log = "".join(server.output)
    assert "face extraction on 2 worker processes" in log
    assert "stopped" in log


def test_the_callers_environment_is_left_as_it_was() -> None:
    """The single-thread settings are for the workers: the calling process keeps its own."""
    before = {name: os.environ.get(name) for name in SINGLE_THREAD_ENV}
    with FaceWorkerPool(1) as p:
        p.warm_up(timeout=120)
        os.kill(p.worker_pids()[0], signal.SIGKILL)  # a replacement starts another worker
        _until(lambda: p.restarts == 1)
        p.warm_up(timeout=120)
    assert {name: os.environ.get(name) for name in SINGLE_THREAD_ENV} == before


def test_a_lost_worker_is_answered_unavailable_with_its_message() -> None:
    import grpc

    from verify.status import status_for

    lost = WorkerLost("The face extraction worker stopped twice. Please try again.")
    assert status_for(lost) == grpc.StatusCode.UNAVAILABLE  # transient: a kiosk may retry
    timed_out = WorkerTimeout("Face extraction took longer than 30 s and was stopped.")
    assert status_for(timed_out) == grpc.StatusCode.DEADLINE_EXCEEDED


def test_camera_frames_are_scored_in_a_worker_as_in_this_process(pool: FaceWorkerPool) -> None:
    """The camera's frame scorer runs dlib's detection in a worker (review: in the server process it held the
    GIL, falling back to the CNN detector on a frame with no face, and every other call waited)."""
    from biometrics.face import frame_quality

    frame = decode_rgb(face("Kofi_Annan_0001.jpg"))
    assert pool.frame_quality(frame) == pytest.approx(frame_quality(frame))
    assert pool.frame_quality(np.full((96, 96, 3), 255, np.uint8)) is None  # no face: unusable


def test_the_servers_camera_scores_frames_in_its_face_workers(pool: FaceWorkerPool) -> None:
    from verify import server

    args = server.build_parser().parse_args(["--camera", str(DATA / "camera" / "fake_camera_Tony_Blair.avi")])
    station = server._configure_station(args, pool)
    try:
        assert station.camera.frame_scorer == pool.frame_quality
        assert station.camera.capture(timeout_s=10).shape == (480, 640, 3)  # a face found by the worker's scorer
    finally:
        station.close()
