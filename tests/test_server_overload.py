"""A server with every thread taken answers at once instead of queueing: long-lived Health Watch streams are
bounded and refused to kiosks, a call beyond ``--threads`` is refused ``UNAVAILABLE`` (try again), and callers
waiting for one device are bounded (review: 16 open Watch streams held every thread of the pool, and every other
call queued until its caller's deadline). One kiosk certificate's calls beyond ``--max-calls-per-kiosk`` are
refused while another kiosk is still answered (security review: one kiosk's slow calls held every slot)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import ServerProcess
from waiting import wait_until

from devices.access import DeviceLock
from devices.errors import DeviceBusy
from devices.zfm_emulator import Fault, ZfmEmulator
from devices.zfm_protocol import GEN_IMG
from verify.admission import BUSY_MESSAGE, KIOSK_MESSAGE, WATCH_MESSAGE
from verify.roles import allowed

PRINTS = Path(__file__).resolve().parent / "data" / "scanner"


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory):
    """A server with two threads and one Watch allowed, the ZFM emulator as its scanner."""
    with ZfmEmulator(PRINTS) as emulator:
        proc = ServerProcess(tmp_path_factory.mktemp("overload"),
                             args=("--threads", "2", "--max-watches", "1", "--scanner", emulator.port)).start()
        try:
            yield proc, emulator
        finally:
            proc.stop()


@pytest.fixture
def server(station: tuple[ServerProcess, ZfmEmulator]) -> ServerProcess:
    return station[0]


def open_watch(server: ServerProcess) -> tuple[grpc.Channel, object]:
    channel = server.channel()
    stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
    return channel, stream


def test_kiosks_may_check_health_but_not_watch_it() -> None:
    assert allowed("/grpc.health.v1.Health/Check", "kiosk")
    assert not allowed("/grpc.health.v1.Health/Watch", "kiosk")
    assert allowed("/grpc.health.v1.Health/Watch", "auditor") and allowed("/grpc.health.v1.Health/Watch", "officer")


@pytest.mark.server
def test_watch_streams_beyond_the_limit_are_refused_and_other_calls_still_answered(server: ServerProcess) -> None:
    watches = []
    answers: list[object] = []
    try:
        for _ in range(4):  # one after the other: the first is admitted, the next three refused
            watches.append(open_watch(server))
            try:
                answers.append(next(watches[-1][1]).status)
            except grpc.RpcError as error:
                answers.append((error.code(), error.details()))
        assert answers[0] in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert answers[1:] == [(grpc.StatusCode.UNAVAILABLE, WATCH_MESSAGE.format(watches=1))] * 3
        # The open Watch holds one of the two threads; the other still answers.
        stats = server.stub().GetStatistics(pb.GetStatisticsRequest(), timeout=20)
        assert stats.gallery_subjects == 0
    finally:
        for channel, stream in watches:
            stream.cancel()
            channel.close()


@pytest.mark.server
def test_a_call_beyond_the_threads_is_refused_at_once_not_queued(station: tuple[ServerProcess, ZfmEmulator]) -> None:
    server, emulator = station
    emulator.inject(Fault.NO_FINGER)
    channel, watch = open_watch(server)
    try:
        next(watch)
        before = emulator.commands.count(GEN_IMG)
        capture = server.stub().CaptureFingerprint.future(pb.CaptureRequest(timeout_seconds=3), timeout=30)
        wait_until(lambda: emulator.commands.count(GEN_IMG) > before, message="the scanner asked for a finger")
        # Both threads are taken (a Watch, a capture waiting for a finger): the next call hears so.
        with pytest.raises(grpc.RpcError) as refused:
            server.stub().GetStatistics(pb.GetStatisticsRequest(), timeout=20)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert refused.value.details() == BUSY_MESSAGE.format(calls=2)
        with pytest.raises(grpc.RpcError) as no_finger:
            capture.result()
        assert no_finger.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        emulator.clear()
        watch.cancel()
        channel.close()
    wait_until(lambda: _answers(server), message="the server answers again once the calls have ended")


@pytest.mark.server
def test_a_kiosk_beyond_its_calls_is_refused_and_another_kiosk_answered(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    pki = tmp_path_factory.mktemp("kiosks-pki")
    for command in (["init", str(pki)], ["client", str(pki), "--role", "kiosk", "--name", "kiosk-2"]):
        done = subprocess.run([sys.executable, "-m", "verify.certs", *command], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
    with ZfmEmulator(PRINTS) as emulator:
        server = ServerProcess(tmp_path_factory.mktemp("kiosks"), tls=pki,
                               args=("--max-calls-per-kiosk", "1", "--scanner", emulator.port)).start()
        try:
            emulator.inject(Fault.NO_FINGER)
            before = emulator.commands.count(GEN_IMG)
            kiosk = server.stub("kiosk")
            capture = kiosk.CaptureFingerprint.future(pb.CaptureRequest(timeout_seconds=5), timeout=30)
            wait_until(lambda: emulator.commands.count(GEN_IMG) > before, message="the scanner asked for a finger")
            with pytest.raises(grpc.RpcError) as refused:
                kiosk.ListDevices(pb.ListDevicesRequest(), timeout=20)
            assert (refused.value.code(), refused.value.details()) == (grpc.StatusCode.UNAVAILABLE,
                                                                       KIOSK_MESSAGE.format(running=1))
            assert server.stub("kiosk-2").ListDevices(pb.ListDevicesRequest(), timeout=20).devices
            with pytest.raises(grpc.RpcError):
                capture.result()
            assert kiosk.ListDevices(pb.ListDevicesRequest(), timeout=20).devices  # its slot is back
        finally:
            emulator.clear()
            server.stop()


def _answers(server: ServerProcess) -> bool:
    try:
        server.stub().GetStatistics(pb.GetStatisticsRequest(), timeout=20)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        return False
    return True


def test_one_caller_waits_for_a_busy_device_and_the_next_is_told_it_is_busy_at_once() -> None:
    lock = DeviceLock("scanner0")
    release = threading.Event()
    holding = threading.Event()
    outcomes: dict[str, object] = {}

    def holder() -> None:
        with lock.hold(5):
            holding.set()
            release.wait(30)

    def caller(name: str) -> None:
        try:
            with lock.hold(30):
                outcomes[name] = "held"
        except DeviceBusy as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    holding.wait(5)
    threads.append(threading.Thread(target=caller, args=("waiter",)))
    threads[1].start()
    wait_until(lambda: lock.waiting == 1, message="the first caller waits for the device")
    threads.append(threading.Thread(target=caller, args=("third",)))
    threads[2].start()
    threads[2].join(10)
    try:
        assert not threads[2].is_alive(), "the third caller was not answered while the device was held"
        assert isinstance(outcomes["third"], DeviceBusy)
        assert "busy" in str(outcomes["third"])
    finally:
        release.set()
        for thread in threads:
            thread.join(35)
    assert outcomes["waiter"] == "held"  # the one waiting caller got the device once it was free
