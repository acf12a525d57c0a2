"""The portal's releases recorded in the store they are built from, so that every portal on it agrees.

Two portals on one store with state directories of their own used to release each period independently: a
period built at different times (late data between) got different figures, and the nationality counts got
different noise (averaging the two draws would undo part of the protection). The store keeps no time of
receipt, so a release cannot be rebuilt as of its cut-off, and OpenDP's noise has no seed; so instead the
first portal to release a period records it in the store (``portal_releases``, insert-once:
:meth:`biometrics.event_store.SqlEventStore.record_releases`) and every portal publishes that record. The
state directory stays each portal's own copy (read first: what a portal has published it keeps).

A store without the methods (a test's or a library user's own :class:`~biometrics.events.EventStore`) shares
nothing: its releases are the building portal's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


def _text(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, allow_nan=True, separators=(",", ":"))


def recorded(store: Any, names: Iterable[str]) -> dict[str, Any]:
    """The releases among ``names`` recorded in ``store`` (name -> document)."""
    read = getattr(store, "recorded_releases", None)
    if read is None:
        return {}
    return {name: json.loads(text) for name, text in read(list(names)).items()}


def share(store: Any, docs: Mapping[str, Any]) -> dict[str, Any]:
    """Record ``docs`` (name -> document) in ``store`` where no release is recorded under the name yet; the
    recorded documents (another portal's where it was first), to be published instead of ``docs``."""
    if not docs:
        return {}
    record = getattr(store, "record_releases", None)
    if record is None:
        return dict(docs)
    return {name: json.loads(text) for name, text in record({n: _text(d) for n, d in docs.items()}).items()}
