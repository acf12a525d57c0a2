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

#: The island's local store in its replica directory (``--replica DIR``): the copy, the outbox, its audit journal.
REPLICA_FILE = "replica.db"
OUTBOX_PENDING = "pending"
OUTBOX_STORED = "stored"
OUTBOX_REVIEW = "review"
OUTBOX_ERASED = "erased"
OUTBOX_REJECTED = "rejected"
OUTBOX_CANCELLED = "cancelled"
OUTBOX_FAILED = "failed"  # its upload raised: set aside with its payload, retried at the next start
#: An erasure uploaded after the register's subject of that document was replaced by a later enrolment the station
#: had not seen: the later enrolment is kept (biometrics.island, "What an offline erasure names").
OUTBOX_SUPERSEDED = "superseded"
REGISTER_SEQ = "register_seq"
REGISTER_AS_OF = "register_as_of"
REGISTER_POSITION = "register_copy_generation", "register_copy_mark"  # the register's generation, the change's id


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


#: What an older version put in an enrolment payload that this one does not: the officer's override reason, a
#: free text about the subject and the duplicates it names. It stays in the station's audit record (a commitment
#: in the chain, the text sealed in ``audit_texts``, erased with them) and is never uploaded.
LEGACY_PAYLOAD_TEXTS = ("override_reason",)


def without_texts(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` (an enrolment payload or a review document built from one) without the officer's texts an
    older version put in it (:data:`LEGACY_PAYLOAD_TEXTS`)."""
    return {k: v for k, v in payload.items() if k not in LEGACY_PAYLOAD_TEXTS}


def enrolment_payload(subject_id: str, info: SubjectInfo, stored: list[StoredTemplate], *,
                      seen_seq: int) -> dict[str, Any]:
    """The content of an offline enrolment, as uploaded (templates base64), with the register change the station's
    view reflected when it was made (an erasure of the document the register made after it refuses the upload).
    The officer's override reason is not in it: it stays in the station's audit record (docs/security.md s. 3)."""
    return {"subject_id": subject_id, "info": info.__dict__, "seen_seq": seen_seq,
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


def is_own_copy(held_ids: Collection[str] | None, payload: dict[str, Any]) -> bool:
    """Whether the copy held under an enrolment entry's pseudonym, whose templates have the ids ``held_ids`` (None:
    no copy held), is the station's own provisional one of that entry's ``payload``, not a subject the register
    holds under that number (another station's, the office's): its templates' random ids are the entry's. An entry
    of an older version, which kept no template ids, counts as its own."""
    ids = set(template_ids(payload))
    return held_ids is not None and (not ids or set(held_ids) <= ids)


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

    def register_position(self) -> tuple[str, str]:
        """(the register's generation, the identity of the change at :meth:`register_seq`) the copy reflects
        (:class:`biometrics.gallery.GalleryState`'s ``generation`` and ``mark``; "" when not known)."""
        return self.local.get_meta(REGISTER_POSITION[0], ""), self.local.get_meta(REGISTER_POSITION[1], "")

    def register_as_of(self) -> float | None:
        """When the copy last reached the end of the register's change log (Unix time), or None."""
        value = self.local.get_meta(REGISTER_AS_OF, "")
        return float(value) if value else None

    def follow(self, changes: list[tuple[Change, tuple[SubjectRecord, list[StoredTemplate]] | None]],
               generation: str = "", kept: Collection[int] = frozenset(),
               withdraw: Collection[str] = ()) -> list[tuple[str, str]]:
        """Apply register changes to the copy in one local transaction (the gallery calls this for the changes it
        has applied, a catch-up page at a time), of the register's ``generation``. The erasures whose seqs are in
        ``kept`` leave the copy, its outbox entries and the officers' texts about it in place: this station's own
        erasure, which preceded its provisional enrolment held under that pseudonym
        (:meth:`biometrics.island.Island.keeps`).

        ``withdraw``: the uploads the page's withdrawals name (``upload:<id>``, an officer did not store them). Each
        of this station's is withdrawn in the same transaction, after the page's copy (:meth:`_withdraw`), so that
        the copy never reflects a change past a withdrawal whose provisional copy it still holds (a crash between
        two commits left it there for good: a review). Returns (pseudonym, subject id) of each copy dropped, for
        the gallery in memory."""
        if not changes:
            return []
        with self.local.transaction() as tx:
            erased, withdrawn = set(), set()
            for change, loaded in changes:
                if change.kind == CHANGE_ENROLLED and loaded is not None:
                    self.local.put_subject(tx, change.ref, loaded[0], loaded[1])
                elif change.kind == CHANGE_ERASED and change.seq in kept:
                    continue
                elif change.kind in (CHANGE_ERASED, CHANGE_WITHDRAWN):
                    self.local.drop_subject(tx, change.ref)
                    (erased if change.kind == CHANGE_ERASED else withdrawn).add(change.ref)
            self.scrub(tx, erased)
            self.local.erase_audit_texts(tx, erased)  # officers' texts this station's chain wrote offline about them
            self.scrub(tx, withdrawn, review=(OUTBOX_REJECTED, "rejected at review"))
            dropped = [d for d in (self._withdraw(tx, upload_id) for upload_id in withdraw) if d is not None]
            last = changes[-1][0]
            self.local.set_meta(tx, REGISTER_SEQ, str(last.seq))
            self._set_position(tx, generation, last.identity if last.at else "")
        return dropped

    def _set_position(self, tx: Transaction, generation: str, mark: str) -> None:
        self.local.set_meta(tx, REGISTER_POSITION[1], mark)
        if generation:
            self.local.set_meta(tx, REGISTER_POSITION[0], generation)

    def resync(self, register: SealedStore, keep: Collection[str], seq: int, generation: str,
               erasures: dict[str, tuple[str, dict[str, Any], str]] | None = None) -> tuple[int, int]:
        """Make the copy what ``register`` holds now (its log went back to change ``seq``: restored from a
        backup), the subjects with pseudonyms in ``keep`` (this station's, not in the register) aside: every
        subject of the register is written again, every other one dropped. Returns (written, dropped).

        ``erasures``: upload id -> (pseudonym, payload, outcome) of this station's erasures the restored register
        lost while it holds their subject again: each is queued again and its subject dropped from the copy in
        the transaction that moves the copy to ``seq`` (a crash in between would have left the copy at the
        restored register, its restore never noticed again, and the erasure settled for good)."""
        theirs = sorted(register.refs())
        gone = self.local.refs() - set(theirs) - set(keep)
        for start in range(0, len(theirs), 2000):
            loaded = register.load_subjects(theirs[start:start + 2000])
            with self.local.transaction() as tx:
                for ref, (record, stored) in loaded.items():
                    self.local.put_subject(tx, ref, record, stored)
        with self.local.transaction() as tx:
            for ref in gone:
                self.local.drop_subject(tx, ref)
            for upload_id, (ref, payload, outcome) in (erasures or {}).items():
                self._requeue(tx, upload_id, payload, outcome)
                self.local.drop_subject(tx, ref)
            self.local.set_meta(tx, REGISTER_SEQ, str(seq))
            self._set_position(tx, generation, "")
        return len(theirs), len(gone)

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

    def add(self, tx: Transaction, kind: str, ref: str, payload: dict[str, Any], upload_id: str = "") -> OutboxEntry:
        """Append a write to the outbox in ``tx`` (the transaction of its audit record), under ``upload_id`` (a new
        one if not given)."""
        upload_id = upload_id or uuid.uuid4().hex
        digest = content_hash(self.local.keyring, payload)
        sealed = self.local.keyring.seal(json.dumps(payload).encode(), _outbox_aad(upload_id))
        created = now()
        row = tx.execute("INSERT INTO outbox(upload_id, kind, ref, content_hash, sealed, created_at) "
                         "VALUES (?, ?, ?, ?, ?, ?) RETURNING n", (upload_id, kind, ref, digest, sealed, created)
                         ).fetchone()
        return OutboxEntry(int(row[0]), upload_id, kind, ref, digest, created, OUTBOX_PENDING, "", payload)

    def entries(self, states: tuple[str, ...] = (OUTBOX_PENDING,), limit: int = 1_000_000,
                refs: Collection[str] | None = None) -> list[OutboxEntry]:
        """Outbox entries in the given states (of the pseudonyms ``refs`` only, if given), oldest first."""
        if refs is not None and not refs:
            return []
        marks, only = ", ".join("?" * len(states)), sorted(refs or ())
        of_refs = f" AND ref IN ({', '.join('?' * len(only))})" if only else ""
        rows = self.local._query(
            "SELECT n, upload_id, kind, ref, content_hash, sealed, created_at, state, outcome FROM outbox "
            f"WHERE state IN ({marks}){of_refs} ORDER BY n LIMIT ?", (*states, *only, limit))
        return [OutboxEntry(int(n), uid, kind, ref, digest, created, state, outcome,
                            json.loads(self.local.keyring.open(bytes(sealed), _outbox_aad(uid))))
                for n, uid, kind, ref, digest, sealed, created, state, outcome in rows]

    def last_upload(self, ref: str, before: int = 2 ** 62) -> str:
        """The upload id of this station's latest enrolment of pseudonym ``ref`` (among the outbox entries before
        ``before``) that the register has received (stored, or waiting for review), or ""."""
        rows = self.local._query("SELECT upload_id FROM outbox WHERE ref = ? AND kind = 'enrol' AND state IN (?, ?) "
                                 "AND n < ? ORDER BY n DESC LIMIT 1", (ref, OUTBOX_STORED, OUTBOX_REVIEW, before))
        return str(rows[0][0]) if rows else ""

    def strip_legacy_texts(self) -> int:
        """Drop from the outbox the officer's override reasons an older version put in enrolment payloads
        (:data:`LEGACY_PAYLOAD_TEXTS`: the text stays only in the audit record, erased with its subjects); how many
        entries. Their content hash is kept: it recognises an upload the older version may have made already
        (docs/island.md, "A COMMIT whose answer is lost"), and the drain compares the stored hash, never the
        payload's."""
        with self.local.transaction() as tx:
            done = 0
            for upload_id, sealed in tx.execute("SELECT upload_id, sealed FROM outbox WHERE kind = 'enrol'").fetchall():
                if not sealed:
                    continue
                payload = json.loads(self.local.keyring.open(bytes(sealed), _outbox_aad(upload_id)))
                if not any(k in payload for k in LEGACY_PAYLOAD_TEXTS):
                    continue
                tx.execute("UPDATE outbox SET sealed = ? WHERE upload_id = ?",
                           (self._seal(upload_id, without_texts(payload)), upload_id))
                done += 1
            tx.erased = tx.erased or bool(done)  # the old sealed payloads leave the WAL too
        return done

    def version_legacy(self, seq: int) -> int:
        """Give the pending erasures an older version queued (no ``seen_seq``) the register change this copy
        reflects now, ``seq``, as the one they saw, and the upload of this station's own enrolment of the subject
        that preceded them, if any (see :meth:`biometrics.island.Island.erase_offline`); how many. Their content
        hash is kept: it recognises an upload the older version may have made already."""
        with self.local.transaction() as tx:
            rows = tx.execute("SELECT n, upload_id, ref, sealed FROM outbox WHERE state = ? AND kind = 'erase' "
                              "ORDER BY n", (OUTBOX_PENDING,)).fetchall()
            done = 0
            for n, upload_id, ref, sealed in rows:
                payload = json.loads(self.local.keyring.open(bytes(sealed), _outbox_aad(upload_id)))
                if "seen_seq" in payload:
                    continue
                payload.update(seen_seq=seq, versioned_at_upgrade=True)
                own = self.last_upload(ref, before=n)
                if own:
                    payload["enrolment_upload"] = own
                tx.execute("UPDATE outbox SET sealed = ? WHERE upload_id = ?", (self._seal(upload_id, payload),
                                                                               upload_id))
                done += 1
        return done

    def positions(self, upload_ids: Collection[str]) -> dict[str, int]:
        """upload id -> its place in the outbox (the order the station made its writes in), of those it holds."""
        ids = sorted(set(upload_ids))
        if not ids:
            return {}
        return {str(u): int(n) for u, n in self.local._query(
            f"SELECT upload_id, n FROM outbox WHERE upload_id IN ({', '.join('?' * len(ids))})", ids)}

    def pending_count(self) -> int:
        """How many writes wait to be uploaded."""
        return int(self.local._query("SELECT COUNT(*) FROM outbox WHERE state = ?", (OUTBOX_PENDING,))[0][0])

    def oldest_pending_age(self) -> float:
        """Seconds since the oldest write waiting to be uploaded was made (0: none)."""
        rows = self.local._query("SELECT MIN(created_at) FROM outbox WHERE state = ?", (OUTBOX_PENDING,))
        if not rows or rows[0][0] is None:
            return 0.0
        return (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(rows[0][0])).total_seconds()

    def failed_count(self) -> int:
        """How many writes failed to upload and wait, set aside, for the next start."""
        return int(self.local._query("SELECT COUNT(*) FROM outbox WHERE state = ?", (OUTBOX_FAILED,))[0][0])

    def state_of(self, upload_id: str) -> str:
        """The entry's state now ("" if there is none)."""
        rows = self.local._query("SELECT state FROM outbox WHERE upload_id = ?", (upload_id,))
        return str(rows[0][0]) if rows else ""

    def unsettled(self) -> set[str]:
        """The upload ids of the enrolments the register does not hold yet (pending, under review, failed)."""
        return {str(r[0]) for r in self.local._query("SELECT upload_id FROM outbox WHERE kind = 'enrol' AND state IN "
                                                     "(?, ?, ?)", (OUTBOX_PENDING, OUTBOX_REVIEW, OUTBOX_FAILED))}

    def fail(self, tx: Transaction, upload_id: str, outcome: str) -> None:
        """Set a pending entry aside in ``tx``: its upload failed; it keeps its payload (nothing acknowledged is
        dropped) and is retried at the next start (:meth:`retry_failed`)."""
        tx.execute("UPDATE outbox SET state = ?, outcome = ? WHERE upload_id = ? AND state = ?",
                   (OUTBOX_FAILED, outcome, upload_id, OUTBOX_PENDING))

    def retry_failed(self) -> int:
        """Put the entries whose upload failed back in the queue, in their place; how many."""
        with self.local.transaction() as tx:
            return int(tx.execute("UPDATE outbox SET state = ?, outcome = '' WHERE state = ?",
                                  (OUTBOX_PENDING, OUTBOX_FAILED)).rowcount)

    def settle_refs(self, refs: list[str], from_state: str, to_state: str, outcome: str) -> None:
        """Move subjects' enrolment entries from one state to another (reviews resolved at the office)."""
        with self.local.transaction() as tx:
            tx.executemany("UPDATE outbox SET state = ?, outcome = ? WHERE ref = ? AND kind = 'enrol' AND state = ?",
                           [(to_state, outcome, ref, from_state) for ref in refs])

    def settle(self, upload_id: str, state: str, outcome: str = "") -> None:
        """Record what the register made of an uploaded write, and drop the payload it no longer needs; an entry
        no longer pending (cancelled by an erasure meanwhile) is left as it is.

        Once uploaded, an entry's content lives in the register (or was erased there): an enrolment stored or
        under review keeps only its subject id, and under review its templates' random ids (they tell this
        station's own copy from a subject the register holds under that number:
        :meth:`biometrics.island.Island.own_copy`; a subject under review is provisional here until the review is
        resolved, see :meth:`biometrics.island.Island.load_provisional`), anything else keeps nothing.
        """
        with self.local.transaction() as tx:
            row = tx.execute("SELECT kind, sealed FROM outbox WHERE upload_id = ? AND state = ?",
                             (upload_id, OUTBOX_PENDING)).fetchone()
            if row is None:
                return
            payload = json.loads(self.local.keyring.open(bytes(row[1]), _outbox_aad(upload_id)))
            kept = ({"subject_id": payload["subject_id"]} if row[0] == "enrol" and "subject_id" in payload
                    and state in (OUTBOX_STORED, OUTBOX_REVIEW) else {})
            if kept and state == OUTBOX_REVIEW:
                kept["template_ids"] = template_ids(payload)
            tx.execute("UPDATE outbox SET state = ?, outcome = ?, sealed = ? WHERE upload_id = ?",
                       (state, outcome, self._seal(upload_id, kept), upload_id))
            tx.erased = True

    def withdraw(self, upload_id: str, states: tuple[str, ...] = (OUTBOX_REVIEW, OUTBOX_STORED)
                 ) -> tuple[str, str] | None:
        """An uploaded enrolment an officer did not store, in a transaction of its own (see :meth:`_withdraw`)."""
        with self.local.transaction() as tx:
            return self._withdraw(tx, upload_id, states)

    def _withdraw(self, tx: Transaction, upload_id: str,
                  states: tuple[str, ...] = (OUTBOX_REVIEW, OUTBOX_STORED)) -> tuple[str, str] | None:
        """In ``tx``: an uploaded enrolment an officer did not store (:meth:`biometrics.island.Island.resolve`), if
        this station's entry of it is in one of ``states``: the entry is rejected and keeps no payload, and the
        copy held under its pseudonym leaves too while it is still this station's own provisional one (its
        templates' random ids are the entry's: not the register's subject of that number, which a later change may
        have put there). Returns (pseudonym, subject id) of the copy dropped, or None."""
        marks = ", ".join("?" * len(states))
        row = tx.execute(f"SELECT ref, sealed FROM outbox WHERE upload_id = ? AND state IN ({marks})",
                         (upload_id, *states)).fetchone()
        if row is None:
            return None  # another station's upload, or settled already
        ref = str(row[0])
        payload = json.loads(self.local.keyring.open(bytes(row[1]), _outbox_aad(upload_id))) if row[1] else {}
        held = tx.execute("SELECT 1 FROM subjects WHERE ref = ?", (ref,)).fetchone() is not None
        own = is_own_copy([str(r[0]) for r in tx.execute("SELECT template_id FROM templates WHERE ref = ?", (ref,))]
                          if held else None, payload)
        if own:
            self.local.drop_subject(tx, ref)
            self.local.erase_alerts(tx, {ref})
        tx.execute("UPDATE outbox SET state = ?, outcome = ?, sealed = ? WHERE upload_id = ?",
                   (OUTBOX_REJECTED, "rejected at review", self._seal(upload_id, {}), upload_id))
        tx.erased = True
        return (ref, str(payload.get("subject_id", ""))) if own else None

    def requeue(self, upload_id: str, payload: dict[str, Any], outcome: str) -> None:
        """Put an uploaded entry back in the queue with ``payload`` (the register no longer holds the upload:
        restored from a backup); it keeps its place and id, and gets the new content's hash."""
        with self.local.transaction() as tx:
            self._requeue(tx, upload_id, payload, outcome)

    def _requeue(self, tx: Transaction, upload_id: str, payload: dict[str, Any], outcome: str) -> None:
        tx.execute("UPDATE outbox SET state = ?, outcome = ?, content_hash = ?, sealed = ? WHERE upload_id = ?",
                   (OUTBOX_PENDING, outcome, content_hash(self.local.keyring, payload),
                    self._seal(upload_id, payload), upload_id))

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
        outcome). Pending (and failed) entries are left to be uploaded. Returns how many entries were scrubbed."""
        done = 0
        for ref in refs:
            rows = tx.execute("SELECT upload_id, state FROM outbox WHERE ref = ? AND state NOT IN (?, ?)",
                              (ref, OUTBOX_PENDING, OUTBOX_FAILED)).fetchall()
            for upload_id, state in rows:
                if state == OUTBOX_REVIEW:
                    tx.execute("UPDATE outbox SET state = ?, outcome = ? WHERE upload_id = ?", (*review, upload_id))
                tx.execute("UPDATE outbox SET sealed = ? WHERE upload_id = ?", (self._seal(upload_id, {}), upload_id))
                done += 1
        if done:
            tx.erased = True
        return done
