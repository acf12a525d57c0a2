"""Durable storage of subjects, templates, the change log and the audit chain in SQLite, sealed at rest.

Rows are keyed by a pseudonymous reference (an HMAC of the subject id), never by the document number;
personal data and templates are AES-256-GCM blobs bound to their row (:mod:`biometrics.crypto`). Raw images
are never stored here.

**One transaction for a change and its record.** A change of the register (an enrolment, an erasure) is
written with its entry in the append-only change log (``changes``: a monotonic sequence, never reused) and its
audit record (``audit``: the hash chain of :mod:`biometrics.audit`) in one SQLite transaction
(:meth:`Storage.transaction`), committed (WAL, ``synchronous=FULL``) before the call that asked for it answers.
A crash leaves all of it or none of it; a failed commit uses no sequence number.

**Versioned schema.** ``PRAGMA user_version`` holds the schema version; :data:`MIGRATIONS` bring an older
file up to date at open, idempotently, and a file whose version is newer than this code knows is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biometrics.crypto import KeyRing, SealError
from biometrics.errors import SubjectExists, SubjectNotFound
from biometrics.types import Alert, Modality, SubjectInfo, SubjectRecord, TemplateInfo

log = logging.getLogger(__name__)

_V1 = """
CREATE TABLE IF NOT EXISTS subjects (
    ref TEXT PRIMARY KEY,
    sealed BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    template_id TEXT PRIMARY KEY,
    ref TEXT NOT NULL REFERENCES subjects(ref) ON DELETE CASCADE,
    modality INTEGER NOT NULL,
    finger INTEGER NOT NULL,
    quality REAL NOT NULL,
    sealed BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_ref ON templates(ref);
"""

_V2 = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    hash TEXT NOT NULL,
    entry TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    raised_at TEXT NOT NULL,
    sealed BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_time ON alerts(raised_at);
"""

#: (version, script): applied in order to a file whose ``user_version`` is lower.
MIGRATIONS: tuple[tuple[int, str], ...] = ((1, _V1), (2, _V2))
SCHEMA_VERSION = MIGRATIONS[-1][0]

CHANGE_ENROLLED = "enrolled"
CHANGE_ERASED = "erased"


class SchemaTooNew(Exception):
    """The database was written by a newer version of the service."""


class KeyRingMismatch(Exception):
    """The store was sealed under another key ring than the one configured."""


@dataclass(frozen=True)
class StoredTemplate:
    """A template to store, or as loaded: its serialised bytes and what it is."""

    modality: Modality
    finger: int
    quality: float
    data: bytes
    template_id: str = ""
    created_at: str = ""


@dataclass(frozen=True)
class Change:
    """One entry of the change log: ``kind`` (enrolled, erased) of the subject with pseudonym ``ref``."""

    seq: int
    kind: str
    ref: str


def now() -> str:
    """The current UTC time, RFC 3339, to the millisecond."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _subject_aad(ref: str) -> bytes:
    return f"subject|{ref}".encode()


def _template_aad(ref: str, template_id: str, modality: int, finger: int) -> bytes:
    return f"template|{ref}|{template_id}|{modality}|{finger}".encode()


def _alert_aad(alert_id: str) -> bytes:
    return f"alert|{alert_id}".encode()


def keyring_id(ring: KeyRing) -> str:
    """A public id of a key ring's pseudonym key (HMAC of a constant): tells which ring sealed a store."""
    return hmac.new(ring.pseudonym_key, b"checkpoint keyring id v1", hashlib.sha256).hexdigest()[:16]


class Transaction:
    """An open write transaction on the store (see :meth:`Storage.transaction`)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.erased = False
        self.audit_checkpoints: list[dict[str, Any]] = []  # signed checkpoints appended in it (biometrics.audit)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run one statement inside the transaction."""
        return self.db.execute(sql, params)


def read_store_id(path: Path) -> str:
    """The random id a store file was given when it was created (names its exported audit head)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE name = 'store_id'").fetchone()
    finally:
        db.close()
    if row is None:
        raise ValueError(f"{path} has no store id (a store written by an older version, never opened since)")
    return str(row[0])


def read_audit(path: Path) -> Iterator[str]:
    """The audit entries' JSON of the store file ``path``, opened read-only (no key needed), in sequence order."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        after = -1
        while True:
            rows = db.execute("SELECT seq, entry FROM audit WHERE seq > ? ORDER BY seq LIMIT 5000", (after,)).fetchall()
            if not rows:
                return
            for seq, entry in rows:
                yield entry
                after = seq
    finally:
        db.close()


class Storage:
    """The subjects, templates, change log and audit chain of one checkpoint, in one SQLite file."""

    def __init__(self, path: Path, keyring: KeyRing) -> None:
        self.path = path
        self.keyring = keyring
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA secure_delete=ON")  # erased rows are overwritten with zeros, not left in free pages
        self._db.execute("PRAGMA busy_timeout=10000")
        self._migrate()
        self._check_keyring()

    # -- schema and keys -------------------------------------------------------------------------

    def schema_version(self) -> int:
        """The schema version of the file."""
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = self.schema_version()
                if version > SCHEMA_VERSION:
                    raise SchemaTooNew(f"the database {self.path} has schema version {version}; this server knows "
                                       f"versions up to {SCHEMA_VERSION}: upgrade the server")
                for target, script in MIGRATIONS:
                    if version < target:
                        for statement in filter(str.strip, script.split(";")):
                            self._db.execute(statement)
                        self._db.execute(f"PRAGMA user_version = {target}")
                        log.info("storage %s: schema migrated to version %d", self.path, target)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _check_keyring(self) -> None:
        """Refuse a key ring that did not seal this store (rather than fail on every row, or seal a mix)."""
        mine = keyring_id(self.keyring)
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = 'keyring_id'").fetchone()
            if row is not None and row[0] != mine:
                raise KeyRingMismatch(
                    f"the store {self.path} was sealed under key ring {row[0]}, not the configured one ({mine}): "
                    "point --key-dir at the station's key ring (a new ring cannot open these rows)")
            if row is None:
                sample = self._db.execute("SELECT ref, sealed FROM subjects LIMIT 1").fetchone()
                if sample is not None:
                    try:
                        self.keyring.open(sample[1], _subject_aad(sample[0]))
                    except SealError as exc:
                        raise KeyRingMismatch(f"the store {self.path} does not open with the configured key ring "
                                              f"({exc}): point --key-dir at the station's key ring") from None
                self._db.execute("INSERT OR IGNORE INTO meta(name, value) VALUES ('keyring_id', ?)", (mine,))
            self._db.execute("INSERT OR IGNORE INTO meta(name, value) VALUES ('store_id', ?)", (uuid.uuid4().hex,))
            self.store_id = str(self._db.execute("SELECT value FROM meta WHERE name = 'store_id'").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # -- transactions ----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction: everything done through the yielded object commits together, or not at all.

        The commit is durable (``synchronous=FULL``) when the block exits; an exception rolls it all back.
        After an erasure the WAL is checkpointed and truncated, so no copy of the erased rows stays behind.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            tx = Transaction(self._db)
            try:
                yield tx
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            if tx.erased:
                busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                if busy:
                    log.warning("erasure: the WAL could not be truncated now (another reader); it will be at the "
                                "next checkpoint")

    # -- subjects --------------------------------------------------------------------------------

    def insert_subject(
        self, tx: Transaction, subject_id: str, info: SubjectInfo, templates: Sequence[StoredTemplate]
    ) -> tuple[str, int, list[StoredTemplate]]:
        """Store a new subject, its templates and its change-log entry in ``tx``; (ref, change seq, templates)."""
        ref = self.keyring.pseudonym(subject_id)
        created = now()
        doc = json.dumps({"subject_id": subject_id, **info.__dict__}).encode()
        stored = [
            StoredTemplate(t.modality, t.finger, t.quality, t.data, uuid.uuid4().hex, created) for t in templates
        ]
        try:
            tx.execute("INSERT INTO subjects(ref, sealed, created_at) VALUES (?, ?, ?)",
                       (ref, self.keyring.seal(doc, _subject_aad(ref)), created))
        except sqlite3.IntegrityError as exc:
            raise SubjectExists(f"A subject is already enrolled under {subject_id!r}.") from exc
        tx.db.executemany(
            "INSERT INTO templates(template_id, ref, modality, finger, quality, sealed, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(t.template_id, ref, int(t.modality), t.finger, t.quality,
              self.keyring.seal(t.data, _template_aad(ref, t.template_id, int(t.modality), t.finger)), created)
             for t in stored],
        )
        return ref, self.append_change(tx, CHANGE_ENROLLED, ref), stored

    def erase_subject(self, tx: Transaction, subject_id: str) -> int | None:
        """Erase a subject and its templates in ``tx``; the change seq, or None if there was none."""
        ref = self.keyring.pseudonym(subject_id)
        if tx.execute("DELETE FROM subjects WHERE ref = ?", (ref,)).rowcount == 0:
            return None
        tx.erased = True
        return self.append_change(tx, CHANGE_ERASED, ref)

    def add_subject(
        self, subject_id: str, info: SubjectInfo, templates: Sequence[StoredTemplate]
    ) -> list[StoredTemplate]:
        """Store a new subject in a transaction of its own (tools and tests; the service audits its writes)."""
        with self.transaction() as tx:
            return self.insert_subject(tx, subject_id, info, templates)[2]

    def delete_subject(self, subject_id: str) -> bool:
        """Erase a subject in a transaction of its own; False if there was none."""
        with self.transaction() as tx:
            return self.erase_subject(tx, subject_id) is not None

    def _open_subject(self, ref: str, sealed: bytes) -> tuple[str, SubjectInfo]:
        doc = json.loads(self.keyring.open(sealed, _subject_aad(ref)))
        subject_id = doc.pop("subject_id")
        return subject_id, SubjectInfo(**doc)

    def get_subject(self, subject_id: str) -> SubjectRecord:
        """The subject's personal data and template inventory."""
        loaded = self.load_subject(self.keyring.pseudonym(subject_id))
        if loaded is None:
            raise SubjectNotFound(f"No subject is enrolled under {subject_id!r}.")
        return loaded[0]

    def load_subject(self, ref: str) -> tuple[SubjectRecord, list[StoredTemplate]] | None:
        """The subject with pseudonym ``ref`` and its opened templates, or None if there is none."""
        with self._lock:
            row = self._db.execute("SELECT sealed, created_at FROM subjects WHERE ref = ?", (ref,)).fetchone()
            rows = self._db.execute(
                "SELECT template_id, modality, finger, quality, sealed, created_at FROM templates WHERE ref = ?"
                " ORDER BY created_at, template_id", (ref,)).fetchall()
        if row is None:
            return None
        subject_id, info = self._open_subject(ref, row[0])
        stored = [StoredTemplate(Modality(m), f, q, self.keyring.open(s, _template_aad(ref, tid, m, f)), tid, c)
                  for tid, m, f, q, s, c in rows]
        inventory = tuple(TemplateInfo(t.modality, t.finger, t.quality, t.created_at) for t in stored)
        return SubjectRecord(subject_id, info, row[1], inventory), stored

    def snapshot(self) -> tuple[list[tuple[str, SubjectRecord, list[StoredTemplate]]], int]:
        """Every subject (ref, record, opened templates) and the change-log sequence they reflect, read at once."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                head = self.head_seq()
                subjects = self._db.execute("SELECT ref, sealed, created_at FROM subjects").fetchall()
                templates = self._db.execute(
                    "SELECT ref, template_id, modality, finger, quality, sealed, created_at FROM templates"
                ).fetchall()
            finally:
                self._db.execute("COMMIT")
        by_ref: dict[str, list[StoredTemplate]] = {}
        for ref, tid, modality, finger, quality, sealed, created in templates:
            data = self.keyring.open(sealed, _template_aad(ref, tid, modality, finger))
            by_ref.setdefault(ref, []).append(StoredTemplate(Modality(modality), finger, quality, data, tid, created))
        out = []
        for ref, sealed, created in subjects:
            subject_id, info = self._open_subject(ref, sealed)
            stored = by_ref.get(ref, [])
            inventory = tuple(TemplateInfo(t.modality, t.finger, t.quality, t.created_at) for t in stored)
            out.append((ref, SubjectRecord(subject_id, info, created, inventory), stored))
        return out, head

    def load_all(self) -> Iterator[tuple[SubjectRecord, list[StoredTemplate]]]:
        """Every subject with its opened templates."""
        for _, record, stored in self.snapshot()[0]:
            yield record, stored

    # -- the change log --------------------------------------------------------------------------

    def append_change(self, tx: Transaction, kind: str, ref: str) -> int:
        """Append one change-log entry in ``tx``; its sequence number."""
        cur = tx.execute("INSERT INTO changes(kind, ref, at) VALUES (?, ?, ?)", (kind, ref, now()))
        return int(cur.lastrowid or 0)

    def head_seq(self) -> int:
        """The sequence number of the last change (0: none yet)."""
        with self._lock:
            row = self._db.execute("SELECT MAX(seq) FROM changes").fetchone()
        return int(row[0] or 0)

    def changes_since(self, seq: int, limit: int = 10_000) -> list[Change]:
        """Changes after ``seq``, in order."""
        with self._lock:
            rows = self._db.execute("SELECT seq, kind, ref FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (seq, limit)).fetchall()
        return [Change(int(s), k, r) for s, k, r in rows]

    # -- the audit chain (biometrics.audit writes and reads it) --------------------------------

    def audit_tail(self, tx: Transaction) -> tuple[int, str, int]:
        """(seq, hash) of the last audit entry and the seq of the last signed checkpoint (-1, genesis: none)."""
        row = tx.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        cp = tx.execute("SELECT MAX(seq) FROM audit WHERE type = 'checkpoint'").fetchone()
        return (int(row[0]), str(row[1]), -1 if cp[0] is None else int(cp[0])) if row else (-1, "", -1)

    def append_audit(self, tx: Transaction, seq: int, kind: str, digest: str, entry: str) -> None:
        """Insert one audit entry (its canonical JSON) in ``tx``; a repeated seq fails the transaction."""
        tx.execute("INSERT INTO audit(seq, type, hash, entry) VALUES (?, ?, ?, ?)", (seq, kind, digest, entry))

    def audit_entries(self, after: int = -1) -> Iterator[str]:
        """The audit entries' JSON after ``after``, in sequence order (read in pages)."""
        while True:
            with self._lock:
                rows = self._db.execute("SELECT seq, entry FROM audit WHERE seq > ? ORDER BY seq LIMIT 5000",
                                        (after,)).fetchall()
            if not rows:
                return
            for seq, entry in rows:
                yield entry
                after = seq

    def audit_count(self) -> int:
        """How many audit entries the store holds."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM audit").fetchone()[0])

    # -- alerts ----------------------------------------------------------------------------------

    def insert_alert(self, tx: Transaction, alert: Alert) -> None:
        """Store an alert for officers in ``tx`` (sealed: it names a subject)."""
        doc = json.dumps(alert.__dict__).encode()
        tx.execute("INSERT INTO alerts(alert_id, raised_at, sealed) VALUES (?, ?, ?)",
                   (alert.alert_id, alert.raised_at, self.keyring.seal(doc, _alert_aad(alert.alert_id))))

    def list_alerts(self, limit: int = 50) -> list[Alert]:
        """The newest ``limit`` alerts, newest first."""
        with self._lock:
            rows = self._db.execute("SELECT alert_id, sealed FROM alerts ORDER BY raised_at DESC, alert_id LIMIT ?",
                                    (limit,)).fetchall()
        return [Alert(**json.loads(self.keyring.open(sealed, _alert_aad(aid)))) for aid, sealed in rows]

    # -- keys ------------------------------------------------------------------------------------

    def key_usage(self) -> dict[str, int]:
        """How many sealed blobs each key id seals (key rotation's progress)."""
        usage: dict[str, int] = {}
        with self._lock:
            for table in ("subjects", "templates", "alerts"):
                for key_id, n in self._db.execute(
                        f"SELECT substr(sealed, 3, unicode(substr(sealed, 2, 1))), COUNT(*) FROM {table} GROUP BY 1"):
                    name = bytes(key_id).decode(errors="replace")
                    usage[name] = usage.get(name, 0) + n
        return usage

    def reseal(self, batch: int = 100) -> int:
        """Re-seal up to ``batch`` blobs sealed under a key other than the active one, in one short transaction.

        Each row is updated only if its blob is still the one read (a concurrent delete or re-seal wins);
        returns how many blobs were re-sealed (0: every row is under the active key).
        """
        self.keyring.refresh()
        active = self.keyring.active.encode()
        header = bytes([len(active)]) + active
        done = 0
        with self.transaction() as tx:
            stale = "substr(sealed, 2, ?) != ? LIMIT ?"
            for ref, sealed in tx.execute(f"SELECT ref, sealed FROM subjects WHERE {stale}",
                                          (len(header), header, batch)).fetchall():
                fresh = self.keyring.seal(self.keyring.open(sealed, _subject_aad(ref)), _subject_aad(ref))
                done += tx.execute("UPDATE subjects SET sealed = ? WHERE ref = ? AND sealed = ?",
                                   (fresh, ref, sealed)).rowcount
            for tid, ref, modality, finger, sealed in tx.execute(
                    f"SELECT template_id, ref, modality, finger, sealed FROM templates WHERE {stale}",
                    (len(header), header, max(0, batch - done))).fetchall():
                aad = _template_aad(ref, tid, modality, finger)
                fresh = self.keyring.seal(self.keyring.open(sealed, aad), aad)
                done += tx.execute("UPDATE templates SET sealed = ? WHERE template_id = ? AND sealed = ?",
                                   (fresh, tid, sealed)).rowcount
            for aid, sealed in tx.execute(f"SELECT alert_id, sealed FROM alerts WHERE {stale}",
                                          (len(header), header, max(0, batch - done))).fetchall():
                fresh = self.keyring.seal(self.keyring.open(sealed, _alert_aad(aid)), _alert_aad(aid))
                done += tx.execute("UPDATE alerts SET sealed = ? WHERE alert_id = ? AND sealed = ?",
                                   (fresh, aid, sealed)).rowcount
        return done

    def count(self) -> tuple[int, int]:
        """(subjects, templates) stored."""
        with self._lock:
            subjects = self._db.execute("SELECT COUNT(*) FROM subjects").fetchone()[0]
            templates = self._db.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
        return subjects, templates
