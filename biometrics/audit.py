"""The tamper-evident audit chain: every decision, hash-chained, with Ed25519-signed checkpoints, in the store.

Each entry is a JSON object, stored in the store's ``audit`` table in the SAME transaction as the change it
records (:meth:`AuditChain.transaction`): an enrolment or an erasure is never stored without its record, and a
record is never written for a change that did not commit. Sequence numbers come from the table's primary key
inside a write transaction, so they are unique and gap-free; a failed commit uses none. ::

    {"seq": n, "type": "decision", "time": ..., "kind": "verify", "decision_id": ...,
     "actor": {"role", "identity", "fingerprint_sha256"}, "fields": {...}, "prev": <hash of entry n-1>,
     "hash": sha256(canonical JSON of the entry without "hash")}

A ``"type": "checkpoint"`` entry every ``checkpoint_every`` decisions and at shutdown carries an Ed25519
signature over its own canonical JSON (which names the hash of the entry before it, so the whole chain up to
it). Canonical JSON: keys sorted, no whitespace, UTF-8, floats as Python's ``repr``.

**Truncation.** A chain cut after a signed checkpoint is still a valid chain; what proves it was longer is a
copy of a later signed head kept elsewhere. After every checkpoint commits, the chain writes it (the *signed
head*) to an anchor file outside the data directory (by default beside the keys); ``checkpoint-audit verify``
checks that the chain still holds that head (``--expected-head``) and at least ``--min-records`` records.

**Two heads on a shared register.** A station's chain there has two copies: its local journal, which takes a
decision that changes nothing at once, and the register's, which takes it when it is shipped. So the station
exports two heads: ``station-<name>.journal.json`` (:func:`journal_anchor_path`) once a checkpoint is in the
journal, and ``station-<name>.json`` (the anchor) only once the register holds it (shipped, or committed in the
register's transaction). The register's copy is checked against the second, and is TAMPERED if it no longer holds
it; a journal head ahead of the register's copy is records signed but not yet shipped (a link down at shutdown),
not a truncation of the register; the journal is checked against both.

**Older logs.** A station upgraded from the JSON-lines log (``DATA_DIR/audit/audit.jsonl``) has it imported on
its first start (:func:`import_jsonl`): every readable entry is kept as written; a torn line (a crash mid-write)
is moved aside to a file of its own and a ``recovery`` record says so, in the chain.

No biometric data and no personal data: subjects appear only as pseudonymous references (HMAC of the
document number, :meth:`biometrics.crypto.KeyRing.pseudonym`).

**Officers' texts.** An officer's own words about a subject (the ``override_reason`` of an enrolment kept despite
a possible duplicate, the ``reason`` of a review's resolution: :data:`TEXT_FIELDS`, passed as :class:`OfficerText`)
may describe the person, and the chain is append-only. So the entry holds a commitment instead, ``<field>_sha256``
= SHA-256(salt || UTF-8 text) with a random 16-byte salt, and the text with its salt is stored sealed in the
store's ``audit_texts`` table, keyed by the record's seq and the pseudonyms of the subjects it concerns, in the
same transaction as the entry (:meth:`biometrics.storage.SealedStore.put_audit_text`). An erasure of any of those
subjects deletes it (:meth:`biometrics.storage.SealedStore.erase_audit_texts`); the entry, its hash and the
signatures are untouched, so the chain still verifies. :func:`check_texts` checks every text still held against
its commitment (altered: a finding; missing: erased if an erasure of a subject it concerns is recorded, a
finding if none is). The reason of an erasure is not one of them: it is kept in clear, as the record of why data
were erased. Entries written by older versions hold their texts in clear and stay as they are.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import threading
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from biometrics.errors import RegisterUnavailable
from biometrics.shipping import ShippingFailures
from biometrics.storage import SealedStore, Transaction
from biometrics.types import Actor

log = logging.getLogger(__name__)

LOG_NAME = "audit.jsonl"
SIGNING_KEY_NAME = "audit-signing.key"
PUBLIC_KEY_NAME = "audit-signing.pub"
ANCHOR_DIR = "audit-heads"
#: A station on a shared register keeps its local audit journal in ``DATA_DIR/journal.db`` (an island: in its
#: replica directory's ``replica.db``).
JOURNAL_FILE = "journal.db"


#: A store id as :class:`biometrics.storage.SealedStore` creates it (uuid4 hex): all a default head's name may be.
STORE_ID = re.compile(r"[0-9a-f]{32}")


def anchor_path(key_dir: Path, store_id: str) -> Path:
    """Where a store's signed heads are exported by default: ``KEY_DIR/audit-heads/<store id>.json``."""
    return key_dir / ANCHOR_DIR / f"{store_id}.json"


def journal_anchor_path(anchor: Path) -> Path:
    """Where a station on a shared register exports the signed head its local journal holds, beside the head the
    register holds (``anchor``): ``station-<name>.json`` -> ``station-<name>.journal.json``."""
    stem = anchor.name[:-len(".json")] if anchor.name.endswith(".json") else anchor.name
    return anchor.with_name(f"{stem}.journal.json")


def read_head_seq(path: Path) -> int | None:
    """The seq of the head in ``path`` as written (its signature unchecked), or None when there is none to read."""
    try:
        head = json.loads(path.read_text())
        return int(head["seq"]) if isinstance(head, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def other_store_heads(anchor_dir: Path, store_id: str) -> list[Path]:
    """The signed heads of embedded stores other than ``store_id`` in an anchor directory, by name.

    Only ``<store id>.json`` files count: a shared register's ``station-<name>.json`` heads are not an embedded
    store's, and heads moved into a subdirectory (``audit-heads/retired/``) are set aside on purpose.
    """
    if not anchor_dir.is_dir():
        return []
    return sorted(p for p in anchor_dir.glob("*.json")
                  if p.is_file() and STORE_ID.fullmatch(p.stem) and p.stem != store_id)


GENESIS = "0" * 64
DEFAULT_CHECKPOINT_EVERY = 100
#: Fields the service may pass that carry no biometric or personal data; anything else is dropped.
ALLOWED_FIELDS = frozenset({
    "subject_ref", "outcome", "threshold", "qualities", "duplicates", "override_reason", "match", "score",
    "candidates", "reason", "modalities", "watchlist", "alert_id", "count", "moved_to", "lines", "sha256",
    "provisional", "upload_id", "attempts", "attempt", "call", "register_seq", "in_review", "seqs",
    "finger_alone_unmeasured", "device", "width", "height", "override_reason_sha256", "reason_sha256",
})
#: Fields whose value may be an officer's own text about subjects (:class:`OfficerText`): committed in the chain
#: as ``<field>_sha256``, the text kept beside it where an erasure reaches it.
TEXT_FIELDS = frozenset({"override_reason", "reason"})
#: Of those, the fields only ever recorded as a commitment (a ``reason`` in clear is an erasure's, or the system's).
COMMITTED_ONLY = frozenset({"override_reason"})
#: Where an export (``checkpoint-audit export``) puts the officers' texts of an entry: outside what its hash covers.
EXPORTED_TEXTS = "officer_texts"
#: How ``checkpoint-audit`` shows a committed text that is no longer held, and one it could not open (no key ring).
ERASED = "(erased)"
NOT_OPENED = "(not opened: no key ring)"
SALT_BYTES = 16


@dataclass(frozen=True)
class OfficerText:
    """An officer's free text about the subjects with pseudonyms ``refs``: recorded as a commitment, the text
    kept where an erasure of any of them deletes it (see the module doc). An empty text is recorded as ``""``."""

    text: str
    refs: tuple[str, ...]


def text_commitment(salt: str, text: str) -> str:
    """SHA-256 (hex) of the salt's bytes (``salt`` in hex) followed by the UTF-8 text."""
    return hashlib.sha256(bytes.fromhex(salt) + text.encode()).hexdigest()


def canonical(entry: dict[str, Any]) -> bytes:
    """The canonical JSON bytes of an entry (sorted keys, no whitespace)."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``entry`` without its ``hash`` and ``signature`` (and the texts an
    export writes beside the entry's commitments, :data:`EXPORTED_TEXTS`)."""
    body = {k: v for k, v in entry.items() if k not in ("hash", "signature", EXPORTED_TEXTS)}
    return hashlib.sha256(canonical(body)).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _write_private(path: Path, data: bytes, *, replace: bool = False) -> None:
    """Write ``path`` whole, mode 0600, durably (file and directory fsync-ed); replacing it when ``replace``, else
    refusing an existing one (:class:`FileExistsError`)."""
    from biometrics.datadir import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data, exclusive=not replace)


def load_or_create_signing_key(key_dir: Path) -> Ed25519PrivateKey:
    """The chain's Ed25519 signing key in ``key_dir`` (created 0600 on a first start; public key exported)."""
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


SHIPPED_MARK = "audit_shipped_upto"
#: Journal meta: the entries of a register transaction whose COMMIT got no answer (``{"first", "last", "hash",
#: "decision_id"}``): journaled, since the register may hold them, and settled once the register is reached.
IN_DOUBT = "audit_in_doubt"


class ChainFork(RuntimeError):
    """The station's journal and the register hold different entries at one seq of the station's chain."""


class AuditChain:
    """The hash-chained decision log of one station (implements ``biometrics.service.DecisionLog``).

    Records are appended inside a transaction: use :meth:`change` for a change of the register and its record
    (both commit or neither does), :meth:`transaction` for a decision that changes nothing.

    ``storage`` holds the station's own chain. With a shared ``register`` (PostgreSQL), ``storage`` is the
    station's local journal: a record of a change is written in the register's transaction, then into the
    journal once that commits; a record of a decision that changes nothing (Verify, Identify) is written to the
    journal at once, durable even while the register is unreachable, and shipped to the register in order by
    :meth:`ship` (a background thread, and before every change). Sequence numbers come from the journal, under
    one lock, so the chain stays one chain.
    """

    def __init__(self, storage: SealedStore, signing_key: Ed25519PrivateKey, *,
                 checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY, anchor: Path | None = None,
                 register: SealedStore | None = None, station: str = "") -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.storage = storage
        self.register = register
        self.station = station  # named in every entry (the chain's key in the store is storage.station)
        self.signing_key = signing_key
        self.key_id = public_key_id(signing_key.public_key())
        self.checkpoint_every = checkpoint_every
        self.anchor = anchor  # without a register, the store's head; with one, the head the register holds
        #: With a register: the head the journal holds (exported when a checkpoint is in the journal).
        self.journal_anchor = journal_anchor_path(anchor) if register is not None and anchor is not None else None
        self._lock = threading.RLock()
        self._head_lock = threading.Lock()  # the register's head only moves forward (the shipper, a change)
        #: Entries the register committed but the journal failed to take (the chain is stale until they are in).
        self._unjournaled: list[dict[str, Any]] = []
        #: Entries whose register COMMIT went unanswered and which the journal failed to take (in doubt).
        self._in_doubt_kept: list[dict[str, Any]] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._shipper: threading.Thread | None = None

    # -- transactions ----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A transaction of the station's own store whose records are part of it (a decision that changes
        nothing, or any change on a station without a register); a signed head is exported after it commits."""
        with self._lock:
            self._heal()
            with self.storage.transaction() as tx:
                yield tx
            self._after_commit(tx)
        if self.register is not None:
            self._wake.set()

    @contextmanager
    def change(self) -> Iterator[Transaction]:
        """A transaction of the register (or, with none, of the station's store) for a change and its record."""
        if self.register is None:
            with self.transaction() as tx:
                yield tx
            return
        tx, body_done = None, False
        try:
            with self.register.transaction() as tx:
                yield tx
                body_done = True
            if tx.audit_entries:
                journaled = self._journal_committed(tx.audit_entries)
                if tx.audit_checkpoints:  # the register holds them: committed in its transaction, or copied in it
                    self._advance(self.anchor, tx.audit_checkpoints[-1])
                    if journaled:  # (the last may be one copied from the journal, older than its head)
                        self._advance(self.journal_anchor, tx.audit_checkpoints[-1])
        except RegisterUnavailable:
            if body_done and tx is not None and tx.audit_entries:  # the COMMIT went unanswered
                self._journal_in_doubt(tx.audit_entries)
            raise
        finally:
            if tx is not None and tx.chain_locked:
                self._lock.release()

    def _journal_in_doubt(self, entries: list[dict[str, Any]]) -> None:
        """The register transaction of ``entries`` reached its COMMIT and the link dropped before the answer: the
        register may hold them or not. The chain cannot leave them out (had the register committed them, the next
        record would fork it), so they are journaled as they are and marked in doubt; :meth:`_settle_in_doubt`
        decides once the register is reached, and appends a ``not_committed`` record if it had not committed. A
        journal that fails to take them (a full disk) gets them before anything else is appended (:meth:`_heal`)."""
        try:
            self._write_in_doubt(entries)
        except Exception:
            self._in_doubt_kept = list(entries)
            log.exception("audit: entries %d..%d, whose register COMMIT went unanswered, could not be journaled; "
                          "nothing is appended to the chain before they are", entries[0]["seq"], entries[-1]["seq"])
            return
        log.warning("audit: the register's COMMIT of entries %d..%d went unanswered: journaled, in doubt until the "
                    "register is reached", entries[0]["seq"], entries[-1]["seq"])

    def _write_in_doubt(self, entries: list[dict[str, Any]]) -> None:
        """Journal ``entries`` and mark them in doubt, in one journal transaction."""
        doubt = {"first": entries[0]["seq"], "last": entries[-1]["seq"], "hash": entries[-1]["hash"],
                 "decision_id": next((e.get("decision_id", "") for e in entries if e.get("decision_id")), "")}
        with self.storage.transaction() as jtx:
            for e in entries:
                self.storage.append_audit(jtx, e["seq"], e["type"], e["hash"], canonical(e).decode())
            self.storage.set_meta(jtx, IN_DOUBT, json.dumps(doubt))

    def _settle_in_doubt(self, *, locked: bool) -> None:
        """Settle entries journaled in doubt (:meth:`_journal_in_doubt`): the register holds them (it committed:
        nothing to add) or not (it did not: a ``not_committed`` record says the change they record never happened).
        ``locked``: the caller's register transaction holds the register's write lock, which the transaction in
        doubt held too, so it has ended; otherwise the lock is taken here before the register is read."""
        raw = self.storage.get_meta(IN_DOUBT, "")
        if not raw or self.register is None:
            return
        doubt = json.loads(raw)
        # Not under the chain lock while the register's is awaited: this station's own change may hold the
        # register's lock and wait for the chain's. The verdict is final once the lock is had: the transaction in
        # doubt has ended. It is written under the chain lock, if nobody settled it meanwhile.
        with contextlib.ExitStack() as stack:
            if not locked:
                rtx = stack.enter_context(self.register.transaction())
                self.register.lock_register(rtx)  # type: ignore[attr-defined]
            held = self.register.audit_rows(doubt["last"] - 1, 1)  # type: ignore[attr-defined]
        if held and int(held[0][0]) == doubt["last"] and held[0][2] != doubt["hash"]:
            raise ChainFork(f"station {self.station!r}: the register holds another entry at seq {doubt['last']} than "
                            "the one whose COMMIT went unanswered")
        committed = bool(held) and int(held[0][0]) == doubt["last"]
        with self.transaction() as jtx:  # takes the chain lock
            if self.storage.get_meta(IN_DOUBT, "") != raw:
                return  # settled meanwhile (by a change, or another shipping pass)
            self.storage.set_meta(jtx, IN_DOUBT, "")
            if not committed:
                self.record(jtx, "not_committed", Actor(role="system", identity=f"station {self.station} audit"),
                            doubt["decision_id"], seqs=[doubt["first"], doubt["last"]],
                            reason="the register did not commit the change these entries record (the answer to its "
                                   "COMMIT was lost); it never happened")
        log.warning("audit: entries %d..%d in doubt: the register %s them", doubt["first"], doubt["last"],
                    "committed" if committed else "did not commit")

    def _after_commit(self, tx: Transaction) -> None:
        """After a transaction of the station's own store committed: its last checkpoint is the store's head (the
        journal's, on a register: the register's head waits until it is shipped)."""
        if tx.audit_checkpoints:
            self._export(self.journal_anchor if self.register is not None else self.anchor, tx.audit_checkpoints[-1])

    def _export(self, path: Path | None, checkpoint: dict[str, Any]) -> None:
        if path is not None:
            self.export_head(checkpoint, path)

    def _advance(self, path: Path | None, checkpoint: dict[str, Any]) -> None:
        """Export ``checkpoint`` to ``path`` unless the head there is later already (the register's head: the
        shipper and a change export it, and entries shipped again after a register restored from a backup are
        older than it)."""
        if path is None:
            return
        with self._head_lock:
            held = read_head_seq(path)
            if held is None or held < checkpoint["seq"]:
                self.export_head(checkpoint, path)

    def _register_holds(self, rows: list[tuple[int, str, str, str]]) -> None:
        """The register holds these (seq, type, hash, entry) rows: the last checkpoint among them is its head."""
        last = next((text for _, kind, _, text in reversed(rows) if kind == "checkpoint"), None)
        if last is not None:
            self._advance(self.anchor, json.loads(last))

    def _journal(self, entries: list[dict[str, Any]]) -> None:
        """Write entries the register committed into the local journal, marked shipped."""
        with self.storage.transaction() as jtx:
            for e in entries:
                self.storage.append_audit(jtx, e["seq"], e["type"], e["hash"], canonical(e).decode())
            self._mark_shipped(jtx, entries[-1]["seq"])

    def _journal_committed(self, entries: list[dict[str, Any]]) -> bool:
        """:meth:`_journal` after the register committed: a failure (a full disk) cannot undo the change, so it is
        not raised; the entries are kept and the chain is marked stale until :meth:`_heal` brings the journal
        level, before anything else is appended to the chain. Whether the journal took them."""
        try:
            self._journal(entries)
        except Exception:
            self._unjournaled.extend(entries)
            log.exception("audit: the register committed entries %d..%d but the local journal did not take them: "
                          "the change stands; the journal is stale and is brought level before the next record",
                          entries[0]["seq"], entries[-1]["seq"])
            return False
        return True

    def _heal(self) -> None:
        """Under the chain lock, before an append: bring a stale journal level with the register (its copy first,
        else the entries kept in memory). Raises when neither works: nothing is appended to a chain that would
        fork."""
        if self._in_doubt_kept:  # raises (nothing appended) while the journal still cannot take them
            self._write_in_doubt(self._in_doubt_kept)
            self._in_doubt_kept = []
        if not self._unjournaled:
            return
        last = self._unjournaled[-1]["seq"]
        try:
            self.reconcile()
        except ChainFork:
            raise
        except Exception as exc:  # the register away: the entries in hand
            log.warning("audit: the stale journal cannot be reconciled with the register (%s); writing the %d "
                        "entries kept in memory", exc, len(self._unjournaled))
            with self.storage.transaction() as jtx:
                tail = self.storage.audit_tail(jtx)[0]
            missing = [e for e in self._unjournaled if e["seq"] > tail]
            if missing:
                self._journal(missing)
        with self.storage.transaction() as jtx:
            tail = self.storage.audit_tail(jtx)[0]
        if tail < last:
            raise RuntimeError(f"audit: the journal ends at seq {tail}, behind the register's {last}: not appending")
        self._unjournaled = []
        log.warning("audit: the stale journal is level with the register again (through seq %d)", last)

    def _mark_shipped(self, tx: Transaction, seq: int) -> None:
        if seq > int(self.storage.get_meta(SHIPPED_MARK, "-1")):
            self.storage.set_meta(tx, SHIPPED_MARK, str(seq))

    # -- shipping to the register ----------------------------------------------------------------

    def reconcile(self) -> int:
        """Bring the journal level with the register: entries the register committed but the journal missed (a
        crash between the two commits, a failed journal write) are copied into the journal. Returns how many.

        The two chains must agree where both hold entries: the hash at the last seq both hold is compared (a
        chain's hash covers everything before it), and a difference raises :class:`ChainFork`. A register
        behind what was shipped to it (restored from a backup) gets the entries it lost shipped again."""
        if self.register is None:
            return 0
        with self._lock:
            with self.storage.transaction() as jtx:
                tail = self.storage.audit_tail(jtx)[0]
            self._check_overlap(tail)
            missed = self.register.audit_since(self.register.station, tail)  # type: ignore[attr-defined]
            if missed:
                last = None  # the last checkpoint copied: both copies hold it now
                with self.storage.transaction() as jtx:
                    for seq, text in missed:
                        entry = json.loads(text)
                        self.storage.append_audit(jtx, seq, entry["type"], entry["hash"], text)
                        last = entry if entry["type"] == "checkpoint" else last
                    self._mark_shipped(jtx, missed[-1][0])
                if last is not None:
                    self._advance(self.anchor, last)
                    self._advance(self.journal_anchor, last)
                log.warning("audit: %d entries the register held were missing from the journal; copied", len(missed))
            return len(missed)

    def _check_overlap(self, tail: int) -> None:
        """The journal (ending at ``tail``) and the register agree at the last seq both hold; the shipping mark is
        brought back to what the register holds."""
        assert self.register is not None
        held = self.register.audit_prefix_end()
        common = min(tail, held)
        if common >= 0:
            mine, theirs = self.storage.audit_rows(common - 1, 1), self.register.audit_rows(common - 1, 1)
            if not mine or not theirs or mine[0][:3] != theirs[0][:3]:
                raise ChainFork(f"station {self.station!r}: the journal and the register hold different audit "
                                f"entries at seq {common}: the chain forked; not appending (checkpoint-audit verify "
                                "on both, then an operator decides)")
        if held < int(self.storage.get_meta(SHIPPED_MARK, "-1")):
            log.error("audit: the register holds this station's chain only through seq %d, behind what was shipped "
                      "(restored from a backup?): shipping the entries after it again", held)
            with self.storage.transaction() as jtx:
                self.storage.set_meta(jtx, SHIPPED_MARK, str(held))

    def pending(self) -> int:
        """How many journal entries the register does not hold yet."""
        mark = int(self.storage.get_meta(SHIPPED_MARK, "-1"))
        return len(self.storage.audit_rows(mark, limit=1_000_000))

    def ship(self, limit: int = 1000) -> int:
        """Copy journal entries the register does not hold yet into it, in order; returns how many."""
        if self.register is None:
            return 0
        self._settle_in_doubt(locked=False)
        with self._lock:  # the rows and whether any are in doubt, as one state of the chain
            mark = int(self.storage.get_meta(SHIPPED_MARK, "-1"))
            rows = self.storage.audit_rows(mark, limit)
            raw = self.storage.get_meta(IN_DOUBT, "")
        if raw:  # in doubt since the settling above: never shipped before they are settled
            rows = [r for r in rows if r[0] < json.loads(raw)["first"]]
        if not rows:
            return 0
        self.register.ship_audit(rows)  # type: ignore[attr-defined]
        self._register_holds(rows)
        with self.storage.transaction() as jtx:  # not past a mark moved back meanwhile (reconcile: ship again)
            now_mark = jtx.execute("SELECT value FROM meta WHERE name = ?", (SHIPPED_MARK,)).fetchone()
            if int(now_mark[0] if now_mark else -1) == mark:
                self._mark_shipped(jtx, rows[-1][0])
        return len(rows)

    def start_shipping(self, interval: float = 1.0) -> None:
        """Ship in a background thread: when woken by a new record, and every ``interval`` seconds."""
        if self.register is None or self._shipper is not None:
            return

        failures = ShippingFailures(self.station, "audit records", log)

        def run() -> None:
            while not self._stop.is_set():
                self._wake.wait(interval)
                self._wake.clear()
                try:
                    while self.ship():
                        pass
                except Exception as exc:  # the journal keeps them; said at ERROR unless the register is away
                    failures.failed(exc)
                else:
                    failures.shipped()

        self._shipper = threading.Thread(target=run, name="audit-shipper", daemon=True)
        self._shipper.start()

    # -- appending -------------------------------------------------------------------------------

    def export_head(self, checkpoint: dict[str, Any], path: Path | None = None) -> None:
        """Write a signed checkpoint to ``path`` (by default the anchor file; atomically; a failure is logged, never
        raised)."""
        path = path or self.anchor
        assert path is not None
        try:
            _write_private(path, canonical(checkpoint) + b"\n", replace=True)
        except OSError as exc:
            log.error("audit: the signed head could not be exported to %s: %s", path, exc)

    def _tail(self, tx: Transaction) -> tuple[int, str, int]:
        """(seq, hash, last checkpoint seq) of the chain as ``tx`` would extend it."""
        if tx.owner is self.storage:
            return self.storage.audit_tail(tx)
        # A register transaction: the journal is the chain so far (under our lock), then what tx appended.
        with self.storage.transaction() as jtx:
            seq, head, last_cp = self.storage.audit_tail(jtx)
        for e in tx.audit_entries:
            seq, head = e["seq"], e["hash"]
            if e["type"] == "checkpoint":
                last_cp = e["seq"]
        return seq, head, last_cp

    def _enter(self, tx: Transaction) -> None:
        """Before the first record of a register transaction: take the chain lock and ship what is pending."""
        if tx.owner is self.storage or tx.chain_locked:
            return
        self._lock.acquire()
        tx.chain_locked = True
        self._heal()
        self._settle_in_doubt(locked=True)  # this change's transaction holds the register's write lock
        mark = int(self.storage.get_meta(SHIPPED_MARK, "-1"))
        pending = self.storage.audit_rows(mark, limit=1_000_000)
        if pending:
            self.register.copy_audit(tx, pending)  # type: ignore[union-attr]
            # the register holds them once tx commits: its head may be the last of them (change() exports it)
            tx.audit_checkpoints.extend(json.loads(text) for _, kind, _, text in pending if kind == "checkpoint")

    def _append(self, tx: Transaction, entry: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Chain ``entry`` after the tail and store it in ``tx``; (the entry, the last checkpoint's seq before it)."""
        self._enter(tx)
        seq, head, last_checkpoint = self._tail(tx)
        entry["seq"] = seq + 1
        entry["prev"] = head or GENESIS
        if entry["type"] == "checkpoint":
            entry["head"] = entry["prev"]
            entry["records"] = entry["seq"]
            entry["signature"] = self.signing_key.sign(canonical(
                {k: v for k, v in entry.items() if k not in ("hash", "signature")})).hex()
            tx.audit_checkpoints.append(entry)
        entry["hash"] = entry_hash(entry)
        store = self.storage if tx.owner is self.storage else self.register
        assert store is not None
        store.append_audit(tx, entry["seq"], entry["type"], entry["hash"], canonical(entry).decode())
        tx.audit_entries.append(entry)
        return entry, last_checkpoint

    def record(self, tx: Transaction, kind: str, actor: Actor, decision_id: str, **fields: Any) -> dict[str, Any]:
        """Append one decision in ``tx`` (and a signed checkpoint when one is due); returns the entry."""
        who = {"role": actor.role, "identity": actor.identity}
        if actor.extra.get("fingerprint_sha256"):
            who["fingerprint_sha256"] = actor.extra["fingerprint_sha256"]
        dropped = sorted(set(fields) - ALLOWED_FIELDS)
        if dropped:
            log.warning("audit: fields %s are not recorded (not on the allowed list)", dropped)
        kept: dict[str, Any] = {}
        texts: list[tuple[str, str, OfficerText]] = []  # (field, salt, text) to store beside the entry
        for name, value in fields.items():
            if name not in ALLOWED_FIELDS:
                continue
            if isinstance(value, OfficerText):
                if name not in TEXT_FIELDS:
                    raise ValueError(f"audit: {name} is not a field of officers' texts")
                if not value.text:
                    kept[name] = ""
                    continue
                salt = os.urandom(SALT_BYTES).hex()
                kept[f"{name}_sha256"] = text_commitment(salt, value.text)
                texts.append((name, salt, value))
            elif name in COMMITTED_ONLY and value:
                raise ValueError(f"audit: {name} is an officer's text: pass it as an OfficerText, never in clear")
            else:
                kept[name] = value
        body: dict[str, Any] = {"type": "decision", "time": _now(), "kind": kind, "decision_id": decision_id,
                                "actor": who, "fields": kept}
        if self.station:
            body["station"] = self.station
        entry, last_checkpoint = self._append(tx, body)  # one read of the tail a decision
        if texts:  # in the store the entry went to, in its transaction
            store = self.storage if tx.owner is self.storage else self.register
            assert store is not None
            for name, salt, value in texts:
                store.put_audit_text(tx, entry["seq"], name, value.refs, salt, value.text)
        if entry["seq"] - last_checkpoint >= self.checkpoint_every:
            self._checkpoint(tx, "periodic")
        return entry

    def _checkpoint(self, tx: Transaction, reason: str) -> dict[str, Any]:
        body: dict[str, Any] = {"type": "checkpoint", "time": _now(), "reason": reason, "key_id": self.key_id}
        if self.station:
            body["station"] = self.station
        return self._append(tx, body)[0]

    def checkpoint(self, reason: str = "requested") -> dict[str, Any] | None:
        """Sign a checkpoint over the chain so far (none when the last entry is already one, or the chain is empty)."""
        with self.transaction() as tx:
            seq, _, last_checkpoint = self.storage.audit_tail(tx)
            if seq < 0 or seq == last_checkpoint:
                return None
            return self._checkpoint(tx, reason)

    def close(self) -> None:
        """Sign a shutdown checkpoint if anything was appended since the last one; stop shipping (one last try)."""
        self.checkpoint("shutdown")
        self._stop.set()
        self._wake.set()
        if self._shipper is not None:
            self._shipper.join(10)
            self._shipper = None
        if self.register is not None:
            try:
                while self.ship():
                    pass
            except Exception as exc:
                log.warning("audit: %d record(s) not shipped to the register at shutdown (%s); they stay in the "
                            "journal and are shipped at the next start", self.pending(), exc)


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


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of the range of a number")
    return value


def parse_lines(lines: Iterable[bytes | str]) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, parsed entry or None, error) for each JSON line.

    Only what the chain writes is read as an entry: a JSON object whose numbers are finite. ``NaN``,
    ``Infinity`` (which Python's parser takes, and :func:`canonical` refuses), a number past a float's range, and
    a line nested too deep to parse are errors of that line, found where the record was altered."""
    for number, raw in enumerate(lines, start=1):
        try:
            entry = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
            if not isinstance(entry, dict):
                raise ValueError("not an object")
            yield number, entry, ""
        except (ValueError, RecursionError) as exc:
            yield number, None, f"not a JSON entry ({exc})"


def read_entries(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, parsed entry or None, error) for each line of a JSON-lines log (an export)."""
    with path.open("rb") as f:
        yield from parse_lines(f)


def _signature_holds(entry: dict[str, Any], public_key: Ed25519PublicKey) -> bool:
    body = {k: v for k, v in entry.items() if k not in ("hash", "signature", EXPORTED_TEXTS)}
    try:
        if entry.get("key_id") != public_key_id(public_key):
            return False
        public_key.verify(bytes.fromhex(str(entry.get("signature", ""))), canonical(body))
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_entries(entries: Iterable[tuple[int, dict[str, Any] | None, str]], public_key: Ed25519PublicKey,
                   ) -> Report:
    """Walk the chain: sequence, links, hashes and checkpoint signatures; stop at the first finding.

    A record altered in place fails its own hash; a removed record leaves a gap in ``seq``; reordered
    records break the sequence; a record altered with its hash (and the chain after it) recomputed
    fails at the next signed checkpoint; a forged checkpoint fails its signature. A chain cut at its end is
    found only against a signed head kept elsewhere (:func:`check_head`).
    """
    expected_seq, head = 0, GENESIS
    decisions = checkpoints = 0
    signed_through = -1
    last_checkpoint_seq = -1

    def report(finding: Finding | None) -> Report:
        return Report(expected_seq, decisions, checkpoints, signed_through, finding)

    entries = list(entries)
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
            if not _signature_holds(entry, public_key):
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


# -- officers' texts beside their commitments ----------------------------------------------------


def commitments(entry: dict[str, Any]) -> dict[str, str]:
    """field -> commitment of the officers' texts an entry commits to (``<field>_sha256`` of :data:`TEXT_FIELDS`)."""
    fields = entry.get("fields")
    if entry.get("type") != "decision" or not isinstance(fields, dict):
        return {}
    return {name: str(fields[f"{name}_sha256"]) for name in sorted(TEXT_FIELDS) if f"{name}_sha256" in fields}


#: A text as held: (salt hex, text), or why it cannot be read (a sealed text that does not open).
HeldText = tuple[str, str] | str


@dataclass(frozen=True)
class TextReport:
    """What :func:`check_texts` found: texts that match their commitment, texts no longer held (erased, or held
    by another store: ``elsewhere``), texts that could not be checked (no key ring), and the first problem."""

    checked: int
    erased: int
    elsewhere: int
    unchecked: int
    finding: Finding | None

    @property
    def ok(self) -> bool:
        """True when every text held matches its commitment."""
        return self.finding is None


def held_elsewhere(entry: dict[str, Any], source: str) -> bool:
    """Whether an entry's texts are held by another store than the one read (``source``: "store", "register",
    "replica" or "log"): a provisional record in a register was written by an island working offline, which keeps
    its text in its ``replica.db``; any other record in an island's ``replica.db`` was written in the register's
    transaction, which keeps its text."""
    provisional = bool(entry.get("fields", {}).get("provisional"))
    return (source == "register" and provisional) or (source == "replica" and not provisional)


#: The records of an erasure: a ``delete`` (online, embedded, or offline at an island) and a ``delete_upload``
#: (an island's offline erasure uploaded by its drain).
ERASURE_KINDS = frozenset({"delete", "delete_upload"})


def named_refs(entry: dict[str, Any]) -> set[str]:
    """The pseudonyms a decision record names: its ``subject_ref`` and each of its ``duplicates``."""
    fields = entry.get("fields")
    if entry.get("type") != "decision" or not isinstance(fields, dict):
        return set()
    refs = {str(fields["subject_ref"])} if fields.get("subject_ref") else set()
    duplicates = fields.get("duplicates")
    for d in duplicates if isinstance(duplicates, list) else ():
        if isinstance(d, dict) and d.get("subject_ref"):
            refs.add(str(d["subject_ref"]))
    return refs


def erasure_refs(entries: Iterable[dict[str, Any]]) -> set[str]:
    """The pseudonyms of the subjects whose erasure ``entries`` record (:data:`ERASURE_KINDS`)."""
    return {str(e["fields"]["subject_ref"]) for e in entries
            if e.get("type") == "decision" and e.get("kind") in ERASURE_KINDS
            and isinstance(e.get("fields"), dict) and e["fields"].get("subject_ref")}


def check_texts(entries: Iterable[tuple[int, dict[str, Any] | None, str]],
                texts: dict[tuple[int, str], HeldText] | None, *, source: str = "store",
                unopened: int = 0, others: Iterable[dict[str, Any]] = (),
                not_opened: Collection[tuple[int, str]] = ()) -> TextReport:
    """Check the officers' texts against the commitments of a chain :func:`verify_entries` found intact.

    ``texts``: (seq, field) -> the text the store holds (None: read from an export, whose entries carry them in
    :data:`EXPORTED_TEXTS`); ``unopened``: texts the store holds that could not be opened for want of the key ring
    (counted, not checked), ``not_opened`` their (seq, field); ``others``: the decision records of the other
    stations' chains in the same register (their erasures reach this chain's texts). A text that does not match its
    commitment, does not open, or has no commitment in the chain is a finding. A text no longer held was erased only
    if an erasure of a subject it concerns is recorded (a later ``delete`` or ``delete_upload`` record of this
    chain, or one of another station's chain in the register); one missing without such an erasure was deleted
    behind the service's back, a finding. The subjects a text concerns are those its record names (``subject_ref``
    and ``duplicates``) and, for a review's resolution, those the records of the same review name (its upload's
    candidates). An export carries no other station's erasures: a text it marks erased is taken as erased.
    """
    checked = erased = elsewhere = 0
    committed: set[tuple[int, str]] = set()
    missing: Finding | None = None  # reported after the others: an altered or moved text says more

    def report(finding: Finding | None) -> TextReport:
        return TextReport(checked, erased, elsewhere, unopened, finding)

    entries = list(entries)
    lines = {entry.get("seq"): line for line, entry, _ in entries if entry is not None}
    others = list(others)
    erased_elsewhere = erasure_refs(others)
    by_decision: dict[str, set[str]] = {}
    for record in [e for _, e, _ in entries if e is not None] + others:
        if record.get("decision_id"):
            by_decision.setdefault(str(record["decision_id"]), set()).update(named_refs(record))
    erasures = [(int(e.get("seq", 0)), ref) for _, e, _ in entries if e is not None
                for ref in erasure_refs([e])]

    def erasure_recorded(entry: dict[str, Any]) -> bool:
        concerned = named_refs(entry)
        if entry.get("kind") == "review_resolved":
            concerned |= by_decision.get(str(entry.get("decision_id")), set())
        seq = int(entry.get("seq", 0))
        return bool(concerned & erased_elsewhere) or any(s > seq and ref in concerned for s, ref in erasures)
    for line, entry, _ in entries:
        if entry is None:
            continue
        seq = entry.get("seq")
        exported = entry.get(EXPORTED_TEXTS)
        if texts is not None and exported is not None:
            return report(Finding(line, seq, f"carries {EXPORTED_TEXTS} in the store (only an export does)"))
        for name, digest in commitments(entry).items():
            committed.add((seq, name))  # type: ignore[arg-type]
            if texts is None:  # as an export wrote it: text and salt, or a word for its absence
                value = exported.get(name) if isinstance(exported, dict) else None
                if value == NOT_OPENED:  # exported without the key ring
                    unopened += 1
                    continue
                held = (str(value.get("salt", "")), str(value.get("text", ""))) if isinstance(value, dict) else None
            else:
                held = texts.get((seq, name))  # type: ignore[arg-type]
                if held is None and (seq, name) in not_opened:  # held, not opened for want of the key ring
                    continue
            if held is None:
                if held_elsewhere(entry, source):
                    elsewhere += 1
                elif texts is None or erasure_recorded(entry):
                    erased += 1
                elif missing is None:
                    missing = Finding(line, seq, f"the officer's text of {name} is missing, and no erasure of a "
                                      "subject it concerns is recorded (deleted)")
                continue
            if isinstance(held, str):
                return report(Finding(line, seq, f"the officer's text of {name} does not open ({held})"))
            try:
                matches = text_commitment(*held) == digest
            except ValueError:
                matches = False
            if not matches:
                return report(Finding(line, seq, f"the officer's text of {name} does not match the commitment "
                                      "in the record (altered)"))
            checked += 1
    for seq, name in sorted(set(texts or {}) - committed):
        held = (texts or {})[(seq, name)]
        if isinstance(held, str):  # sealed for another record (moved here), or altered
            return report(Finding(lines.get(seq, 0), seq, f"an officer's text of {name} is held for it that does "
                                  f"not open ({held})"))
        return report(Finding(lines.get(seq, 0), seq, f"an officer's text of {name} is held for it, but it commits "
                              "to none (added)"))
    return report(missing)


def verify_log(path: Path, public_key: Ed25519PublicKey) -> Report:
    """:func:`verify_entries` over a JSON-lines file (an export, or a log from before the chain moved)."""
    return verify_entries(read_entries(path), public_key)


def verify_store(storage_entries: Iterable[str], public_key: Ed25519PublicKey) -> Report:
    """:func:`verify_entries` over the store's entries (each a JSON text, in sequence order)."""
    return verify_entries(parse_lines(storage_entries), public_key)


def load_head(path: Path, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """A signed head exported by :meth:`AuditChain.export_head`, its signature checked (ValueError if not)."""
    head = json.loads(path.read_text())
    if not isinstance(head, dict) or head.get("type") != "checkpoint" or not _signature_holds(head, public_key):
        raise ValueError(f"{path} is not a signed head of this log (bad signature or not a checkpoint)")
    if head.get("hash") != entry_hash(head):
        raise ValueError(f"{path}: its hash does not match its content")
    return head


def check_head(entries: Iterable[tuple[int, dict[str, Any] | None, str]], report: Report,
               head: dict[str, Any] | None = None, min_records: int = 0) -> str | None:
    """What truncation or rewriting a kept signed head (and a minimum record count) reveals; None if nothing.

    ``report`` is :func:`verify_entries` over the same ``entries`` (which must have found nothing).
    """
    if report.records < min_records:
        return (f"truncated: the log holds {report.records} records, at least {min_records} were expected "
                f"(records {report.records}..{min_records - 1} are missing)")
    if head is None:
        return None
    seq = int(head["seq"])
    if report.records <= seq:
        return (f"truncated: the log ends at seq {report.records - 1}, but a signed head exported at "
                f"{head.get('time')} proves records through seq {seq} ({seq - report.records + 1} or more removed)")
    for _, entry, _ in entries:
        if entry is not None and entry.get("seq") == seq:
            if entry.get("hash") != head.get("hash"):
                return (f"rewritten: the record at seq {seq} is not the signed head exported at {head.get('time')} "
                        "(the chain was replaced from there or before)")
            return None
    return f"truncated: no record at seq {seq}, the signed head's"


# -- at start: the chain still holds its exported head --------------------------------------------


class HeadNotHeld(Exception):
    """The store's audit chain does not hold the signed head exported for it (cut, replaced, or its store id
    changed): the service refuses to open the store rather than sign a new head over that evidence."""


def head_problem(storage: SealedStore, head: dict[str, Any]) -> str | None:
    """What is wrong when the chain of ``storage`` does not hold ``head``; None when it does.

    Held means: a record at the head's seq whose hash (as stored, and recomputed from its content) is the
    head's. One record is read, not the chain: ``checkpoint-audit verify`` walks the rest.
    """
    seq, when = int(head["seq"]), head.get("time")
    rows = storage.audit_rows(seq - 1, limit=1)
    if not rows or rows[0][0] != seq:
        return (f"truncated: the chain has no record at seq {seq} (it holds {storage.audit_count()} records), but "
                f"the signed head exported at {when} proves records through seq {seq}")
    try:
        entry = json.loads(rows[0][3])
    except ValueError:
        entry = None
    if not isinstance(entry, dict) or entry.get("hash") != head.get("hash") or entry_hash(entry) != head.get("hash"):
        return (f"rewritten: the record at seq {seq} is not the signed head exported at {when} (the chain was "
                "replaced from there or before)")
    return None


def check_chain_at_open(chain: AuditChain, *, heads_dir: Path | None = None) -> dict[str, Any] | None:
    """Before a service appends to ``chain``: the chain must hold the signed head last exported for it.

    Returns that head (None when none was exported yet: a new store, or one that never reached a checkpoint).
    A head behind the chain is fine (records were appended after the last checkpoint). Raises
    :class:`HeadNotHeld` when the anchor file is not a signed head of the chain's key, when the chain has no
    record at the head's seq (cut) or a record with another hash there (replaced), and, given ``heads_dir``
    (the directory of the default ``<store id>.json`` heads), when the store's id is not one a store is
    given, or when that directory holds heads of other stores and none for this one although the store is
    not new (its chain, its change log or its subjects hold something): the store id was changed to escape
    the check. A head that belongs to another store (a data directory replaced under a fixed
    ``--audit-anchor``) is refused too: nothing in the chain tells it apart from a replaced chain.

    Called before anything is appended, and before a JSON-lines log of an older version is imported (a store
    that has one to import has no chain and no head yet).
    """
    storage, anchor = chain.storage, chain.anchor
    if anchor is None:
        return None
    recovery = (f"If the store is as it should be (a backup restored on purpose, or another store's head), move "
                f"{anchor} aside (keep it: it is evidence), check the store with `checkpoint-audit verify "
                "--expected-head` on it, and start again.")
    if heads_dir is not None and not STORE_ID.fullmatch(storage.store_id):
        raise HeadNotHeld(f"the store {storage} names itself {storage.store_id!r}, not a store id this service "
                          "writes: its meta table was altered; refusing to open it")
    if not anchor.exists():
        others = other_store_heads(heads_dir, storage.store_id) if heads_dir is not None else []
        if others and (storage.audit_count() > 0 or storage.head_seq() > 0 or storage.count()[0] > 0):
            raise HeadNotHeld(
                f"no signed head for the store {storage} (id {storage.store_id}) in {heads_dir}, which holds the "
                f"heads of {len(others)} other store(s) ({', '.join(p.name for p in others)}), although this store "
                "is not new: its store id may have been changed to escape the check of its head. Check it with "
                "`checkpoint-audit verify --expected-head` on the head that is its; a head of a store retired on "
                f"purpose belongs in a subdirectory ({heads_dir / 'retired'}), not beside the heads in use")
        return None
    try:
        head = load_head(anchor, chain.signing_key.public_key())
        problem = head_problem(storage, head)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HeadNotHeld(f"the signed head {anchor} cannot be checked: {exc}. {recovery}") from None
    if problem is not None:
        raise HeadNotHeld(f"the audit chain of {storage} does not hold its signed head {anchor}: {problem}. "
                          f"Refusing to open it: a new head would overwrite that evidence. {recovery}")
    return head


# -- logs from before the chain moved into the store ------------------------------------------------


def import_jsonl(path: Path, chain: AuditChain) -> int:
    """Import a JSON-lines audit log into an empty chain; returns how many entries were imported.

    Every readable entry is stored exactly as written (its hash and signature still verify). Unreadable lines
    (a torn write) and entries whose seq was already taken (a record re-used after a failed write) are moved
    aside to ``<log>.torn-<time>``, and a ``recovery`` record at the end of the chain names that file, the line
    numbers and the SHA-256 of what was moved. The imported file is renamed ``<log>.imported``.
    """
    moved: list[tuple[int, bytes]] = []
    imported = 0
    with chain.transaction() as tx:
        if chain.storage.audit_tail(tx)[0] >= 0:
            raise ValueError("the chain in the store is not empty: the JSON-lines log was imported already")
        expected = 0
        with path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    entry = json.loads(raw)
                    ok = isinstance(entry, dict) and entry.get("seq") == expected and isinstance(entry.get("hash"), str)
                except ValueError:
                    ok = False
                if not ok:
                    moved.append((number, raw))
                    continue
                chain.storage.append_audit(tx, expected, str(entry.get("type")), entry["hash"],
                                           canonical(entry).decode())
                expected += 1
                imported += 1
        if moved:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            aside = path.with_name(f"{path.name}.torn-{stamp}")
            blob = b"".join(raw if raw.endswith(b"\n") else raw + b"\n" for _, raw in moved)
            _write_private(aside, blob)
            log.error("audit: %d torn or superseded line(s) of %s moved aside to %s", len(moved), path, aside)
            chain.record(tx, "recovery", Actor(role="system", identity="checkpoint-server"), "0" * 32,
                         reason="torn or superseded lines of the JSON-lines log moved aside at import",
                         moved_to=aside.name, lines=[n for n, _ in moved], sha256=hashlib.sha256(blob).hexdigest())
    os.replace(path, path.with_name(path.name + ".imported"))
    log.warning("audit: %d entries of %s imported into the store's chain", imported, path)
    return imported
