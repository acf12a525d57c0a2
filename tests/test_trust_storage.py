"""Encryption at rest, row binding, key rotation under a running server, and erasure, on the raw files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import ServerProcess, face, face_sample
from waiting import wait_until

from biometrics.crypto import KeyRing, SealError
from biometrics.face import face_template_from_bytes
from biometrics.storage import Storage, read_audit
from biometrics.templates import pack_face_template

pytestmark = pytest.mark.server

SUBJECTS = {
    "A1000001": (pb.SubjectInfo(name="Megawati Sukarnoputri", nationality="IDN", date_of_birth="1947-01-23"),
                 "Megawati_Sukarnoputri_0001.jpg", "Megawati_Sukarnoputri_0002.jpg"),
    "B2000002": (pb.SubjectInfo(name="Kofi Annan", nationality="GHA", date_of_birth="1938-04-08"),
                 "Kofi_Annan_0001.jpg", "Kofi_Annan_0004.jpg"),
}


def raw_files(data_dir: Path) -> bytes:
    """The database file and its WAL and shared-memory files, as bytes on disk."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("checkpoint.db*")))


def windows(data: bytes, width: int = 16) -> list[bytes]:
    """Every ``width``-byte window of ``data``."""
    return [data[i : i + width] for i in range(len(data) - width + 1)]


def keys_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "verify.keys", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    proc = ServerProcess(tmp_path_factory.mktemp("trust")).start()
    stub = proc.stub()
    for subject_id, (info, reference, _) in SUBJECTS.items():
        assert stub.Enroll(pb.EnrollRequest(subject_id=subject_id, info=info,
                                            samples=[face_sample(reference)])).enrolled
    yield proc
    proc.stop()


def test_raw_database_holds_no_template_name_or_subject_id(server: ServerProcess) -> None:
    raw = raw_files(server.data_dir)
    assert len(raw) > 4096, "the database should hold the enrolled rows"
    for subject_id, (info, reference, _) in SUBJECTS.items():
        template = face_template_from_bytes(face(reference), "enrol").template
        packed = pack_face_template(template)
        assert packed[2:] == np.asarray(template, dtype="<f4").tobytes()
        leaked = [w for w in windows(packed) if w in raw]
        assert not leaked, f"{len(leaked)} 16-byte windows of {subject_id}'s template are readable on disk"
        for text in (subject_id, info.name, info.date_of_birth):
            assert text.encode() not in raw, f"{text!r} is readable on disk"


def test_a_sealed_blob_moved_to_another_row_does_not_open(server: ServerProcess, tmp_path: Path) -> None:
    copy = tmp_path / "checkpoint.db"
    with sqlite3.connect(server.data_dir / "checkpoint.db") as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    ring = KeyRing.load(server.keys / "keyring.json")
    a, b = (ring.pseudonym(s) for s in SUBJECTS)
    with sqlite3.connect(copy) as db:
        sealed_a = db.execute("SELECT sealed FROM subjects WHERE ref = ?", (a,)).fetchone()[0]
        db.execute("UPDATE subjects SET sealed = ? WHERE ref = ?", (sealed_a, b))
        (_, t_sealed_a), (tid_b, _) = db.execute(
            "SELECT template_id, sealed FROM templates WHERE ref IN (?, ?) ORDER BY ref = ? DESC", (a, b, a)).fetchall()
        db.execute("UPDATE templates SET sealed = ? WHERE template_id = ?", (t_sealed_a, tid_b))
    storage = Storage(copy, ring)
    try:
        assert storage.get_subject("A1000001").info.name == "Megawati Sukarnoputri"
        with pytest.raises(SealError):
            storage.get_subject("B2000002")
        with pytest.raises(SealError):
            list(storage.load_all())
    finally:
        storage.close()


def test_rotation_while_serving_keeps_every_subject_verifiable(server: ServerProcess) -> None:
    stub = server.stub()
    key_file = server.keys / "keyring.json"
    old = KeyRing.load(key_file).active
    done = keys_cli("rotate", "--data-dir", str(server.data_dir), "--key-dir", str(server.keys), "--batch", "1")
    assert done.returncode == 0, done.stderr
    ring = KeyRing.load(key_file)
    assert ring.active != old and old in ring.keys
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    status = keys_cli("status", "--data-dir", str(server.data_dir), "--key-dir", str(server.keys)).stdout
    assert f"{ring.active} (active): 4 blob(s)" in status and f"{old}: 0 blob(s)" in status, status
    for subject_id, (_, _, probe) in SUBJECTS.items():
        assert stub.Verify(pb.VerifyRequest(subject_id=subject_id, samples=[face_sample(probe)])).match
        assert stub.GetSubject(pb.GetSubjectRequest(subject_id=subject_id)).info.name == SUBJECTS[subject_id][0].name
    # The running server picked up the new ring: a new enrolment is sealed under the new key.
    assert stub.Enroll(pb.EnrollRequest(subject_id="H3000003", info=pb.SubjectInfo(name="Hans Blix"),
                                        samples=[face_sample("Hans_Blix_0001.jpg")])).enrolled
    with sqlite3.connect(server.data_dir / "checkpoint.db") as db:
        ids = {KeyRing.key_id_of(bytes(b)) for (b,) in db.execute("SELECT sealed FROM subjects UNION ALL "
                                                                   "SELECT sealed FROM templates")}
    assert ids == {ring.active}
    retired = keys_cli("retire", "--data-dir", str(server.data_dir), "--key-dir", str(server.keys))
    assert retired.returncode == 0 and old in retired.stdout
    assert old not in KeyRing.load(key_file).keys
    server.stop()
    server.start()  # a restart opens every row with the rotated ring
    stub = server.stub()
    for subject_id, (_, _, probe) in SUBJECTS.items():
        assert stub.Verify(pb.VerifyRequest(subject_id=subject_id, samples=[face_sample(probe)])).match


def test_key_ring_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    master = base64.b64encode(bytes(range(32))).decode()
    monkeypatch.setenv("CHECKPOINT_MASTER_KEY", master)
    one = KeyRing.load_or_create(tmp_path / "keys" / "keyring.json")
    assert not (tmp_path / "keys").exists(), "no key file is created when the environment names the key"
    blob = one.seal(b"template", b"row")
    assert KeyRing.from_master_key(master).open(blob, b"row") == b"template"
    monkeypatch.delenv("CHECKPOINT_MASTER_KEY")
    monkeypatch.setenv("CHECKPOINT_KEYRING", one.to_json())
    assert KeyRing.load_or_create(tmp_path / "keyring.json").open(blob, b"row") == b"template"
    monkeypatch.setenv("CHECKPOINT_KEYRING", json.dumps({"active": "x", "keys": {}, "pseudonym_key": ""}))
    with pytest.raises(ValueError):
        KeyRing.load_or_create(tmp_path / "keyring.json")


def test_erasure_leaves_no_trace_on_disk_and_only_a_pseudonym_in_the_audit_log(server: ServerProcess) -> None:
    stub = server.stub()
    ring = KeyRing.load(server.keys / "keyring.json")
    ref = ring.pseudonym("B2000002")
    with sqlite3.connect(server.data_dir / "checkpoint.db") as db:
        blobs = [bytes(b) for (b,) in db.execute("SELECT sealed FROM subjects WHERE ref = ? UNION ALL "
                                                 "SELECT sealed FROM templates WHERE ref = ?", (ref, ref))]
    assert len(blobs) == 2
    before = raw_files(server.data_dir)
    assert all(b[-32:] in before for b in blobs), "the sealed rows should be on disk before erasure"
    stub.DeleteSubject(pb.DeleteSubjectRequest(subject_id="B2000002", reason="data subject's request"))
    after = raw_files(server.data_dir)
    for blob in blobs:
        assert not [w for w in windows(blob[2 + blob[1]:], 16) if w in after], "sealed bytes survive erasure"
    with sqlite3.connect(server.data_dir / "checkpoint.db") as db:
        columns = {"subjects": "ref", "templates": "ref", "changes": "ref", "audit": "entry"}
        naming = {table for table, column in columns.items()
                  if db.execute(f"SELECT COUNT(*) FROM {table} WHERE instr(CAST({column} AS BLOB), ?) > 0",
                                (ref.encode(),)).fetchone()[0]}
    assert naming == {"changes", "audit"}, "only the change log and the audit chain keep the pseudonym"
    with pytest.raises(grpc.RpcError) as gone:
        stub.Verify(pb.VerifyRequest(subject_id="B2000002", samples=[face_sample("Kofi_Annan_0004.jpg")]))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    found = stub.Identify(pb.IdentifyRequest(samples=[face_sample("Kofi_Annan_0004.jpg")]))
    assert "B2000002" not in [c.subject_id for c in found.candidates]
    audit = "\n".join(read_audit(server.data_dir / "checkpoint.db"))
    deletes = [json.loads(line) for line in audit.splitlines() if '"kind":"delete"' in line]
    assert [d["fields"]["subject_ref"] for d in deletes] == [ref]
    for text in ("B2000002", "Kofi Annan", "1938-04-08"):
        assert text not in audit


@pytest.mark.slow
def test_rotation_under_load_never_fails_a_read_or_an_enrolment(tmp_path: Path) -> None:
    import threading

    server = ServerProcess(tmp_path).start()
    try:
        stub = server.stub()
        sample = face_sample("Hans_Blix_0001.jpg")
        ids = [f"L{i:07d}" for i in range(12)]
        for subject_id in ids:
            assert stub.Enroll(pb.EnrollRequest(subject_id=subject_id, info=pb.SubjectInfo(name=f"Load {subject_id}"),
                                                samples=[sample], allow_duplicate=True,
                                                override_reason="load test: one face for many ids")).enrolled
        errors: list[str] = []
        stop = threading.Event()

        def load() -> None:
            n = 0
            while not stop.is_set():
                try:
                    for subject_id in ids:
                        record = stub.GetSubject(pb.GetSubjectRequest(subject_id=subject_id))
                        assert record.info.name.endswith(subject_id)
                    new_id = f"N{n:07d}"
                    stub.Enroll(pb.EnrollRequest(subject_id=new_id, info=pb.SubjectInfo(name=new_id),
                                                 samples=[sample], allow_duplicate=True,
                                                 override_reason="load test: one face for many ids"))
                    ids.append(new_id)
                    n += 1
                except (grpc.RpcError, AssertionError) as exc:
                    errors.append(repr(exc))
                    return

        worker = threading.Thread(target=load)
        worker.start()
        wait_until(lambda: len(ids) > 12 or errors, timeout=60, message="a first round of the load")
        before = len(ids)
        done = keys_cli("rotate", "--data-dir", str(tmp_path), "--key-dir", str(server.keys), "--batch", "2",
                        "--pause", "0.05")
        during = len(ids) - before  # enrolments acknowledged while the rotation ran
        stop.set()
        worker.join(60)
        assert done.returncode == 0, done.stderr
        assert not errors, errors
        assert during > 0, "the load should have enrolled while the rotation ran"
        active = KeyRing.load(server.keys / "keyring.json").active
        storage = Storage(tmp_path / "checkpoint.db", KeyRing.load(server.keys / "keyring.json"))
        try:
            texts = len(storage.audit_texts())  # each override's reason, sealed beside the chain
            assert texts == len(ids) - 1, "every enrolment after the first kept despite a possible duplicate"
            assert storage.key_usage() == {active: 2 * len(ids) + texts}, "every row ends under the new key"
        finally:
            storage.close()
    finally:
        server.stop()
