"""Durable storage of subjects and templates in SQLite, sealed at rest.

Rows are keyed by a pseudonymous reference (an HMAC of the subject id), never by the document number;
personal data and templates are AES-256-GCM blobs bound to their row (:mod:`biometrics.crypto`). Every
write is one transaction, committed (WAL, ``synchronous=FULL``) before the call that asked for it answers.
Raw images are never stored here.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from biometrics.crypto import KeyRing
from biometrics.errors import SubjectExists, SubjectNotFound
from biometrics.types import Modality, SubjectInfo, SubjectRecord, TemplateInfo

log = logging.getLogger(__name__)

SCHEMA = """
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


@dataclass(frozen=True)
class StoredTemplate:
    """A template to store, or as loaded: its serialised bytes and what it is."""

    modality: Modality
    finger: int
    quality: float
    data: bytes
    template_id: str = ""
    created_at: str = ""


def now() -> str:
    """The current UTC time, RFC 3339, to the millisecond."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _subject_aad(ref: str) -> bytes:
    return f"subject|{ref}".encode()


def _template_aad(ref: str, template_id: str, modality: int, finger: int) -> bytes:
    return f"template|{ref}|{template_id}|{modality}|{finger}".encode()


class Storage:
    """The subjects and templates of one checkpoint, in one SQLite file."""

    def __init__(self, path: Path, keyring: KeyRing) -> None:
        self.path = path
        self.keyring = keyring
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA secure_delete=ON")  # erased rows are overwritten with zeros, not left in free pages
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def add_subject(
        self, subject_id: str, info: SubjectInfo, templates: Sequence[StoredTemplate]
    ) -> list[StoredTemplate]:
        """Store a new subject and its templates in one transaction; returns the templates with ids."""
        ref = self.keyring.pseudonym(subject_id)
        created = now()
        doc = json.dumps({"subject_id": subject_id, **info.__dict__}).encode()
        stored = [
            StoredTemplate(t.modality, t.finger, t.quality, t.data, uuid.uuid4().hex, created) for t in templates
        ]
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT INTO subjects(ref, sealed, created_at) VALUES (?, ?, ?)",
                    (ref, self.keyring.seal(doc, _subject_aad(ref)), created),
                )
                self._db.executemany(
                    "INSERT INTO templates(template_id, ref, modality, finger, quality, sealed, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (t.template_id, ref, int(t.modality), t.finger, t.quality,
                         self.keyring.seal(t.data, _template_aad(ref, t.template_id, int(t.modality), t.finger)),
                         created)
                        for t in stored
                    ],
                )
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                self._db.execute("ROLLBACK")
                raise SubjectExists(f"A subject is already enrolled under {subject_id!r}.") from exc
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return stored

    def delete_subject(self, subject_id: str) -> bool:
        """Erase a subject and all its templates; False if there was none.

        With ``secure_delete`` the freed pages are zeroed, and the write-ahead log is checkpointed and
        truncated at once, so no copy of the erased rows stays in the database file or its WAL.
        """
        ref = self.keyring.pseudonym(subject_id)
        with self._lock:
            cur = self._db.execute("DELETE FROM subjects WHERE ref = ?", (ref,))
            if cur.rowcount > 0:
                busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                if busy:
                    log.warning("erasure: the WAL could not be truncated now (another reader); it will be at the "
                                "next checkpoint")
        return cur.rowcount > 0

    def _open_subject(self, ref: str, sealed: bytes, created_at: str) -> tuple[str, SubjectInfo, str]:
        doc = json.loads(self.keyring.open(sealed, _subject_aad(ref)))
        subject_id = doc.pop("subject_id")
        return subject_id, SubjectInfo(**doc), created_at

    def get_subject(self, subject_id: str) -> SubjectRecord:
        """The subject's personal data and template inventory."""
        ref = self.keyring.pseudonym(subject_id)
        with self._lock:
            row = self._db.execute("SELECT sealed, created_at FROM subjects WHERE ref = ?", (ref,)).fetchone()
            rows = self._db.execute(
                "SELECT modality, finger, quality, created_at FROM templates WHERE ref = ? ORDER BY created_at",
                (ref,),
            ).fetchall()
        if row is None:
            raise SubjectNotFound(f"No subject is enrolled under {subject_id!r}.")
        _, info, created = self._open_subject(ref, row[0], row[1])
        inventory = tuple(TemplateInfo(Modality(m), f, q, c) for m, f, q, c in rows)
        return SubjectRecord(subject_id, info, created, inventory)

    def load_all(self) -> Iterator[tuple[SubjectRecord, list[StoredTemplate]]]:
        """Every subject with its opened templates (gallery loading at start)."""
        with self._lock:
            subjects = self._db.execute("SELECT ref, sealed, created_at FROM subjects").fetchall()
            templates = self._db.execute(
                "SELECT ref, template_id, modality, finger, quality, sealed, created_at FROM templates"
            ).fetchall()
        by_ref: dict[str, list[StoredTemplate]] = {}
        for ref, tid, modality, finger, quality, sealed, created in templates:
            data = self.keyring.open(sealed, _template_aad(ref, tid, modality, finger))
            by_ref.setdefault(ref, []).append(StoredTemplate(Modality(modality), finger, quality, data, tid, created))
        for ref, sealed, created in subjects:
            subject_id, info, created_at = self._open_subject(ref, sealed, created)
            stored = by_ref.get(ref, [])
            inventory = tuple(TemplateInfo(t.modality, t.finger, t.quality, t.created_at) for t in stored)
            yield SubjectRecord(subject_id, info, created_at, inventory), stored

    def key_usage(self) -> dict[str, int]:
        """How many sealed blobs each key id seals (key rotation's progress)."""
        usage: dict[str, int] = {}
        with self._lock:
            for table in ("subjects", "templates"):
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
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                subjects = self._db.execute(
                    "SELECT ref, sealed FROM subjects WHERE substr(sealed, 2, ?) != ? LIMIT ?",
                    (len(header), header, batch)).fetchall()
                for ref, sealed in subjects:
                    fresh = self.keyring.seal(self.keyring.open(sealed, _subject_aad(ref)), _subject_aad(ref))
                    done += self._db.execute("UPDATE subjects SET sealed = ? WHERE ref = ? AND sealed = ?",
                                             (fresh, ref, sealed)).rowcount
                templates = self._db.execute(
                    "SELECT template_id, ref, modality, finger, sealed FROM templates"
                    " WHERE substr(sealed, 2, ?) != ? LIMIT ?",
                    (len(header), header, max(0, batch - len(subjects)))).fetchall()
                for tid, ref, modality, finger, sealed in templates:
                    aad = _template_aad(ref, tid, modality, finger)
                    fresh = self.keyring.seal(self.keyring.open(sealed, aad), aad)
                    done += self._db.execute("UPDATE templates SET sealed = ? WHERE template_id = ? AND sealed = ?",
                                             (fresh, tid, sealed)).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return done

    def count(self) -> tuple[int, int]:
        """(subjects, templates) stored."""
        with self._lock:
            subjects = self._db.execute("SELECT COUNT(*) FROM subjects").fetchone()[0]
            templates = self._db.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
        return subjects, templates
