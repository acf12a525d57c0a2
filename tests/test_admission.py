"""The admission limit counts handlers still running, not callers still waiting: a call abandoned by its client
(deadline passed) keeps its slot until its handler's thread is done (review: the slot was given back when the
call ended, so new calls were admitted on top of abandoned ones and ran on the refusal threads).

One kiosk certificate gets at most ``--max-calls-per-kiosk`` of the slots (security review: one stolen or
misbehaving kiosk sending many slow calls at once held every slot, and every other kiosk's traveller heard
that the server was busy); officers and the plaintext development caller are not held to it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from checkpoint.v1 import checkpoint_pb2_grpc as pb_grpc
from helpers import refused_at_start
from waiting import wait_until

from verify.admission import (
    BUSY_MESSAGE,
    DEFAULT_CALLS_PER_KIOSK,
    KIOSK_MESSAGE,
    REFUSAL_THREADS,
    Admission,
    check_limits,
    default_calls_per_kiosk,
)
from verify.certs import issue_client, issue_server, make_ca
from verify.roles import RoleInterceptor, actor_from_pem

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
                assert (error.code(), error.details()) == (grpc.StatusCode.UNAVAILABLE,
                                                           BUSY_MESSAGE.format(calls=THREADS))
        assert servicer.peak == THREADS
        servicer.release.set()  # the abandoned handlers finish: their slots come back
        wait_until(lambda: admission.running == 0, timeout=10, message="the slots given back")
        assert stub.GetStatistics(pb.GetStatisticsRequest(), timeout=10) == pb.Statistics()
    finally:
        servicer.release.set()
        channel.close()
        server.stop(None)


# -- one kiosk's share of the slots ------------------------------------------------------------------------

PER_KIOSK = 2
CALLERS = (("kiosk-1", "kiosk"), ("kiosk-2", "kiosk"), ("desk-1", "officer"))


class HeldVerify(pb_grpc.CheckpointServicer):
    """Verify holds its thread until released, or until its call ends (the servicer stops between samples once
    its caller has cancelled or its deadline passed)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0

    def Verify(self, request: pb.VerifyRequest, context: grpc.ServicerContext) -> pb.VerifyResponse:  # noqa: N802
        with self.lock:
            self.running += 1
        try:
            while context.is_active() and not self.release.wait(0.02):
                pass
            return pb.VerifyResponse(decision_id=request.subject_id)
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An authority, a server certificate and a client certificate per name of :data:`CALLERS`."""
    root = tmp_path_factory.mktemp("pki")
    ca = make_ca(root / "ca", "test CA")
    issue_server(ca, root / "server", [], [])
    for name, role in CALLERS:
        issue_client(ca, root / name, role, name)
    return root


def start_server(servicer: pb_grpc.CheckpointServicer, admission: Admission, pki: Path | None) -> tuple[grpc.Server,
                                                                                                          int]:
    """An in-process server with the role interceptor and ``admission``: mutual TLS, or plaintext (``pki``
    None: every caller the one development officer)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=admission.calls + REFUSAL_THREADS),
                         interceptors=[RoleInterceptor(plaintext=pki is None, admission=admission)],
                         maximum_concurrent_rpcs=admission.calls + REFUSAL_THREADS)
    pb_grpc.add_CheckpointServicer_to_server(servicer, server)
    if pki is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        credentials = grpc.ssl_server_credentials(
            [((pki / "server" / "server.key").read_bytes(), (pki / "server" / "server.pem").read_bytes())],
            root_certificates=(pki / "ca" / "ca.pem").read_bytes(), require_client_auth=True)
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


def channel(port: int, pki: Path | None, name: str = "") -> grpc.Channel:
    """A channel to the server, presenting ``name``'s certificate (plaintext without ``pki``)."""
    if pki is None:
        return grpc.insecure_channel(f"127.0.0.1:{port}")
    d = pki / name
    return grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(
        (d / "ca.pem").read_bytes(), (d / "client.key").read_bytes(), (d / "client.pem").read_bytes()))


@pytest.fixture
def held(pki: Path) -> Iterator[tuple[HeldVerify, Admission, dict[str, pb_grpc.CheckpointStub]]]:
    """A TLS server with four slots, two of them at most one kiosk's; a stub per caller of :data:`CALLERS`."""
    servicer, admission = HeldVerify(), Admission(4, 0, PER_KIOSK)
    server, port = start_server(servicer, admission, pki)
    channels = {name: channel(port, pki, name) for name, _ in CALLERS}
    try:
        yield servicer, admission, {name: pb_grpc.CheckpointStub(c) for name, c in channels.items()}
    finally:
        servicer.release.set()
        for c in channels.values():
            c.close()
        server.stop(None)


def verify(stub: pb_grpc.CheckpointStub, tag: str, timeout: float = 30) -> grpc.Future:
    return stub.Verify.future(pb.VerifyRequest(subject_id=tag), timeout=timeout)


def refusal(stub: pb_grpc.CheckpointStub) -> tuple[grpc.StatusCode, str]:
    """The status of a Verify expected to be refused at once."""
    with pytest.raises(grpc.RpcError) as refused:
        stub.Verify(pb.VerifyRequest(subject_id="extra"), timeout=10)
    return refused.value.code(), refused.value.details()


def test_one_kiosks_extra_call_is_refused_while_another_kiosks_is_admitted(held, pki: Path) -> None:
    servicer, admission, stubs = held
    kiosk_1 = actor_from_pem((pki / "kiosk-1" / "client.pem").read_bytes())
    first = [verify(stubs["kiosk-1"], f"k1-{i}") for i in range(PER_KIOSK)]
    wait_until(lambda: servicer.running == PER_KIOSK, message="kiosk-1's calls running")
    assert admission.running_for(kiosk_1) == PER_KIOSK
    assert refusal(stubs["kiosk-1"]) == (grpc.StatusCode.UNAVAILABLE, KIOSK_MESSAGE.format(running=PER_KIOSK))
    assert servicer.running == PER_KIOSK and admission.running == PER_KIOSK  # the refused call took no slot
    other = verify(stubs["kiosk-2"], "k2")  # another kiosk's traveller is still served
    officer = verify(stubs["desk-1"], "desk")
    wait_until(lambda: servicer.running == PER_KIOSK + 2, message="kiosk-2's and the officer's calls running")
    # Every slot is taken now: the server, not the kiosk, is what is full.
    assert refusal(stubs["kiosk-2"]) == (grpc.StatusCode.UNAVAILABLE, BUSY_MESSAGE.format(calls=4))
    servicer.release.set()
    assert [call.result().decision_id for call in [*first, other, officer]] == ["k1-0", "k1-1", "k2", "desk"]


def test_a_kiosks_slot_comes_back_when_its_call_ends_cancelled_or_past_its_deadline(held, pki: Path) -> None:
    servicer, admission, stubs = held
    kiosk_1 = actor_from_pem((pki / "kiosk-1" / "client.pem").read_bytes())
    kiosk = stubs["kiosk-1"]
    cancelled = verify(kiosk, "cancelled")
    late = verify(kiosk, "late", timeout=1.0)
    wait_until(lambda: servicer.running == 2, message="both calls running")
    assert refusal(kiosk)[0] == grpc.StatusCode.UNAVAILABLE
    assert late.exception(timeout=10).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: admission.running_for(kiosk_1) == 1, message="the late call's slot given back")
    after_deadline = verify(kiosk, "after-deadline")
    wait_until(lambda: servicer.running == 2, message="a new call admitted in its place")
    assert refusal(kiosk)[0] == grpc.StatusCode.UNAVAILABLE
    cancelled.cancel()
    wait_until(lambda: admission.running_for(kiosk_1) == 1, message="the cancelled call's slot given back")
    after_cancel = verify(kiosk, "after-cancel")
    wait_until(lambda: servicer.running == 2, message="a new call admitted in its place")
    servicer.release.set()  # calls that end normally give theirs back too
    assert [after_deadline.result().decision_id, after_cancel.result().decision_id] == ["after-deadline",
                                                                                      "after-cancel"]
    wait_until(lambda: admission.running == 0 and admission.running_for(kiosk_1) == 0, message="every slot back")
    assert [verify(kiosk, f"again-{i}").result(timeout=10).decision_id for i in range(3)] == [
        "again-0", "again-1", "again-2"]


def test_officers_and_the_plaintext_caller_are_not_held_to_the_kiosk_limit(held) -> None:
    servicer, _, stubs = held
    desk = [verify(stubs["desk-1"], f"desk-{i}") for i in range(PER_KIOSK + 1)]
    wait_until(lambda: servicer.running == PER_KIOSK + 1, message="the officer's calls all running")
    servicer.release.set()
    assert all(call.result().decision_id for call in desk)

    plain, admission = HeldVerify(), Admission(4, 0, 1)  # the demo: every caller the one plaintext officer
    server, port = start_server(plain, admission, None)
    c = channel(port, None)
    try:
        demo = [verify(pb_grpc.CheckpointStub(c), f"demo-{i}") for i in range(3)]
        wait_until(lambda: plain.running == 3, message="three calls of the one plaintext identity running")
        plain.release.set()
        assert [call.result().decision_id for call in demo] == ["demo-0", "demo-1", "demo-2"]
    finally:
        plain.release.set()
        c.close()
        server.stop(None)


def test_the_limit_per_kiosk_leaves_other_kiosks_a_slot() -> None:
    assert DEFAULT_CALLS_PER_KIOSK == 3 and default_calls_per_kiosk(16) == 3
    assert default_calls_per_kiosk(3) == 2 and default_calls_per_kiosk(2) == 1  # never every slot
    assert Admission(2, 0).calls_per_kiosk == 1
    check_limits(16, 4, 15)
    for calls, per_kiosk in ((16, 0), (16, -1), (16, 16), (4, 5)):
        with pytest.raises(ValueError, match="--max-calls-per-kiosk must be from 1 to --threads - 1"):
            check_limits(calls, 0, per_kiosk)


@pytest.mark.parametrize(("options", "told"), [
    (("--max-calls-per-kiosk", "0"), "from 1 to --threads - 1 (15), got 0"),
    (("--threads", "6", "--max-calls-per-kiosk", "6"), "from 1 to --threads - 1 (5), got 6"),
])
def test_the_server_refuses_a_limit_per_kiosk_out_of_range_at_start(tmp_path: Path, options: tuple[str, ...],
                                                                     told: str) -> None:
    done = refused_at_start(tmp_path, *options)
    assert f"--max-calls-per-kiosk must be {told}" in done.stderr


def test_refusals_are_counted_by_reason_and_a_kiosk_at_its_limit_is_logged_once_a_minute(
        pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A kiosk retrying in a loop against its limit: every refusal is counted (the operator metrics' reasons),
    its WARNING is said once a minute with the count since, not once per call."""
    import logging

    now = [1000.0]
    reasons: list[str] = []
    servicer = HeldVerify()
    admission = Admission(3, 0, 1, on_refused=reasons.append, clock=lambda: now[0])
    server, port = start_server(servicer, admission, pki)
    channels = {name: channel(port, pki, name) for name, _ in CALLERS}
    stubs = {name: pb_grpc.CheckpointStub(c) for name, c in channels.items()}
    caplog.set_level(logging.WARNING, logger="verify.admission")
    try:
        first = verify(stubs["kiosk-1"], "k1")
        wait_until(lambda: servicer.running == 1, message="kiosk-1's call running")
        for _ in range(5):
            assert refusal(stubs["kiosk-1"])[0] == grpc.StatusCode.UNAVAILABLE
        now[0] += 61
        assert refusal(stubs["kiosk-1"])[0] == grpc.StatusCode.UNAVAILABLE
        others = [verify(stubs["kiosk-2"], "k2"), verify(stubs["desk-1"], "desk")]
        wait_until(lambda: servicer.running == 3, message="every slot taken")
        assert refusal(stubs["desk-1"])[0] == grpc.StatusCode.UNAVAILABLE  # the server is full
        assert reasons == ["kiosk_limit"] * 6 + ["busy"]
        said = [r.getMessage() for r in caplog.records if r.name == "verify.admission"]
        assert len(said) == 2, said
        assert said[0].startswith("refused a call of kiosk ") and "kiosk-1" in said[0]
        assert said[1].startswith("refused 5 calls of kiosk ") and "in the last 61 s" in said[1]
        servicer.release.set()
        assert [c.result().decision_id for c in [first, *others]] == ["k1", "k2", "desk"]
    finally:
        servicer.release.set()
        for c in channels.values():
            c.close()
        server.stop(None)
