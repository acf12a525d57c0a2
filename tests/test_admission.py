"""The admission limit counts handlers still running, not callers still waiting: a call abandoned by its client
(deadline passed) keeps its slot until its handler's thread is done (review: the slot was given back when the
call ended, so new calls were admitted on top of abandoned ones and ran on the refusal threads)."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from checkpoint.v1 import checkpoint_pb2 as pb
from checkpoint.v1 import checkpoint_pb2_grpc as pb_grpc
from waiting import wait_until

from verify.admission import BUSY_MESSAGE, REFUSAL_THREADS, Admission
from verify.roles import RoleInterceptor

THREADS = 2


class Held(pb_grpc.CheckpointServicer):
    """GetStatistics holds its thread until released (a face extraction waiting its turn, deaf to the cancel)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = self.peak = 0

    def GetStatistics(self, request: pb.GetStatisticsRequest, context: grpc.ServicerContext) -> pb.Statistics:  # noqa: N802
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            self.release.wait(30)
            return pb.Statistics()
        finally:
            with self.lock:
                self.running -= 1


def test_an_abandoned_call_keeps_its_slot_until_its_handler_is_done() -> None:
    admission = Admission(THREADS, 0)
    servicer = Held()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=THREADS + REFUSAL_THREADS),
                         interceptors=[RoleInterceptor(plaintext=True, admission=admission)],
                         maximum_concurrent_rpcs=THREADS + REFUSAL_THREADS)
    pb_grpc.add_CheckpointServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = pb_grpc.CheckpointStub(channel)
        abandoned = [stub.GetStatistics.future(pb.GetStatisticsRequest(), timeout=0.3) for _ in range(THREADS)]
        for call in abandoned:
            assert call.exception().code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert servicer.running == THREADS and admission.running == THREADS  # still on their threads
        for _ in range(3):
            try:
                stub.GetStatistics(pb.GetStatisticsRequest(), timeout=5)
                raise AssertionError("admitted on top of handlers holding every thread")
            except grpc.RpcError as error:
                assert (error.code(), error.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                           BUSY_MESSAGE.format(calls=THREADS))
        assert servicer.peak == THREADS
        servicer.release.set()  # the abandoned handlers finish: their slots come back
        wait_until(lambda: admission.running == 0, timeout=10, message="the slots given back")
        assert stub.GetStatistics(pb.GetStatisticsRequest(), timeout=10) == pb.Statistics()
    finally:
        servicer.release.set()
        channel.close()
        server.stop(None)
