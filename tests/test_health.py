"""verify.health: the gRPC health statuses follow the checks (the face worker pool's readiness), no server needed."""

from __future__ import annotations

import os
import signal
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health, health_pb2

from biometrics.workers import FaceWorkerPool
from verify.health import NOT_SERVING, SERVING, start_health_watch, watch_health

SERVICES = ("", "checkpoint.v1.Checkpoint")


class _Context:
    """What HealthServicer.Check needs of a ServicerContext."""

    def __init__(self) -> None:
        self.code = grpc.StatusCode.OK

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code


def _statuses(servicer: health.HealthServicer) -> set[int]:
    """The status each service answers to a Check (one value when they agree)."""
    out = set()
    for service in SERVICES:
        context = _Context()
        response = servicer.Check(health_pb2.HealthCheckRequest(service=service), context)
        assert context.code == grpc.StatusCode.OK, service
        out.add(response.status)
    return out


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{condition} still false after {timeout} s"
        time.sleep(0.01)


@pytest.fixture
def stop():
    event = threading.Event()
    yield event
    event.set()


def test_not_serving_from_the_start_until_every_check_passes(stop) -> None:
    servicer = health.HealthServicer()  # says SERVING for "" when created
    workers_ready, storage_ok = threading.Event(), threading.Event()
    storage_ok.set()
    start_health_watch(servicer, SERVICES, [workers_ready.is_set, storage_ok.is_set], stop, interval=0.02)
    assert _statuses(servicer) == {NOT_SERVING}  # at once, before the watcher's thread has run
    workers_ready.set()
    _until(lambda: _statuses(servicer) == {SERVING})
    storage_ok.clear()
    _until(lambda: _statuses(servicer) == {NOT_SERVING})
    storage_ok.set()
    _until(lambda: _statuses(servicer) == {SERVING})


def test_a_check_that_raises_counts_as_failing_and_the_watch_goes_on(stop) -> None:
    servicer = health.HealthServicer()
    broken = threading.Event()

    def check() -> bool:
        if broken.is_set():
            raise RuntimeError("the pool's state cannot be read")
        return True

    thread = start_health_watch(servicer, SERVICES, [check], stop, interval=0.02)
    assert _statuses(servicer) == {SERVING}
    broken.set()
    _until(lambda: _statuses(servicer) == {NOT_SERVING})
    broken.clear()
    _until(lambda: _statuses(servicer) == {SERVING})
    assert thread.is_alive()


def test_the_watch_ends_when_stopped_and_leaves_shutdown_to_the_server() -> None:
    servicer = health.HealthServicer()
    stop = threading.Event()
    thread = threading.Thread(target=watch_health, args=(servicer, SERVICES, [lambda: True], stop, 0.02))
    thread.start()
    _until(lambda: _statuses(servicer) == {SERVING})
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    servicer.enter_graceful_shutdown()
    assert _statuses(servicer) == {NOT_SERVING}


@pytest.mark.slow
def test_health_follows_the_face_worker_pool(stop) -> None:
    servicer = health.HealthServicer()
    pool = FaceWorkerPool(1, warm=False)
    try:
        start_health_watch(servicer, SERVICES, [pool.ready], stop, interval=0.05)
        assert _statuses(servicer) == {NOT_SERVING}  # models not loaded yet
        pool.warm_up(timeout=120)
        _until(lambda: _statuses(servicer) == {SERVING})
        os.kill(pool.worker_pids()[0], signal.SIGKILL)
        _until(lambda: _statuses(servicer) == {NOT_SERVING})  # replacing the worker
        _until(lambda: _statuses(servicer) == {SERVING}, timeout=120)
    finally:
        pool.close()
    _until(lambda: _statuses(servicer) == {NOT_SERVING})  # closed
