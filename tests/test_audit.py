"""The audit log of a live server, then tampered with: `checkpoint-audit verify` names the record."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers import ServerProcess, face_sample

from biometrics.audit import (
    AuditLog,
    canonical,
    entry_hash,
    load_or_create_signing_key,
    load_public_key,
    verify_log,
)
from biometrics.types import Actor
from verify import audit_cli

CHECKPOINT_EVERY = 4


@pytest.fixture(scope="module")
def live_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data dir of a server that made a few decisions and stopped (its log closed by a signed checkpoint)."""
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
    stub.DeleteSubject(pb.DeleteSubjectRequest(subject_id="B2000002", reason="request of the data subject"))
    assert server.stop() == 0
    return data


def lines(data: Path) -> list[dict]:
    return [json.loads(line) for line in (data / "audit" / "audit.jsonl").read_text().splitlines()]


def tampered(live_log: Path, tmp_path: Path, entries: list[dict]) -> Path:
    """A copy of the data dir whose log holds ``entries``."""
    data = tmp_path / "copy"
    shutil.copytree(live_log, data)
    (data / "audit" / "audit.jsonl").write_bytes(b"".join(canonical(e) + b"\n" for e in entries))
    return data


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "verify.audit_cli", *args], capture_output=True, text=True,
                          timeout=60)


def test_the_live_log_records_every_decision_and_verifies(live_log: Path) -> None:
    entries = lines(live_log)
    kinds = [e["kind"] for e in entries if e["type"] == "decision"]
    assert kinds == ["enrol", "enrol", "verify", "verify", "verify", "identify", "delete"]
    checkpoints = [e for e in entries if e["type"] == "checkpoint"]
    assert [c["reason"] for c in checkpoints] == ["periodic", "shutdown"]
    assert entries[-1]["type"] == "checkpoint"
    verify = [e for e in entries if e.get("kind") == "verify"]
    assert [v["fields"]["match"] for v in verify] == [True, False, True]
    assert all(v["fields"]["threshold"] == pytest.approx(3.0) and "score" in v["fields"] for v in verify)
    assert all(e["actor"]["role"] == "officer" for e in entries if e["type"] == "decision")
    text = (live_log / "audit" / "audit.jsonl").read_text()
    for personal in ("A1000001", "B2000002", "Megawati", "Kofi"):
        assert personal not in text
    done = audit("verify", "--data-dir", str(live_log))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(entries)} records" in done.stdout
    assert (live_log / "keys" / "audit-signing.key").stat().st_mode & 0o777 == 0o600
    shown = audit("show", "--data-dir", str(live_log), "--kind", "verify")
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) == 3


def test_an_altered_record_is_named(live_log: Path, tmp_path: Path) -> None:
    entries = lines(live_log)
    target = next(e for e in entries if e.get("kind") == "verify" and not e["fields"]["match"])
    target["fields"]["match"] = True  # a rejected traveller turned into a match
    done = audit("verify", "--data-dir", str(tampered(live_log, tmp_path, entries)))
    assert done.returncode == 1
    assert f"record seq {target['seq']}: altered" in done.stdout, done.stdout


def test_an_altered_record_with_a_recomputed_chain_fails_at_the_checkpoint(live_log: Path, tmp_path: Path) -> None:
    entries = lines(live_log)
    entries[1]["fields"]["outcome"] = "enrol_duplicate_overridden"
    for previous, entry in itertools.pairwise(entries):
        if entry["seq"] > 1:
            entry["prev"] = previous["hash"]
        if entry["seq"] >= 1:
            entry["hash"] = entry_hash(entry)
    first_checkpoint = next(e for e in entries if e["type"] == "checkpoint")
    done = audit("verify", "--data-dir", str(tampered(live_log, tmp_path, entries)))
    assert done.returncode == 1
    assert f"record seq {first_checkpoint['seq']}: checkpoint signature is not valid" in done.stdout, done.stdout
    assert f"records 0..{first_checkpoint['seq'] - 1} are not proven" in done.stdout


def test_a_removed_record_is_named(live_log: Path, tmp_path: Path) -> None:
    entries = lines(live_log)
    removed = entries.pop(2)
    done = audit("verify", "--data-dir", str(tampered(live_log, tmp_path, entries)))
    assert done.returncode == 1
    assert f"record(s) {removed['seq']}..{removed['seq']} removed" in done.stdout, done.stdout


def test_reordered_records_are_named(live_log: Path, tmp_path: Path) -> None:
    entries = lines(live_log)
    entries[3], entries[4] = entries[4], entries[3]
    done = audit("verify", "--data-dir", str(tampered(live_log, tmp_path, entries)))
    assert done.returncode == 1
    assert "line 4: record seq 4: out of order: seq 4 where 3 was expected" in done.stdout, done.stdout


def test_a_forged_checkpoint_signature_is_named(live_log: Path, tmp_path: Path) -> None:
    entries = lines(live_log)
    checkpoint = entries[-1]
    forger = Ed25519PrivateKey.generate()
    checkpoint["signature"] = forger.sign(canonical(
        {k: v for k, v in checkpoint.items() if k not in ("hash", "signature")})).hex()
    checkpoint["hash"] = entry_hash(checkpoint)
    done = audit("verify", "--data-dir", str(tampered(live_log, tmp_path, entries)))
    assert done.returncode == 1
    assert f"record seq {checkpoint['seq']}: checkpoint signature is not valid" in done.stdout, done.stdout


def test_a_replaced_public_key_is_caught_with_a_kept_copy(live_log: Path, tmp_path: Path) -> None:
    kept = tmp_path / "kept.pub"
    shutil.copy(live_log / "keys" / "audit-signing.pub", kept)
    data = tmp_path / "copy"
    shutil.copytree(live_log, data)
    (data / "keys" / "audit-signing.key").unlink()
    (data / "keys" / "audit-signing.pub").unlink()
    forger = AuditLog(tmp_path / "forged.jsonl", load_or_create_signing_key(data / "keys"))
    forger.record("verify", Actor(), "f" * 32, match=True, score=99.0, threshold=3.0)
    forger.close()
    shutil.copy(tmp_path / "forged.jsonl", data / "audit" / "audit.jsonl")
    assert audit_cli.main(["verify", "--data-dir", str(data)]) == 0  # self-consistent with the replaced key
    assert audit_cli.main(["verify", "--data-dir", str(data), "--public-key", str(kept)]) == 1


def test_the_log_resumes_its_chain_after_a_restart(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "keys")
    first = AuditLog(tmp_path / "log.jsonl", key, checkpoint_every=100)
    first.record("verify", Actor(role="kiosk", identity="CN=k"), "a" * 32, match=True, score=5.0, threshold=3.0,
                 image=b"never recorded")
    first.close()
    second = AuditLog(tmp_path / "log.jsonl", key)
    second.record("delete", Actor(), "b" * 32, subject_ref="ab" * 32, reason="")
    second.close()
    entries = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["seq"] for e in entries] == [0, 1, 2, 3]
    assert "image" not in entries[0]["fields"]
    assert audit_cli.main(["verify", "--log", str(tmp_path / "log.jsonl"), "--public-key",
                           str(tmp_path / "keys" / "audit-signing.pub")]) == 0


def test_a_torn_last_line_is_skipped_on_restart_and_reported(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "keys")
    path = tmp_path / "log.jsonl"
    first = AuditLog(path, key)
    first.record("verify", Actor(), "a" * 32, match=True, score=5.0, threshold=3.0)
    first.close()
    with path.open("ab") as f:
        f.write(b'{"seq": 2, "type": "decision", "ti')  # the process died mid-write
    second = AuditLog(path, key)
    second.record("verify", Actor(), "b" * 32, match=False, score=1.0, threshold=3.0)
    second.close()
    report = verify_log(path, load_public_key(tmp_path / "keys" / "audit-signing.pub"))
    assert report.finding is not None and report.finding.line == 3 and "unreadable" in report.finding.problem
    assert [json.loads(x)["seq"] for x in path.read_text().splitlines() if x.endswith("}")] == [0, 1, 2, 3]
