"""``checkpoint-keys``: rotate the data key of a checkpoint's store without downtime.

``checkpoint-keys rotate --data-dir DIR [--key-dir KEYS]`` adds a fresh 256-bit key to the key ring file and
makes it the active one (the file is replaced atomically, mode 0600, under an exclusive lock on
``keyring.json.lock``, re-read inside the lock: two rotations at once both keep their key), then re-seals
every row sealed under an older key,
in small transactions, while the server runs. The running server re-reads the key file when it changes
(before it seals, and when a blob names a key it does not hold), so it seals new rows under the new key at
once and still opens the old rows until they are re-sealed. ``status`` shows how many blobs each key seals;
``retire`` removes keys that seal nothing any more (after a rotation, and after old backups have expired).
A ring given by ``CHECKPOINT_KEYRING``/``CHECKPOINT_MASTER_KEY`` is not a file: these commands refuse it.

The store is one station's SQLite file: ``DATA_DIR/checkpoint.db`` (or, for a station on a shared register, its
journal ``DATA_DIR/journal.db``), or with ``--replica DIR`` an island's ``DIR/replica.db`` (its copy of the register,
its outbox, its journal). The shared PostgreSQL register is not re-sealed, and shares the ring: for a journal.db or
a replica.db, ``retire`` is refused (exit 2) unless ``--store URL`` names the register, whose rows (subjects,
templates, alerts, officers' texts, pending reviews) are then counted too (read-only); see docs/security.md.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from biometrics.audit import JOURNAL_FILE
from biometrics.crypto import ENV_KEYRING, ENV_MASTER_KEY, KeyRing
from biometrics.errors import RegisterUnavailable
from biometrics.keydir import KEYRING_NAME, KeyLocationError, default_key_dir, default_key_dir_text
from biometrics.register import RegisterStorage, StoreRefused, redact
from biometrics.replica import REPLICA_FILE
from biometrics.storage import KeyRingMismatch, Storage

#: The register's tables of sealed blobs: those of every store, and its reviews (a resolved one's blob is empty).
REGISTER_SEALED_TABLES = (*(table for table, _, _ in RegisterStorage._SEALED_TABLES), "reviews")


class Refused(Exception):
    """The command would be unsafe, or cannot count what it must: exit 2 with this message."""


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="checkpoint-keys", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("rotate", "new active key; re-seal every row under it"),
                       ("status", "key ids and how many blobs each seals"),
                       ("retire", "remove keys that seal no row")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--data-dir", type=Path, default=Path("data"),
                       help="the server's data directory: its checkpoint.db (or a register station's journal.db)")
        s.add_argument("--replica", type=Path, metavar="DIR",
                       help="an island's replica directory (the server's --replica DIR): rotate DIR/replica.db, its "
                            "copy of the register, outbox and journal, instead of the data directory's store")
        s.add_argument("--key-dir", type=Path, help=f"the server's key directory (default {default_key_dir_text()})")
        s.add_argument("--key-file", type=Path, help="key ring file (default KEY_DIR/keyring.json)")
        if name != "rotate":
            s.add_argument("--store", metavar="URL",
                           help="the shared register's postgresql:// URL (the server's --store): count its sealed rows "
                                "too, read-only (required by retire on a register station's journal.db or an "
                                "island's replica.db: the register shares their key ring)")
        if name == "rotate":
            s.add_argument("--batch", type=int, default=100, help="blobs re-sealed per transaction")
            s.add_argument("--pause", type=float, default=0.01, help="seconds between transactions")
    return p


@contextmanager
def ring_lock(key_file: Path) -> Iterator[None]:
    """An exclusive lock on ``key_file``'s ``.lock`` companion, for a read-modify-write of the ring."""
    fd = os.open(key_file.with_name(key_file.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _open(args: argparse.Namespace) -> tuple[Path, KeyRing, Storage]:
    if os.environ.get(ENV_KEYRING) or os.environ.get(ENV_MASTER_KEY):
        raise SystemExit(f"checkpoint-keys: the key ring comes from {ENV_KEYRING}/{ENV_MASTER_KEY}; "
                         "rotate by writing a key file (see docs/security.md)")
    try:
        key_file = args.key_file or (args.key_dir or default_key_dir()) / KEYRING_NAME
    except KeyLocationError as exc:
        raise SystemExit(f"checkpoint-keys: {exc}") from None
    db = args.replica / REPLICA_FILE if args.replica else args.data_dir / "checkpoint.db"
    if not args.replica and not db.exists() and (args.data_dir / JOURNAL_FILE).exists():
        db = args.data_dir / JOURNAL_FILE  # a station on a shared register: its journal is its local store
    if not key_file.exists() or not db.exists():
        raise SystemExit(f"checkpoint-keys: no store at {db} with key file {key_file}")
    try:
        ring = KeyRing.load(key_file)
    except KeyLocationError as exc:
        raise SystemExit(f"checkpoint-keys: {exc}") from None
    return key_file, ring, Storage(db, ring)


def rotate(key_file: Path, ring: KeyRing, storage: Storage, batch: int = 100, pause: float = 0.01) -> tuple[str, int]:
    """Add a new active key to the file, then re-seal until no row is under an older key; (key id, blobs).

    The ring is re-read from the file under its lock before the key is added, so a rotation that ran since
    ``ring`` was loaded keeps its key.
    """
    with ring_lock(key_file):
        current = KeyRing.load(key_file)
        key_id = current.add_key()
        current.save(key_file)
    ring.refresh()
    total = 0
    while True:
        n = storage.reseal(batch)
        total += n
        if n == 0:
            return key_id, total
        time.sleep(pause)


def shares_register(storage: Storage) -> bool:
    """Whether ``storage`` is a register station's journal.db or an island's replica.db: its ring also seals the
    shared register's rows, which this file does not hold."""
    return storage.path.name in (JOURNAL_FILE, REPLICA_FILE)


def register_key_usage(url: str, ring: KeyRing) -> dict[str, int]:
    """How many sealed blobs each key id seals in the register at ``url`` (read-only): subjects, templates, alerts,
    officers' texts and pending reviews. Refused when it cannot be read, or does not record this ring (a wrong URL
    would count nothing)."""
    try:
        register = RegisterStorage(url, ring, station="checkpoint-keys", pool_size=1)
    except StoreRefused as exc:
        raise Refused(f"cannot count the register's sealed rows: {exc}") from None
    try:
        register.open_read_only()
        if not register._query("SELECT value FROM meta WHERE name = 'keyring_id'"):
            raise Refused(f"the database at {register} records no key ring: it is not a register this ring sealed")
        # a register of an older schema lacks some of these tables: none of their rows yet
        return register.key_usage([table for table in REGISTER_SEALED_TABLES
                                   if register._query("SELECT to_regclass(?)", (table,))[0][0] is not None])
    except (StoreRefused, RegisterUnavailable, KeyRingMismatch, psycopg.Error) as exc:
        raise Refused(f"cannot count the register's sealed rows at --store {redact(url)}: {exc}") from None
    finally:
        register.close()


def _usage(args: argparse.Namespace, ring: KeyRing, storage: Storage) -> dict[str, int]:
    """The blobs each key seals in the local store, plus the register's when ``--store`` names it."""
    usage = storage.key_usage()
    if args.store:
        for key_id, n in register_key_usage(args.store, ring).items():
            usage[key_id] = usage.get(key_id, 0) + n
    return usage


def main(argv: list[str] | None = None) -> int:
    """Run one command."""
    args = build_parser().parse_args(argv)
    key_file, ring, storage = _open(args)
    try:
        if args.command == "rotate":
            old = sorted(ring.keys)
            key_id, n = rotate(key_file, ring, storage, args.batch, args.pause)
            if shares_register(storage):
                print(f"active key {key_id}; {n} blob(s) re-sealed in {storage.path}; the shared register is not "
                      f"re-sealed and older keys {', '.join(old)} may still seal its rows: keep them in every ring "
                      "(`checkpoint-keys retire --store URL` counts the register's rows; see docs/security.md)")
            else:
                print(f"active key {key_id}; {n} blob(s) re-sealed; older keys {', '.join(old)} seal nothing now "
                      "(run `checkpoint-keys retire` once no backup needs them)")
        elif args.command == "status":
            usage = _usage(args, ring, storage)
            for key_id in sorted(set(ring.keys) | set(usage)):
                mark = " (active)" if key_id == ring.active else ("" if key_id in ring.keys else " (NOT IN RING)")
                print(f"{key_id}{mark}: {usage.get(key_id, 0)} blob(s)")
            if shares_register(storage) and not args.store:
                print(f"(counted: {storage.path} only; the shared register's rows are not: add --store URL)")
        else:
            if shares_register(storage) and not args.store:
                raise Refused(
                    f"{storage.path} belongs to a station (or island) on a shared register, and the register shares "
                    "this key ring: its rows (subjects, templates, alerts, officers' texts, reviews) are not counted "
                    "here, and it is never re-sealed. Never retire a key the register may still need: give the "
                    "register's URL (--store URL, as the server's) so that its rows are counted too, or keep the "
                    "old keys; see docs/security.md")
            with ring_lock(key_file):
                current = KeyRing.load(key_file)
                usage = _usage(args, current, storage)
                unused = [k for k in current.keys if k != current.active and not usage.get(k)]
                if unused:
                    current.keys = {k: v for k, v in current.keys.items() if k not in unused}
                    current.save(key_file)
            print(f"retired {', '.join(unused) or 'nothing'}; {len(current.keys)} key(s) left")
    except Refused as exc:
        print(f"checkpoint-keys: refused: {exc}", file=sys.stderr)
        return 2
    finally:
        storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
