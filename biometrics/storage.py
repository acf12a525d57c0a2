"""Durable storage of subjects, templates, the change log and the audit chain, sealed at rest.

:class:`SealedStore` holds what every back end shares (sealing, the row layout, the change log, the audit
table, alerts); :class:`Storage` is the embedded default, one SQLite file; the shared register of many
stations is PostgreSQL (:mod:`biometrics.register`).

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

**Erasure leaves no copy in the WAL.** After a transaction that erased rows, the WAL is checkpointed and truncated.
A reader beside the server (the portal, ``checkpoint-audit``, a backup) holding a snapshot can block that; the
erasure is then recorded as pending in ``meta`` (:data:`WAL_PENDING`, in the erasure's own transaction) and the
truncation is retried, without waiting, after the following transactions, at close and at the next open, until it
succeeds (:meth:`Storage.erasures_in_wal`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biometrics.crypto import KeyRing, SealError
from biometrics.errors import SubjectExists, SubjectNotFound
from biometrics.event_schema import counters_only, event_tables, local_keys
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
    station TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    station TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    hash TEXT NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (station, seq)
);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    raised_at TEXT NOT NULL,
    sealed BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_time ON alerts(raised_at);
"""

_V3 = """
CREATE TABLE IF NOT EXISTS outbox (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    upload_id TEXT UNIQUE NOT NULL,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    sealed BLOB NOT NULL,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    outcome TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox(state, n);
"""

#: Version 4: decision events, their restricted nationality rows, feedback and aggregates (biometrics.event_store).
_V4 = event_tables("sqlite")
#: Version 5: the month of an arrival and the day of a rating keyed by local time (WIB), as the portal's are.
_V5 = local_keys("sqlite")

#: Version 6: the officers' own texts of audit records (an override's, a review's reason), sealed, beside the chain
#: that holds only their commitments (:mod:`biometrics.audit`), keyed by the subjects they concern: an erasure
#: deletes them.
_V6 = """
CREATE TABLE IF NOT EXISTS audit_texts (
    station TEXT NOT NULL,
    seq INTEGER NOT NULL,
    field TEXT NOT NULL,
    refs TEXT NOT NULL,
    sealed BLOB NOT NULL,
    PRIMARY KEY (station, seq, field)
);
"""

#: Version 7: ratings kept only as counters (the monthly satisfaction, a journal's unshipped deltas), one rating per
#: decision checked by a mark kept only within the rating window; the ratings' own rows dropped.
_V7 = counters_only("sqlite")

#: (version, script): applied in order to a file whose ``user_version`` is lower.
MIGRATIONS: tuple[tuple[int, str], ...] = ((1, _V1), (2, _V2), (3, _V3), (4, _V4), (5, _V5), (6, _V6), (7, _V7))
SCHEMA_VERSION = MIGRATIONS[-1][0]

CHANGE_ENROLLED = "enrolled"
CHANGE_ERASED = "erased"
#: An enrolment uploaded by a station after working offline, rejected at review: stations drop their copy.
CHANGE_WITHDRAWN = "withdrawn"
#: The ref of a withdrawal keyed by the upload it withdraws (``upload:<upload id>``), never by the subject's
#: pseudonym: the register may hold another subject under that document number, which must stay everywhere.
UPLOAD_REF = "upload:"


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
    at: str = ""  # when it was appended (with kind and ref: which change a seq named, see SealedStore.log_position)

    @property
    def identity(self) -> str:
        """What tells this change from another that took its seq (a log restored from a backup): kind, ref, time."""
        return f"{self.kind}|{self.ref}|{self.at}"


#: ``meta`` entry of an SQLite store: how many erasures committed since its WAL was last truncated (absent: none);
#: their rows may still be in the WAL, or in the database file's pages the WAL has not overwritten yet.
WAL_PENDING = "erasures_in_wal"

#: ``meta`` entry naming the store's generation: set when the store is made, and anew by the documented restore of
#: a register from a backup (docs/register.md), so that every station following its log reloads.
GENERATION = "register_generation"


def now() -> str:
    """The current UTC time, RFC 3339, to the millisecond."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def record_of(subject_id: str, info: SubjectInfo, stored: Sequence[StoredTemplate], enrolled_at: str = ""
              ) -> SubjectRecord:
    """The record of a subject with its template inventory (enrolled at ``enrolled_at``, else when its first
    template was stored)."""
    when = enrolled_at or (stored[0].created_at if stored else now())
    return SubjectRecord(subject_id, info, when,
                         tuple(TemplateInfo(t.modality, t.finger, t.quality, t.created_at) for t in stored))


def _subject_aad(ref: str) -> bytes:
    return f"subject|{ref}".encode()


def _template_aad(ref: str, template_id: str, modality: int, finger: int) -> bytes:
    return f"template|{ref}|{template_id}|{modality}|{finger}".encode()


def _alert_aad(alert_id: str) -> bytes:
    return f"alert|{alert_id}".encode()


def outbox_aad(upload_id: str) -> bytes:
    """What binds an island's outbox entry to its upload id (as :mod:`biometrics.replica` seals it)."""
    return f"outbox|{upload_id}".encode()


def audit_text_aad(station: str, seq: int, field: str) -> bytes:
    """What binds an officer's text to its audit record: a sealed text moved to another record does not open."""
    return f"audit-text|{station}|{seq}|{field}".encode()


def open_audit_text(keyring: KeyRing, station: str, seq: int, field: str, sealed: bytes) -> tuple[str, str]:
    """(salt hex, text) of a sealed officer's text (:meth:`SealedStore.put_audit_text`); SealError if it does not
    open (altered, moved from another record, or sealed under a key the ring does not hold)."""
    doc = json.loads(keyring.open(bytes(sealed), audit_text_aad(station, seq, field)))
    return str(doc["salt"]), str(doc["text"])


def keyring_id(ring: KeyRing) -> str:
    """A public id of a key ring's pseudonym key (HMAC of a constant): tells which ring sealed a store."""
    return hmac.new(ring.pseudonym_key, b"checkpoint keyring id v1", hashlib.sha256).hexdigest()[:16]


GalleryEntry = tuple[str, str, bool, list[tuple[int, int, bytes]]]


class Transaction:
    """An open write transaction on a store (see :meth:`SealedStore.transaction`).

    SQL is written with ``?`` placeholders; a back end whose driver uses another style translates them.
    """

    def __init__(self, db: Any, placeholder: str = "?") -> None:
        self.db = db
        self.placeholder = placeholder
        self.erased = False
        self.audit_checkpoints: list[dict[str, Any]] = []  # checkpoints appended or copied in it (biometrics.audit)
        self.audit_entries: list[dict[str, Any]] = []  # every audit entry appended in it (biometrics.audit)
        self.owner: Any = None  # the store whose transaction this is
        self.chain_locked = False  # biometrics.audit holds its chain lock for this transaction

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement inside the transaction; returns a cursor."""
        if self.placeholder != "?":
            sql = sql.replace("?", self.placeholder)
        return self.db.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each row of parameters."""
        if self.placeholder != "?":
            sql = sql.replace("?", self.placeholder)
        if hasattr(self.db, "executemany"):
            self.db.executemany(sql, rows)
        else:
            with self.db.cursor() as cur:
                cur.executemany(sql, rows)


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the store file ``path`` (no key needed, no lock taken: it reads beside a running
    server), closed afterwards."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield db
    finally:
        db.close()


def read_store_id(path: Path) -> str:
    """The random id a store file was given when it was created (names its exported audit head)."""
    with _read_only(path) as db:
        row = db.execute("SELECT value FROM meta WHERE name = 'store_id'").fetchone()
    if row is None:
        raise ValueError(f"{path} has no store id (a store written by an older version, never opened since)")
    return str(row[0])


def read_audit_stations(path: Path) -> list[str]:
    """The stations whose audit chains the store file ``path`` holds ("" for an embedded store's own), opened
    read-only, sorted."""
    with _read_only(path) as db:
        return sorted(str(s) for (s,) in db.execute("SELECT DISTINCT station FROM audit"))


def read_audit_texts(path: Path, station: str = "") -> list[tuple[int, str, str, bytes]]:
    """(seq, field, refs, sealed) of the officers' texts of ``station``'s chain in the store file ``path``, opened
    read-only (none in a file of a version before 6)."""
    with _read_only(path) as db:
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_texts'").fetchone() is None:
            return []
        return [(int(q), str(f), str(r), bytes(b)) for q, f, r, b in db.execute(
            "SELECT seq, field, refs, sealed FROM audit_texts WHERE station = ? ORDER BY seq, field", (station,))]


def read_audit(path: Path, station: str = "") -> Iterator[str]:
    """The audit entries' JSON of the store file ``path``, opened read-only (no key needed), in sequence order."""
    with _read_only(path) as db:
        after = -1
        while True:
            rows = db.execute("SELECT seq, entry FROM audit WHERE station = ? AND seq > ? ORDER BY seq LIMIT 5000",
                              (station, after)).fetchall()
            if not rows:
                return
            for seq, entry in rows:
                yield entry
                after = seq


class SealedStore:
    """What every back end shares: sealed subjects and templates keyed by pseudonym, the change log, alerts and
    the audit table, over SQL written with ``?`` placeholders.

    A back end provides :meth:`transaction` (a write transaction), :meth:`_read` (a consistent read-only
    view), and the few statements that differ between SQL dialects.
    """

    keyring: KeyRing
    store_id: str = ""
    station: str = ""
    #: SQL that extracts the sealing key id of a ``sealed`` blob (differs between dialects).
    _KEY_ID_SQL = "substr(sealed, 3, unicode(substr(sealed, 2, 1)))"
    #: The tables whose ``sealed`` blobs key rotation counts and re-seals: (table, the columns that name a row, the
    #: associated data of a row's blob from those columns' values).
    _SEALED_TABLES: tuple[tuple[str, tuple[str, ...], Callable[..., bytes]], ...] = (
        ("subjects", ("ref",), _subject_aad),
        ("templates", ("template_id", "ref", "modality", "finger"),
         lambda tid, ref, modality, finger: _template_aad(ref, tid, modality, finger)),
        ("alerts", ("alert_id",), _alert_aad),
        ("audit_texts", ("station", "seq", "field"),
         lambda station, seq, field: audit_text_aad(station, int(seq), field)),
    )

    # -- provided by a back end ----------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction: everything done through the yielded object commits together, or not at all."""
        raise NotImplementedError
        yield  # pragma: no cover

    @contextmanager
    def _read(self) -> Iterator[Transaction]:
        """A consistent read-only view (one snapshot) for several statements."""
        raise NotImplementedError
        yield  # pragma: no cover

    def close(self) -> None:
        """Release the connection(s)."""
        raise NotImplementedError

    def lock_register(self, tx: Transaction) -> None:
        """Serialise register writers until ``tx`` ends (a no-op where the transaction already does)."""

    def erasures_in_wal(self) -> int:
        """Erasures whose rows may still be in a write-ahead log this store could not truncate yet (0 where the
        store does not manage its log: PostgreSQL, see docs/security.md, section 4)."""
        return 0

    def _stale_filter(self) -> str:
        return "substr(sealed, 2, ?) != ?"

    def _stale_params(self, header: bytes) -> tuple[Any, ...]:
        return (len(header), header)

    # -- shared ----------------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._read() as view:
            return list(view.execute(sql, params).fetchall())

    def _check_keyring(self, tx: Transaction) -> None:
        """Refuse a key ring that did not seal this store (rather than fail on every row, or seal a mix)."""
        mine = keyring_id(self.keyring)
        row = tx.execute("SELECT value FROM meta WHERE name = 'keyring_id'").fetchone()
        if row is not None and row[0] != mine:
            raise KeyRingMismatch(
                f"the store {self} was sealed under key ring {row[0]}, not the configured one ({mine}): "
                "point --key-dir at the station's key ring (a new ring cannot open these rows)")
        if row is None:
            sample = tx.execute("SELECT ref, sealed FROM subjects LIMIT 1").fetchone()
            if sample is not None:
                try:
                    self.keyring.open(bytes(sample[1]), _subject_aad(sample[0]))
                except SealError as exc:
                    raise KeyRingMismatch(f"the store {self} does not open with the configured key ring "
                                          f"({exc}): point --key-dir at the station's key ring") from None
            tx.execute("INSERT INTO meta(name, value) VALUES ('keyring_id', ?) ON CONFLICT DO NOTHING", (mine,))
        tx.execute("INSERT INTO meta(name, value) VALUES ('store_id', ?) ON CONFLICT DO NOTHING", (uuid.uuid4().hex,))
        tx.execute(f"INSERT INTO meta(name, value) VALUES ('{GENERATION}', ?) ON CONFLICT DO NOTHING",
                   (uuid.uuid4().hex,))
        self.store_id = str(tx.execute("SELECT value FROM meta WHERE name = 'store_id'").fetchone()[0])

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
        inserted = tx.execute("INSERT INTO subjects(ref, sealed, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
                              " RETURNING ref", (ref, self.keyring.seal(doc, _subject_aad(ref)), created)).fetchone()
        if inserted is None:
            raise SubjectExists(f"A subject is already enrolled under {subject_id!r}.")
        self._insert_templates(tx, ref, stored)
        return ref, self.append_change(tx, CHANGE_ENROLLED, ref), stored

    def erase_subject(self, tx: Transaction, subject_id: str) -> int | None:
        """Erase a subject, its templates, the alerts naming it and the officers' texts of audit records about it
        (:meth:`erase_audit_texts`) in ``tx``; the change seq, or None if there was no subject (alerts and texts
        naming it are deleted all the same)."""
        ref = self.keyring.pseudonym(subject_id)
        self.erase_alerts(tx, {ref})
        self.erase_audit_texts(tx, {ref})
        tx.execute("DELETE FROM templates WHERE ref = ?", (ref,))
        if tx.execute("DELETE FROM subjects WHERE ref = ?", (ref,)).rowcount == 0:
            return None
        tx.erased = True
        return self.append_change(tx, CHANGE_ERASED, ref)

    def put_subject(self, tx: Transaction, ref: str, record: SubjectRecord, stored: Sequence[StoredTemplate]) -> None:
        """Write a copy of a subject as another store holds it (same ref, template ids and times), replacing any;
        no change-log entry (a replica follows the register's log, it does not write one)."""
        self.drop_subject(tx, ref)
        doc = json.dumps({"subject_id": record.subject_id, **record.info.__dict__}).encode()
        tx.execute("INSERT INTO subjects(ref, sealed, created_at) VALUES (?, ?, ?)",
                   (ref, self.keyring.seal(doc, _subject_aad(ref)), record.enrolled_at))
        self._insert_templates(tx, ref, stored)

    def _insert_templates(self, tx: Transaction, ref: str, stored: Sequence[StoredTemplate]) -> None:
        """Seal and insert a subject's templates (ids and times as given) in ``tx``."""
        if stored:
            tx.executemany(
                "INSERT INTO templates(template_id, ref, modality, finger, quality, sealed, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(t.template_id, ref, int(t.modality), t.finger, t.quality,
                  self.keyring.seal(t.data, _template_aad(ref, t.template_id, int(t.modality), t.finger)),
                  t.created_at) for t in stored])

    def drop_subject(self, tx: Transaction, ref: str) -> bool:
        """Remove a subject's rows by pseudonym, with no change-log entry; True if there were any."""
        tx.execute("DELETE FROM templates WHERE ref = ?", (ref,))
        gone = tx.execute("DELETE FROM subjects WHERE ref = ?", (ref,)).rowcount > 0
        tx.erased = tx.erased or gone
        return gone

    def add_subject(
        self, subject_id: str, info: SubjectInfo, templates: Sequence[StoredTemplate]
    ) -> list[StoredTemplate]:
        """Store a new subject in a transaction of its own (tools and tests; the service audits its writes)."""
        with self.transaction() as tx:
            self.lock_register(tx)
            return self.insert_subject(tx, subject_id, info, templates)[2]

    def delete_subject(self, subject_id: str) -> bool:
        """Erase a subject in a transaction of its own; False if there was none."""
        with self.transaction() as tx:
            self.lock_register(tx)
            return self.erase_subject(tx, subject_id) is not None

    def _open_subject(self, ref: str, sealed: bytes) -> tuple[str, SubjectInfo]:
        doc = json.loads(self.keyring.open(bytes(sealed), _subject_aad(ref)))
        subject_id = doc.pop("subject_id")
        return subject_id, SubjectInfo(**doc)

    def get_subject(self, subject_id: str) -> SubjectRecord:
        """The subject's personal data and template inventory."""
        loaded = self.load_subject(self.keyring.pseudonym(subject_id))
        if loaded is None:
            raise SubjectNotFound(f"No subject is enrolled under {subject_id!r}.")
        return loaded[0]

    def subject_info(self, subject_id: str) -> SubjectInfo | None:
        """The subject's personal data alone (no templates opened), or None if there is none."""
        ref = self.keyring.pseudonym(subject_id)
        rows = self._query("SELECT sealed FROM subjects WHERE ref = ?", (ref,))
        return self._open_subject(ref, rows[0][0])[1] if rows else None

    def held(self, tx: Transaction, subject_ids: Collection[str]) -> set[str]:
        """Which of ``subject_ids`` are enrolled in this store, read in ``tx``."""
        by_ref = {self.keyring.pseudonym(sid): sid for sid in subject_ids}
        refs, found = list(by_ref), set()
        for i in range(0, len(refs), 500):
            chunk = refs[i:i + 500]
            rows = tx.execute(f"SELECT ref FROM subjects WHERE ref IN ({', '.join('?' * len(chunk))})", chunk)
            found.update(by_ref[r[0]] for r in rows.fetchall())
        return found

    def _open_rows(self, subjects: Sequence[tuple[Any, ...]], templates: Sequence[tuple[Any, ...]]
                ) -> dict[str, tuple[SubjectRecord, list[StoredTemplate]]]:
        """Subject rows (ref, sealed, created) and template rows (ref, id, modality, finger, quality, sealed,
        created), opened: ref -> (record, templates), in the order of ``subjects``."""
        by_ref: dict[str, list[StoredTemplate]] = {}
        for ref, tid, m, f, q, sealed, created in templates:
            data = self.keyring.open(bytes(sealed), _template_aad(ref, tid, m, f))
            by_ref.setdefault(ref, []).append(StoredTemplate(Modality(m), f, q, data, tid, created))
        out: dict[str, tuple[SubjectRecord, list[StoredTemplate]]] = {}
        for ref, sealed, created in subjects:
            subject_id, info = self._open_subject(ref, sealed)
            stored = by_ref.get(ref, [])
            out[ref] = (record_of(subject_id, info, stored, created), stored)
        return out

    _TEMPLATE_COLUMNS = "ref, template_id, modality, finger, quality, sealed, created_at"

    def load_subject(self, ref: str) -> tuple[SubjectRecord, list[StoredTemplate]] | None:
        """The subject with pseudonym ``ref`` and its opened templates, or None if there is none."""
        return self.load_subjects([ref]).get(ref)

    def load_subjects(self, refs: Sequence[str], chunk: int = 500) -> dict[str, tuple[SubjectRecord,
                                                                                  list[StoredTemplate]]]:
        """The subjects among pseudonyms ``refs`` that exist, opened, read ``chunk`` at a time."""
        out: dict[str, tuple[SubjectRecord, list[StoredTemplate]]] = {}
        for start in range(0, len(refs), chunk):
            part = list(refs[start:start + chunk])
            marks = ", ".join("?" * len(part))
            with self._read() as view:
                subjects = view.execute(f"SELECT ref, sealed, created_at FROM subjects WHERE ref IN ({marks})",
                                        part).fetchall()
                templates = view.execute(f"SELECT {self._TEMPLATE_COLUMNS} FROM templates WHERE ref IN ({marks})"
                                         " ORDER BY created_at, template_id", part).fetchall()
            out.update(self._open_rows(subjects, templates))
        return out

    def snapshot(self) -> tuple[list[tuple[str, SubjectRecord, list[StoredTemplate]]], int]:
        """Every subject (ref, record, opened templates) and the change-log sequence they reflect, read at once."""
        with self._read() as view:
            head = int(view.execute("SELECT MAX(seq) FROM changes").fetchone()[0] or 0)
            subjects = view.execute("SELECT ref, sealed, created_at FROM subjects").fetchall()
            templates = view.execute(f"SELECT {self._TEMPLATE_COLUMNS} FROM templates").fetchall()
        return [(ref, record, stored) for ref, (record, stored) in self._open_rows(subjects, templates).items()], head

    def gallery_pages(self, page: int = 20_000) -> Iterator[tuple[int, list[GalleryEntry]]]:
        """What a gallery needs of every subject, in pages, all read in one consistent snapshot: (the change the
        snapshot reflects, [(ref, subject id, watchlist, [(modality, finger, template bytes)])]).

        Leaner than :meth:`snapshot` (no records, no inventories), and streamed: a cold start of a million
        subjects never holds all their sealed rows at once. A reader thread fetches the next page while this one
        opens the current one, so the database's work and the decryption overlap.
        """
        pages: queue.Queue[Any] = queue.Queue(maxsize=2)
        stop = threading.Event()
        with self._read() as view:
            head = int(view.execute("SELECT MAX(seq) FROM changes").fetchone()[0] or 0)

            def read() -> None:
                after = ""
                try:
                    while True:
                        subjects = self._fetch(view, "SELECT ref, sealed FROM subjects WHERE ref > ? ORDER BY ref "
                                                     "LIMIT ?", (after, page))
                        if not subjects:
                            break
                        last = subjects[-1][0]
                        templates = self._fetch(view, "SELECT ref, template_id, modality, finger, sealed FROM "
                                                      "templates WHERE ref > ? AND ref <= ? ORDER BY ref",
                                                (after, last))
                        if stop.is_set():
                            return
                        pages.put((subjects, templates))
                        after = last
                    pages.put(None)
                except BaseException as exc:  # handed to the consumer, raised there
                    pages.put(exc)

            reader = threading.Thread(target=read, name="gallery-pages", daemon=True)
            reader.start()
            try:
                yield from self._open_pages(pages, head)
            finally:  # the reader must be done with the connection before the read transaction ends
                stop.set()
                while reader.is_alive():
                    with contextlib.suppress(queue.Empty):
                        pages.get(timeout=0.1)
                reader.join()

    def _open_pages(self, pages: queue.Queue[Any], head: int) -> Iterator[tuple[int, list[GalleryEntry]]]:
        """Open the sealed rows of each page the reader hands over, in order."""
        first = True
        open_blob = self.keyring.open
        while True:
            item = pages.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                break
            subjects, templates = item
            by_ref: dict[str, list[tuple[int, int, bytes]]] = {}
            for ref, tid, m, f, sealed in templates:
                by_ref.setdefault(ref, []).append((m, f, open_blob(bytes(sealed), _template_aad(ref, tid, m, f))))
            entries = []
            for ref, sealed in subjects:
                doc = json.loads(open_blob(bytes(sealed), _subject_aad(ref)).decode())
                entries.append((ref, doc["subject_id"], bool(doc.get("watchlist")), by_ref.get(ref, [])))
            first = False
            yield head, entries
        if first:
            yield head, []  # an empty gallery still reflects the log's head

    def _fetch(self, view: Transaction, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of a bulk read (a back end may fetch them in a faster form)."""
        return list(view.execute(sql, params).fetchall())

    def load_all(self) -> Iterator[tuple[SubjectRecord, list[StoredTemplate]]]:
        """Every subject with its opened templates."""
        for _, record, stored in self.snapshot()[0]:
            yield record, stored

    # -- the change log --------------------------------------------------------------------------

    def append_change(self, tx: Transaction, kind: str, ref: str) -> int:
        """Append one change-log entry in ``tx``; its sequence number."""
        row = tx.execute("INSERT INTO changes(kind, ref, station, at) VALUES (?, ?, ?, ?) RETURNING seq",
                         (kind, ref, self.station, now())).fetchone()
        return int(row[0])

    def head_seq(self) -> int:
        """The sequence number of the last change (0: none yet)."""
        return int(self._query("SELECT MAX(seq) FROM changes")[0][0] or 0)

    def changes_since(self, seq: int, limit: int = 10_000) -> list[Change]:
        """Changes after ``seq``, in order."""
        rows = self._query("SELECT seq, kind, ref, at FROM changes WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
        return [Change(int(s), k, r, a) for s, k, r, a in rows]

    def log_position(self, seq: int) -> tuple[str, int, str]:
        """(the store's generation, the log's head, the :attr:`Change.identity` of change ``seq`` or "" when the log
        holds none), in one statement: what a follower checks before it follows the log from ``seq``, so that a
        log that went back (a register restored from a backup) is noticed, not followed from the wrong place."""
        row = self._query(f"SELECT (SELECT value FROM meta WHERE name = '{GENERATION}'), (SELECT MAX(seq) FROM "
                          "changes), (SELECT kind || '|' || ref || '|' || at FROM changes WHERE seq = ?)", (seq,))[0]
        return str(row[0] or ""), int(row[1] or 0), str(row[2] or "")

    def refs(self) -> set[str]:
        """The pseudonyms of every stored subject."""
        return {str(r[0]) for r in self._query("SELECT ref FROM subjects")}

    # -- the audit chain (biometrics.audit writes and reads it) --------------------------------

    def audit_tail(self, tx: Transaction) -> tuple[int, str, int]:
        """(seq, hash) of this station's last audit entry and the seq of its last signed checkpoint.

        ``(-1, "", -1)`` when the chain is empty.
        """
        row = tx.execute("SELECT seq, hash FROM audit WHERE station = ? ORDER BY seq DESC LIMIT 1",
                         (self.station,)).fetchone()
        cp = tx.execute("SELECT MAX(seq) FROM audit WHERE station = ? AND type = 'checkpoint'",
                        (self.station,)).fetchone()
        return (int(row[0]), str(row[1]), -1 if cp[0] is None else int(cp[0])) if row else (-1, "", -1)

    def append_audit(self, tx: Transaction, seq: int, kind: str, digest: str, entry: str) -> None:
        """Insert one audit entry (its canonical JSON) in ``tx``; a repeated seq fails the transaction."""
        tx.execute("INSERT INTO audit(station, seq, type, hash, entry) VALUES (?, ?, ?, ?, ?)",
                   (self.station, seq, kind, digest, entry))

    def audit_entries(self, after: int = -1, station: str | None = None) -> Iterator[str]:
        """The audit entries' JSON of ``station`` (default: this one) after ``after``, in order (read in pages)."""
        station = self.station if station is None else station
        while True:
            rows = self._query("SELECT seq, entry FROM audit WHERE station = ? AND seq > ? ORDER BY seq LIMIT 5000",
                               (station, after))
            if not rows:
                return
            for seq, entry in rows:
                yield entry
                after = seq

    def audit_rows(self, after: int, limit: int = 1000) -> list[tuple[int, str, str, str]]:
        """(seq, type, hash, entry) of this station's chain after ``after``, in order."""
        return [(int(q), t, h, e) for q, t, h, e in self._query(
            "SELECT seq, type, hash, entry FROM audit WHERE station = ? AND seq > ? ORDER BY seq LIMIT ?",
            (self.station, after, limit))]

    def get_meta(self, name: str, default: str = "") -> str:
        """A value of the store's ``meta`` table."""
        rows = self._query("SELECT value FROM meta WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else default

    def set_meta(self, tx: Transaction, name: str, value: str) -> None:
        """Set a value of the store's ``meta`` table in ``tx``."""
        tx.execute("INSERT INTO meta(name, value) VALUES (?, ?) "
                   "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, value))

    def audit_prefix_end(self) -> int:
        """The last seq of the unbroken start of this station's chain (-1 when it has no seq 0): where a chain
        with entries missing in the middle (a store restored from a backup, then shipped to) stops being whole."""
        count, last = self._query("SELECT COUNT(*), MAX(seq) FROM audit WHERE station = ?", (self.station,))[0]
        if last is None or int(count) == int(last) + 1:  # whole (the usual case: no search for a gap)
            return -1 if last is None else int(last)
        row = self._query("SELECT MIN(seq) FROM audit a WHERE station = ? AND NOT EXISTS (SELECT 1 FROM audit b "
                          "WHERE b.station = a.station AND b.seq = a.seq + 1)", (self.station,))[0]
        start = self._query("SELECT 1 FROM audit WHERE station = ? AND seq = 0", (self.station,))
        return int(row[0]) if start else -1

    def put_audit_text(self, tx: Transaction, seq: int, field: str, refs: Collection[str], salt: str,
                       text: str) -> None:
        """Store in ``tx`` (the transaction of audit record ``seq`` of this station's chain) the officer's text
        whose commitment the record holds in ``<field>_sha256``, with its salt, sealed and bound to the record,
        keyed by the pseudonyms of the subjects it concerns (an erasure of any of them deletes it)."""
        doc = json.dumps({"salt": salt, "text": text}).encode()
        tx.execute("INSERT INTO audit_texts(station, seq, field, refs, sealed) VALUES (?, ?, ?, ?, ?)",
                   (self.station, seq, field, " ".join(sorted(set(refs))),
                    self.keyring.seal(doc, audit_text_aad(self.station, seq, field))))

    def erase_audit_texts(self, tx: Transaction, refs: Collection[str]) -> int:
        """Delete in ``tx`` the officers' texts of audit records (every station's chain this store holds) that
        concern a subject whose pseudonym is in ``refs``; how many. The records keep their commitments, so the
        chain still verifies; ``checkpoint-audit`` shows those texts as erased."""
        gone = 0
        for ref in refs:  # a pseudonym is hex: no LIKE wildcard in it
            gone += int(tx.execute("DELETE FROM audit_texts WHERE ' ' || refs || ' ' LIKE ?",
                                   (f"% {ref} %",)).rowcount or 0)
        if gone:
            tx.erased = True
        return gone

    def audit_texts(self, station: str | None = None) -> list[tuple[int, str, str, bytes]]:
        """(seq, field, refs, sealed) of the officers' texts of ``station``'s chain (default: this one's)."""
        station = self.station if station is None else station
        return [(int(q), str(f), str(r), bytes(b)) for q, f, r, b in self._query(
            "SELECT seq, field, refs, sealed FROM audit_texts WHERE station = ? ORDER BY seq, field", (station,))]

    def audit_count(self) -> int:
        """How many audit entries this station's chain holds."""
        return int(self._query("SELECT COUNT(*) FROM audit WHERE station = ?", (self.station,))[0][0])

    # -- alerts ----------------------------------------------------------------------------------

    def insert_alert(self, tx: Transaction, alert: Alert) -> None:
        """Store an alert for officers in ``tx`` (sealed: it names a subject)."""
        doc = json.dumps(alert.__dict__).encode()
        tx.execute("INSERT INTO alerts(alert_id, raised_at, sealed) VALUES (?, ?, ?)",
                   (alert.alert_id, alert.raised_at, self.keyring.seal(doc, _alert_aad(alert.alert_id))))

    def erase_alerts(self, tx: Transaction, refs: Collection[str] | Callable[[str], bool]) -> int:
        """Delete in ``tx`` every alert naming a subject whose pseudonym is in ``refs`` (or, if ``refs`` is a test,
        whose subject id it passes); how many were deleted.

        An alert names its subject only inside its sealed blob, so each alert is opened (alerts are few: watchlist
        hits); an alert that no longer opens is left alone (it is reported by key rotation, not guessed at here).
        """
        if not callable(refs) and not refs:
            return 0
        names = refs if callable(refs) else (lambda subject_id: self.keyring.pseudonym(subject_id) in refs)
        doomed = []
        for alert_id, sealed in tx.execute("SELECT alert_id, sealed FROM alerts").fetchall():
            try:
                doc = json.loads(self.keyring.open(bytes(sealed), _alert_aad(alert_id)))
            except SealError:
                log.warning("erasure: alert %s does not open with this key ring; left in place", alert_id)
                continue
            if names(str(doc.get("subject_id", ""))):
                doomed.append((alert_id,))
        if doomed:
            tx.executemany("DELETE FROM alerts WHERE alert_id = ?", doomed)
            tx.erased = True
        return len(doomed)

    def list_alerts(self, limit: int = 50) -> list[Alert]:
        """The newest ``limit`` alerts, newest first."""
        rows = self._query("SELECT alert_id, sealed FROM alerts ORDER BY raised_at DESC, alert_id LIMIT ?", (limit,))
        return [Alert(**json.loads(self.keyring.open(bytes(sealed), _alert_aad(aid)))) for aid, sealed in rows]

    # -- keys ------------------------------------------------------------------------------------

    def key_usage(self, tables: Sequence[str] | None = None) -> dict[str, int]:
        """How many sealed blobs each key id seals (key rotation's progress), over every table of
        :attr:`_SEALED_TABLES` (or the named ``tables``; an empty blob, a resolved review's, seals nothing)."""
        usage: dict[str, int] = {}
        for table in tables if tables is not None else [t for t, _, _ in self._SEALED_TABLES]:
            for key_id, n in self._query(f"SELECT {self._KEY_ID_SQL}, COUNT(*) FROM {table} "
                                         "WHERE length(sealed) > 0 GROUP BY 1"):
                name = bytes(key_id).decode(errors="replace")
                usage[name] = usage.get(name, 0) + n
        return usage

    def reseal(self, batch: int = 100) -> int:
        """Re-seal up to ``batch`` blobs sealed under a key other than the active one, in one short transaction.

        Each row is updated only if its blob is still the one read (a concurrent delete or re-seal wins);
        returns how many blobs were re-sealed (0: every row of :attr:`_SEALED_TABLES` is under the active key).
        """
        self.keyring.refresh()
        active = self.keyring.active.encode()
        header = bytes([len(active)]) + active
        stale, params = self._stale_filter(), self._stale_params(header)
        done = 0
        with self.transaction() as tx:
            for table, columns, aad_of in self._SEALED_TABLES:
                match = " AND ".join(f"{c} = ?" for c in columns)
                for *key, sealed in tx.execute(f"SELECT {', '.join(columns)}, sealed FROM {table} WHERE {stale} "
                                               "LIMIT ?", (*params, max(0, batch - done))).fetchall():
                    sealed, aad = bytes(sealed), aad_of(*key)
                    fresh = self.keyring.seal(self.keyring.open(sealed, aad), aad)
                    done += tx.execute(f"UPDATE {table} SET sealed = ? WHERE {match} AND sealed = ?",
                                       (fresh, *key, sealed)).rowcount
        return done

    def count(self) -> tuple[int, int]:
        """(subjects, templates) stored."""
        with self._read() as view:
            subjects = view.execute("SELECT COUNT(*) FROM subjects").fetchone()[0]
            templates = view.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
        return int(subjects), int(templates)


def apply_migrations(execute: Any, version: int, migrations: Sequence[tuple[int, str]], where: str,
                     set_version: Any) -> None:
    """Run each script of ``migrations`` newer than ``version`` through ``execute`` (one statement at a time),
    then ``set_version(target)``; a ``version`` newer than the last migration raises SchemaTooNew."""
    latest = migrations[-1][0]
    if version > latest:
        raise SchemaTooNew(f"{where} has schema version {version}; this server knows versions up to {latest}: "
                           "upgrade the server")
    for target, script in migrations:
        if version < target:
            for statement in filter(str.strip, script.split(";")):
                execute(statement)
            set_version(target)
            log.info("%s: schema migrated to version %d", where, target)


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the SQLite file open on ``db`` up to :data:`SCHEMA_VERSION` (inside the caller's transaction)."""
    apply_migrations(db.execute, int(db.execute("PRAGMA user_version").fetchone()[0]), MIGRATIONS,
                     f"the database {path}", lambda target: db.execute(f"PRAGMA user_version = {target}"))


class Storage(SealedStore):
    """The embedded default: one station's subjects, templates, change log and audit chain in one SQLite file."""

    #: How long a statement waits for a lock held by another connection (ms).
    BUSY_TIMEOUT_MS = 10_000
    #: How long the WAL truncation right after an erasure (and at open) waits for readers to finish (ms).
    ERASURE_WAIT_MS = 1_000
    #: How long the truncation at close waits for readers (ms); a shutdown should not hang on a reader.
    CLOSE_WAIT_MS = 5_000
    #: Between two retries of a pending truncation after ordinary transactions (s); a retry never waits.
    WAL_RETRY_S = 1.0
    #: An island's outbox (its offline enrolments and erasures, ``--replica DIR``) is sealed too: rotated with the rest.
    _SEALED_TABLES = (*SealedStore._SEALED_TABLES, ("outbox", ("upload_id",), outbox_aad))

    def __init__(self, path: Path, keyring: KeyRing, *, station: str = "") -> None:
        self.path = path
        self.keyring = keyring
        self.station = station
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._wal_pending = 0  # erasures not yet out of the WAL (mirrors meta WAL_PENDING)
        self._wal_retry_at = 0.0  # time.monotonic() before which a pending truncation is not retried
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._open()
        except sqlite3.Error as exc:  # a file it cannot write, a damaged file: named, not a traceback
            with contextlib.suppress(AttributeError, sqlite3.Error):
                self._db.close()
            from biometrics.datadir import DataDirUnusable, describe

            raise DataDirUnusable(f"cannot open the database {describe(path)}: {exc}") from exc

    def _open(self) -> None:
        """Set the connection up, migrate the file and check its key ring (and the erasures left in its WAL)."""
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA secure_delete=ON")  # erased rows are overwritten with zeros, not left in free pages
        # Each time the WAL starts over (after a checkpoint that copied all of it), the file is cut after the new
        # frames, so old frames past them (rows since erased among them) do not linger in it.
        self._db.execute("PRAGMA journal_size_limit=0")
        self._db.execute(f"PRAGMA busy_timeout={self.BUSY_TIMEOUT_MS}")
        self._migrate()
        with self.transaction() as tx:
            self._check_keyring(tx)
            row = tx.execute("SELECT value FROM meta WHERE name = ?", (WAL_PENDING,)).fetchone()
        if row is not None:  # erasures a reader kept in the WAL before the last stop
            self._wal_pending = int(row[0])
            if not self._truncate_wal(self.ERASURE_WAIT_MS):
                log.warning("erasure: %s still holds %d erasure(s) in its WAL (a reader holds a snapshot); retried "
                            "after the next writes", self.path, self._wal_pending)

    def __str__(self) -> str:
        return str(self.path)

    def schema_version(self) -> int:
        """The schema version of the file."""
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self.transaction() as tx:
            before = self.schema_version()
            migrate(self._db, self.path)
            # v7 dropped the ratings' rows (zeroed in the file by secure_delete): the WAL is truncated after it, as
            # after an erasure, so that no frame of them stays in it.
            tx.erased = before < 7 <= self.schema_version() and before >= 4

    def close(self) -> None:
        """Close the database, truncating the WAL first if erasures are still in it (waiting for readers up to
        :attr:`CLOSE_WAIT_MS`; if one still holds it, the next open retries)."""
        with self._lock:
            if self._wal_pending:
                with contextlib.suppress(sqlite3.Error):
                    if not self._truncate_wal(self.CLOSE_WAIT_MS):
                        log.warning("erasure: %s closed with %d erasure(s) still in its WAL (a reader held it); the "
                                    "next start truncates it", self.path, self._wal_pending)
            self._db.close()

    def erasures_in_wal(self) -> int:
        """Erasures committed since the WAL was last truncated (0: no erased row can be left in the WAL)."""
        return self._wal_pending

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction (``BEGIN IMMEDIATE``: it also serialises writers); durable when the block exits.

        An exception rolls it all back. After an erasure the WAL is checkpointed and truncated, so no copy of the
        erased rows stays behind; when a reader prevents it the erasure stays pending (in ``meta``, with the
        erasure) and the truncation is retried after the following transactions (at most every
        :attr:`WAL_RETRY_S`, without waiting), at close and at the next open.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            tx = Transaction(self._db)
            tx.owner = self
            try:
                yield tx
                if tx.erased:
                    tx.execute("INSERT INTO meta(name, value) VALUES (?, '1') ON CONFLICT (name) DO UPDATE "
                               "SET value = CAST(value AS INTEGER) + 1", (WAL_PENDING,))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            if tx.erased:
                self._wal_pending += 1
                if not self._truncate_wal(self.ERASURE_WAIT_MS):
                    log.warning("erasure: the WAL of %s could not be truncated now (a reader holds a snapshot); "
                                "retried after the next writes and at close (%d erasure(s) pending)", self.path,
                                self._wal_pending)
            elif self._wal_pending and time.monotonic() >= self._wal_retry_at:
                self._truncate_wal(0)

    def _truncate_wal(self, wait_ms: int) -> bool:
        """Checkpoint the WAL into the database file and truncate it, waiting up to ``wait_ms`` for readers; on
        success clear the pending erasures (True). Called under the lock, outside a transaction."""
        self._db.execute(f"PRAGMA busy_timeout={int(wait_ms)}")
        try:
            busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.OperationalError as exc:  # another connection writing: as busy
            log.debug("erasure: WAL checkpoint of %s deferred (%s)", self.path, exc)
            busy = 1
        finally:
            self._db.execute(f"PRAGMA busy_timeout={self.BUSY_TIMEOUT_MS}")
        if busy:
            self._wal_retry_at = time.monotonic() + self.WAL_RETRY_S
            return False
        # Every frame is in the database file (erased rows zeroed there by secure_delete) and the WAL is empty.
        # Clearing the mark writes the meta page only: no erased row goes back into the WAL.
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM meta WHERE name = ?", (WAL_PENDING,))
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:  # the WAL is truncated; the mark stays, and the next retry clears it
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            log.warning("erasure: the WAL of %s is truncated but its pending mark could not be cleared (%s)",
                        self.path, exc)
            self._wal_retry_at = time.monotonic() + self.WAL_RETRY_S
            return False
        if self._wal_retry_at:  # it had been deferred: say that it is done
            log.info("erasure: the WAL of %s is truncated at last; %d erasure(s) left no copy in it", self.path,
                     self._wal_pending)
        self._wal_pending, self._wal_retry_at = 0, 0.0
        return True

    @contextmanager
    def _read(self) -> Iterator[Transaction]:
        with self._lock:
            if self._db.in_transaction:  # inside this thread's own write transaction
                yield Transaction(self._db)
                return
            self._db.execute("BEGIN")
            try:
                yield Transaction(self._db)
            finally:
                self._db.execute("COMMIT")
