"""The portal's releases recorded in the store they are built from, so that every portal on it agrees.

Two portals on one store with state directories of their own used to release each period independently: a
period built at different times (late data between) got different figures, and the nationality counts got
different noise (averaging the two draws would undo part of the protection). The store keeps no time of
receipt, so a release cannot be rebuilt as of its cut-off, and OpenDP's noise has no seed; so instead the
first portal to release a period records it in the store (``portal_releases``, insert-once:
:meth:`biometrics.event_store.SqlEventStore.record_releases`) and every portal publishes that record. The
state directory stays each portal's own copy (read first: what a portal has published it keeps).

What a portal has published from its state directory it also writes back to the store where the store has no
record of it (:func:`write_back`): a register restored from a backup forgets the releases recorded since, and a
second portal would otherwise release those periods anew (new noise beside the published draw). Where the store
holds another record of a period than the one this portal published, the portal keeps its own and says so.

A store without the methods (a test's or a library user's own :class:`~biometrics.events.EventStore`) shares
nothing: its releases are the building portal's own.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg

log = logging.getLogger(__name__)


def _not_permitted(exc: BaseException) -> bool:
    """Whether ``exc`` says this portal may not write (or read) ``portal_releases``: a read-only role or file,
    a standby, a table another role owns (after a register restored as another user)."""
    if isinstance(exc, psycopg.errors.InsufficientPrivilege | psycopg.errors.ReadOnlySqlTransaction):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc).replace(" ", "").lower()


def _raced(exc: BaseException) -> bool:
    """Whether ``exc`` is another portal creating ``portal_releases`` at the same moment (CREATE TABLE IF NOT
    EXISTS is not safe against a concurrent one in PostgreSQL)."""
    return isinstance(exc, psycopg.errors.UniqueViolation | psycopg.errors.DuplicateTable)


def _text(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, allow_nan=True, separators=(",", ":"))


def recorded(store: Any, names: Iterable[str]) -> dict[str, Any]:
    """The releases among ``names`` recorded in ``store`` (name -> document)."""
    read = getattr(store, "recorded_releases", None)
    if read is None:
        return {}
    try:
        texts = read(list(names))
    except Exception as exc:
        if not _not_permitted(exc):
            raise
        log.warning("portal: the releases recorded in the store cannot be read (%s); this portal publishes its "
                    "own (grant SELECT, INSERT on portal_releases: docs/portal.md)", exc)
        return {}
    return {name: json.loads(text) for name, text in texts.items()}


def share(store: Any, docs: Mapping[str, Any]) -> dict[str, Any]:
    """Record ``docs`` (name -> document) in ``store`` where no release is recorded under the name yet; the
    recorded documents (another portal's where it was first), to be published instead of ``docs``."""
    if not docs:
        return {}
    record = getattr(store, "record_releases", None)
    if record is None:
        return dict(docs)
    texts = {n: _text(d) for n, d in docs.items()}
    for attempt in (1, 2):
        try:
            return {name: json.loads(text) for name, text in record(texts).items()}
        except Exception as exc:
            if _raced(exc) and attempt == 1:
                continue  # the other portal's table exists now: record in it
            if not _not_permitted(exc):
                raise
            log.warning("portal: its releases cannot be recorded in the store (%s): it publishes its own, kept in "
                        "its state directory, and another portal on the store may release the same periods "
                        "differently (grant SELECT, INSERT on portal_releases: docs/portal.md)", exc)
            return dict(docs)
    return dict(docs)


def write_back(store: Any, docs: Mapping[str, Any]) -> None:
    """Record ``docs`` (name -> document this portal has published, read from its state directory) in ``store``
    where it records nothing under the name; a name it records otherwise is logged at WARNING (the portal goes
    on publishing its own: a period is never published twice differently by one portal)."""
    held = share(store, docs)
    disagree(sorted(n for n, d in docs.items() if _text(held.get(n, d)) != _text(d)))


def disagree(names: Sequence[str]) -> None:
    """Say, at WARNING, that the store records other releases of the periods ``names`` than this portal
    published (it goes on publishing its own); nothing when there are none."""
    if names:
        log.warning("portal: the store records other releases than this portal published for %s (a store restored "
                    "from a backup and released again by another portal?); this portal keeps publishing its own, "
                    "and the two portals disagree on these periods until an operator keeps one record "
                    "(docs/portal.md)", ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5
                                                               else ""))
