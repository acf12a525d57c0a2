"""kill -9 of the server in the middle of concurrent enrolments: nothing acknowledged is lost, nothing is stored
without its audit record, and the chain verifies after the restart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import FACES, ServerProcess
from waiting import wait_until

from biometrics.crypto import KeyRing
from biometrics.storage import Storage, read_audit

pytestmark = [pytest.mark.server, pytest.mark.slow]

IMAGES = sorted(FACES.glob("*.jpg"))


def test_kill_9_during_concurrent_enrolments_loses_nothing_acknowledged(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", args=("--audit-checkpoint-every", "3"),
                           key_dir=tmp_path / "keys").start()
    acknowledged: list[str] = []
    failed: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def desk(number: int) -> None:
        stub = server.stub()
        n = 0
        while not stop.is_set():
            subject_id = f"D{number}X{n:05d}"
            image = IMAGES[(number * 7 + n) % len(IMAGES)].read_bytes()
            try:
                reply = stub.Enroll(pb.EnrollRequest(
                    subject_id=subject_id, info=pb.SubjectInfo(name=f"Traveller {subject_id}"),
                    samples=[pb.Sample(modality=pb.FACE, image=image)], allow_duplicate=True,
                    override_reason="crash test: the same faces under many ids"), timeout=30)
                if reply.enrolled:
                    with lock:
                        acknowledged.append(subject_id)
            except grpc.RpcError as exc:
                with lock:
                    failed.append(f"{subject_id}: {exc.code().name}")
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    return  # the server is gone
            n += 1

    desks = [threading.Thread(target=desk, args=(i,)) for i in range(4)]
    for t in desks:
        t.start()
    try:
        wait_until(lambda: len(acknowledged) >= 10, timeout=120, message="ten enrolments acknowledged")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)  # in the middle of calls in flight
        server.proc.wait(30)
    finally:
        stop.set()
        for t in desks:
            t.join(60)
    assert any("UNAVAILABLE" in f for f in failed), "no call was in flight when the server died"

    server.start()
    try:
        stub = server.stub()
        for subject_id in acknowledged:
            assert stub.GetSubject(pb.GetSubjectRequest(subject_id=subject_id)).subject_id == subject_id
    finally:
        server.stop()

    # Storage and the audit chain agree exactly: every stored subject has its enrolment record, and no
    # enrolment record names a subject that was not stored.
    entries = [json.loads(e) for e in read_audit(tmp_path / "data" / "checkpoint.db")]
    enrolled_refs = {e["fields"]["subject_ref"] for e in entries
                     if e.get("kind") == "enrol" and e["fields"]["outcome"] != "enrol_duplicate_held"}
    storage = Storage(tmp_path / "data" / "checkpoint.db", KeyRing.load(tmp_path / "keys" / "keyring.json"))
    try:
        stored_refs = {ref for ref, _, _ in storage.snapshot()[0]}
        assert stored_refs == enrolled_refs
        assert {storage.keyring.pseudonym(s) for s in acknowledged} <= stored_refs
        assert storage.head_seq() == len(stored_refs), "one change-log entry per stored subject"
    finally:
        storage.close()
    done = subprocess.run([sys.executable, "-m", "verify.audit_cli", "verify", "--data-dir", str(tmp_path / "data"),
                           "--key-dir", str(tmp_path / "keys")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "holds the signed head" in done.stdout
