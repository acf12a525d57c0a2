"""The shared register of many stations: PostgreSQL (psycopg 3, psycopg_pool), sealed as the embedded store is.

The same rows as :class:`biometrics.storage.Storage` (sealed subjects and templates keyed by pseudonym, the change
log, one audit chain per station, alerts), over a connection pool. What differs:

- **Register writes are serialised across stations.** :meth:`RegisterStorage.lock_register` takes a
  transaction-scoped advisory lock (``pg_advisory_xact_lock``); an enrolment takes it, catches up the change
  log, runs its duplicate search, inserts and appends to the change log, and commits, all inside it. Two desks
  at two stations enrolling the same person at the same moment cannot both pass the duplicate search, and the
  change log's sequence is allocated in commit order (no station can skip a change committed late).
- **NOTIFY carries only a wake-up** (``checkpoint_changes``, payload the sequence number, sent at commit).
  Notifications are lost while a station is disconnected, so :class:`ChangeListener` catches up from the last
  applied sequence after every (re)connection, and polls now and then besides.
- **Versioned schema**: ``meta.schema_version``; migrations run under an advisory lock at start (two stations
  starting together do not race) and are idempotent; a newer schema is refused.
- **Faults are typed**: a malformed URL or a refused login (:class:`StoreRefused`) stops a server at start; an
  unreachable or restarting server (:class:`RegisterUnavailable`) is retried.
- **One process per station name**: a station holds a session-level advisory lock on its name
  (:meth:`RegisterStorage.claim_station`, on a connection of its own, released at close or when its session ends);
  a second process under the same ``--station`` is refused at start (:class:`StationInUse`), instead of forking the
  station's audit chain in the register.

The key ring never enters the database (only a public id of it, to refuse a wrong ring).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import conninfo, pq
from psycopg_pool import ConnectionPool, PoolTimeout

from biometrics.crypto import KeyRing
from biometrics.errors import RegisterUnavailable
from biometrics.event_schema import counters_only, event_tables, local_keys
from biometrics.redact import redact_url, redact_url_and_secret
from biometrics.replica import LEGACY_PAYLOAD_TEXTS, without_texts
from biometrics.sharded import ShardUnavailable
from biometrics.storage import (
    CHANGE_ENROLLED,
    CHANGE_ERASED,
    CHANGE_WITHDRAWN,
    UPLOAD_REF,
    KeyRingMismatch,
    SchemaTooNew,
    SealedStore,
    Transaction,
    apply_migrations,
    keyring_id,
    now,
)

log = logging.getLogger(__name__)

CHANNEL = "checkpoint_changes"
#: Advisory-lock keys (two int4 keys: this service's namespace, then the lock).
LOCK_NAMESPACE = 0x43484B50  # "CHKP"
REGISTER_LOCK = 1
MIGRATION_LOCK = 2
#: Namespace of the session locks on station names (the second key: :func:`station_lock_key`).
STATION_LOCK_NAMESPACE = 0x43484B53  # "CHKS"
#: The register's side of the station's lock connection: TCP keepalives that end the session (and free the name)
#: within about 30 s of the station's machine going away without closing it (power cut, link dropped).
_LOCK_SESSION_OPTIONS = "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subjects (
    ref TEXT PRIMARY KEY,
    sealed BYTEA NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    template_id TEXT PRIMARY KEY,
    ref TEXT NOT NULL REFERENCES subjects(ref) ON DELETE CASCADE,
    modality INTEGER NOT NULL,
    finger INTEGER NOT NULL,
    quality DOUBLE PRECISION NOT NULL,
    sealed BYTEA NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_ref ON templates(ref);
CREATE TABLE IF NOT EXISTS changes (
    seq BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    station TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    station TEXT NOT NULL,
    seq BIGINT NOT NULL,
    type TEXT NOT NULL,
    hash TEXT NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (station, seq)
);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    raised_at TEXT NOT NULL,
    sealed BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_time ON alerts(raised_at)
"""

_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    station TEXT NOT NULL,
    kind TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reviews (
    review_id TEXT PRIMARY KEY,
    upload_id TEXT UNIQUE NOT NULL,
    station TEXT NOT NULL,
    ref TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    resolution TEXT NOT NULL DEFAULT '',
    resolved_at TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS reviews_state ON reviews(state, created_at);
CREATE TABLE IF NOT EXISTS links (
    ref TEXT NOT NULL,
    linked_ref TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (ref, linked_ref)
)
"""

#: Version 3: decision events, their restricted nationality rows, feedback and aggregates (biometrics.event_store).
_SCHEMA_V3 = event_tables("postgresql")

#: Version 4: which register change an upload made (``uploads.seq``: an offline erasure names the enrolment it
#: erases by it), and the change log by pseudonym (the enrolment a subject holds now, the erasures since a change).
_SCHEMA_V4 = """
ALTER TABLE uploads ADD COLUMN IF NOT EXISTS seq BIGINT;
CREATE INDEX IF NOT EXISTS changes_ref ON changes(ref, seq)
"""

#: Version 5: the month of an arrival and the day of a rating keyed by local time (WIB), as the portal's are.
_SCHEMA_V5 = local_keys("postgresql")

#: Version 6: the officers' own texts of audit records, sealed, beside the chains that hold their commitments
#: (as in the embedded store: :data:`biometrics.storage.MIGRATIONS`).
_SCHEMA_V6 = """
CREATE TABLE IF NOT EXISTS audit_texts (
    station TEXT NOT NULL,
    seq BIGINT NOT NULL,
    field TEXT NOT NULL,
    refs TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    PRIMARY KEY (station, seq, field)
)
"""

#: Version 7: ratings kept only as counters (the monthly satisfaction; the ids of the stations' shipments of
#: ratings counted here), the ratings' own rows dropped (as in the embedded store:
#: :data:`biometrics.storage.MIGRATIONS`).
_SCHEMA_V7 = counters_only("postgresql")

#: Version 8: when an island made an upload's write at the station (``uploads.made_at``, RFC 3339 UTC: an offline
#: enrolment's own time, the time an erasure of a document not held was asked for), which the rule of an erasure
#: asked for offline compares (:meth:`RegisterStorage.erase_requested`); NULL for an upload of an older version,
#: whose time is then its change's (or review's), as before.
_SCHEMA_V8 = """
ALTER TABLE uploads ADD COLUMN IF NOT EXISTS made_at TEXT
"""

#: (version, script): applied in order to a register whose ``meta.schema_version`` is lower.
MIGRATIONS: tuple[tuple[int, str], ...] = ((1, _SCHEMA_V1), (2, _SCHEMA_V2), (3, _SCHEMA_V3), (4, _SCHEMA_V4),
                                           (5, _SCHEMA_V5), (6, _SCHEMA_V6), (7, _SCHEMA_V7), (8, _SCHEMA_V8))
SCHEMA_VERSION = MIGRATIONS[-1][0]

_REFUSED_STATES = ("28", "3D")  # invalid authorisation (bad password, unknown role), unknown database
_REFUSED_WORDS = ("password authentication failed", "role \"", "does not exist", "no pg_hba.conf entry",
                  "authentication failed", "permission denied", "invalid ")  # invalid sslmode value, option...


class StoreRefused(Exception):
    """The register's URL is malformed, or the server refused the login: a configuration error, not retried."""


class StationInUse(StoreRefused):
    """Another process runs on the register under this station's name."""


class StationNameTaken(RegisterUnavailable):
    """A running station lost its name's lock and another process holds it now: its changes are refused (a
    transient refusal to the caller, UNAVAILABLE; the operator must stop one of the two)."""


def station_lock_key(station: str) -> int:
    """The second key (a signed 32-bit integer) of the advisory lock on a station's name: from its SHA-256."""
    return int.from_bytes(hashlib.sha256(station.encode()).digest()[:4], "big", signed=True)


def redact(url: str) -> str:
    """``url`` with its password masked, for messages and logs."""
    try:
        parts = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<malformed URL>"
    if parts.get("password"):
        parts["password"] = "***"
    return conninfo.make_conninfo("", **parts)


#: The ``sslmode`` values under which libpq checks the server's certificate: an attacker on the path can neither
#: force a plaintext connection nor answer in the register's place (``verify-full`` also checks its name).
VERIFIED_SSLMODES = ("verify-full", "verify-ca")


def _local_host(host: str) -> bool:
    """Whether libpq's ``host`` (or ``hostaddr``) entry stays on this machine: a Unix socket directory (or none: the
    default socket), ``localhost``, or a loopback address."""
    host = host.strip()
    if not host or host.startswith(("/", "@")) or host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _libpq_options(url: str) -> dict[str, str]:
    """The connection options libpq settles on for ``url``, as it reads them when it connects: the URL's own, then a
    service's (``service=`` or ``PGSERVICE``, from ``PGSERVICEFILE`` or ``~/.pg_service.conf``, then the system's
    ``pg_service.conf``), then the environment (``PGHOST``, ``PGHOSTADDR``, ``PGSSLMODE``...), then its defaults.

    Without a service (none in the URL, no ``PGSERVICE``) they are read here from the URL and the environment, with
    no lookup: an island starting offline must not wait on a resolver that does not answer (``PQconnectStart``
    looks a host name up synchronously, beyond ``connect_timeout``: 10 s a silent nameserver). With a service, libpq
    alone reads its file: a connection is started (non-blocking, but the host name is looked up and a TCP
    connection attempted; no byte is sent, neither TLS nor startup packet) and closed at once. Options libpq cannot
    resolve (an unknown service) raise StoreRefused with its message."""
    parts = {k: str(v) for k, v in conninfo.conninfo_to_dict(url).items() if v is not None}
    if "service" not in parts and not os.environ.get("PGSERVICE"):
        for key, env in (("host", "PGHOST"), ("hostaddr", "PGHOSTADDR"), ("sslmode", "PGSSLMODE"),
                         ("sslrootcert", "PGSSLROOTCERT")):
            if key not in parts and os.environ.get(env):
                parts[key] = os.environ[env]
        return parts
    conn = pq.PGconn.connect_start(url.encode())
    try:
        options = {o.keyword.decode(): o.val.decode(errors="replace") for o in conn.info if o.val is not None}
        error = conn.error_message.decode(errors="replace").strip()
    finally:
        conn.finish()
    if not options:
        raise StoreRefused(f"--store {redact(url)}: {redact_url_and_secret(error, url) or 'libpq refuses it'}")
    return options


def _verified(options: dict[str, str]) -> bool:
    """Whether libpq checks the server's certificate under ``options``: ``verify-full`` or ``verify-ca``, or
    ``require`` with an ``sslrootcert`` file, which libpq then verifies as ``verify-ca`` does."""
    sslmode = options.get("sslmode", "prefer")
    root = options.get("sslrootcert", "")
    return sslmode in VERIFIED_SSLMODES or (sslmode == "require" and root != "system" and bool(root)
                                             and os.path.isfile(root))  # as libpq: no ~


def check_url(url: str) -> str:
    """``url`` if it is a PostgreSQL URL (``postgresql://`` or ``postgres://``) that parses; else StoreRefused,
    whose message masks the password (the driver's own error quotes the URL whole).

    A register on another machine is refused unless the connection verifies its certificate (``sslmode``
    ``verify-full`` or ``verify-ca``, or ``require`` with an ``sslrootcert`` file): libpq's default, ``prefer``,
    falls back to plaintext when the server (or an attacker in its place) declines TLS, and pseudonyms, the change
    log and the audit entries travel in clear, their unsealed columns open to alteration. Loopback and Unix sockets
    stay allowed without TLS. Host, address and sslmode are the ones libpq connects with (:func:`_libpq_options`:
    the URL, a service file's entry, the environment), checked before any byte is sent."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise StoreRefused(f"--store must be a postgresql:// URL, not {redact_url(url.split(':', 1)[0])!r}")
    try:
        conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise StoreRefused(f"--store {redact_url_and_secret(url, url)!r} is not a valid PostgreSQL URL: "
                           f"{redact_url_and_secret(str(exc), url)}") from None
    options = _libpq_options(url)
    # hostaddr, when given, is where libpq connects (host then only names the certificate); each a list
    hosts = options.get("hostaddr") or options.get("host") or ""
    remote = [h for h in hosts.split(",") if not _local_host(h)]
    if remote and not _verified(options):
        service = f" (service {options['service']})" if options.get("service") else ""
        raise StoreRefused(
            f"--store {redact(url)}: the register host {remote[0]}{service} is not this machine, and the connection "
            f"does not verify it (sslmode={options.get('sslmode', 'prefer')}): an attacker on the network could "
            "force it into plaintext or answer in the register's place. Add sslmode=verify-full and "
            "sslrootcert=CA.pem (the CA that signed the register's certificate) to the URL (or to its service's "
            "entry), e.g. ...?sslmode=verify-full&sslrootcert=/etc/checkpoint/register-ca.pem (or sslmode=verify-ca); "
            "see docs/register.md")
    return url


def classify(exc: BaseException, url: str) -> Exception:
    """A driver fault as :class:`StoreRefused` (configuration) or :class:`RegisterUnavailable` (transient)."""
    state = getattr(exc, "sqlstate", None) or ""
    text = str(exc)
    if isinstance(exc, psycopg.OperationalError) and (
            state.startswith(_REFUSED_STATES) or any(w in text for w in _REFUSED_WORDS)):
        return StoreRefused(f"the register at {redact(url)} refused the connection: {text.strip()}")
    return RegisterUnavailable(
        "The central register cannot be reached just now: enrolment and erasure are paused, verification goes "
        f"on. Try again shortly. ({type(exc).__name__}: {text.strip()[:200]})")


def connect_once(url: str, timeout: float = 5.0) -> None:
    """Open and close one connection: raises StoreRefused or RegisterUnavailable with a message naming why."""
    try:
        with psycopg.connect(check_url(url), connect_timeout=max(1, int(timeout))):
            pass
    except psycopg.Error as exc:
        raise classify(exc, url) from None


def read_register_audit(url: str, station: str) -> Iterator[str]:
    """The audit entries' JSON of ``station``'s chain in the register at ``url``, in order (no key needed)."""
    try:
        with psycopg.connect(check_url(url), connect_timeout=5) as conn:
            after = -1
            while True:
                rows = conn.execute("SELECT seq, entry FROM audit WHERE station = %s AND seq > %s ORDER BY seq "
                                    "LIMIT 5000", (station, after)).fetchall()
                if not rows:
                    return
                for seq, entry in rows:
                    yield entry
                    after = seq
    except psycopg.Error as exc:
        raise classify(exc, url) from None


def read_register_erasures(url: str, station: str) -> list[dict[str, Any]]:
    """The records of the other stations' chains in the register at ``url`` that say which subjects were erased
    and which candidates a review was shown (``delete``, ``delete_upload``, ``enrol_upload``): an erasure at any
    station deletes the officers' texts of ``station``'s chain about its subject (no key needed)."""
    try:
        with psycopg.connect(check_url(url), connect_timeout=5) as conn:
            rows = conn.execute("SELECT entry FROM audit WHERE station != %s AND type = 'decision' AND "
                                "(entry::jsonb)->>'kind' IN ('delete', 'delete_upload', 'enrol_upload') "
                                "ORDER BY station, seq", (station,)).fetchall()
    except psycopg.Error as exc:
        raise classify(exc, url) from None
    return [json.loads(entry) for (entry,) in rows]


def read_register_audit_texts(url: str, station: str) -> list[tuple[int, str, str, bytes]]:
    """(seq, field, refs, sealed) of the officers' texts of ``station``'s chain in the register at ``url`` (none in
    a register of a schema before 6)."""
    try:
        with psycopg.connect(check_url(url), connect_timeout=5) as conn:
            if conn.execute("SELECT to_regclass('audit_texts')").fetchone()[0] is None:  # type: ignore[index]
                return []
            return [(int(q), str(f), str(r), bytes(b)) for q, f, r, b in conn.execute(
                "SELECT seq, field, refs, sealed FROM audit_texts WHERE station = %s ORDER BY seq, field",
                (station,)).fetchall()]
    except psycopg.Error as exc:
        raise classify(exc, url) from None


def migrate_register(tx: Transaction, where: str) -> None:
    """Bring the register up to :data:`SCHEMA_VERSION` in ``tx``, under the migration lock (two stations
    starting together do not race); a newer schema raises SchemaTooNew."""
    tx.execute("SELECT pg_advisory_xact_lock(?, ?)", (LOCK_NAMESPACE, MIGRATION_LOCK))
    tx.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = tx.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    apply_migrations(tx.execute, int(row[0]) if row else 0, MIGRATIONS, f"the register {where}",
                     lambda target: tx.execute("INSERT INTO meta(name, value) VALUES ('schema_version', ?) ON "
                                               "CONFLICT (name) DO UPDATE SET value = excluded.value", (str(target),)))


class RegisterStorage(SealedStore):
    """The shared register of the stations, in PostgreSQL (see the module doc)."""

    _KEY_ID_SQL = "substring(sealed from 3 for get_byte(sealed, 1))"

    def __init__(self, url: str, keyring: KeyRing, *, station: str, pool_size: int = 4,
                 connect_timeout: float = 5.0) -> None:
        self.url = check_url(url)
        self.keyring = keyring
        self.station = station
        self.connect_timeout = connect_timeout
        self._pool = ConnectionPool(
            self.url, min_size=1, max_size=pool_size, open=False, timeout=connect_timeout,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout))},
            check=ConnectionPool.check_connection, name=f"register-{station}",
        )
        self._opened = False
        self._station_lock: psycopg.Connection[Any] | None = None  # holds the lock on the station's name
        # one claim at a time: the listener's reclaim after a reconnection and a change's check_station_held both
        # claim a lost name; two at once would each open a session, and the second's lock attempt, refused by the
        # first's, would read as another process holding the name (StationInUse)
        self._claim_lock = threading.RLock()
        self._claims_station = False  # this process runs as the station (claimed its name once): checked at writes
        self._migrated = False  # open() brought the schema to this version: every later write checks it still is
        self.refused = ""  # why the register refuses this process's writes (a schema migrated past it), if it does

    def __str__(self) -> str:
        return redact(self.url)

    def claim_station(self) -> None:
        """Hold the register's session lock on this station's name until :meth:`close` (or until this process's
        session ends): raises :class:`StationInUse`, naming the holder, when another process holds it, or
        RegisterUnavailable. Idempotent while the lock's session lives; a lost session is claimed again. One thread
        claims at a time."""
        with self._claim_lock:
            self._claim_station()

    def _claim_station(self) -> None:
        if self._station_lock is not None and not self._station_lock.closed:
            try:
                self._station_lock.execute("SELECT 1")
                return
            except psycopg.Error:
                log.warning("register %s: the session holding station %r's name was lost; claiming it again",
                            self, self.station)
            self._release_station()
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout)),
                                   application_name=f"checkpoint {self.station} pid {os.getpid()} on "
                                                    f"{socket.gethostname()}"[:63],
                                   options=_LOCK_SESSION_OPTIONS)
        except psycopg.Error as exc:
            raise classify(exc, self.url) from None
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                               (STATION_LOCK_NAMESPACE, station_lock_key(self.station))).fetchone()
            if row is None or not row[0]:
                holder = self._lock_holder(conn)
                raise StationInUse(
                    f"station {self.station!r} is already running on the register {self} ({holder}): two processes "
                    "under one station name would fork its audit chain in the register. Stop the other one, or give "
                    "each station its own --station name")
        except psycopg.Error as exc:
            conn.close()
            raise classify(exc, self.url) from None
        except BaseException:
            conn.close()
            raise
        self._station_lock, self._claims_station = conn, True

    def _lock_holder(self, conn: psycopg.Connection[Any]) -> str:
        """Who holds the lock on this station's name, as far as the register shows it (its application name,
        address and session start need the same role, or pg_read_all_stats)."""
        try:
            row = conn.execute(
                "SELECT a.application_name, a.client_addr::text, a.backend_start FROM pg_locks l JOIN pg_stat_activity "
                "a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
                "AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                (STATION_LOCK_NAMESPACE, station_lock_key(self.station) & 0xFFFFFFFF)).fetchone()
        except psycopg.Error:
            row = None
        if row is None or not row[0]:
            return "held by another session"
        name, address, since = row
        where = f" from {address}" if address else ""
        return f"held by {name!r}{where} since {since:%Y-%m-%d %H:%M:%S %Z}" if since else f"held by {name!r}{where}"

    def _release_station(self) -> None:
        with self._claim_lock:
            self._drop_station_lock()

    def _drop_station_lock(self) -> None:
        if self._station_lock is not None:
            with contextlib.suppress(psycopg.Error):
                self._station_lock.close()
            self._station_lock = None

    def open(self) -> None:
        """Connect, migrate the schema and check the key ring (StoreRefused, RegisterUnavailable, SchemaTooNew)."""
        connect_once(self.url, self.connect_timeout)
        if not self._opened:
            self._pool.open(wait=False)
            self._opened = True
        try:
            with self.transaction(migrating=True) as tx:
                migrate_register(tx, str(self))
                self._check_keyring(tx)
            self._migrated, self.refused = True, ""
            if self.scrub_resolved_reviews():
                log.info("register %s: documents of resolved reviews dropped", self)
        except (SchemaTooNew, KeyRingMismatch):
            self.close()
            raise

    def open_read_only(self) -> None:
        """Connect for reading only (a gallery shard's loader): every transaction is read-only in PostgreSQL, no
        migration runs, and the key ring is only checked against the one the register records (KeyRingMismatch)."""
        self._pool.kwargs["options"] = "-c default_transaction_read_only=on"
        connect_once(self.url, self.connect_timeout)
        if not self._opened:
            self._pool.open(wait=False)
            self._opened = True
        try:
            recorded = self._query("SELECT value FROM meta WHERE name = 'keyring_id'")
            if recorded and recorded[0][0] != keyring_id(self.keyring):
                raise KeyRingMismatch(f"the register {self} was sealed under key ring {recorded[0][0]}, not the one "
                                      "this reader was given")
        except BaseException:
            self.close()
            raise

    def schema_version(self) -> int:
        """The register's schema version."""
        return int(self._query("SELECT value FROM meta WHERE name = 'schema_version'")[0][0])

    def close(self) -> None:
        """Close the pool, and release the station's name (:meth:`claim_station`)."""
        self._release_station()
        if self._opened:
            self._pool.close()
            self._opened = False

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if not self._opened:
            raise RegisterUnavailable("This station has not reached the central register yet; try again shortly.")
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise RegisterUnavailable(
                "The central register cannot be reached just now: enrolment and erasure are paused, verification "
                "goes on. Try again shortly.") from exc
        except psycopg.OperationalError as exc:
            raise classify(exc, self.url) from exc

    @contextmanager
    def transaction(self, *, migrating: bool = False) -> Iterator[Transaction]:
        """One write transaction on a pooled connection; committed when the block exits, rolled back on error.

        A connection lost during the commit raises :class:`RegisterUnavailable`: the change is then not
        acknowledged (it may or may not have been stored; a retry finds it, ``ALREADY_EXISTS``). Once the
        register is open, the schema is checked first (:meth:`_check_schema`), except in ``migrating``, the
        transaction that migrates it (which takes the migration's lock exclusively itself: two stations reopening
        at once, each holding it shared, would deadlock).
        """
        with self._connection() as conn, conn.transaction():
            tx = Transaction(conn, "%s")
            tx.owner = self
            if self._migrated and not migrating:
                self._check_schema(tx)
            yield tx

    def _check_schema(self, tx: Transaction) -> None:
        """In a write transaction: the register is still at the schema this process migrated it to. A station of
        a newer version migrates it at its start while older ones still run (a rolling upgrade); an older one
        writing on would store rows under the old layout (v5 re-keyed the event aggregates from UTC to local
        time). Its writes are refused from then on (:class:`SchemaTooNew`; :attr:`refused` says why). The
        migration's lock is taken shared first: a migration running now (exclusive, until it commits) is waited
        for, so that its new version is read, not the one before it (a review: an older station's write committed
        into the register while a migration held it)."""
        tx.execute("SELECT pg_advisory_xact_lock_shared(?, ?)", (LOCK_NAMESPACE, MIGRATION_LOCK))
        row = tx.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            self.refused = (f"the register {self} was migrated to schema version {version} by a newer station; this "
                            f"station writes version {SCHEMA_VERSION}: upgrade it")
            raise SchemaTooNew(
                "The central register has been upgraded past this station's version: enrolment and erasure are "
                "refused here until the station is upgraded. Verification goes on. Please call the central office.")

    @contextmanager
    def _read(self) -> Iterator[Transaction]:
        with self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield Transaction(conn, "%s")

    def _fetch(self, view: Transaction, sql: str, params: Any) -> list[tuple[Any, ...]]:
        """A bulk read in binary form (bytea as bytes, no hex decoding)."""
        with view.db.cursor(binary=True) as cur:
            cur.execute(sql.replace("?", "%s"), params)
            return cur.fetchall()

    def lock_register(self, tx: Transaction) -> None:
        """Serialise register writers of every station until ``tx`` ends (``pg_advisory_xact_lock``); then, on a
        station that claimed its name (:meth:`claim_station`), check that it still holds it."""
        tx.execute("SELECT pg_advisory_xact_lock(?, ?)", (LOCK_NAMESPACE, REGISTER_LOCK))
        self.check_station_held(tx)

    def check_station_held(self, tx: Transaction) -> None:
        """In a write transaction: this process's session still holds the lock on the station's name (nothing
        watches that session: a backend killed by an operator, an idle timeout or a proxy frees the name while
        the station serves). If it was lost, claim it again (:meth:`claim_station`, idempotent while the session
        lives); if another process has taken it meanwhile, refuse the change (:class:`StationNameTaken`): two
        writers of one station's chain would fork it."""
        if not self._claims_station:
            return  # no name claimed (a tool reading or writing as itself, not a station)
        try:
            self.claim_station()
        except StationInUse as exc:  # another process took it: this station's changes are refused
            log.error("register %s: station %r's name is held by another process now: %s", self, self.station, exc)
            raise StationNameTaken(
                "Another process now runs on the central register under this station's name: changes are "
                "refused here until an operator stops one of them (the station's log names the other). "
                "Verification goes on.") from exc

    def _stale_filter(self) -> str:
        return "substring(sealed from 2 for ?) != ?"

    def erase_subject(self, tx: Transaction, subject_id: str) -> int | None:
        """Erase a subject as every store does (rows, templates, alerts), and what only the register holds of it:
        its links, and its place among the candidates of pending reviews; the change seq, or None."""
        seq = self._erase_held(tx, subject_id)
        if Reviews(self).erase_pending(tx, self.keyring.pseudonym(subject_id)) and seq is None:
            # enrolled offline and waiting for an officer: the stations drop their provisional copy
            tx.erased = True
            seq = self.append_change(tx, CHANGE_ERASED, self.keyring.pseudonym(subject_id))
        return seq

    def _erase_held(self, tx: Transaction, subject_id: str) -> int | None:
        """Erase the subject the register holds (rows, templates, alerts), its links and its place among the
        candidates of pending reviews, leaving the reviews of its document alone; the change seq, or None."""
        seq = super().erase_subject(tx, subject_id)
        Reviews(self).forget(tx, subject_id)
        return seq

    def enrolment_seq(self, tx: Transaction, ref: str) -> int | None:
        """The change that enrolled the subject held under pseudonym ``ref`` now (None: none is held)."""
        row = tx.execute("SELECT MAX(seq) FROM changes WHERE ref = ? AND kind = ? AND EXISTS "
                         "(SELECT 1 FROM subjects WHERE ref = ?)", (ref, CHANGE_ENROLLED, ref)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def erase_seen(self, tx: Transaction, subject_id: str, seen_seq: int, upload_id: str = ""
                   ) -> tuple[int | None, int | None]:
        """Erase the enrolment of ``subject_id`` a station saw when it erased it offline, never a later one.

        The station saw the register up to change ``seen_seq``, and, with ``upload_id``, its own enrolment of the
        subject uploaded as that id (which it may have held before the register's change reached it). The
        subject held now is erased (with everything :meth:`erase_subject` erases) if it was enrolled at or before
        ``seen_seq`` or by that upload; otherwise it is a later enrolment the station never saw and is kept. Of the
        reviews waiting for an officer, only that of ``upload_id`` is closed: another station's enrolment of the
        same document waiting in review is a later enrolment too (it was not in the register the station saw),
        and an officer decides it. Returns (the erased change or None, the
        enrolling change of the subject kept or None)."""
        ref = self.keyring.pseudonym(subject_id)
        held = self.enrolment_seq(tx, ref)
        reviews = Reviews(self)
        if upload_id:  # the station's own enrolment, if still waiting for an officer; no other station's
            reviews.erase_pending(tx, ref, upload_id)
        if held is not None and (held <= seen_seq or (upload_id and reviews.upload_seq(tx, upload_id) == held)):
            return self._erase_held(tx, subject_id), None
        return None, held

    def erase_requested(self, tx: Transaction, subject_id: str, requested_at: str, seen_seq: int,
                        upload_id: str = "") -> tuple[int | None, int | None, bool]:
        """Erase what the register held of ``subject_id``'s document when an island station working offline was
        asked to erase it at ``requested_at`` (the station's clock, RFC 3339 UTC) without holding it: the register
        may have enrolled it after the station's link dropped (docs/island.md, "An erasure asked for offline of
        a document the station does not hold").

        The time of an enrolment is when it was made: an island's offline enrolment its own time, carried with
        its upload (``uploads.made_at``), else its change's (or, waiting for review, its review's) time. The
        subject held now is erased (with everything :meth:`erase_subject` erases) if it was enrolled at or
        before ``requested_at``, at or before ``seen_seq``, or by the station's own upload ``upload_id``;
        otherwise it was enrolled after the request and is kept. The reviews of the document of enrolments made
        at or before the request are closed, each with a ``withdrawn`` change keyed by its upload (only the
        station that uploaded it drops its provisional copy); one made after it is a later enrolment, for an
        officer, and its station's copy stays. When nothing of the document is held (or only reviews closed
        here) and no later review waits, the erasure is recorded against the document number, as an online
        erasure that finds nothing is (:meth:`erase_document`). Returns (the change or None, the enrolling change
        of the subject kept or None, whether the erasure was recorded against the document with nothing to
        erase)."""
        ref = self.keyring.pseudonym(subject_id)
        reviews = Reviews(self)
        closed = reviews.erase_pending(tx, ref, before=requested_at)
        for upload in closed:  # its station withdraws its copy, and no other (a later enrolment may be held)
            self.append_change(tx, CHANGE_WITHDRAWN, UPLOAD_REF + upload)
        held = self.enrolment_seq(tx, ref)
        if held is not None:
            if (held <= seen_seq or self.enrolled_at(tx, held) <= requested_at
                    or (upload_id and reviews.upload_seq(tx, upload_id) == held)):
                return self._erase_held(tx, subject_id), None, False
            return None, held, False
        if reviews.pending_for(tx, ref):  # an enrolment of it made after the request waits for an officer
            return None, None, False
        tx.erased = tx.erased or bool(closed)
        return self.append_change(tx, CHANGE_ERASED, ref), None, not closed

    def enrolled_at(self, tx: Transaction, seq: int) -> str:
        """When the enrolment of change ``seq`` was made: the time an island made it offline (carried with its
        upload), else the change's own time ("" if there is no such change)."""
        row = tx.execute("SELECT COALESCE((SELECT MIN(u.made_at) FROM uploads u WHERE u.seq = c.seq AND "
                         "u.kind = 'enrol'), c.at) FROM changes c WHERE c.seq = ?", (seq,)).fetchone()
        return str(row[0]) if row and row[0] is not None else ""

    def erased_after(self, tx: Transaction, ref: str, seq: int, enrolled_at: str = "") -> int | None:
        """The first change after ``seq`` that erased the document of pseudonym ``ref``, leaving out the erasures
        this station uploaded (an island uploads its writes in order: its own erasures came before the write it
        is uploading) and, given the time ``enrolled_at`` the enrolment being uploaded was made, the erasures
        asked for offline before it (:meth:`erase_requested`: they apply to what was enrolled when they were
        asked); None if there is none."""
        row = tx.execute("SELECT MIN(c.seq) FROM changes c WHERE c.ref = ? AND c.kind = ? AND c.seq > ? AND NOT "
                         "EXISTS (SELECT 1 FROM uploads u WHERE u.seq = c.seq AND u.kind = 'erase' AND "
                         "(u.station = ? OR u.made_at < ?))",
                         (ref, CHANGE_ERASED, seq, self.station, enrolled_at or "")).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def erase_document(self, tx: Transaction, subject_id: str) -> tuple[int, bool]:
        """An erasure asked for at a station online: :meth:`erase_subject`, and when there was nothing to erase, an
        ``erased`` change all the same, recorded against the document number: an enrolment of it still queued at
        an island that has not seen this change is refused when it is uploaded (:mod:`biometrics.island`), and
        an island holding such an enrolment drops its copy when the change reaches it. Returns (the change, whether
        a subject or a pending review was erased)."""
        seq = self.erase_subject(tx, subject_id)
        if seq is not None:
            return seq, True
        return self.append_change(tx, CHANGE_ERASED, self.keyring.pseudonym(subject_id)), False

    def erased_between(self, after: int, upto: int) -> set[str]:
        """The pseudonyms of the subjects erased or withdrawn by the changes after ``after`` up to ``upto``."""
        return {str(r[0]) for r in self._query("SELECT DISTINCT ref FROM changes WHERE seq > ? AND seq <= ? AND "
                                               "kind IN (?, ?)", (after, upto, CHANGE_ERASED, CHANGE_WITHDRAWN))}

    def scrub_resolved_reviews(self) -> int:
        """Drop the documents of reviews resolved by an older version (which kept them); how many."""
        with self.transaction() as tx:
            return int(tx.execute("UPDATE reviews SET sealed = ? WHERE state != 'pending' AND length(sealed) > 0",
                                  (b"",)).rowcount)

    def append_change(self, tx: Transaction, kind: str, ref: str) -> int:
        """Append one change-log entry in ``tx`` and notify the stations (delivered at commit)."""
        seq = super().append_change(tx, kind, ref)
        tx.execute("SELECT pg_notify(?, ?)", (CHANNEL, str(seq)))
        return seq

    def stations(self) -> list[str]:
        """The stations that have an audit chain in the register."""
        return [r[0] for r in self._query("SELECT DISTINCT station FROM audit ORDER BY station")]

    def audit_since(self, station: str, after: int) -> list[tuple[int, str]]:
        """(seq, entry JSON) of ``station``'s chain after ``after``, in order."""
        return [(int(s), e) for s, e in self._query(
            "SELECT seq, entry FROM audit WHERE station = ? AND seq > ? ORDER BY seq", (station, after))]

    def ship_audit(self, entries: list[tuple[int, str, str, str]]) -> None:
        """Copy this station's chain entries (seq, type, hash, entry) into the register, idempotently."""
        if not entries:
            return
        with self.transaction() as tx:
            self.copy_audit(tx, entries)

    def copy_audit(self, tx: Transaction, entries: list[tuple[int, str, str, str]]) -> None:
        """Insert chain entries in ``tx``, skipping those already there; a different entry at a seq is a fork."""
        tx.executemany("INSERT INTO audit(station, seq, type, hash, entry) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (station, seq) DO NOTHING",
                       [(self.station, seq, kind, digest, entry) for seq, kind, digest, entry in entries])
        first, last = entries[0][0], entries[-1][0]
        held = dict(tx.execute("SELECT seq, hash FROM audit WHERE station = ? AND seq BETWEEN ? AND ?",
                               (self.station, first, last)).fetchall())
        forked = [seq for seq, _, digest, _ in entries if held.get(seq) != digest]
        if forked:
            raise RuntimeError(f"station {self.station!r}: the register holds other audit entries at seq {forked[:5]} "
                               "(two processes wrote one station's chain)")


class ChangeListener:
    """LISTEN for change wake-ups on a dedicated connection; catch up after every (re)connection and every
    ``poll_s`` seconds; reconnect with back-off when the register goes away. Runs in a daemon thread.

    ``catch_up`` is called with no argument; ``on_state(connected: bool)`` is told of every change of state.
    A :class:`biometrics.sharded.ShardUnavailable` from ``catch_up`` (a shard of the face gallery, not the
    register) is logged and retried at the next poll, on the same connection: the register is not reported lost.
    """

    def __init__(self, url: str, catch_up: Callable[[], Any], *, poll_s: float = 2.0,
                 on_state: Callable[[bool], None] | None = None, backoff_s: tuple[float, float] = (0.2, 5.0)) -> None:
        self.url = url
        self.catch_up = catch_up
        self.poll_s = poll_s
        self.on_state = on_state or (lambda connected: None)
        self.backoff_s = backoff_s
        self.connected: bool | None = None  # unknown until the first attempt, which is always reported
        self.last_contact = 0.0  # time.monotonic() of the last successful catch-up
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="register-listener", daemon=True)

    def start(self) -> ChangeListener:
        """Start the thread."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread."""
        self._stop.set()
        self._thread.join(timeout)

    def _set(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            log.warning("register %s: %s", redact(self.url), "connected" if connected else "DISCONNECTED")
            self.on_state(connected)

    def _catch_up(self) -> None:
        try:
            self.catch_up()
        except ShardUnavailable as exc:  # a shard of the face gallery, not the register: stay connected, retry
            log.warning("register listener: the face gallery stopped the catch-up (%s); retrying at the next poll", exc)
            return
        self.last_contact = time.monotonic()

    def _run(self) -> None:
        delay = self.backoff_s[0]
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._set(True)
                    self._catch_up()  # whatever was notified while we were away
                    delay = self.backoff_s[0]
                    while not self._stop.is_set():
                        woke = False
                        for _ in conn.notifies(timeout=self.poll_s, stop_after=1):
                            woke = True
                        if woke or not self._stop.is_set():
                            self._catch_up()
            except (psycopg.Error, RegisterUnavailable, OSError) as exc:
                self._set(False)
                log.info("register listener: %s; reconnecting in %.1f s", exc, delay)
            except Exception:
                log.exception("register listener: catch-up failed; retrying")
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self.backoff_s[1])


def _review_aad(review_id: str) -> bytes:
    return f"review|{review_id}".encode()


class Reviews:
    """The register's record of stations' uploads and its adjudication queue (see :mod:`biometrics.drain`)."""

    def __init__(self, register: RegisterStorage) -> None:
        self.register = register

    def upload_outcome(self, tx: Transaction, upload_id: str) -> tuple[str, str] | None:
        """(content hash, outcome) of an upload the register already holds, or None."""
        row = tx.execute("SELECT content_hash, outcome FROM uploads WHERE upload_id = ?", (upload_id,)).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def key_legacy_hashes(self, keyed: Callable[[str], str]) -> int:
        """Replace the plain content hashes an older version of this station recorded for its uploads by their
        keyed form ``keyed(digest)`` (only this station's: a station still on the older version compares its own
        records with its own outbox); how many."""
        with self.register.transaction() as tx:
            rows = tx.execute("SELECT upload_id, content_hash FROM uploads WHERE station = ? AND content_hash != '' "
                              "AND substr(content_hash, 1, 3) != ? FOR UPDATE", (self.register.station, "k1:")
                              ).fetchall()
            tx.executemany("UPDATE uploads SET content_hash = ? WHERE upload_id = ?",
                           [(keyed(digest), upload_id) for upload_id, digest in rows])
        return len(rows)

    def record_upload(self, tx: Transaction, upload_id: str, kind: str, digest: str, outcome: str,
                      seq: int | None = None, made_at: str | None = None) -> None:
        """Remember an upload and what became of it (``seq``: the register change it made, if any; ``made_at``:
        when the station made the write, where the rule of an erasure asked for offline needs it: an offline
        enrolment's own time, the time an erasure of a document not held was asked for), in the transaction that
        did it."""
        tx.execute("INSERT INTO uploads(upload_id, station, kind, content_hash, outcome, at, seq, made_at) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (upload_id, self.register.station, kind, digest, outcome, now(), seq, made_at or None))

    def record_stored(self, tx: Transaction, upload_id: str, seq: int) -> None:
        """Record in ``tx`` that the enrolment of ``upload_id`` (held for review) was stored by change ``seq``."""
        tx.execute("UPDATE uploads SET seq = ? WHERE upload_id = ?", (seq, upload_id))

    def own_erasures(self, seqs: Collection[int]) -> dict[int, str]:
        """Of the changes ``seqs``, the erasures this station uploaded (an island's offline erasures): change ->
        upload id. The join :meth:`RegisterStorage.erased_after` leaves them out by."""
        return self._erasures("upload_id", "station = ?", (self.register.station,), seqs)

    def requested_times(self, seqs: Collection[int]) -> dict[int, str]:
        """Of the changes ``seqs``, the erasures asked for offline of a document not held (any station's, see
        :meth:`RegisterStorage.erase_requested`): change -> the time of the request."""
        return self._erasures("made_at", "made_at IS NOT NULL", (), seqs)

    def _erasures(self, column: str, where: str, params: tuple[Any, ...], seqs: Collection[int]) -> dict[int, str]:
        """change -> ``column`` of the erasure uploads (``where``) that made the changes ``seqs``."""
        seqs = sorted(set(seqs))
        found: dict[int, str] = {}
        for start in range(0, len(seqs), 1000):
            chunk = seqs[start:start + 1000]
            found.update((int(seq), str(value)) for seq, value in self.register._query(
                f"SELECT seq, {column} FROM uploads WHERE kind = 'erase' AND {where} AND seq IN "
                f"({', '.join('?' * len(chunk))})", (*params, *chunk)))
        return found

    def upload_seq(self, tx: Transaction, upload_id: str) -> int | None:
        """The register change an upload made (its enrolment stored, at once or at review), or None: none, or an
        upload an older version recorded (it kept no change)."""
        row = tx.execute("SELECT seq FROM uploads WHERE upload_id = ?", (upload_id,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def add(self, tx: Transaction, upload_id: str, ref: str, document: dict[str, Any]) -> str:
        """Queue an uploaded enrolment for an officer (sealed: it holds personal data and templates)."""
        review_id = uuid.uuid4().hex
        sealed = self.register.keyring.seal(json.dumps(document).encode(), _review_aad(review_id))
        tx.execute("INSERT INTO reviews(review_id, upload_id, station, ref, sealed, created_at) "
                   "VALUES (?, ?, ?, ?, ?, ?)", (review_id, upload_id, self.register.station, ref, sealed, now()))
        return review_id

    def pending(self, limit: int = 50) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(review id, station, created at, document) of the reviews waiting, oldest first."""
        rows = self.register._query("SELECT review_id, station, created_at, sealed FROM reviews WHERE state = 'pending'"
                                    " ORDER BY created_at, review_id LIMIT ?", (limit,))
        return [(rid, station, created, json.loads(self.register.keyring.open(bytes(sealed), _review_aad(rid))))
                for rid, station, created, sealed in rows]

    def take(self, tx: Transaction, review_id: str) -> tuple[str, str, dict[str, Any], str] | None:
        """Lock a pending review for resolution in ``tx``: (station, ref, document, upload id), or None if none is
        pending."""
        row = tx.execute("SELECT station, ref, sealed, upload_id FROM reviews WHERE review_id = ? AND "
                         "state = 'pending' FOR UPDATE", (review_id,)).fetchone()
        if row is None:
            return None
        return (str(row[0]), str(row[1]), json.loads(self.register.keyring.open(bytes(row[2]), _review_aad(review_id))),
                str(row[3]))

    def close(self, tx: Transaction, review_id: str, state: str, resolution: str) -> None:
        """Record a review's resolution (its name: the officer's reason is in the audit record, as a commitment
        beside a text an erasure deletes) in ``tx``; its document (personal data, templates, the candidates'
        document numbers) is dropped: what was decided is in the register and the audit chain."""
        tx.execute("UPDATE reviews SET state = ?, resolution = ?, resolved_at = ?, sealed = ? WHERE review_id = ?",
                   (state, resolution, now(), b"", review_id))

    def erase_pending(self, tx: Transaction, ref: str, upload_id: str = "", before: str = "") -> list[str]:
        """Close in ``tx`` the pending reviews of enrolments under pseudonym ``ref`` (their subject is erased; with
        ``upload_id``, only that upload's; with ``before``, only those of enrolments made at or before that time:
        the time an island made it offline, carried with its upload, else when it was queued): state ``erased``,
        no document; a closed review cannot be resolved, so nothing brings the subject back. Returns the upload
        ids of the reviews closed."""
        made = ("COALESCE((SELECT u.made_at FROM uploads u WHERE u.upload_id = reviews.upload_id), "
                "reviews.created_at)")
        only = (" AND upload_id = ?" if upload_id else "") + (f" AND {made} <= ?" if before else "")
        return [str(r[0]) for r in tx.execute(
            "UPDATE reviews SET state = 'erased', resolution = 'erased before review', resolved_at = ?, sealed = ? "
            f"WHERE ref = ? AND state = 'pending'{only} RETURNING upload_id",
            (now(), b"", ref, *([upload_id] if upload_id else []), *([before] if before else []))).fetchall()]

    def forget(self, tx: Transaction, subject_id: str) -> None:
        """In ``tx`` (an erasure of ``subject_id`` in the register): drop its links, the reason an older version
        kept with its resolved reviews, and take it out of the candidates of every pending review (the document of
        a review names its candidates' document numbers), and drop from every pending review the officer's override
        reason an older version copied into it from an island's upload."""
        ref = self.register.keyring.pseudonym(subject_id)
        tx.execute("DELETE FROM links WHERE ref = ? OR linked_ref = ?", (ref, ref))
        # an older version kept the officer's reason of a resolved review here, in clear: the resolution's name only
        tx.execute("UPDATE reviews SET resolution = state WHERE ref = ? AND state IN ('keep_both', 'link', "
                   "'link_held', 'reject') AND resolution != state", (ref,))
        ring = self.register.keyring
        for review_id, sealed in tx.execute("SELECT review_id, sealed FROM reviews WHERE state = 'pending' "
                                            "FOR UPDATE").fetchall():
            doc = json.loads(ring.open(bytes(sealed), _review_aad(review_id)))
            kept = [c for c in doc.get("candidates", []) if c.get("subject_id") != subject_id]
            # an older version copied the island officer's override reason (a free text about the subject and the
            # duplicates it names) into the document: it goes at the first erasure, whoever it names
            if len(kept) != len(doc.get("candidates", [])) or any(k in doc for k in LEGACY_PAYLOAD_TEXTS):
                self.update(tx, review_id, {**without_texts(doc), "candidates": kept})

    def link(self, tx: Transaction, ref: str, linked_ref: str) -> None:
        """Record that two subjects are one person (two documents), in both directions."""
        tx.executemany("INSERT INTO links(ref, linked_ref, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                       [(ref, linked_ref, now()), (linked_ref, ref, now())])

    def linked(self, ref: str) -> set[str]:
        """The pseudonyms linked to ``ref``."""
        return {r[0] for r in self.register._query("SELECT linked_ref FROM links WHERE ref = ?", (ref,))}

    def count(self, state: str = "pending") -> int:
        """How many reviews are in ``state``."""
        return int(self.register._query("SELECT COUNT(*) FROM reviews WHERE state = ?", (state,))[0][0])

    def pending_for(self, tx: Transaction, ref: str) -> bool:
        """Whether an enrolment under pseudonym ``ref`` waits for an officer (its document number is claimed)."""
        return tx.execute("SELECT 1 FROM reviews WHERE ref = ? AND state = 'pending' LIMIT 1", (ref,)).fetchone() \
            is not None

    def registered(self, tx: Transaction, ref: str) -> bool:
        """Whether the register holds a subject under pseudonym ``ref`` now (read in ``tx``, under its lock)."""
        return tx.execute("SELECT 1 FROM subjects WHERE ref = ?", (ref,)).fetchone() is not None

    def review_state(self, tx: Transaction, upload_id: str) -> str | None:
        """The state of the review of upload ``upload_id`` (pending, keep_both, link, link_held, reject, erased),
        or None: no review."""
        row = tx.execute("SELECT state FROM reviews WHERE upload_id = ?", (upload_id,)).fetchone()
        return None if row is None else str(row[0])

    def review_states(self, upload_ids: Collection[str]) -> dict[str, str]:
        """upload id -> the state of its review (:meth:`review_state`), of those of ``upload_ids`` reviewed."""
        ids = sorted(set(upload_ids))
        found: dict[str, str] = {}
        for start in range(0, len(ids), 1000):
            chunk = ids[start:start + 1000]
            found.update((str(u), str(state)) for u, state in self.register._query(
                f"SELECT upload_id, state FROM reviews WHERE upload_id IN ({', '.join('?' * len(chunk))})", chunk))
        return found

    def kept(self, upload_ids: Collection[str]) -> set[str]:
        """Which of ``upload_ids`` an officer resolved by storing the enrolment (keep both, or link)."""
        if not upload_ids:
            return set()
        marks = ", ".join("?" * len(upload_ids))
        return {r[0] for r in self.register._query(
            f"SELECT upload_id FROM reviews WHERE upload_id IN ({marks}) AND state IN ('keep_both', 'link')",
            tuple(upload_ids))}

    def pending_documents(self, tx: Transaction) -> list[tuple[str, dict[str, Any]]]:
        """(review id, document) of every review waiting, read in ``tx`` (under the register's lock)."""
        rows = tx.execute("SELECT review_id, sealed FROM reviews WHERE state = 'pending' ORDER BY created_at, "
                          "review_id").fetchall()
        return [(rid, json.loads(self.register.keyring.open(bytes(sealed), _review_aad(rid)))) for rid, sealed in rows]

    def update(self, tx: Transaction, review_id: str, document: dict[str, Any]) -> None:
        """Replace a pending review's document in ``tx`` (sealed again)."""
        tx.execute("UPDATE reviews SET sealed = ? WHERE review_id = ?",
                   (self.register.keyring.seal(json.dumps(document).encode(), _review_aad(review_id)), review_id))
