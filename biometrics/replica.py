"""An island station's own copy of the register, and the outbox of what it did while the link was down.

Both live in the station's local SQLite file (``--replica DIR``: ``DIR/replica.db``), the same file as its audit
journal, sealed under the same key ring as the register:

- **The copy** follows the register's change log (:meth:`Replica.follow` is the gallery's change hook): each
  enrolled subject is written as the register holds it, each erasure removed, and the register sequence and the
  time it was reached are kept (``register_as_of``). A station that starts with the register out of reach loads
  its gallery from here and goes on checking travellers.
- **The outbox** holds the station's own writes made offline, in order, each with a station-made id and a content
  hash, written in the same local transaction as its audit record, before the officer is answered. When the link
  returns they are uploaded in order; an upload the register already holds (a crash in the middle of a drain) is
  recognised by its id and hash, never stored twice (:mod:`biometrics.drain`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from biometrics.crypto import KeyRing
from biometrics.storage import (
    CHANGE_ENROLLED,
    CHANGE_ERASED,
    CHANGE_WITHDRAWN,
    Change,
    SealedStore,
    StoredTemplate,
    Transaction,
    now,
)
from biometrics.types import Modality, SubjectInfo, SubjectRecord

OUTBOX_PENDING = "pending"
OUTBOX_STORED = "stored"
OUTBOX_REVIEW = "review"
OUTBOX_ERASED = "erased"
OUTBOX_REJECTED = "rejected"
OUTBOX_CANCELLED = "cancelled"
REGISTER_SEQ = "register_seq"
REGISTER_AS_OF = "register_as_of"


@dataclass(frozen=True)
class OutboxEntry:
    """One write the station made offline: an enrolment or an erasure, waiting to be uploaded or settled."""

    n: int
    upload_id: str
    kind: str  # "enrol" or "erase"
    ref: str
    content_hash: str
    created_at: str
    state: str
    outcome: str
    payload: dict[str, Any]


def _outbox_aad(upload_id: str) -> bytes:
    return f"outbox|{upload_id}".encode()


def enrolment_payload(subject_id: str, info: SubjectInfo, stored: list[StoredTemplate], *, override_reason: str = ""
                      ) -> dict[str, Any]:
    """The content of an offline enrolment, as uploaded (templates base64)."""
    return {"subject_id": subject_id, "info": info.__dict__, "override_reason": override_reason,
            "templates": [{"modality": int(t.modality), "finger": t.finger, "quality": t.quality,
                           "template_id": t.template_id, "created_at": t.created_at,
                           "data": base64.b64encode(t.data).decode()} for t in stored]}


def payload_templates(payload: dict[str, Any]) -> list[StoredTemplate]:
    """The templates of an enrolment payload."""
    return [StoredTemplate(Modality(t["modality"]), int(t["finger"]), float(t["quality"]),
                           base64.b64decode(t["data"]), t["template_id"], t["created_at"])
            for t in payload["templates"]]


def template_ids(payload: dict[str, Any]) -> list[str]:
    """The template ids of an enrolment payload, whole or settled (a settled one keeps only them)."""
    return list(payload.get("template_ids") or [t["template_id"] for t in payload.get("templates", [])])


#: The prefix of a keyed content hash; a hash without it was written by an older version (plain SHA-256).
KEYED_HASH = "k1:"


def _content_key(keyring: KeyRing) -> bytes:
    """The key of upload content hashes, derived from the ring's pseudonym key (every station of a register
    holds the same ring; the key never changes, so a hash made before a restart or by another process matches)."""
    return hmac.new(keyring.pseudonym_key, b"checkpoint upload content hash v1", hashlib.sha256).digest()


def keyed_hash(keyring: KeyRing, digest: str) -> str:
    """``digest`` as a keyed hash: a legacy plain SHA-256 hex digest is keyed (HMAC under the content key), a
    keyed one is returned as it is, so a hash an older version wrote and its upgraded form compare equal."""
    if not digest or digest.startswith(KEYED_HASH):
        return digest
    return KEYED_HASH + hmac.new(_content_key(keyring), digest.encode(), hashlib.sha256).hexdigest()


def content_hash(keyring: KeyRing, payload: dict[str, Any]) -> str:
    """The keyed hash of a payload's canonical JSON: the same content always gives the same hash, and without
    the key ring it cannot be recomputed (an erasure's payload is a document number and a reason, which a plain
    hash would give away to a search of every document number)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return keyed_hash(keyring, hashlib.sha256(canonical).hexdigest())


class Replica:
    """The register copy and the outbox in a station's local store."""

    def __init__(self, local: SealedStore) -> None:
        self.local = local

    # -- the copy of the register --------------------------------------------------------------

    def register_seq(self) -> int:
        """The register change the copy reflects."""
        return int(self.local.get_meta(REGISTER_SEQ, "0"))

    def register_as_of(self) -> float | None:
        """When the copy last reached the end of the register's change log (Unix time), or None."""
        value = self.local.get_meta(REGISTER_AS_OF, "")
        return float(value) if value else None

    def follow(self, changes: list[tuple[Change, tuple[SubjectRecord, list[StoredTemplate]] | None]]) -> None:
        """Apply register changes to the copy in one local transaction (the gallery calls this for the changes it
        has applied, a catch-up page at a time)."""
        if not changes:
            return
        with self.local.transaction() as tx:
            erased, withdrawn = set(), set()
            for change, loaded in changes:
                if change.kind == CHANGE_ENROLLED and loaded is not None:
                    self.local.put_subject(tx, change.ref, loaded[0], loaded[1])
                elif change.kind in (CHANGE_ERASED, CHANGE_WITHDRAWN):
                    self.local.drop_subject(tx, change.ref)
                    (erased if change.kind == CHANGE_ERASED else withdrawn).add(change.ref)
            self.scrub(tx, erased)
            self.scrub(tx, withdrawn, review=(OUTBOX_REJECTED, "rejected at review"))
            self.local.set_meta(tx, REGISTER_SEQ, str(changes[-1][0].seq))

    def mark_synced(self) -> None:
        """Record that the copy has just reached the end of the register's change log."""
        with self.local.transaction() as tx:
            self.local.set_meta(tx, REGISTER_AS_OF, repr(time.time()))

    # -- the outbox ------------------------------------------------------------------------------

    def key_legacy_hashes(self) -> int:
        """Replace the plain content hashes an older version wrote into the outbox by their keyed form (see
        :func:`keyed_hash`); how many. The register's records of this station's uploads are converted by the
        drain (:meth:`biometrics.register.Reviews.key_legacy_hashes`); until then the two forms compare equal."""
        with self.local.transaction() as tx:
            rows = tx.execute("SELECT upload_id, content_hash FROM outbox WHERE content_hash != '' AND "
                              "substr(content_hash, 1, 3) != ?", (KEYED_HASH,)).fetchall()
            tx.executemany("UPDATE outbox SET content_hash = ? WHERE upload_id = ?",
                           [(keyed_hash(self.local.keyring, digest), upload_id) for upload_id, digest in rows])
            tx.erased = tx.erased or bool(rows)  # the old hashes leave the WAL too
        return len(rows)

    def add(self, tx: Transaction, kind: str, ref: str, payload: dict[str, Any]) -> OutboxEntry:
        """Append a write to the outbox in ``tx`` (the transaction of its audit record)."""
        upload_id = uuid.uuid4().hex
        digest = content_hash(self.local.keyring, payload)
        sealed = self.local.keyring.seal(json.dumps(payload).encode(), _outbox_aad(upload_id))
        created = now()
        row = tx.execute("INSERT INTO outbox(upload_id, kind, ref, content_hash, sealed, created_at) "
                         "VALUES (?, ?, ?, ?, ?, ?) RETURNING n", (upload_id, kind, ref, digest, sealed, created)
                         ).fetchone()
        return OutboxEntry(int(row[0]), upload_id, kind, ref, digest, created, OUTBOX_PENDING, "", payload)

    def entries(self, states: tuple[str, ...] = (OUTBOX_PENDING,), limit: int = 1_000_000) -> list[OutboxEntry]:
        """Outbox entries in the given states, oldest first."""
        marks = ", ".join("?" * len(states))
        rows = self.local._query(
            "SELECT n, upload_id, kind, ref, content_hash, sealed, created_at, state, outcome FROM outbox "
            f"WHERE state IN ({marks}) ORDER BY n LIMIT ?", (*states, limit))
        return [OutboxEntry(int(n), uid, kind, ref, digest, created, state, outcome,
                            json.loads(self.local.keyring.open(bytes(sealed), _outbox_aad(uid))))
                for n, uid, kind, ref, digest, sealed, created, state, outcome in rows]

    def pending_count(self) -> int:
        """How many writes wait to be uploaded."""
        return int(self.local._query("SELECT COUNT(*) FROM outbox WHERE state = ?", (OUTBOX_PENDING,))[0][0])

    def oldest_pending_age(self) -> float:
        """Seconds since the oldest write waiting to be uploaded was made (0: none)."""
        rows = self.local._query("SELECT MIN(created_at) FROM outbox WHERE state = ?", (OUTBOX_PENDING,))
        if not rows or rows[0][0] is None:
            return 0.0
        return (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(rows[0][0])).total_seconds()

    def settle_refs(self, refs: list[str], from_state: str, to_state: str, outcome: str) -> None:
        """Move subjects' enrolment entries from one state to another (reviews resolved at the office)."""
        with self.local.transaction() as tx:
            tx.executemany("UPDATE outbox SET state = ?, outcome = ? WHERE ref = ? AND kind = 'enrol' AND state = ?",
                           [(to_state, outcome, ref, from_state) for ref in refs])

    def settle(self, upload_id: str, state: str, outcome: str = "") -> None:
        """Record what the register made of an uploaded write, and drop the payload it no longer needs.

        Once uploaded, an entry's content lives in the register (or was erased there): an enrolment keeps only
        its subject id, and while under review its templates' random ids (they tell this station's own copy from a
        subject the register holds under that number: :meth:`biometrics.island.Island.own_copy`; a subject under
        review is provisional here until the review is resolved, see
        :meth:`biometrics.island.Island.load_provisional`), an erasure keeps nothing.
        """
        with self.local.transaction() as tx:
            row = tx.execute("SELECT kind, sealed FROM outbox WHERE upload_id = ?", (upload_id,)).fetchone()
            if row is None:
                return
            payload = json.loads(self.local.keyring.open(bytes(row[1]), _outbox_aad(upload_id)))
            kept = {"subject_id": payload["subject_id"]} if row[0] == "enrol" and "subject_id" in payload else {}
            if kept and state == OUTBOX_REVIEW:
                kept["template_ids"] = template_ids(payload)
            tx.execute("UPDATE outbox SET state = ?, outcome = ?, sealed = ? WHERE upload_id = ?",
                       (state, outcome, self._seal(upload_id, kept), upload_id))
            tx.erased = True

    def withdraw(self, upload_id: str, *, drop_copy: bool) -> None:
        """An uploaded enrolment an officer did not store (:meth:`biometrics.island.Island.resolve`): its entry is
        rejected and keeps no payload; with ``drop_copy`` the station's own copy of the subject leaves too."""
        with self.local.transaction() as tx:
            row = tx.execute("SELECT ref FROM outbox WHERE upload_id = ?", (upload_id,)).fetchone()
            if row is None:
                return
            if drop_copy:
                self.local.drop_subject(tx, row[0])
            tx.execute("UPDATE outbox SET state = ?, outcome = ?, sealed = ? WHERE upload_id = ?",
                       (OUTBOX_REJECTED, "rejected at review", self._seal(upload_id, {}), upload_id))
            tx.erased = True

    def _seal(self, upload_id: str, payload: dict[str, Any]) -> bytes:
        return self.local.keyring.seal(json.dumps(payload).encode(), _outbox_aad(upload_id))

    def cancel(self, tx: Transaction, upload_id: str, outcome: str) -> None:
        """Cancel a pending entry in ``tx`` (its subject was erased before upload): its payload is dropped, only
        the row (id, kind, pseudonym, state) stays as the trace the audit record names."""
        tx.execute("UPDATE outbox SET state = ?, outcome = ?, sealed = ?, content_hash = '' WHERE upload_id = ?",
                   (OUTBOX_CANCELLED, outcome, self._seal(upload_id, {}), upload_id))
        tx.erased = True

    def scrub(self, tx: Transaction, refs: Collection[str],
              review: tuple[str, str] = (OUTBOX_CANCELLED, "erased while under review")) -> int:
        """In ``tx``, after the subjects with pseudonyms ``refs`` were erased or withdrawn: every entry of theirs
        that is no longer pending keeps no payload, and an entry still under review moves to ``review`` (state,
        outcome). Pending erasures are left to be uploaded. Returns how many entries were scrubbed."""
        done = 0
        for ref in refs:
            rows = tx.execute("SELECT upload_id, state FROM outbox WHERE ref = ? AND state != ?",
                              (ref, OUTBOX_PENDING)).fetchall()
            for upload_id, state in rows:
                if state == OUTBOX_REVIEW:
                    tx.execute("UPDATE outbox SET state = ?, outcome = ? WHERE upload_id = ?", (*review, upload_id))
                tx.execute("UPDATE outbox SET sealed = ? WHERE upload_id = ?", (self._seal(upload_id, {}), upload_id))
                done += 1
        if done:
            tx.erased = True
        return done
