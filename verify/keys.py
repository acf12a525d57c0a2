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
its outbox, its journal). The shared PostgreSQL register is not reached: see docs/security.md before retiring a key
that sealed rows there.
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

from biometrics.audit import JOURNAL_FILE
from biometrics.crypto import ENV_KEYRING, ENV_MASTER_KEY, KeyRing
from biometrics.keydir import KEYRING_NAME, KeyLocationError, default_key_dir, default_key_dir_text
from biometrics.replica import REPLICA_FILE
from biometrics.storage import Storage


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


def main(argv: list[str] | None = None) -> int:
    """Run one command."""
    args = build_parser().parse_args(argv)
    key_file, ring, storage = _open(args)
    try:
        if args.command == "rotate":
            old = sorted(ring.keys)
            key_id, n = rotate(key_file, ring, storage, args.batch, args.pause)
            print(f"active key {key_id}; {n} blob(s) re-sealed; older keys {', '.join(old)} seal nothing now "
                  "(run `checkpoint-keys retire` once no backup needs them)")
        elif args.command == "status":
            usage = storage.key_usage()
            for key_id in sorted(set(ring.keys) | set(usage)):
                mark = " (active)" if key_id == ring.active else ("" if key_id in ring.keys else " (NOT IN RING)")
                print(f"{key_id}{mark}: {usage.get(key_id, 0)} blob(s)")
        else:
            with ring_lock(key_file):
                current = KeyRing.load(key_file)
                usage = storage.key_usage()
                unused = [k for k in current.keys if k != current.active and not usage.get(k)]
                if unused:
                    current.keys = {k: v for k, v in current.keys.items() if k not in unused}
                    current.save(key_file)
            print(f"retired {', '.join(unused) or 'nothing'}; {len(current.keys)} key(s) left")
    finally:
        storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
