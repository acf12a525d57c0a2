"""``checkpoint-audit``: prove the audit chain, its signatures and its length; show or export its records.

``checkpoint-audit verify --data-dir DIR`` walks the chain in ``DIR/checkpoint.db`` with the exported public key
(``KEY_DIR/audit-signing.pub``, or ``--public-key`` for a copy kept off the station) and checks it against the
last signed head the server exported (``KEY_DIR/audit-heads/<store id>.json``, or ``--expected-head`` for a copy
kept off the station) and ``--min-records``. It exits 0 when every link, hash and checkpoint signature holds and
the chain is as long as the head proves; otherwise it names the first record altered, removed or reordered, or
the truncation, and exits 1. Without ``--expected-head``, a database whose store id has no head while
``KEY_DIR/audit-heads`` holds heads of other stores (or whose store id is malformed) is SUSPECT and exits 1: the
store id is read from the database, so it may have been changed to escape the comparison. ``--log FILE`` checks
a JSON-lines export instead. ``checkpoint-audit show`` prints records (pseudonymous refs only); ``export --out
FILE`` writes the chain as JSON lines, with the officers' texts the key ring opens in clear (and their salts): the
file is written whole, mode 0600 whatever the umask, and a symbolic link at FILE is refused.

A station on a shared register (``checkpoint-server --store URL --station NAME``) has two copies of its chain and
exports two heads (:mod:`biometrics.audit`): ``--store URL --station NAME`` reads the register's copy, checked
against ``KEY_DIR/audit-heads/station-<name>.json`` (what the register was known to hold: TAMPERED, exit 1, if it no
longer does); when it verifies but the station's journal head (``station-<name>.journal.json``) is later than its
last record, the records after it are signed but not shipped yet (a link down at shutdown): NOT YET SHIPPED, exit
3, verify the journal. ``--data-dir DIR`` holding the station's ``journal.db`` reads that journal, checked against
both heads. Exit codes: 0 intact, 1 TAMPERED or SUSPECT, 2 a source, key or head that cannot be read, 3 NOT YET
SHIPPED.

Officers' texts (an override's or a review's reason) are not in the chain, only their commitments
(:mod:`biometrics.audit`): with the key ring (``KEY_DIR/keyring.json``, ``--key-file``, or the environment, as the
server finds it) ``verify`` checks every text the store still holds against its commitment (an altered, moved or
added text is TAMPERED; a missing one is counted as erased if an erasure of a subject it concerns is recorded, in
the chain or, on a register, in any station's chain there, and is TAMPERED if none is), and ``show`` and ``export``
print each text, or ``(erased)``. An export carries the texts beside the entries (``officer_texts``, outside their
hashes), so ``verify --log`` checks them too; an export is a copy no later erasure reaches.

An island (``checkpoint-server --store URL --station NAME --replica DIR``) keeps its chain and the texts of the
records it made offline in ``DIR/replica.db``, not in a ``checkpoint.db``: ``--replica DIR`` reads them there
(``--station`` names the island, by default the only station whose chain the file holds; a record naming another
station is SUSPECT), checked against ``KEY_DIR/audit-heads/station-<name>.json`` and ``station-<name>.journal.json``.
A text of a record the island wrote online is kept by the register (counted so); one missing from an offline record
counts as erased only if the island's chain records an erasure of a subject it concerns, or, with ``--store URL``
beside ``--replica``, any station's chain in the register does. Like every command here it opens the file
read-only and takes no lock: it runs beside the station's server.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from biometrics.audit import (
    ANCHOR_DIR,
    ERASED,
    EXPORTED_TEXTS,
    JOURNAL_FILE,
    NOT_OPENED,
    PUBLIC_KEY_NAME,
    STORE_ID,
    HeldText,
    anchor_path,
    canonical,
    check_head,
    check_texts,
    commitments,
    held_elsewhere,
    journal_anchor_path,
    load_head,
    load_public_key,
    other_store_heads,
    parse_lines,
    read_entries,
    verify_entries,
)
from biometrics.crypto import KeyRing, SealError
from biometrics.keydir import KEYRING_NAME, KeyLocationError, default_key_dir, default_key_dir_text
from biometrics.replica import REPLICA_FILE
from biometrics.storage import open_audit_text, read_audit, read_audit_texts, read_store_id
from verify.audit_replica import island_station, misnamed, replica_store

Entries = list[tuple[int, dict[str, Any] | None, str]]

#: ``verify --store``: what the register's copy of a station's chain says when it verifies, but the station's
#: journal holds a later signed head (records not shipped yet: a link down at the station's shutdown), and its exit
#: code. Not TAMPERED: the register's copy holds every checkpoint the register was ever known to hold
#: (``station-<name>.json``); the records after them are proven by the journal, verified at the station.
NOT_SHIPPED = "NOT YET SHIPPED"
EXIT_NOT_SHIPPED = 3


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="checkpoint-audit", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("verify", "prove the chain, the checkpoint signatures and its length"),
                       ("show", "print records"), ("export", "write the chain as JSON lines")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--data-dir", type=Path, default=Path("data"), help="the server's data directory")
        s.add_argument("--log", type=Path, help="a JSON-lines log (an export) instead of the store's chain")
        s.add_argument("--replica", type=Path, metavar="DIR",
                       help="an island's replica directory (the server's --replica DIR): read the chain and the "
                            "officers' texts in DIR/replica.db; with --store, the register's erasures count too")
        s.add_argument("--store", metavar="URL",
                       help="a shared register (postgresql://...): read --station's chain (verify exits 3 when it "
                            "verifies but the station's journal signed records not shipped to it yet)")
        s.add_argument("--station", default="",
                       help="with --store: the station whose chain to read; with --replica (or a --data-dir "
                            "holding a station's journal.db): the station's name (default: the only station whose "
                            "chain the file holds)")
        s.add_argument("--key-dir", type=Path, help=f"the server's key directory (default {default_key_dir_text()})")
        s.add_argument("--key-file", type=Path,
                       help=f"the key ring that opens the officers' texts (default KEY_DIR/{KEYRING_NAME}, or "
                            "CHECKPOINT_KEYRING / CHECKPOINT_MASTER_KEY as the server reads them)")
        if name == "verify":
            s.add_argument("--public-key", type=Path,
                           help=f"the chain's public key (default KEY_DIR/{PUBLIC_KEY_NAME}); "
                                "prefer a copy kept away from the station")
            s.add_argument("--expected-head", type=Path,
                           help="a signed head the server exported (default KEY_DIR/audit-heads/<store id>.json "
                                "if present); "
                                "the chain must still hold it")
            s.add_argument("--min-records", type=int, default=0, help="the chain must hold at least N records")
        elif name == "show":
            s.add_argument("--last", type=int, default=0, help="only the last N records")
            s.add_argument("--kind", help="only decisions of this kind (enrol, verify, identify, delete...)")
            s.add_argument("--json", action="store_true",
                           help="one JSON entry per line, as stored (officers' texts beside it, officer_texts)")
        else:
            s.add_argument("--out", type=Path, required=True,
                           help="the JSON-lines file to write (mode 0600; a symbolic link is refused): it holds the "
                                "officers' texts in clear, with their salts; keep it as you keep the key ring")
    return p


def _resolve(args: argparse.Namespace) -> None:
    """Check the sources named together; set ``args.journal`` to the file of a station's journal read (an island's
    ``--replica DIR``, or a ``--data-dir`` holding a ``journal.db``), and ``args.station`` to its station's name."""
    if args.replica and args.log:
        raise ValueError("--replica and --log name two chains: give one")
    args.journal = None  # the store file of a station's own journal on a register, when that is what is read
    if args.replica:
        args.journal = replica_store(args.replica)
    elif not (args.log or args.store or (args.data_dir / "checkpoint.db").exists()) \
            and (args.data_dir / JOURNAL_FILE).exists():
        args.journal = args.data_dir / JOURNAL_FILE
    if args.journal is not None:
        args.station = island_station(args.journal, args.station)


def _key_dir(args: argparse.Namespace) -> Path:
    """``--key-dir``, else the default, resolved only where a key or head is looked for there: a
    :class:`~biometrics.keydir.KeyLocationError` (which says to give ``--key-dir``) when there is none."""
    return args.key_dir or default_key_dir()


def _entries(args: argparse.Namespace) -> Entries:
    if args.log:
        return list(read_entries(args.log))
    if args.journal is not None:
        return list(parse_lines(read_audit(args.journal, args.station)))
    if args.store:
        from biometrics.register import read_register_audit

        if not args.station:
            raise FileNotFoundError("--store needs --station NAME (each station has its own chain)")
        return list(parse_lines(read_register_audit(args.store, args.station)))
    db = args.data_dir / "checkpoint.db"
    if not db.exists():
        island = args.data_dir / REPLICA_FILE
        raise FileNotFoundError(f"no store at {db}" + (f" ({island} is an island's: --replica {args.data_dir})"
                                                      if island.exists() else ""))
    return list(parse_lines(read_audit(db)))


#: source -> (what ``show`` prints for a text another store keeps, what ``verify`` counts such texts as).
ELSEWHERE = {
    "register": ("(kept by the station that wrote it, or erased there)", "kept by the stations that wrote them"),
    "replica": ("(kept by the register, or erased there)", "kept by the register"),
}


class Texts:
    """The officers' texts of the chain read (none for an export: its entries carry them): opened with the key ring
    when there is one; ``unopened`` counts those held but not opened for want of it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.source = "log" if args.log else "replica" if args.journal else "register" if args.store else "store"
        self.held: dict[tuple[int, str], HeldText] | None = None
        self.unopened = 0
        self.others: list[dict[str, Any]] = []  # the other stations' erasures (a register)
        self.not_opened: set[tuple[int, str]] = set()  # (seq, field) of the texts held but not opened
        if args.log:
            return
        if args.store:
            from biometrics.register import read_register_audit_texts, read_register_erasures

            self.others = read_register_erasures(args.store, args.station)
        if args.journal is not None:
            rows = read_audit_texts(args.journal, args.station)
        elif args.store:
            rows = read_register_audit_texts(args.store, args.station)
        else:
            rows = read_audit_texts(args.data_dir / "checkpoint.db")
        ring = self._keyring(args)
        self.held = {}
        station = args.station if args.store or args.journal else ""
        for seq, field, _, sealed in rows:
            if ring is None:
                self.unopened += 1
                self.not_opened.add((seq, field))
                continue
            try:
                self.held[(seq, field)] = open_audit_text(ring, station, seq, field, sealed)
            except (SealError, ValueError, KeyError) as exc:
                self.held[(seq, field)] = str(exc)

    @staticmethod
    def _keyring(args: argparse.Namespace) -> KeyRing | None:
        ring = KeyRing.from_environment()
        if ring is not None:
            return ring
        path = args.key_file or _key_dir(args) / KEYRING_NAME
        return KeyRing.load(path) if path.exists() else None

    def shown(self, entry: dict[str, Any]) -> dict[str, Any]:
        """field -> what to show of each text the entry commits to: {"text", "salt"}, or a word for its absence."""
        out: dict[str, Any] = {}
        exported = entry.get(EXPORTED_TEXTS) if self.held is None else None
        for name in commitments(entry):
            if self.held is None:
                value = exported.get(name) if isinstance(exported, dict) else None
                out[name] = value if value is not None else ERASED
                continue
            held = self.held.get((entry["seq"], name))
            if isinstance(held, tuple):
                out[name] = {"text": held[1], "salt": held[0]}
            elif isinstance(held, str):
                out[name] = f"(does not open: {held})"
            elif self.unopened:
                out[name] = NOT_OPENED
            elif held_elsewhere(entry, self.source):
                out[name] = ELSEWHERE[self.source][0]
            else:
                out[name] = ERASED
        return out


def _default_head(key_dir: Path, db: Path) -> tuple[Path | None, str | None]:
    """The head the server exported for the store ``db`` (``KEY_DIR/audit-heads/<store id>.json``), or None when
    there is none; and what is suspicious about its absence (None: nothing).

    The store id is read from the database, which whoever cut the chain may have rewritten too: a store id
    that is not one a store is given, or none for this store among heads of other stores, is not "nothing to
    compare" but a reason to fail until the operator names the head (``--expected-head``).
    """
    heads_dir = key_dir / ANCHOR_DIR
    try:
        store_id = read_store_id(db)
    except ValueError:
        store_id = ""
    if store_id and not STORE_ID.fullmatch(store_id):
        return None, (f"the store names itself {store_id!r}, not a store id a store is given (its meta table "
                      "was altered); name the head kept for it with --expected-head")
    default = anchor_path(key_dir, store_id) if store_id else None
    if default is not None and default.exists():
        return default, None
    others = other_store_heads(heads_dir, store_id)
    if others:
        return None, (f"no signed head for this store (id {store_id or 'missing'}) in {heads_dir}, which holds "
                      f"the heads of {len(others)} other store(s) ({', '.join(p.name for p in others)}): its store "
                      "id may have been changed to escape the head check; name the head kept for it with "
                      f"--expected-head (heads of stores retired on purpose belong in {heads_dir / 'retired'})")
    return None, None


def _verify(args: argparse.Namespace, entries: Entries, where: str, texts: Texts) -> int:
    key_dir: Path | None = None  # without one (no --key-dir, no default), only --expected-head is checked
    try:
        key_dir = _key_dir(args)
    except KeyLocationError as exc:
        if args.public_key is None:
            print(f"checkpoint-audit: {exc}", file=sys.stderr)
            return 2
    key_path = args.public_key if args.public_key is not None else key_dir / PUBLIC_KEY_NAME
    try:
        public_key = load_public_key(key_path)
    except (OSError, ValueError) as exc:
        print(f"checkpoint-audit: cannot load the public key {key_path}: {exc}", file=sys.stderr)
        return 2
    suspect = misnamed(entries, args.station) if args.journal else None
    if suspect is not None:
        print(f"SUSPECT {where}: {suspect}")
        return 1
    head_paths: list[Path] = [args.expected_head] if args.expected_head is not None else []
    ahead_path: Path | None = None  # the register's copy read: the head of the station's journal
    if not head_paths and key_dir is not None and (args.store or args.journal):
        register_head = anchor_path(key_dir, f"station-{args.station}")
        journal_head = journal_anchor_path(register_head)
        # the register's copy holds what was shipped (its head); the journal holds that and what is not shipped yet
        held_by = [register_head] if args.journal is None else [register_head, journal_head]
        head_paths = [p for p in held_by if p.exists()]
        ahead_path = journal_head if args.journal is None and journal_head.exists() else None
    elif not head_paths and key_dir is not None and not args.log:
        head_path, suspect = _default_head(key_dir, args.data_dir / "checkpoint.db")
        if suspect is not None:
            print(f"SUSPECT {where}: {suspect}")
            return 1
        head_paths = [head_path] if head_path is not None else []
    heads: list[dict[str, Any]] = []
    for path in head_paths + ([ahead_path] if ahead_path is not None else []):
        try:
            heads.append(load_head(path, public_key))
        except (OSError, ValueError, KeyError) as exc:
            print(f"checkpoint-audit: cannot use the expected head {path}: {exc}", file=sys.stderr)
            return 2
    ahead = heads.pop() if ahead_path is not None else None
    report = verify_entries(entries, public_key)
    if not report.ok:
        print(f"TAMPERED {where}: {report.finding}")
        print(f"  {report.records} record(s) verified before it; last valid signed checkpoint at seq "
              f"{report.signed_through}")
        return 1
    for head in heads or [None]:
        cut = check_head(entries, report, head, args.min_records)
        if cut is not None:
            print(f"TAMPERED {where}: {cut}")
            return 1
    unshipped = 0  # records the station's journal head proves that the register's copy does not hold yet
    if ahead is not None and int(ahead["seq"]) >= report.records:
        unshipped = int(ahead["seq"]) - report.records + 1
    elif ahead is not None:  # within the copy: the same record, or the copy was replaced from there or before
        cut = check_head(entries, report, ahead)
        if cut is not None:
            print(f"TAMPERED {where}: {cut}")
            return 1
    found = check_texts(entries, texts.held, source=texts.source, unopened=texts.unopened,
                        others=texts.others, not_opened=texts.not_opened)
    if not found.ok:
        hint = ("; an erasure made at another station is recorded in the register, not in the island's chain: "
                "add --store URL to count it" if args.replica and not args.store and found.finding
                and "is missing" in found.finding.problem else "")
        print(f"TAMPERED {where}: {found.finding}{hint}")
        return 1
    head = max(heads, key=lambda h: int(h["seq"]), default=None)
    unsigned = report.records - 1 - report.signed_through
    said = [f"{found.checked} match their commitments"] + ([f"{found.erased} erased"] if found.erased else []) + (
        [f"{found.elsewhere} {ELSEWHERE[texts.source][1]}"] if found.elsewhere else []) + (
        [f"{found.unchecked} held but not checked (no key ring: --key-file)"] if found.unchecked else [])
    summary = (f"{report.records} records ({report.decisions} decisions, {report.checkpoints} signed "
               f"checkpoints); chain intact; signed through seq {report.signed_through}"
               + (f"; holds the signed head at seq {head['seq']}" if head else "; no signed head to compare")
               + (f"; {unsigned} record(s) after the last checkpoint are chained but not yet signed" if unsigned
                  else "")
               + f"; officers' texts: {', '.join(said)}")
    if unshipped:
        print(f"{NOT_SHIPPED} {where}: {unshipped} record(s) signed but not yet in the register (the station's "
              f"journal holds a signed head at seq {ahead['seq']}, exported at {ahead.get('time')}; the register's "
              f"copy ends at seq {report.records - 1}): verify the station's journal (checkpoint-audit verify "
              f"--data-dir DATA_DIR, or --replica DIR at an island, with its key directory); the register's copy: "
              f"{summary}")
        return EXIT_NOT_SHIPPED
    print(f"OK {where}: {summary}")
    return 0


def _show(args: argparse.Namespace, entries: Entries, texts: Texts) -> Iterator[str]:
    for line, entry, error in entries:
        if entry is None:
            yield f"line {line}: {error}"
        elif args.kind and entry.get("kind") != args.kind:
            continue
        elif args.json:
            shown = texts.shown(entry)
            yield canonical({**entry, EXPORTED_TEXTS: shown} if shown else entry).decode()
        elif entry.get("type") == "checkpoint":
            yield (f"{entry.get('seq'):>6} {entry.get('time')} CHECKPOINT ({entry.get('reason')}) "
                   f"records {entry.get('records')} key {entry.get('key_id')}")
        else:
            actor = entry.get("actor", {})
            fields = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(entry.get("fields", {}).items()))
            for name, value in texts.shown(entry).items():
                fields += f" {name}={json.dumps(value['text'], ensure_ascii=False)}" if isinstance(value, dict) \
                    else f" {name}={value}"
            yield (f"{entry.get('seq'):>6} {entry.get('time')} {entry.get('kind'):<8} "
                   f"{actor.get('role')}:{actor.get('identity')} decision {entry.get('decision_id')} {fields}")


def _export(out: Path, data: bytes) -> None:
    """Write ``data`` to ``out`` whole, mode 0600 (the officers' texts are in it, in clear), refusing a symbolic
    link at ``out`` (ValueError) rather than writing where it points or replacing it."""
    from biometrics.datadir import atomic_write

    if out.is_symlink():
        raise ValueError(f"--out {out} is a symbolic link: refused (the export holds the officers' texts in clear); "
                         "name a regular file")
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory: name a file")
    atomic_write(out, data)


def main(argv: list[str] | None = None) -> int:
    """Run one command; ``verify`` exits 1 when the chain was tampered with or cut, 3 when the register's copy
    verifies but the station's journal signed records not shipped to it yet."""
    args = build_parser().parse_args(argv)
    try:
        _resolve(args)
        entries = _entries(args)
        texts = Texts(args)
    except Exception as exc:  # a missing file, an unreachable or refused register: say which, exit 2
        print(f"checkpoint-audit: {exc}", file=sys.stderr)
        return 2
    where = (f"{args.station}@{args.journal}" if args.journal
             else f"{args.station}@{args.store.split('@')[-1]}" if args.store
             else str(args.log or args.data_dir / "checkpoint.db"))
    if args.command == "verify":
        return _verify(args, entries, where, texts)
    if args.command == "export":
        args.json = True
        args.kind = None
        try:
            _export(args.out, "".join(row + "\n" for row in _show(args, entries, texts)).encode())
        except (OSError, ValueError) as exc:
            print(f"checkpoint-audit: {exc}", file=sys.stderr)
            return 2
        print(f"{len(entries)} records written to {args.out} (mode 0600: it holds the officers' texts in clear)")
        return 0
    rows = list(_show(args, entries, texts))
    for row in rows[-args.last:] if args.last else rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
