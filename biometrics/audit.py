"""The tamper-evident audit log: every decision, hash-chained, with Ed25519-signed checkpoints.

An append-only JSON-lines file (``DATA_DIR/audit/audit.jsonl``). Each line is one entry::

    {"seq": n, "type": "decision", "time": ..., "kind": "verify", "decision_id": ...,
     "actor": {"role", "identity", "fingerprint_sha256"}, "fields": {...}, "prev": <hash of entry n-1>,
     "hash": sha256(canonical JSON of the entry without "hash")}

A ``"type": "checkpoint"`` entry every ``checkpoint_every`` decisions and at shutdown carries an Ed25519
signature over its own canonical JSON (which names the hash of the entry before it, so the whole chain up to
it). Canonical JSON: keys sorted, no whitespace, UTF-8, floats as Python's ``repr``.

No biometric data and no personal data: subjects appear only as pseudonymous references (HMAC of the
document number, :meth:`biometrics.crypto.KeyRing.pseudonym`). Each entry is written and ``fsync``-ed
before the call that made the decision answers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from biometrics.types import Actor

log = logging.getLogger(__name__)

LOG_NAME = "audit.jsonl"
SIGNING_KEY_NAME = "audit-signing.key"
PUBLIC_KEY_NAME = "audit-signing.pub"
GENESIS = "0" * 64
DEFAULT_CHECKPOINT_EVERY = 100
#: Fields the service may pass that carry no biometric or personal data; anything else is dropped.
ALLOWED_FIELDS = frozenset({
    "subject_ref", "outcome", "threshold", "qualities", "duplicates", "override_reason", "match", "score",
    "candidates", "reason", "modalities",
})


def canonical(entry: dict[str, Any]) -> bytes:
    """The canonical JSON bytes of an entry (sorted keys, no whitespace)."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``entry`` without its ``hash`` and ``signature``."""
    body = {k: v for k, v in entry.items() if k not in ("hash", "signature")}
    return hashlib.sha256(canonical(body)).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def load_or_create_signing_key(key_dir: Path) -> Ed25519PrivateKey:
    """The log's Ed25519 signing key in ``key_dir`` (created 0600 on a first start; public key exported)."""
    path = key_dir / SIGNING_KEY_NAME
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
    else:
        key = Ed25519PrivateKey.generate()
        _write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        log.warning("created the audit signing key %s (mode 0600); public key %s", path, key_dir / PUBLIC_KEY_NAME)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pub_path = key_dir / PUBLIC_KEY_NAME
    if not pub_path.exists() or pub_path.read_bytes() != public:
        pub_path.write_bytes(public)
    return key


def public_key_id(public: Ed25519PublicKey) -> str:
    """A short id of a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An exported public key (PEM)."""
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


def _last_line(path: Path) -> bytes:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        chunk, pos = b"", end
        while pos > 0:
            step = min(4096, pos)
            pos -= step
            f.seek(pos)
            chunk = f.read(step) + chunk
            lines = chunk.rstrip(b"\n").split(b"\n")
            if len(lines) > 1 or pos == 0:
                return lines[-1]
    return b""


def _chain_end(path: Path) -> tuple[int, str]:
    """(seq, hash) of the last readable entry; a torn last line (a crash mid-write) is skipped and logged."""
    try:
        last = json.loads(_last_line(path))
        return int(last["seq"]), str(last["hash"])
    except (ValueError, KeyError, TypeError):
        log.error("audit log %s: the last line is torn or unreadable; the chain continues from the last "
                  "readable entry, and `checkpoint-audit verify` will report the line", path)
    seq, head = -1, GENESIS
    for _, entry, _ in read_entries(path):
        if entry is not None and isinstance(entry.get("seq"), int) and isinstance(entry.get("hash"), str):
            seq, head = entry["seq"], entry["hash"]
    return seq, head


class AuditLog:
    """An append-only, hash-chained decision log (implements ``biometrics.service.DecisionLog``)."""

    def __init__(self, path: Path, signing_key: Ed25519PrivateKey,
                 checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY) -> None:
        self.path = path
        self.signing_key = signing_key
        self.key_id = public_key_id(signing_key.public_key())
        self.checkpoint_every = checkpoint_every
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.seq, self.head, self._since_checkpoint = -1, GENESIS, 0
        if path.exists() and path.stat().st_size:
            self.seq, self.head = _chain_end(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "ab")
        if path.stat().st_size and not self._ends_with_newline():
            self._file.write(b"\n")  # a torn last line stays visible to `checkpoint-audit verify`

    @classmethod
    def open(cls, data_dir: Path, key_dir: Path | None = None, **kwargs: Any) -> AuditLog:
        """The log at ``data_dir/audit/audit.jsonl``, signed by the key in ``key_dir`` (default DATA_DIR/keys)."""
        key = load_or_create_signing_key(key_dir or data_dir / "keys")
        return cls(data_dir / "audit" / LOG_NAME, key, **kwargs)

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def _append(self, entry: dict[str, Any]) -> dict[str, Any]:
        entry["seq"] = self.seq + 1
        entry["prev"] = self.head
        if entry["type"] == "checkpoint":
            entry["signature"] = self.signing_key.sign(canonical(
                {k: v for k, v in entry.items() if k not in ("hash", "signature")})).hex()
        entry["hash"] = entry_hash(entry)
        self._file.write(canonical(entry) + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.seq, self.head = entry["seq"], entry["hash"]
        return entry

    def record(self, kind: str, actor: Actor, decision_id: str, **fields: Any) -> None:
        """Append one decision (who, what, outcome, scores, threshold, time), fsync-ed; see the module doc."""
        who = {"role": actor.role, "identity": actor.identity}
        if actor.extra.get("fingerprint_sha256"):
            who["fingerprint_sha256"] = actor.extra["fingerprint_sha256"]
        dropped = sorted(set(fields) - ALLOWED_FIELDS)
        if dropped:
            log.warning("audit: fields %s are not recorded (not on the allowed list)", dropped)
        entry = {"type": "decision", "time": _now(), "kind": kind, "decision_id": decision_id, "actor": who,
                 "fields": {k: v for k, v in fields.items() if k in ALLOWED_FIELDS}}
        with self._lock:
            self._append(entry)
            self._since_checkpoint += 1
            if self._since_checkpoint >= self.checkpoint_every:
                self._checkpoint("periodic")

    def _checkpoint(self, reason: str) -> dict[str, Any]:
        self._since_checkpoint = 0
        return self._append({"type": "checkpoint", "time": _now(), "reason": reason, "key_id": self.key_id,
                             "head": self.head, "records": self.seq + 1})

    def checkpoint(self, reason: str = "requested") -> dict[str, Any]:
        """Append a signed checkpoint over the chain so far."""
        with self._lock:
            return self._checkpoint(reason)

    def close(self) -> None:
        """Sign a checkpoint (if anything was appended since the last one) and close the file."""
        with self._lock:
            if self._file.closed:
                return
            if self._since_checkpoint:
                self._checkpoint("shutdown")
            self._file.close()


# -- verification ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """The first place where the log is not what was written."""

    line: int
    seq: int | None
    problem: str

    def __str__(self) -> str:
        where = f"record seq {self.seq}" if self.seq is not None else "record"
        return f"line {self.line}: {where}: {self.problem}"


@dataclass(frozen=True)
class Report:
    """What verification found."""

    records: int
    decisions: int
    checkpoints: int
    signed_through: int
    finding: Finding | None

    @property
    def ok(self) -> bool:
        """True when the chain and every checkpoint signature hold."""
        return self.finding is None


def read_entries(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, parsed entry or None, error) for each line of a log."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                entry = json.loads(raw)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
                yield number, entry, ""
            except ValueError as exc:
                yield number, None, f"not a JSON entry ({exc})"


def verify_log(path: Path, public_key: Ed25519PublicKey) -> Report:
    """Walk the chain: sequence, links, hashes and checkpoint signatures; stop at the first finding.

    A record altered in place fails its own hash; a removed record leaves a gap in ``seq``; reordered
    records break the sequence; a record altered with its hash (and the chain after it) recomputed
    fails at the next signed checkpoint; a forged checkpoint fails its signature.
    """
    key_id = public_key_id(public_key)
    expected_seq, head = 0, GENESIS
    decisions = checkpoints = 0
    signed_through = -1
    last_checkpoint_seq = -1

    def report(finding: Finding | None) -> Report:
        return Report(expected_seq, decisions, checkpoints, signed_through, finding)

    entries = list(read_entries(path))
    present = {e.get("seq") for _, e, _ in entries if e is not None}
    for line, entry, error in entries:
        if entry is None:
            return report(Finding(line, None, f"unreadable: {error}"))
        seq = entry.get("seq")
        if not isinstance(seq, int) or seq != expected_seq:
            if isinstance(seq, int) and expected_seq in present:
                problem = f"out of order: seq {seq} where {expected_seq} was expected (records reordered)"
            elif isinstance(seq, int) and seq > expected_seq:
                problem = (f"sequence jumps from {expected_seq - 1} to {seq}: record(s) "
                           f"{expected_seq}..{seq - 1} removed")
            elif isinstance(seq, int):
                problem = f"seq {seq} repeats where {expected_seq} was expected (record duplicated)"
            else:
                problem = "has no sequence number"
            return report(Finding(line, seq if isinstance(seq, int) else None, problem))
        if entry.get("prev") != head and seq == 0:
            return report(Finding(line, seq, "does not start the chain (prev is not the genesis hash)"))
        if entry.get("prev") != head:
            return report(Finding(line - 1, seq - 1, "altered with its hash recomputed: the next record "
                                  f"(seq {seq}) does not link to it"))
        if entry.get("hash") != entry_hash(entry):
            return report(Finding(line, seq, "altered: its content does not match its hash"))
        if entry.get("type") == "checkpoint":
            body = {k: v for k, v in entry.items() if k not in ("hash", "signature")}
            try:
                if entry.get("key_id") != key_id:
                    raise InvalidSignature
                public_key.verify(bytes.fromhex(str(entry.get("signature", ""))), canonical(body))
            except (InvalidSignature, ValueError):
                return report(Finding(line, seq, "checkpoint signature is not valid for the log's public key "
                                      f"(records {last_checkpoint_seq + 1}..{seq - 1} are not proven)"))
            if entry.get("head") != head or entry.get("records") != seq:
                return report(Finding(line, seq, "checkpoint does not cover the chain before it"))
            checkpoints += 1
            signed_through = seq
            last_checkpoint_seq = seq
        elif entry.get("type") == "decision":
            decisions += 1
        else:
            return report(Finding(line, seq, f"unknown entry type {entry.get('type')!r}"))
        head = entry["hash"]
        expected_seq += 1
    return report(None)
