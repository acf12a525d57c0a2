"""An island station's store for ``checkpoint-audit``: its chain and its officers' texts in ``DIR/replica.db``.

An island (``checkpoint-server --store URL --station NAME --replica DIR``) writes its audit journal, and the
sealed texts of the records it made offline, into ``DIR/replica.db`` under its station name, not into a
``checkpoint.db``. ``checkpoint-audit verify|show|export --replica DIR`` reads them there (with
:func:`biometrics.storage.read_audit` and :func:`biometrics.storage.read_audit_texts`, read-only, without the
directory's ``LOCK``: beside a running server, as for a ``checkpoint.db``). This module finds the file and the
station whose chain it holds, and says what is suspect about that station's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from biometrics.replica import REPLICA_FILE
from biometrics.storage import read_audit_stations


def replica_store(replica_dir: Path) -> Path:
    """``replica_dir``'s store file, or :class:`FileNotFoundError` saying there is none."""
    db = replica_dir / REPLICA_FILE
    if not db.exists():
        raise FileNotFoundError(f"no island store at {db} (--replica names the directory the island's server was "
                                "given with its own --replica)")
    return db


def island_station(db: Path, named: str) -> str:
    """The station whose chain to read in ``db``: ``named`` (``--station``), else the only one the file holds.

    Raises :class:`ValueError` when ``named`` is not among the chains the file holds while others are (a name
    mistyped, or the file's station column altered), or when none is named and the file holds no chain or several.
    """
    held = read_audit_stations(db)
    if named and (named in held or not held):
        return named
    if named:
        raise ValueError(f"{db} holds no chain of station {named!r}, only that of {', '.join(map(repr, held))}")
    if len(held) == 1:
        return held[0]
    if not held:
        raise ValueError(f"{db} holds no audit chain: name the island's station with --station NAME (its chain is "
                         "then checked against the station's signed head)")
    raise ValueError(f"{db} holds the chains of stations {', '.join(map(repr, held))}: name one with --station")


def misnamed(entries: list[tuple[int, dict[str, Any] | None, str]], station: str) -> str | None:
    """Why the chain read as ``station``'s is suspect: a record that names another station (in its hashed
    content; the station a row is filed under is not hashed, so a chain filed under a new name could escape its
    head, ``KEY_DIR/audit-heads/station-<name>.json``); None when every record naming a station names this one."""
    for line, entry, _ in entries:
        if entry is not None and entry.get("station") and entry["station"] != station:
            return (f"line {line}: record seq {entry.get('seq')} names station {entry['station']!r}, not "
                    f"{station!r} whose chain was read (the file's station column was altered?); name the station "
                    "with --station and the head kept for it with --expected-head")
    return None
