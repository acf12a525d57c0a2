"""The face worker pool: same templates and refusals as in-process extraction, and it survives dead workers."""

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
from biometrics.workers import SINGLE_THREAD_ENV, FaceWorkerPool, WorkerLost

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
    for cls in _all_subclasses(BiometricError) | {WorkerLost}:
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


def test_a_killed_idle_worker_is_replaced_and_the_next_call_works(expected) -> None:
    with FaceWorkerPool(2) as p:
        p.warm_up(timeout=120)
        before = p.worker_pids()
        os.kill(before[0], signal.SIGKILL)
        time.sleep(0.3)
        _same(p.extract_face(face(NAMES[1])), expected[NAMES[1]])
        assert p.rebuilds == 1
        assert not set(p.worker_pids()) & set(before)


def test_calls_in_flight_when_a_worker_is_killed_are_retried(expected) -> None:
    jobs = NAMES * 8
    with FaceWorkerPool(2) as p:
        p.warm_up(timeout=120)
        victim = p.worker_pids()[0]
        batch: list = []
        runner = threading.Thread(target=lambda: batch.extend(p.map_faces([face(n) for n in jobs])))
        runner.start()
        time.sleep(0.15)
        os.kill(victim, signal.SIGKILL)
        runner.join(120)
        assert len(batch) == len(jobs)
        for name, result in zip(jobs, batch, strict=True):
            _same(result, expected[name])
        assert p.rebuilds == 1


def test_a_call_whose_worker_dies_twice_gets_worker_lost_and_the_pool_goes_on(expected) -> None:
    with FaceWorkerPool(1) as p:
        with pytest.raises(WorkerLost, match="try again"):
            p._call(os._exit, (3,))  # a sample that kills its worker every time
        assert p.rebuilds == 2
        _same(p.extract_face(face(NAMES[3])), expected[NAMES[3]])


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
        p._rebuild(0)  # a rebuild starts the executor again
        p.warm_up(timeout=120)
    assert {name: os.environ.get(name) for name in SINGLE_THREAD_ENV} == before


def test_a_lost_worker_is_answered_unavailable_with_its_message() -> None:
    import grpc

    from verify.status import status_for

    lost = WorkerLost("The face extraction worker stopped twice. Please try again.")
    assert status_for(lost) == grpc.StatusCode.UNAVAILABLE  # transient: a kiosk may retry
