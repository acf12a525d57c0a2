"""The audit chain of a live server, then tampered with or cut: `checkpoint-audit verify` names what was done."""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers import ServerProcess, face_sample

from biometrics.audit import (
    AuditChain,
    canonical,
    entry_hash,
    import_jsonl,
    load_or_create_signing_key,
    load_public_key,
    verify_log,
    verify_store,
)
from biometrics.crypto import KeyRing
from biometrics.storage import Storage, read_audit
from biometrics.types import Actor
from verify import audit_cli

CHECKPOINT_EVERY = 4

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    """A server that made a few decisions and stopped (its chain closed by a signed checkpoint)."""
    data = tmp_path_factory.mktemp("audited")
    server = ServerProcess(data, args=("--audit-checkpoint-every", str(CHECKPOINT_EVERY))).start()
    stub = server.stub()
    stub.Enroll(pb.EnrollRequest(subject_id="A1000001", info=pb.SubjectInfo(name="Megawati Sukarnoputri"),
                                 samples=[face_sample("Megawati_Sukarnoputri_0001.jpg")]))
    stub.Enroll(pb.EnrollRequest(subject_id="B2000002", info=pb.SubjectInfo(name="Kofi Annan"),
                                 samples=[face_sample("Kofi_Annan_0001.jpg")]))
    for probe in ("Megawati_Sukarnoputri_0002.jpg", "Hans_Blix_0001.jpg", "Megawati_Sukarnoputri_0004.jpg"):
        stub.Verify(pb.VerifyRequest(subject_id="A1000001", samples=[face_sample(probe)]))
    stub.Identify(pb.IdentifyRequest(samples=[face_sample("Kofi_Annan_0004.jpg")]))
    stub.Identify(pb.IdentifyRequest(samples=[face_sample("Hans_Blix_0001.jpg")]))
    stub.GetSubject(pb.GetSubjectRequest(subject_id="A1000001"))
    stub.DeleteSubject(pb.DeleteSubjectRequest(subject_id="B2000002", reason="request of the data subject"))
    assert server.stop() == 0
    return server


def entries_of(data: Path) -> list[dict]:
    return [json.loads(e) for e in read_audit(data / "checkpoint.db")]


def copy_with(live: ServerProcess, tmp_path: Path, entries: list[dict]) -> Path:
    """A copy of the data dir whose chain holds ``entries``, row by row in this order."""
    data = tmp_path / "copy"
    shutil.copytree(live.data_dir, data)
    with sqlite3.connect(data / "checkpoint.db") as db:
        db.execute("DELETE FROM audit")
        db.executemany("INSERT INTO audit(station, seq, type, hash, entry) VALUES ('', ?, ?, ?, ?)",
                       [(i, e["type"], e["hash"], canonical(e).decode()) for i, e in enumerate(entries)])
    return data


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "verify.audit_cli", *args], capture_output=True, text=True,
                          timeout=60)


def verify_cli(live: ServerProcess, data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return audit("verify", "--data-dir", str(data), "--key-dir", str(live.keys), *extra)


def test_the_live_chain_records_every_decision_and_verifies(live: ServerProcess) -> None:
    entries = entries_of(live.data_dir)
    kinds = [e["kind"] for e in entries if e["type"] == "decision"]
    assert kinds == ["enrol", "enrol", "verify", "verify", "verify", "identify", "identify", "read_subject",
                     "delete"]
    checkpoints = [e for e in entries if e["type"] == "checkpoint"]
    assert [c["reason"] for c in checkpoints] == ["periodic", "periodic", "shutdown"]
    assert entries[-1]["type"] == "checkpoint"
    verify = [e for e in entries if e.get("kind") == "verify"]
    assert [v["fields"]["match"] for v in verify] == [True, False, True]
    assert all(v["fields"]["threshold"] == pytest.approx(3.0) and "score" in v["fields"] for v in verify)
    assert all(e["actor"]["role"] == "officer" for e in entries if e["type"] == "decision")
    text = "\n".join(read_audit(live.data_dir / "checkpoint.db"))
    for personal in ("A1000001", "B2000002", "Megawati", "Kofi"):
        assert personal not in text
    done = verify_cli(live, live.data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(entries)} records" in done.stdout
    assert f"holds the signed head at seq {len(entries) - 1}" in done.stdout
    assert (live.keys / "audit-signing.key").stat().st_mode & 0o777 == 0o600
    assert not list(live.data_dir.rglob("*.key")) and not list(live.data_dir.rglob("keyring*")), "keys beside data"
    shown = audit("show", "--data-dir", str(live.data_dir), "--kind", "verify")
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) == 3


def test_an_altered_record_is_named(live: ServerProcess, tmp_path: Path) -> None:
    entries = entries_of(live.data_dir)
    target = next(e for e in entries if e.get("kind") == "verify" and not e["fields"]["match"])
    target["fields"]["match"] = True  # a rejected traveller turned into a match
    done = verify_cli(live, copy_with(live, tmp_path, entries))
    assert done.returncode == 1
    assert f"record seq {target['seq']}: altered" in done.stdout, done.stdout


def test_an_altered_record_with_a_recomputed_chain_fails_at_the_checkpoint(live: ServerProcess, tmp_path: Path) -> None:
    entries = entries_of(live.data_dir)
    entries[1]["fields"]["outcome"] = "enrol_duplicate_overridden"
    for previous, entry in itertools.pairwise(entries):
        if entry["seq"] > 1:
            entry["prev"] = previous["hash"]
        if entry["seq"] >= 1:
            entry["hash"] = entry_hash(entry)
    first_checkpoint = next(e for e in entries if e["type"] == "checkpoint")
    done = verify_cli(live, copy_with(live, tmp_path, entries))
    assert done.returncode == 1
    assert f"record seq {first_checkpoint['seq']}: checkpoint signature is not valid" in done.stdout, done.stdout
    assert f"records 0..{first_checkpoint['seq'] - 1} are not proven" in done.stdout


def test_a_removed_record_is_named(live: ServerProcess, tmp_path: Path) -> None:
    entries = entries_of(live.data_dir)
    removed = entries.pop(2)
    done = verify_cli(live, copy_with(live, tmp_path, entries))
    assert done.returncode == 1
    assert f"record(s) {removed['seq']}..{removed['seq']} removed" in done.stdout, done.stdout


def test_reordered_records_are_named(live: ServerProcess, tmp_path: Path) -> None:
    entries = entries_of(live.data_dir)
    entries[3], entries[5] = entries[5], entries[3]
    done = verify_cli(live, copy_with(live, tmp_path, entries))
    assert done.returncode == 1
    assert "line 4: record seq 5: out of order: seq 5 where 3 was expected" in done.stdout, done.stdout


def test_a_forged_checkpoint_signature_is_named(live: ServerProcess, tmp_path: Path) -> None:
    entries = entries_of(live.data_dir)
    checkpoint = entries[-1]
    forger = Ed25519PrivateKey.generate()
    checkpoint["signature"] = forger.sign(canonical(
        {k: v for k, v in checkpoint.items() if k not in ("hash", "signature")})).hex()
    checkpoint["hash"] = entry_hash(checkpoint)
    done = verify_cli(live, copy_with(live, tmp_path, entries), "--expected-head", "/dev/null")
    assert done.returncode == 2, "a head that is not JSON is refused, not ignored"
    done = verify_cli(live, copy_with(live, tmp_path / "b", entries))
    assert done.returncode == 1
    assert f"record seq {checkpoint['seq']}: checkpoint signature is not valid" in done.stdout, done.stdout


def test_a_chain_cut_after_a_signed_checkpoint_is_found_against_the_exported_head(
        live: ServerProcess, tmp_path: Path) -> None:
    entries = entries_of(live.data_dir)
    checkpoints = [e["seq"] for e in entries if e["type"] == "checkpoint"]
    cut = entries[: checkpoints[-2] + 1]  # still a valid chain, ending at a signed checkpoint
    data = copy_with(live, tmp_path, cut)
    kept_head = tmp_path / "head-kept-off-station.json"
    (heads,) = list((live.keys / "audit-heads").glob("*.json"))
    shutil.copy(heads, kept_head)
    public = load_public_key(live.keys / "audit-signing.pub")
    assert verify_store(read_audit(data / "checkpoint.db"), public).ok, "the cut chain is self-consistent"
    done = verify_cli(live, data)  # the head the server exported beside its keys
    assert done.returncode == 1, done.stdout
    assert f"truncated: the log ends at seq {checkpoints[-2]}" in done.stdout
    assert f"proves records through seq {checkpoints[-1]}" in done.stdout
    done = verify_cli(live, data, "--expected-head", str(kept_head))
    assert done.returncode == 1 and "truncated" in done.stdout
    heads.rename(heads.with_suffix(".moved"))
    try:
        assert verify_cli(live, data).returncode == 0, "without a kept head a clean cut cannot be seen"
        done = verify_cli(live, data, "--min-records", str(len(entries)))
        assert done.returncode == 1 and f"at least {len(entries)} were expected" in done.stdout, done.stdout
    finally:
        heads.with_suffix(".moved").rename(heads)


def test_a_replaced_public_key_is_caught_with_a_kept_copy(live: ServerProcess, tmp_path: Path) -> None:
    kept = tmp_path / "kept.pub"
    shutil.copy(live.keys / "audit-signing.pub", kept)
    forged_keys = tmp_path / "forged-keys"
    forger_key = load_or_create_signing_key(forged_keys)
    data = tmp_path / "copy"
    shutil.copytree(live.data_dir, data)
    with sqlite3.connect(data / "checkpoint.db") as db:
        db.execute("DELETE FROM audit")
    storage = Storage(data / "checkpoint.db", KeyRing.load(live.keys / "keyring.json"))
    chain = AuditChain(storage, forger_key)
    with chain.transaction() as tx:
        chain.record(tx, "verify", Actor(), "f" * 32, match=True, score=99.0, threshold=3.0)
    chain.close()
    storage.close()
    args = ["verify", "--data-dir", str(data), "--key-dir", str(forged_keys)]
    assert audit_cli.main(args) == 0  # self-consistent with the replaced key
    assert audit_cli.main([*args, "--public-key", str(kept)]) == 1


def test_sequence_numbers_stay_unique_when_a_transaction_fails(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "keys")
    storage = Storage(tmp_path / "checkpoint.db", KeyRing.generate())
    chain = AuditChain(storage, key, checkpoint_every=100)
    with chain.transaction() as tx:
        chain.record(tx, "verify", Actor(role="kiosk", identity="CN=k"), "a" * 32, match=True, score=5.0,
                     threshold=3.0, image=b"never recorded")
    with pytest.raises(RuntimeError), chain.transaction() as tx:
        chain.record(tx, "verify", Actor(), "b" * 32, match=False, score=1.0, threshold=3.0)
        raise RuntimeError("the disk failed before the commit")
    with chain.transaction() as tx:
        chain.record(tx, "delete", Actor(), "c" * 32, subject_ref="ab" * 32, reason="")
    chain.close()
    entries = [json.loads(e) for e in storage.audit_entries()]
    assert [(e["seq"], e.get("decision_id")) for e in entries] == [(0, "a" * 32), (1, "c" * 32), (2, None)]
    assert "image" not in entries[0]["fields"]
    assert verify_store(storage.audit_entries(), key.public_key()).ok
    storage.close()


def test_a_torn_line_of_an_older_log_is_moved_aside_with_a_recovery_record(tmp_path: Path) -> None:
    """A JSON-lines log with a torn line followed by more records (an older version's crash) is imported:
    every record after the tear is checked too, and the tear is set apart, named in the chain."""
    key = load_or_create_signing_key(tmp_path / "keys")
    scratch = Storage(tmp_path / "scratch.db", KeyRing.generate())
    chain = AuditChain(scratch, key, checkpoint_every=2)
    for n in range(5):
        with chain.transaction() as tx:
            chain.record(tx, "verify", Actor(), f"{n:032d}", match=bool(n % 2), score=float(n), threshold=3.0)
    lines = [canonical(json.loads(e)) + b"\n" for e in scratch.audit_entries()]
    scratch.close()
    torn = b'{"seq": 3, "type": "decision", "ti'  # the process died mid-write; the next record re-used seq 3
    legacy = tmp_path / "data" / "audit" / "audit.jsonl"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"".join(lines[:3]) + torn + b"\n" + b"".join(lines[3:]))
    assert not verify_log(legacy, key.public_key()).ok, "the torn line stops a plain walk of the file"

    storage = Storage(tmp_path / "data" / "checkpoint.db", KeyRing.generate())
    imported = import_jsonl(legacy, AuditChain(storage, key))
    assert imported == len(lines)
    entries = [json.loads(e) for e in storage.audit_entries()]
    report = verify_store(storage.audit_entries(), key.public_key())
    assert report.ok and report.records == len(lines) + 1, report.finding
    recovery = entries[-1]
    assert recovery["kind"] == "recovery" and recovery["fields"]["lines"] == [4]
    aside = tmp_path / "data" / "audit" / recovery["fields"]["moved_to"]
    assert aside.read_bytes() == torn + b"\n"
    assert not legacy.exists() and legacy.with_name("audit.jsonl.imported").exists()
    storage.close()


def test_verify_refusals_that_say_something_of_the_document_are_audited(tmp_path: Path) -> None:
    """An unknown document (a kiosk probing who is enrolled) and a transaction out of attempts (a document tried
    until the station refuses it) leave a ``verify_refused`` record naming the document's pseudonym; a decision is
    recorded as ``verify``."""
    from helpers import face

    from biometrics.attempts import AttemptsExhausted
    from biometrics.errors import SubjectNotFound
    from biometrics.service import CheckpointService, StoreLocation
    from biometrics.types import Modality, Sample, SubjectInfo

    kiosk = Actor(role="kiosk", identity="CN=kiosk-arr,OU=kiosk", extra={"common_name": "kiosk-arr"})
    megawati = Sample(Modality.FACE, face("Megawati_Sukarnoputri_0001.jpg"))
    kofi = Sample(Modality.FACE, face("Kofi_Annan_0001.jpg"))
    service = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"))
    try:
        service.enrol("A1000001", SubjectInfo(name="Megawati"), [megawati])
        with pytest.raises(SubjectNotFound):
            service.verify("X0000001", [kofi], actor=kiosk)
        assert not service.verify("A1000001", [kofi], actor=kiosk).match  # the transaction's one attempt
        with pytest.raises(AttemptsExhausted):
            service.check_attempts_left("A1000001", actor=kiosk)
        with pytest.raises(AttemptsExhausted):
            service.verify("A1000001", [kofi], actor=kiosk)
        ring = service.storage.keyring
        records = [json.loads(e) for e in service.storage.audit_entries()]
        seen = [(r["kind"], r["fields"].get("outcome"), r["fields"]["subject_ref"]) for r in records
                if r["type"] == "decision" and r["kind"].startswith("verify")]
        assert seen == [("verify_refused", "not_found", ring.pseudonym("X0000001")),
                        ("verify", None, ring.pseudonym("A1000001")),
                        ("verify_refused", "attempts_exhausted", ring.pseudonym("A1000001")),
                        ("verify_refused", "attempts_exhausted", ring.pseudonym("A1000001"))]
        assert all(r["actor"]["role"] == "kiosk" for r in records if r.get("kind", "").startswith("verify"))
    finally:
        service.close()
