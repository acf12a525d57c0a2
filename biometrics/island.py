"""An island station: it goes on working when its link to the register drops, and syncs when the link returns.

With ``--replica DIR`` a station on a shared register keeps a copy of the register and an outbox of its own
writes in a local SQLite file (:mod:`biometrics.replica`). While the link is down:

- Verify and Identify answer from memory (loaded from the copy at a start without the register), and say how old
  their view of the register is (``register_as_of``).
- Enroll runs its duplicate search on the station's gallery and is accepted **provisionally**: the enrolment,
  its outbox entry and its audit record commit in one local transaction before the officer is answered.
- DeleteSubject erases the subject from the station at once (privacy first) and queues the erasure.
- An offline budget (time cut off, writes waiting) bounds this: past it Enroll is refused
  (:class:`~biometrics.errors.OfflineLimitReached`, FAILED_PRECONDITION) while verification goes on.

When the link returns the station first catches up the register's change log (so erasures made centrally leave
its memory before anything else), then drains the outbox in order (:meth:`Island.drain`). Each upload runs under
the register's write lock: an upload the register already holds (same station-made id and content hash: a crash
in the middle of a drain) is recognised and not stored twice; each enrolment is searched against the whole
register; a possible duplicate is neither merged nor dropped but waits in the adjudication queue for an officer
(:meth:`Island.resolve`: keep both, link the records, or reject).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from biometrics.errors import (
    OfflineLimitReached,
    RegisterUnavailable,
    ReviewConflict,
    ReviewReturned,
    SubjectExists,
    SubjectNotFound,
)
from biometrics.face import FaceTemplate
from biometrics.fingerprint import FingerprintTemplate
from biometrics.gallery import faces_of, fingers_of
from biometrics.pending import pending_gallery
from biometrics.replica import (
    OUTBOX_ERASED,
    OUTBOX_PENDING,
    OUTBOX_REJECTED,
    OUTBOX_REVIEW,
    OUTBOX_STORED,
    OutboxEntry,
    Replica,
    enrolment_payload,
    keyed_hash,
    payload_templates,
    template_ids,
)
from biometrics.storage import CHANGE_ENROLLED, CHANGE_ERASED, CHANGE_WITHDRAWN, Change, StoredTemplate, now, record_of
from biometrics.types import (
    Actor,
    Candidate,
    EnrolmentResult,
    Review,
    SampleQuality,
    SubjectInfo,
    SubjectRecord,
)

if TYPE_CHECKING:
    from biometrics.register import Reviews
    from biometrics.service import CheckpointService

log = logging.getLogger(__name__)

RESOLUTIONS = ("keep_both", "link", "reject")
#: The ref of a withdrawal keyed by the upload it withdraws (``upload:<upload id>``), never by the subject's
#: pseudonym: the register may hold another subject under that document number, which must stay everywhere.
UPLOAD_REF = "upload:"


@dataclass(frozen=True)
class OfflinePolicy:
    """How long, and how much, a station may work cut off from the register before enrolment pauses."""

    max_offline_s: float = 24 * 3600.0
    max_pending: int = 1000


class Island:
    """The offline side of a station on a shared register (see the module doc)."""

    def __init__(self, service: CheckpointService, replica: Replica | None, reviews: Reviews,
                 policy: OfflinePolicy | None = None) -> None:
        self.service = service
        self.replica = replica
        self.reviews = reviews
        self.policy = policy or OfflinePolicy()
        self.provisional: set[str] = set()  # subject ids enrolled here offline, not yet stored in the register
        self._drain_lock = threading.Lock()
        self.last_drain: dict[str, Any] = {}
        self._register_hashes_keyed = False  # this station's upload records in the register: legacy hashes keyed
        if replica is not None and replica.key_legacy_hashes():
            log.info("outbox: content hashes of an older version replaced by keyed ones")

    # -- state -----------------------------------------------------------------------------------

    @property
    def works_offline(self) -> bool:
        """True on a station with a replica (``--replica``): it accepts writes while the link is down."""
        return self.replica is not None

    def offline(self) -> bool:
        """True while the link to the register is down on a station that works offline."""
        return self.replica is not None and not self.service.sync_state.connected

    def link_lost(self) -> None:
        """A register call just failed: treat the link as down until the listener reconnects."""
        self.service.sync_state.connected = False

    def load_provisional(self) -> None:
        """After loading the gallery from the copy: which subjects are provisional (enrolled offline, pending)."""
        assert self.replica is not None
        pending = self.replica.entries((OUTBOX_PENDING, OUTBOX_REVIEW))
        self.provisional = {e.payload["subject_id"] for e in pending if e.kind == "enrol" and "subject_id" in e.payload
                            and (e.state == OUTBOX_PENDING or self.own_copy(e))}

    def own_copy(self, entry: OutboxEntry) -> bool:
        """Whether the copy this station holds under an enrolment entry's pseudonym is its own provisional one, not
        a subject the register holds under that number (another station's, the office's). An entry of an older
        version, which kept no template ids, counts as its own."""
        assert self.replica is not None
        held = self.replica.local.load_subject(entry.ref)
        ids = set(template_ids(entry.payload))
        return held is not None and (not ids or {t.template_id for t in held[1]} <= ids)

    def in_review(self, subject_id: str) -> bool:
        """Whether ``subject_id`` was enrolled here offline and its upload waits for an officer's review (a
        possible duplicate of someone in the register): its identity is not established yet."""
        if self.replica is None or subject_id not in self.provisional:
            return False
        ref = self.service.storage.keyring.pseudonym(subject_id)
        return any(e.ref == ref and e.kind == "enrol" for e in self.replica.entries((OUTBOX_REVIEW,)))

    def follow(self, changes: list[tuple[Change, tuple[SubjectRecord, list[StoredTemplate]] | None]]) -> None:
        """The gallery's change hook: the copy follows; a provisional subject the register now holds (or has
        withdrawn) is provisional no more, and its outbox entry under review is settled."""
        self._erase_alerts({c.ref for c, _ in changes if c.kind in (CHANGE_ERASED, CHANGE_WITHDRAWN)})
        if self.replica is None:
            return
        self.replica.follow(changes)
        keyring = self.service.storage.keyring
        kept, rejected, withdrawn = [], [], []
        for change, loaded in changes:
            if change.kind == CHANGE_ENROLLED and loaded is not None and loaded[0].subject_id in self.provisional:
                self.provisional.discard(loaded[0].subject_id)
                kept.append(change.ref)
            elif change.kind == CHANGE_WITHDRAWN and change.ref.startswith(UPLOAD_REF):
                withdrawn.append(change.ref[len(UPLOAD_REF):])
            elif change.kind == CHANGE_WITHDRAWN:  # an older version's withdrawal, keyed by the pseudonym
                self.provisional = {sid for sid in self.provisional if keyring.pseudonym(sid) != change.ref}
                rejected.append(change.ref)
        erased = {c.ref for c, _ in changes if c.kind == CHANGE_ERASED}
        if erased and any(keyring.pseudonym(sid) in erased for sid in self.provisional):
            self.load_provisional()  # an erased subject under review is provisional no more (its entry cancelled)
        if kept:
            self._settle_kept(kept)
        for upload_id in withdrawn:  # after the loop: a later enrolment of the page has replaced the copy already
            self._withdraw(upload_id)
        if rejected:
            self.replica.settle_refs(rejected, OUTBOX_REVIEW, OUTBOX_REJECTED, "rejected at review")

    def _settle_kept(self, refs: list[str]) -> None:
        """The register now holds subjects this station enrolled offline: an entry under review is settled as
        kept only if an officer stored that upload (another station's enrolment of the same document is not)."""
        assert self.replica is not None
        reviewed = {e.upload_id for e in self.replica.entries((OUTBOX_REVIEW,)) if e.ref in refs}
        try:
            stored = self.reviews.kept(reviewed)
        except RegisterUnavailable:
            log.warning("register unreachable: %d reviewed upload(s) left under review until resolved", len(reviewed))
            return
        for upload_id in stored:
            self.replica.settle(upload_id, OUTBOX_STORED, "kept at review")

    def _withdraw(self, upload_id: str) -> None:
        """An officer did not store this station's upload ``upload_id`` (rejected, or its document number is the
        register's): its provisional copy leaves (unless the register's subject under that number replaced it)."""
        assert self.replica is not None
        entry = next((e for e in self.replica.entries((OUTBOX_REVIEW, OUTBOX_STORED)) if e.upload_id == upload_id),
                     None)
        if entry is None:
            return  # another station's upload
        subject_id = entry.payload.get("subject_id", "")
        own_copy = subject_id in self.provisional
        if own_copy:
            self.service.gallery.remove(subject_id)
            self.service.gallery.forget_ref(entry.ref)
            self.provisional.discard(subject_id)
            self._erase_alerts({entry.ref})
        self.replica.withdraw(upload_id, drop_copy=own_copy)

    def _erase_alerts(self, refs: set[str]) -> None:
        """Delete this station's alerts naming subjects the register erased or withdrew (a station on a register
        keeps its alerts in its local store, which the register's erasure cannot reach)."""
        store = self.service.alert_store
        if refs and store is not self.service.storage:
            with store.transaction() as tx:
                store.erase_alerts(tx, refs)

    def check_budget(self) -> None:
        """Refuse a write past the offline budget, with what the officer can do."""
        assert self.replica is not None
        pending = self.replica.pending_count()
        if pending >= self.policy.max_pending:
            raise OfflineLimitReached(
                f"This station is working offline and {pending} enrolments or erasures already wait to be sent to "
                f"the central register (the limit is {self.policy.max_pending}). Enrolment is paused until the link "
                "returns; verification goes on. Please call the central office about the link.")
        wall = self.service.sync_state.synced_wall
        cut_off = time.time() - wall if wall is not None else float("inf")
        if cut_off > self.policy.max_offline_s:
            hours = "never" if wall is None else f"{cut_off / 3600:.1f} h ago"
            raise OfflineLimitReached(
                "This station has been cut off from the central register for too long (last reached: "
                f"{hours}; the limit is {self.policy.max_offline_s / 3600:.1f} h). Enrolment is paused until the "
                "link returns; verification goes on. Please call the central office about the link.")

    # -- offline writes --------------------------------------------------------------------------

    def enrol_offline(self, subject_id: str, info: SubjectInfo, faces: list[FaceTemplate],
                      fingers: list[tuple[int, FingerprintTemplate]], stored: list[StoredTemplate],
                      qualities: tuple[SampleQuality, ...], decision_id: str, allow_duplicate: bool,
                      override_reason: str, actor: Actor) -> EnrolmentResult:
        """Enrol provisionally: searched against this station's gallery, stored with its outbox entry and audit
        record in one local transaction, uploaded when the link returns."""
        service = self.service
        assert self.replica is not None
        if subject_id in service.gallery:
            raise SubjectExists(f"A subject is already enrolled under {subject_id!r}.")
        self.check_budget()
        threshold, duplicates, enrolled, outcome = service.screen([f.template for f in faces], fingers,
                                                                  allow_duplicate)
        ref = service.storage.keyring.pseudonym(subject_id)
        created = now()
        with_ids = [StoredTemplate(t.modality, t.finger, t.quality, t.data, uuid.uuid4().hex, created)
                    for t in stored]
        assert service.decision_log is not None
        with service.decision_log.transaction() as tx:
            upload_id = ""
            if enrolled:
                entry = self.replica.add(tx, "enrol", ref, enrolment_payload(
                    subject_id, info, with_ids, override_reason=override_reason))
                self.replica.local.put_subject(tx, ref, record_of(subject_id, info, with_ids), with_ids)
                upload_id = entry.upload_id
            service.record(tx, "enrol", actor, decision_id, subject_ref=ref, outcome=outcome, threshold=threshold,
                           qualities=[q.quality for q in qualities], provisional=enrolled, upload_id=upload_id,
                           duplicates=[{"subject_ref": service.storage.keyring.pseudonym(c.subject_id),
                                        "score": c.score} for c in duplicates],
                           override_reason=override_reason if duplicates and allow_duplicate else "")
        if enrolled:
            service.gallery.add(ref, subject_id, info.watchlist, [f.template for f in faces], fingers)
            self.provisional.add(subject_id)
        return EnrolmentResult(subject_id, enrolled, duplicates, qualities, threshold, decision_id,
                               provisional=enrolled)

    def erase_offline(self, subject_id: str, reason: str, decision_id: str, actor: Actor) -> None:
        """Erase at this station at once; queue the erasure for the register (or cancel a pending enrolment)."""
        service = self.service
        assert self.replica is not None
        if subject_id not in service.gallery:
            raise SubjectNotFound(f"No subject is enrolled under {subject_id!r}.")
        ref = service.storage.keyring.pseudonym(subject_id)
        pending = [e for e in self.replica.entries() if e.kind == "enrol" and e.ref == ref]
        assert service.decision_log is not None
        with service.decision_log.transaction() as tx:
            if pending:  # never uploaded: the enrolment is cancelled, nothing of it leaves the station or stays
                self.replica.cancel(tx, pending[0].upload_id, "erased before upload")
            else:
                self.replica.add(tx, "erase", ref, {"subject_id": subject_id, "reason": reason})
            self.replica.scrub(tx, {ref})
            self.replica.local.erase_alerts(tx, {ref})
            self.replica.local.drop_subject(tx, ref)
            service.record(tx, "delete", actor, decision_id, subject_ref=ref, reason=reason, provisional=True)
        service.gallery.remove(subject_id)
        service.gallery.forget_ref(ref)
        self.provisional.discard(subject_id)

    # -- the drain -------------------------------------------------------------------------------

    def drain(self) -> int:
        """Upload every pending write in order (see the module doc); returns how many were settled."""
        if self.replica is None or not self._drain_lock.acquire(blocking=False):
            return 0
        try:
            if not self._register_hashes_keyed:
                keyring = self.service.storage.keyring
                if self.reviews.key_legacy_hashes(lambda digest: keyed_hash(keyring, digest)):
                    log.info("register: content hashes of this station's earlier uploads replaced by keyed ones")
                self._register_hashes_keyed = True
            start, done, outcomes = time.perf_counter(), 0, {"stored": 0, "review": 0, "erased": 0, "again": 0}
            for entry in self.replica.entries():
                if not self.service.sync_state.connected:
                    break
                state, outcome = self._upload(entry)
                self.replica.settle(entry.upload_id, state, outcome)
                outcomes[outcome if outcome in outcomes else "again"] += 1
                done += 1
            if done:
                self.last_drain = {"entries": done, "seconds": round(time.perf_counter() - start, 3), **outcomes}
                log.info("outbox drained: %s", self.last_drain)
            return done
        finally:
            self._drain_lock.release()

    def _upload(self, entry: OutboxEntry) -> tuple[str, str]:
        service = self.service
        with service.write_lock, service.change_transaction() as tx:
            seen = self.reviews.upload_outcome(tx, entry.upload_id)
            if seen is not None:
                keyring = service.storage.keyring  # either side may still hold an older version's plain hash
                if keyed_hash(keyring, seen[0]) != keyed_hash(keyring, entry.content_hash):
                    raise RuntimeError(f"upload {entry.upload_id}: the register holds other content under this id")
                log.warning("upload %s was already in the register (%s): not stored twice", entry.upload_id, seen[1])
                return self._state_of(seen[1]), "again"
            service.catch_up()  # under the register's write lock: the search sees the whole register
            outcome = self._upload_enrolment(tx, entry) if entry.kind == "enrol" else self._upload_erasure(tx, entry)
            self.reviews.record_upload(tx, entry.upload_id, entry.kind, entry.content_hash, outcome)
        return self._state_of(outcome), outcome

    @staticmethod
    def _state_of(outcome: str) -> str:
        return {"stored": OUTBOX_STORED, "review": OUTBOX_REVIEW, "erased": OUTBOX_ERASED}.get(outcome, OUTBOX_ERASED)

    def _upload_enrolment(self, tx: Any, entry: OutboxEntry) -> str:
        service = self.service
        payload = entry.payload
        subject_id, info = payload["subject_id"], SubjectInfo(**payload["info"])
        templates = payload_templates(payload)
        faces, fingers = faces_of(templates), fingers_of(templates)
        exclude = frozenset(self.provisional)  # not in the register: each is searched when it is uploaded
        threshold, duplicates, _, _ = service.screen(faces, fingers, allow_duplicate=False, exclude=exclude,
                                                     pending=pending_gallery(service, self.reviews, tx))
        taken = ((subject_id in service.gallery and subject_id not in self.provisional)
                 or self.reviews.pending_for(tx, entry.ref))  # another upload of this number waits for an officer
        actor = Actor(role="system", identity=f"station {service.station} drain")
        if duplicates or taken:
            document = {**payload, "threshold": threshold, "enrolled_offline_at": entry.created_at,
                        "document_number_taken": taken,
                        "candidates": [{"subject_id": c.subject_id, "score": c.score} for c in duplicates]}
            review_id = self.reviews.add(tx, entry.upload_id, entry.ref, document)
            service.record(tx, "enrol_upload", actor, review_id, subject_ref=entry.ref, outcome="review",
                           upload_id=entry.upload_id, threshold=threshold,
                           duplicates=[{"subject_ref": service.storage.keyring.pseudonym(c.subject_id),
                                        "score": c.score} for c in duplicates])
            return "review"
        service.storage.insert_subject(tx, subject_id, info, templates)
        service.record(tx, "enrol_upload", actor, entry.upload_id, subject_ref=entry.ref, outcome="stored",
                       upload_id=entry.upload_id, threshold=threshold)
        return "stored"

    def _upload_erasure(self, tx: Any, entry: OutboxEntry) -> str:
        service = self.service
        seq = service.storage.erase_subject(tx, entry.payload["subject_id"])
        service.record(tx, "delete_upload", Actor(role="system", identity=f"station {service.station} drain"),
                       entry.upload_id, subject_ref=entry.ref, outcome="erased" if seq else "absent",
                       upload_id=entry.upload_id, reason=entry.payload.get("reason", ""))
        return "erased"

    # -- the adjudication queue ------------------------------------------------------------------

    def list_reviews(self, limit: int = 50) -> list[Review]:
        """The reviews waiting for an officer, oldest first."""
        out = []
        for review_id, station, created, doc in self.reviews.pending(limit):
            candidates = tuple(Candidate(c["subject_id"], float(c["score"])) for c in doc["candidates"])
            out.append(Review(review_id, created, station, doc["subject_id"], SubjectInfo(**doc["info"]),
                              doc["enrolled_offline_at"], candidates, float(doc["threshold"])))
        return out

    def resolve(self, review_id: str, resolution: str, reason: str, actor: Actor) -> str:
        """Resolve a review: ``keep_both`` (two people: enrol), ``link`` (one person with two documents: enrol and
        link the records), ``reject`` (withdraw the enrolment from the station that made it). Audited."""
        if resolution not in RESOLUTIONS:
            raise ReviewConflict(f"The resolution must be one of {', '.join(RESOLUTIONS)}.")
        service = self.service
        with service.write_lock, service.change_transaction() as tx:
            taken = self.reviews.take(tx, review_id)
            if taken is None:
                raise ReviewConflict(f"No review {review_id!r} is waiting (unknown, or resolved already).")
            _, ref, doc = taken
            subject_id, info = doc["subject_id"], SubjectInfo(**doc["info"])
            service.catch_up()
            held = self.reviews.registered(tx, ref)  # now, under the lock: not what the upload saw
            fresh = [] if held or resolution == "reject" else self._screen_again(tx, review_id, doc)
            if fresh:  # not resolved: the officer has not been shown these; the review waits again with them
                self.reviews.update(tx, review_id, doc)
                service.record(tx, "review_returned", actor, review_id, subject_ref=ref, outcome="returned",
                               threshold=doc["threshold"], duplicates=[
                                   {"subject_ref": service.storage.keyring.pseudonym(c.subject_id),
                                    "score": c.score} for c in fresh])
            elif resolution in ("keep_both", "link") and held:
                if resolution == "keep_both":
                    raise ReviewConflict(f"{subject_id!r} is enrolled in the register already: two people cannot "
                                         "share one document number. Link (same person) or reject.")
            elif resolution in ("keep_both", "link"):
                service.storage.insert_subject(tx, subject_id, info, payload_templates(doc))
                if resolution == "link":
                    for c in doc["candidates"]:
                        self.reviews.link(tx, ref, service.storage.keyring.pseudonym(c["subject_id"]))
            if not fresh and (resolution == "reject" or held):  # not stored: its station withdraws its copy
                service.storage.append_change(tx, CHANGE_WITHDRAWN, UPLOAD_REF + self.reviews.upload_of(tx, review_id))
            if not fresh:
                self.reviews.close(tx, review_id, resolution, reason)
                service.record(tx, "review_resolved", actor, review_id, subject_ref=ref, outcome=resolution,
                               reason=reason)
        if fresh:
            found = ", ".join(f"{c.subject_id} (score {c.score:.2f})" for c in fresh)
            raise ReviewReturned(f"Review {review_id} was NOT resolved: searched again now, it may also be the same "
                                 f"person as {found}, which it did not list. It waits again with every candidate: "
                                 "look at it again (checkpoint-enroll reviews), then resolve it.")
        service.catch_up()
        return review_id

    def _screen_again(self, tx: Any, review_id: str, doc: dict[str, Any]) -> list[Candidate]:
        """A review's enrolment searched again under the register's lock, against the register and the other
        reviews waiting: the candidates its officer has not been shown. The document then lists every candidate
        (the new ones first) and the threshold of this search."""
        service = self.service
        templates = payload_templates(doc)
        threshold, found, _, _ = service.screen(
            faces_of(templates), fingers_of(templates), allow_duplicate=False,
            exclude=frozenset(self.provisional) | {doc["subject_id"]},  # this station's copies are not the register
            pending=pending_gallery(service, self.reviews, tx, but=review_id))
        shown = {c["subject_id"] for c in doc["candidates"]}
        fresh = [c for c in found if c.subject_id not in shown]
        if fresh:
            found_ids = {c.subject_id for c in found}
            doc["candidates"] = [{"subject_id": c.subject_id, "score": c.score} for c in found] + [
                c for c in doc["candidates"] if c["subject_id"] not in found_ids]
            doc["threshold"] = threshold
        return fresh
