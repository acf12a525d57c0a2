"""The station's in-memory gallery, following the store's change log.

Storage is the truth and memory follows it: the gallery is loaded from a snapshot tagged with the change-log
sequence it reflects, then every change after it is applied in order (:meth:`Gallery.catch_up`), read in pages,
the subjects of a page read at once. A change the station itself committed is applied at once from what it has
in hand (:meth:`Gallery.applied`); if that fails the gallery is marked behind and catches up before it answers
again. Applying a change costs what the change holds, never a rebuild of the gallery.

Before following the log the gallery checks that it did not go back under it (a register restored from a backup,
whose sequence then hands out again numbers the station applied): the register's generation, the log's head and
the change at the applied seq (:meth:`Gallery.catch_up`). If it did, the gallery is reloaded from the register
(:meth:`Gallery.reload`, through :attr:`Gallery.on_restore`: :mod:`biometrics.restore`), never followed from a
place that no longer exists.

Searches never take the apply lock: the face index and the fingerprint gallery publish copy-on-write snapshots.

The change hook (:attr:`Gallery.on_changes`: a station's local copy, its alerts) runs once a page is applied; if it
fails, the gallery's place in the log goes back to before the page, so the next catch-up applies the page again
(which changes nothing in memory) and the hook runs again, until it has run. Before a page is applied,
:attr:`Gallery.keeps` may name erasures of it that leave the subject the station holds under their pseudonym in
place (an island's own offline erasure, uploaded after the station enrolled the document again:
:meth:`biometrics.island.Island.keeps`); the change hook is told which.

The face index is the station's own :class:`biometrics.matcher.TemplateIndex` by default, or one it is given:
:class:`biometrics.compact.CompactIndex`, or a :class:`biometrics.sharded.ShardedGallery` whose replicas load
their shards from the register themselves (an index with ``loads_itself``: the station then keeps no face in its
own memory, and applies each change to it as to any index). An index given as a *factory* is made once the
station has read its snapshot (:meth:`Gallery.load_pages`), so that what the replicas load is at least as new as
the change the station then follows the log from: a change in between is applied twice, which leaves one copy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from biometrics.face import TEMPLATE_DIM
from biometrics.fingerprint import FingerprintTemplate
from biometrics.fingerprint.gallery import FingerprintGallery
from biometrics.matcher import TemplateIndex
from biometrics.scores import ScoreCalibration
from biometrics.storage import (
    CHANGE_ENROLLED,
    CHANGE_ERASED,
    CHANGE_WITHDRAWN,
    Change,
    GalleryEntry,
    StoredTemplate,
)
from biometrics.templates import unpack_face_template, unpack_face_templates
from biometrics.types import Modality, SubjectRecord

log = logging.getLogger(__name__)

Loaded = tuple[SubjectRecord, list[StoredTemplate]]


class ChangeSource(Protocol):
    """Where the gallery reads changes and the subjects they name (a store)."""

    def changes_since(self, seq: int, limit: int = ...) -> list[Change]:
        """Changes after ``seq``, in order."""
        ...

    def load_subjects(self, refs: Sequence[str]) -> dict[str, Loaded]:
        """The subjects among ``refs`` that exist, opened."""
        ...

    def log_position(self, seq: int) -> tuple[str, int, str]:
        """(generation, head, identity of change ``seq``): see :meth:`biometrics.storage.SealedStore.log_position`."""
        ...

    def gallery_pages(self) -> Iterable[tuple[int, list[GalleryEntry]]]:
        """Every subject, in pages, with the change the pages reflect (:meth:`Gallery.load_pages`)."""
        ...


@dataclass
class GalleryState:
    """Which change of the log the gallery reflects, and how fresh that is."""

    applied_seq: int = 0
    stale: bool = False
    refs: dict[str, str] = field(default_factory=dict)  # pseudonym -> subject id, for erasures
    synced_at: float | None = None  # time.monotonic() of the last catch-up that reached the log's end
    synced_wall: float | None = None  # time.time() of the same (what a response states as register_as_of)
    connected: bool = True  # the link to the register (always True on the embedded store)
    generation: str = ""  # the register's generation the gallery follows ("" until first read)
    mark: str = ""  # Change.identity of the change at applied_seq ("" when not known yet)


def faces_of(stored: Sequence[StoredTemplate]) -> list[np.ndarray]:
    """The face templates among stored templates, unpacked."""
    return [unpack_face_template(t.data) for t in stored if t.modality == Modality.FACE]


def fingers_of(stored: Sequence[StoredTemplate]) -> list[tuple[int, FingerprintTemplate]]:
    """(finger position, template) of the fingerprint templates among stored templates."""
    return [(t.finger, FingerprintTemplate.from_bytes(t.data)) for t in stored if t.modality == Modality.FINGERPRINT]


class Gallery:
    """Face matrix, fingerprint gallery and watchlist flags of every enrolled subject, in memory.

    ``face_index``: the face index (``TemplateIndex``'s interface), or a callable that makes it once the
    station's snapshot is read (a sharded gallery); default a new ``TemplateIndex``.
    """

    def __init__(self, fingerprint_calibration: ScoreCalibration, face_index: Any = None) -> None:
        self._make_face_index: Callable[[], Any] | None = None
        if face_index is None:
            face_index = TemplateIndex(TEMPLATE_DIM)
        elif callable(face_index):
            self._make_face_index, face_index = face_index, TemplateIndex(TEMPLATE_DIM)  # empty until loaded
        self.face_index: Any = face_index
        self.fingerprint_gallery = FingerprintGallery(fingerprint_calibration)
        self.watchlist: dict[str, bool] = {}  # every enrolled subject id -> on a watchlist
        self.face_counts: dict[str, int] = {}  # subject id -> face templates held (subjects with a face only)
        self.state = GalleryState()
        self.apply_lock = threading.RLock()
        #: Called with [(change, loaded subject or None)] after changes are applied, a catch-up page at a time
        #: (a replica follows them, in one local transaction a page).
        #: The second argument: the seqs of the erasures among them that left the subject held in place (:attr:`keeps`).
        self.on_changes: Callable[[list[tuple[Change, Loaded | None]], frozenset[int]], None] | None = None
        #: Called with a page of changes before they are applied: the seqs of the erasures among them that must
        #: leave the subject this station holds under their pseudonym in place. If it raises, nothing of the page
        #: is applied (the catch-up raises, as when the log cannot be read).
        self.keeps: Callable[[list[Change]], frozenset[int]] | None = None
        #: Called with (why, reload) when the log went back (a register restored from a backup) instead of the
        #: plain ``reload()`` (:meth:`reload` of the source): an island re-checks its outbox around it.
        self.on_restore: Callable[[str, Callable[..., None]], None] | None = None

    def __contains__(self, subject_id: object) -> bool:
        return subject_id in self.watchlist

    @property
    def subjects(self) -> int:
        """How many subjects the gallery holds."""
        return len(self.watchlist)

    def face_references(self, subject_id: str) -> int:
        """How many face templates the gallery holds for ``subject_id`` (at least 1: what a face comparison with it
        is the best of, for the union bound), counted here so that a sharded face index is not asked."""
        return max(1, self.face_counts.get(subject_id, 1))

    @property
    def templates(self) -> int:
        """How many templates the gallery holds (faces and fingerprints)."""
        return len(self.face_index) + len(self.fingerprint_gallery)

    def load_pages(self, pages: Iterable[tuple[int, list[GalleryEntry]]]) -> None:
        """Fill an empty gallery from :meth:`biometrics.storage.SealedStore.gallery_pages` (a cold start)."""
        head = 0
        own_faces = self._make_face_index is None and not getattr(self.face_index, "loads_itself", False)
        with self.apply_lock:
            for page_head, entries in pages:
                head = page_head
                owners: list[str] = []
                packed: list[bytes] = []
                with_fingers: list[tuple[str, list[tuple[int, FingerprintTemplate]]]] = []
                for ref, subject_id, watchlist, templates in entries:
                    fingers = []
                    for modality, finger, data in templates:
                        if modality == Modality.FACE:
                            self.face_counts[subject_id] = self.face_counts.get(subject_id, 0) + 1
                            if own_faces:
                                owners.append(subject_id)
                                packed.append(data)
                        else:
                            fingers.append((finger, FingerprintTemplate.from_bytes(data)))
                    if fingers:
                        with_fingers.append((subject_id, fingers))
                    self.watchlist[subject_id] = watchlist
                    self.state.refs[ref] = subject_id
                if packed:
                    self.face_index.add_many(owners, unpack_face_templates(packed))
                if with_fingers:
                    self.fingerprint_gallery.add_many(with_fingers)  # one change a page
            self.state.applied_seq = head
            if self._make_face_index is not None:  # its replicas load from the register now, after our snapshot
                self.face_index, self._make_face_index = self._make_face_index(), None
            self.mark_synced()
        log.info("gallery loaded: %d subjects, %d templates (change log at %d)", self.subjects, self.templates, head)

    def mark_synced(self) -> None:
        """Record that the gallery has just reached the end of the change log."""
        self.state.synced_at, self.state.synced_wall = time.monotonic(), time.time()

    def add(self, ref: str, subject_id: str, watchlist: bool, faces: Sequence[np.ndarray],
            fingers: Sequence[tuple[int, FingerprintTemplate]]) -> None:
        """Hold a subject (replacing any copy: a change applied twice, or half applied, leaves one).

        A face index that ``loads_itself`` (sharded) is not asked whether it holds the subject (a call to its
        shard, which may be down): what this process holds says whether the subject is held, and the sharded
        index's writes are idempotent and never fail for a shard down, so it never keeps faces this process
        forgot."""
        remote = getattr(self.face_index, "loads_itself", False)
        if (subject_id in self.watchlist or subject_id in self.face_counts or subject_id in self.fingerprint_gallery
                or (not remote and subject_id in self.face_index)):
            self.remove(subject_id)
        if faces:
            self.face_index.add(subject_id, np.stack(list(faces)))
            self.face_counts[subject_id] = len(faces)
        self.fingerprint_gallery.add(subject_id, list(fingers))
        self.state.refs[ref] = subject_id
        self.watchlist[subject_id] = watchlist

    def remove(self, subject_id: str) -> None:
        """Forget a subject (its pseudonym is forgotten by :meth:`forget_ref`, last).

        What this process holds goes first (membership, watchlist flag, fingerprints), the face index last: a
        face index whose write can fail then leaves at most face templates of a subject the service no longer
        answers for (Verify: not enrolled; a search drops non-members) until the change is applied again, never a
        subject still matchable by finger. (The sharded index does not fail for a shard down: its replicas reload
        from the register before they answer again, :meth:`biometrics.sharded.ShardedGallery._write`, so the
        change log goes on.)"""
        self.watchlist.pop(subject_id, None)
        self.face_counts.pop(subject_id, None)
        self.fingerprint_gallery.remove(subject_id)
        self.face_index.remove(subject_id)

    def forget_ref(self, ref: str) -> None:
        """Drop a pseudonym's mapping once its subject is gone."""
        self.state.refs.pop(ref, None)

    def apply_change(self, change: Change, loaded: Loaded | None, *, notify: bool = True, keep: bool = False) -> None:
        """Apply one change, with the subject it names as storage holds it now (None: gone since); ``notify``
        tells :attr:`on_changes` at once (a catch-up tells it once a page); ``keep``: an erasure that leaves the
        subject held under its pseudonym in place (:attr:`keeps`)."""
        keep = keep and change.kind == CHANGE_ERASED
        if change.kind == CHANGE_ENROLLED:
            if loaded is not None:
                record, stored = loaded
                self.add(change.ref, record.subject_id, record.info.watchlist, faces_of(stored), fingers_of(stored))
        elif change.kind in (CHANGE_ERASED, CHANGE_WITHDRAWN):
            subject_id = self.state.refs.get(change.ref)
            if subject_id is not None and not keep:
                self.remove(subject_id)
                self.forget_ref(change.ref)
        else:
            log.error("change log: unknown change %r at seq %d skipped", change.kind, change.seq)
        if notify and self.on_changes is not None:
            self.on_changes([(change, loaded)], frozenset({change.seq}) if keep else frozenset())
        self.state.applied_seq, self.state.mark = change.seq, change.identity if change.at else ""

    def catch_up(self, source: ChangeSource, page: int = 2000) -> int:
        """Apply every change after the one the gallery reflects; returns how many were applied."""
        applied = 0
        with self.apply_lock:
            self._check_log(source)
            while True:
                changes = source.changes_since(self.state.applied_seq, page)
                if not changes:
                    break
                loaded = source.load_subjects(sorted({c.ref for c in changes if c.kind == CHANGE_ENROLLED}))
                page_changes = []
                before = self.state.applied_seq, self.state.mark  # the place, and what the log holds there
                kept = self.keeps(changes) if self.keeps is not None else frozenset()
                for change in changes:
                    subject = loaded.get(change.ref) if change.kind == CHANGE_ENROLLED else None
                    self.apply_change(change, subject, notify=False, keep=change.seq in kept)
                    page_changes.append((change, subject))
                    applied += 1
                if self.on_changes is not None:
                    try:
                        self.on_changes(page_changes, kept)
                    except BaseException:  # the next catch-up applies the page again (memory holds it: a no-op)
                        self.state.applied_seq, self.state.mark = before  # and replays the hook, until it has run
                        raise
            self.state.stale = False
            self.mark_synced()
        if applied:
            log.info("gallery caught up: %d change(s), now at %d", applied, self.state.applied_seq)
        return applied

    def _check_log(self, source: ChangeSource) -> None:
        """Before following the log: it must not have gone back under the gallery (a register restored from a
        backup, whose sequence then hands out again numbers this station has applied). Noticed by the register's
        generation (set anew by the documented restore), by a log that ends before the applied change, or by
        another change at the applied seq; then the gallery is reloaded from the register, loudly."""
        state = self.state
        generation, head, at_applied = source.log_position(state.applied_seq)
        if state.generation and generation != state.generation:
            why = f"its generation is {generation!r}, not {state.generation!r} (restored by the documented procedure)"
        elif head < state.applied_seq:
            why = f"its change log ends at {head}, before change {state.applied_seq} this station applied"
        elif state.applied_seq and state.mark and at_applied != state.mark:
            why = f"its change {state.applied_seq} is not the one this station applied"
        else:
            state.generation = generation
            state.mark = state.mark or (at_applied if state.applied_seq else "")
            return
        log.error("THE REGISTER WENT BACK (restored from a backup?): %s. Reloading this station's gallery from it; "
                  "changes made after the backup are not in it", why)
        if self.on_restore is not None:
            self.on_restore(why, lambda **kw: self.reload(source, **kw))
        else:
            self.reload(source)

    def reload(self, source: ChangeSource, keep: frozenset[str] = frozenset()) -> tuple[int, int]:
        """Make the gallery hold what ``source`` holds now (its log went back), ``keep`` (subject ids) aside:
        a subject it no longer holds is removed, one it holds otherwise (new, other templates, other flag) is
        replaced, the rest is left in place (searches go on meanwhile). Returns (replaced, removed)."""
        with self.apply_lock:
            generation = source.log_position(0)[0]
            seen: dict[str, str] = {}
            head = replaced = 0
            for page_head, entries in source.gallery_pages():
                head = page_head
                for ref, subject_id, watchlist, templates in entries:
                    seen[subject_id] = ref
                    faces = [unpack_face_template(d) for m, _, d in templates if m == Modality.FACE]
                    fingers = [(f, FingerprintTemplate.from_bytes(d)) for m, f, d in templates if m != Modality.FACE]
                    if not self._holds_as(subject_id, watchlist, faces, fingers):
                        self.add(ref, subject_id, watchlist, faces, fingers)
                        replaced += 1
            gone = [sid for sid in list(self.watchlist) if sid not in seen and sid not in keep]
            for subject_id in gone:
                self.remove(subject_id)
            for ref, subject_id in list(self.state.refs.items()):
                if seen.get(subject_id) != ref and subject_id not in keep:
                    self.forget_ref(ref)
            self.state.applied_seq, self.state.mark, self.state.generation = head, "", generation
            self.state.stale = False
            self.mark_synced()
        log.error("gallery reloaded from the register: %d subject(s) added or replaced, %d removed; change log at %d",
                  replaced, len(gone), head)
        return replaced, len(gone)

    def _holds_as(self, subject_id: str, watchlist: bool, faces: list[np.ndarray],
                  fingers: list[tuple[int, FingerprintTemplate]]) -> bool:
        """Whether the gallery holds ``subject_id`` with exactly this flag and these templates."""
        if self.watchlist.get(subject_id) is not watchlist:
            return False
        held = self.face_index.templates_of(subject_id)
        if not np.array_equal(held, np.stack(faces) if faces else held[:0]):
            return False
        return (sorted((f, t.to_bytes()) for f, t in self.fingerprint_gallery.entries_of(subject_id))
                == sorted((f, t.to_bytes()) for f, t in fingers))

    def applied(self, seq: int, apply: Callable[[], None]) -> bool:
        """Apply the station's own committed change ``seq`` with ``apply``; on failure, mark the gallery behind.

        The caller committed ``seq`` holding the register's write lock after catching up, so no change lies
        between the gallery and ``seq``; a catch-up that got there first has applied it already. Returns False
        when the gallery is now behind (the caller catches up).
        """
        with self.apply_lock:
            if seq <= self.state.applied_seq:
                return True
            try:
                apply()
                self.state.applied_seq = seq
                return True
            except Exception:
                log.exception("change %d committed but not applied in memory: catching up from the change log", seq)
                self.state.stale = True
                return False
