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

**An erasure at the register refuses the enrolments queued before it was known.** An offline enrolment also
names the register change the station's view reflected when it was made (``seen_seq``). If the register erased
that document number after that change (an erasure at any station, or an online erasure that found nothing to
erase and was recorded against the document: :meth:`biometrics.register.RegisterStorage.erase_document`), the
officer's erasure request reached the register while the enrolment waited at the island, neither knowing of the
other: the upload is refused, never stored nor queued for review (outcome ``refused``: the outbox entry ``erased``,
keeping nothing; audited). The station's own erasures uploaded before it do not count (they preceded the
enrolment). An enrolment queued by an older version names no change and is uploaded as before.

**What an offline erasure names.** The officer erases the enrolment the station holds, which the register may
have replaced by the time the erasure is uploaded (erased at the office, and the person enrolled again). So the
queued erasure names it: the register change the station's view reflected (``seen_seq``) and, when the station
holds its own enrolment of the subject already uploaded, that upload (``enrolment_upload``). The register erases
the subject it holds only if that subject was enrolled at or before ``seen_seq`` or by that upload
(:meth:`biometrics.register.RegisterStorage.erase_seen`); a later enrolment is kept, and the upload's outcome says
so: ``superseded`` (outbox state and the register's upload record; the audit record names the change kept). An
erasure an older version queued names nothing: at the first start of this version it is given the change the
station's copy reflects then (:meth:`biometrics.replica.Replica.version_legacy`).

**An offline erasure of a document the station does not hold.** The register may have enrolled it after the link
dropped, so the station never answers "not enrolled" offline: the request is queued all the same, naming its time
(``not_held``, ``requested_at``), with its audit record, and the officer is told it is queued. Uploaded, it erases
the enrolment of the document the register held when it was asked, never a later one
(:meth:`biometrics.register.RegisterStorage.erase_requested`); holding none, the register records the erasure
against the document, as an online erasure that finds nothing does. The time of an enrolment is when it was made:
an offline enrolment's upload carries its own time (``uploads.made_at``), so one made before the request is erased
(its review closed, and its station told by a ``withdrawn`` change keyed by the upload; its upload refused if it
comes after the erasure) whichever link returns first, and one made after it is kept (its copy, its review, its
upload), whichever link returns first.

**Its own erasure, then the same document enrolled again.** Offline, an officer erases a subject, then the
document is enrolled again at the same station: two outbox entries, the erasure first, and a provisional copy
under the same pseudonym. The erasure's change in the register (uploaded first) must not take that copy away
when it reaches the station (the catch-up before the next upload, the listener, a start): the station's own
order says the erasure came first. So the gallery asks before it applies a page (:meth:`Island.keeps`): an
erasure this station uploaded, whose entry precedes an enrolment entry of the pseudonym still pending, failed, or
under review with its own copy held, leaves that copy in memory and in the replica, with the alerts and officers'
texts naming it; the copy goes only as any provisional copy goes (replaced by the register's subject once stored,
withdrawn at review, erased). An erasure of the document by anyone else reaching the station after the
re-enrolment was made is applied as before, and refuses the upload.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from biometrics.audit import OfficerText
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
    OUTBOX_FAILED,
    OUTBOX_PENDING,
    OUTBOX_REJECTED,
    OUTBOX_REVIEW,
    OUTBOX_STORED,
    OUTBOX_SUPERSEDED,
    OutboxEntry,
    Replica,
    content_hash,
    enrolment_payload,
    is_own_copy,
    keyed_hash,
    payload_templates,
    without_texts,
)
from biometrics.storage import (
    CHANGE_ENROLLED,
    CHANGE_ERASED,
    CHANGE_WITHDRAWN,
    UPLOAD_REF,
    Change,
    SchemaTooNew,
    StoredTemplate,
    now,
    record_of,
)
from biometrics.types import (
    Actor,
    Candidate,
    EnrolmentResult,
    Review,
    SampleQuality,
    SubjectInfo,
    SubjectRecord,
)
from biometrics.validation import check_reason

if TYPE_CHECKING:
    from biometrics.register import Reviews
    from biometrics.service import CheckpointService

log = logging.getLogger(__name__)

RESOLUTIONS = ("keep_both", "link", "reject")
#: In the station's local store (its alerts' store): the register change up to which the erasures of the change log
#: have been applied to its alerts.
ALERTS_SEQ = "alerts_register_seq"
#: The outbox state an upload's outcome in the register settles its entry in.
STATE_OF_OUTCOME = {"stored": OUTBOX_STORED, "review": OUTBOX_REVIEW, "erased": OUTBOX_ERASED,
                    "superseded": OUTBOX_SUPERSEDED, "refused": OUTBOX_ERASED}


@dataclass
class OnlineUpload:
    """An island station's online enrolment, recorded in the register as this station's upload ``upload_id`` in
    the enrolment's own transaction (:meth:`Island.record_online`). Should the commit's acknowledgement be lost
    (the link dropped during COMMIT: the register may or may not hold the enrolment), the station enrols it
    provisionally under the same id and content (:meth:`Island.enrol_offline`), and the drain recognises it when
    the register had committed it (``again``: not stored twice, nor held for an officer's review against itself).
    """

    upload_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    payload: dict[str, Any] | None = None  # set once the register transaction has stored the enrolment
    templates: list[StoredTemplate] = field(default_factory=list)  # as stored, template ids and times included
    screened: tuple[float, tuple[Any, ...]] = (0.0, ())  # the register search's (threshold, duplicates)


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
        # upload id -> subject id of each enrolment made here offline that the register does not hold yet (keyed
        # on the entry: the register may have enrolled the same document number itself meanwhile)
        self.provisional: dict[str, str] = {}
        self._drain_lock = threading.Lock()
        self.last_drain: dict[str, Any] = {}
        self._register_hashes_keyed = False  # this station's upload records in the register: legacy hashes keyed
        if replica is not None and replica.key_legacy_hashes():
            log.info("outbox: content hashes of an older version replaced by keyed ones")
        if replica is not None and replica.strip_legacy_texts():
            log.info("outbox: officers' override reasons an older version queued for upload dropped (kept in the "
                     "audit record only)")
        if replica is not None and (retried := replica.retry_failed()):
            log.warning("outbox: %d writes whose upload failed before are queued again", retried)
        if replica is not None and replica.version_legacy(replica.register_seq()):
            log.info("outbox: erasures queued by an older version name the register change %d as the one they saw",
                     replica.register_seq())

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
        pending = self.replica.entries((OUTBOX_PENDING, OUTBOX_REVIEW, OUTBOX_FAILED))
        self.provisional = {e.upload_id: e.payload["subject_id"] for e in pending
                            if e.kind == "enrol" and "subject_id" in e.payload
                            and (e.state != OUTBOX_REVIEW or self.own_copy(e))}

    def own_copy(self, entry: OutboxEntry) -> bool:
        """Whether the copy this station holds under an enrolment entry's pseudonym is its own provisional one, not
        a subject the register holds under that number (another station's, the office's). An entry of an older
        version, which kept no template ids, counts as its own."""
        assert self.replica is not None
        held = self.replica.local.load_subject(entry.ref)
        return is_own_copy(None if held is None else [t.template_id for t in held[1]], entry.payload)

    def in_review(self, subject_id: str) -> bool:
        """Whether ``subject_id`` was enrolled here offline and its upload waits for an officer's review (a
        possible duplicate of someone in the register), the copy held being that enrolment: its identity is not
        established yet."""
        if self.replica is None or subject_id not in self.provisional.values():
            return False
        return any(e.payload.get("subject_id") == subject_id and e.upload_id in self.provisional and self.own_copy(e)
                   for e in self.replica.entries((OUTBOX_REVIEW,)))

    def _forget_settled(self) -> None:
        """Drop from :attr:`provisional` the entries the outbox has settled since."""
        assert self.replica is not None
        unsettled = self.replica.unsettled()
        for upload_id in [u for u in list(self.provisional) if u not in unsettled]:
            self.provisional.pop(upload_id, None)

    def keeps(self, changes: list[Change]) -> frozenset[int]:
        """The gallery's ``keeps`` hook: of a page of register changes about to be applied, the erasures that leave
        in place the provisional copy this station holds under their pseudonym (see "Its own erasure, then the
        same document enrolled again" in the module doc).

        Such an erasure is this station's own offline erasure, uploaded (the register's record of its uploads
        says which change it made: the join :meth:`biometrics.register.RegisterStorage.erased_after` uses),
        that precedes in its outbox the enrolment entry of the same pseudonym still pending, set aside as failed,
        or under review with its own copy held: the officer erased the subject, then enrolled the document again,
        and the station acknowledged that enrolment. Any other erasure (another station's, the office's, an
        online one of this station's) is applied as before, even one of the same document after the
        re-enrolment was made: that one wins (the upload is refused). Except an erasure asked for offline, at any
        station, of a document it did not hold (:meth:`biometrics.register.RegisterStorage.erase_requested`)
        before this station's enrolment was made: it applies to what was enrolled when it was asked, so it leaves
        this later enrolment too (and does not refuse its upload: :meth:`RegisterStorage.erased_after`)."""
        if self.replica is None:
            return frozenset()
        erasures = [c for c in changes if c.kind == CHANGE_ERASED]
        if not erasures:
            return frozenset()
        held = {e.ref: e for e in self.replica.entries((OUTBOX_PENDING, OUTBOX_FAILED, OUTBOX_REVIEW),
                                                       refs={c.ref for c in erasures})
                if e.kind == "enrol" and self.own_copy(e)}
        candidates = [c for c in erasures if c.ref in held]
        if not candidates:
            return frozenset()
        own = self.reviews.own_erasures([c.seq for c in candidates])  # change -> this station's erasure upload
        place = self.replica.positions(own.values())
        kept = frozenset(c.seq for c in candidates if own.get(c.seq) in place and place[own[c.seq]] < held[c.ref].n)
        # an erasure asked for offline of a document not held, before this station's enrolment of it was made:
        # it applies to what was enrolled when it was asked, not to this later enrolment (its upload is not refused)
        asked = self.reviews.requested_times([c.seq for c in candidates if c.seq not in kept])
        later = frozenset(c.seq for c in candidates if c.seq in asked and asked[c.seq] < held[c.ref].created_at)
        if later:
            log.info("register change(s) %s: erasure(s) asked for before this station's provisional enrolment of the "
                     "same document was made: that enrolment is kept", ", ".join(map(str, sorted(later))))
        kept |= later
        if kept:
            log.info("register change(s) %s: this station's own erasure(s), made before its provisional enrolment "
                     "of the same document: that enrolment is kept", ", ".join(map(str, sorted(kept))))
        return kept

    def follow(self, changes: list[tuple[Change, tuple[SubjectRecord, list[StoredTemplate]] | None]],
               kept: frozenset[int] = frozenset()) -> None:
        """The gallery's change hook: the copy follows; a provisional subject the register now holds (or has
        withdrawn) is provisional no more, and its outbox entry under review is settled. The erasures in ``kept``
        (:meth:`keeps`) leave the station's copy, and the alerts and officers' texts naming it, in place."""
        self._erase_alerts({c.ref for c, _ in changes if c.kind in (CHANGE_ERASED, CHANGE_WITHDRAWN)
                            and c.seq not in kept}, changes[-1][0].seq if changes else 0)
        if self.replica is None:
            return
        keyring = self.service.storage.keyring
        stored, rejected, withdrawn, ids = [], [], [], set(self.provisional.values())
        for change, loaded in changes:
            if change.kind == CHANGE_ENROLLED and loaded is not None and loaded[0].subject_id in ids:
                stored.append(change.ref)
            elif change.kind == CHANGE_WITHDRAWN and change.ref.startswith(UPLOAD_REF):
                withdrawn.append(change.ref[len(UPLOAD_REF):])
            elif change.kind == CHANGE_WITHDRAWN:  # an older version's withdrawal, keyed by the pseudonym
                rejected.append(change.ref)
        # the withdrawals in the page's own local transaction, after its copy (a later enrolment of the page has
        # replaced the copy): the copy never moves past a withdrawal and keeps the rejected copy (a crash between two
        # commits did: it was verified at this station for good)
        for ref, subject_id in self.replica.follow(changes, self.service.sync_state.generation, kept,
                                                   withdraw=withdrawn):
            self._forget_copy(ref, subject_id)
        erased = {c.ref for c, _ in changes if c.kind == CHANGE_ERASED and c.seq not in kept}
        if stored:
            self._settle_kept(stored)
        if rejected:
            self.replica.settle_refs(rejected, OUTBOX_REVIEW, OUTBOX_REJECTED, "rejected at review")
        if stored or rejected or withdrawn or erased & {keyring.pseudonym(sid) for sid in ids}:
            self._forget_settled()  # kept, rejected or erased at review: provisional no more (a pending one stays)

    def _settle_kept(self, refs: list[str]) -> None:
        """The register now holds subjects this station enrolled offline: an entry under review is settled as
        kept only if an officer stored that upload (another station's enrolment of the same document is not)."""
        assert self.replica is not None
        reviewed = {e.upload_id: e.ref for e in self.replica.entries((OUTBOX_REVIEW,)) if e.ref in refs}
        try:
            stored = self.reviews.kept(set(reviewed))
        except RegisterUnavailable:
            log.warning("register unreachable: %d reviewed upload(s) left under review until resolved", len(reviewed))
            return
        if stored:
            self.replica.settle_refs([reviewed[u] for u in stored], OUTBOX_REVIEW, OUTBOX_STORED, "kept at review")

    def _forget_copy(self, ref: str, subject_id: str) -> None:
        """The gallery in memory after the copy dropped this station's provisional copy ``ref`` (withdrawn)."""
        self.service.gallery.remove(subject_id)
        self.service.gallery.forget_ref(ref)

    def _erase_alerts(self, refs: set[str], upto: int) -> None:
        """Delete this station's alerts naming subjects the register erased or withdrew (a station on a register
        keeps its alerts in its local store, which the register's erasure cannot reach), recording in the same
        local transaction that its alerts have followed the change log up to change ``upto``."""
        store = self.service.alert_store
        if refs and store is not self.service.storage:
            with store.transaction() as tx:
                store.erase_alerts(tx, refs)
                store.set_meta(tx, ALERTS_SEQ, str(upto))

    def sweep_alerts(self) -> int:
        """At a start from the register's snapshot, before the station answers: delete its alerts naming subjects
        erased or withdrawn by the changes its alerts have not followed (it stopped, or died, between the
        register's erasure and its own deletion of them; the snapshot skips those changes, and the change hook
        with them); how many. A journal written by an older version records no such change: then the alerts
        naming subjects the register no longer holds are deleted. A station with a replica follows the log from
        its copy's change, hook included, and needs no sweep. (A withdrawal is keyed by its upload, not by a
        document's pseudonym, so it matches no alert: a withdrawn upload was only ever provisional at the island
        that made it, which has a replica; only erasures are swept here.)"""
        service = self.service
        store, head = service.alert_store, service.applied_seq
        if self.replica is not None or store is service.storage:
            return 0
        mark = store.get_meta(ALERTS_SEQ, "")
        gallery = service.gallery
        doomed = service.storage.erased_between(int(mark), head) if mark else (
            lambda subject_id: subject_id not in gallery)
        with store.transaction() as tx:
            done = store.erase_alerts(tx, doomed)
            store.set_meta(tx, ALERTS_SEQ, str(head))
        if done:
            log.info("alerts: %d naming subjects erased in the register while this station was away deleted", done)
        return done

    def check_budget(self) -> None:
        """Refuse a write past the offline budget, or while the register refuses this station (a newer schema,
        another key ring: what is queued here could never be uploaded), with what the officer can do."""
        assert self.replica is not None
        if self.service.register_refused:
            raise OfflineLimitReached(
                "The central register refuses this station (it needs an upgrade or its keys are not the "
                "register's): enrolment is paused, verification goes on. Please call the central office.")
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

    def record_online(self, tx: Any, upload: OnlineUpload, subject_id: str, info: SubjectInfo,
                      stored: list[StoredTemplate], seq: int) -> None:
        """In the register transaction that stores an online enrolment (change ``seq``, templates ``stored`` as
        stored), record it as this station's upload ``upload.upload_id`` with the content an offline enrolment of
        it would upload, kept in ``upload`` (see :class:`OnlineUpload`)."""
        assert self.replica is not None
        upload.templates = list(stored)
        upload.payload = enrolment_payload(subject_id, info, upload.templates,
                                           seen_seq=self.service.sync_state.applied_seq)
        self.reviews.record_upload(tx, upload.upload_id, "enrol", content_hash(self.replica.local.keyring,
                                                                               upload.payload), "stored", seq)

    def _committed(self, subject_id: str, online: OnlineUpload) -> bool:
        """Whether the copy this station holds of ``subject_id`` is the online enrolment ``online`` itself (its
        templates, by their random ids): the register committed it although its answer was lost, and this
        station's sync applied the change before the enrolment could fall back to working offline."""
        assert self.replica is not None
        if online.payload is None or not online.templates:
            return False
        held = self.replica.local.load_subject(self.service.storage.keyring.pseudonym(subject_id))
        return held is not None and {t.template_id for t in held[1]} == {t.template_id for t in online.templates}

    def enrol_offline(self, subject_id: str, info: SubjectInfo, faces: list[FaceTemplate],
                      fingers: list[tuple[int, FingerprintTemplate]], stored: list[StoredTemplate],
                      qualities: tuple[SampleQuality, ...], decision_id: str, allow_duplicate: bool,
                      override_reason: str, actor: Actor, online: OnlineUpload | None = None) -> EnrolmentResult:
        """Enrol provisionally: searched against this station's gallery, stored with its outbox entry and audit
        record in one local transaction, uploaded when the link returns. ``online``: the online enrolment whose
        commit was not acknowledged; if its register transaction reached the commit, the outbox entry takes its
        upload id and content, so the drain recognises it should the register hold it."""
        service = self.service
        assert self.replica is not None
        with service.gallery.apply_lock:  # a page of changes and its hook (the copy) are applied together
            if subject_id in service.gallery:
                if online is not None and self._committed(subject_id, online):
                    log.info("the register committed the enrolment of a subject whose COMMIT went unanswered (this "
                             "station's sync applied it first): enrolled, not provisional")
                    threshold, duplicates = online.screened
                    return EnrolmentResult(subject_id, True, duplicates, qualities, threshold, decision_id)
                raise SubjectExists(f"A subject is already enrolled under {subject_id!r}.")
        self.check_budget()
        seen = service.sync_state.applied_seq  # the register this enrolment was made knowing
        threshold, duplicates, enrolled, outcome = service.screen([f.template for f in faces], fingers,
                                                                  allow_duplicate)
        ref = service.storage.keyring.pseudonym(subject_id)
        created = now()
        with_ids = [StoredTemplate(t.modality, t.finger, t.quality, t.data, uuid.uuid4().hex, created)
                    for t in stored]
        payload = enrolment_payload(subject_id, info, with_ids, seen_seq=seen)
        same_upload = ""
        if online is not None and online.payload is not None:  # the register may hold it under this id
            with_ids, payload, same_upload = online.templates, online.payload, online.upload_id
        assert service.decision_log is not None
        with service.decision_log.transaction() as tx:
            upload_id = ""
            if enrolled:
                entry = self.replica.add(tx, "enrol", ref, payload, upload_id=same_upload)
                self.replica.local.put_subject(tx, ref, record_of(subject_id, info, with_ids), with_ids)
                upload_id = entry.upload_id
            service.record(tx, "enrol", actor, decision_id, subject_ref=ref, outcome=outcome, threshold=threshold,
                           qualities=[q.quality for q in qualities], provisional=enrolled, upload_id=upload_id,
                           duplicates=[{"subject_ref": service.storage.keyring.pseudonym(c.subject_id),
                                        "score": c.score} for c in duplicates],
                           override_reason=OfficerText(override_reason if duplicates and allow_duplicate else "", (
                               ref, *(service.storage.keyring.pseudonym(c.subject_id) for c in duplicates))))
        if enrolled:
            service.gallery.add(ref, subject_id, info.watchlist, [f.template for f in faces], fingers)
            self.provisional[upload_id] = subject_id
        return EnrolmentResult(subject_id, enrolled, duplicates, qualities, threshold, decision_id,
                               provisional=enrolled)

    def erase_offline(self, subject_id: str, reason: str, decision_id: str, actor: Actor) -> None:
        """Erase at this station at once; queue the erasure for the register (or cancel a pending enrolment).

        A document this station does not hold is not answered "not enrolled": the register may have enrolled it
        since the link dropped. The request is queued all the same (its time named: the register erases the
        enrolment of the document it held then, :meth:`biometrics.register.RegisterStorage.erase_requested`) with
        its audit record, in one local transaction, and the officer is told so (SubjectNotFound saying the
        request is queued, as an online erasure recorded against the document is answered)."""
        service = self.service
        assert self.replica is not None
        with service.gallery.apply_lock:  # what the officer erases is what the gallery holds at this change
            held = subject_id in service.gallery
            ref = service.storage.keyring.pseudonym(subject_id)
            pending = [e for e in self.replica.entries((OUTBOX_PENDING, OUTBOX_FAILED))
                       if e.kind == "enrol" and e.ref == ref]
            assert service.decision_log is not None
            with service.decision_log.transaction() as tx:
                if pending:  # not uploaded: the enrolment is cancelled, nothing of it leaves the station or stays
                    self.replica.cancel(tx, pending[0].upload_id, "erased before upload")
                # a failed upload may have reached the register (an error after its commit): an erasure naming it
                # goes too, and erases it there only if that upload stored it (Register.erase_seen)
                failed = pending[0].upload_id if pending and pending[0].state == OUTBOX_FAILED else ""
                if not pending or failed:  # named: the change this station's view reflects, its own upload if any
                    version: dict[str, Any] = {"seen_seq": service.sync_state.applied_seq}
                    if own := failed or self.replica.last_upload(ref):
                        version["enrolment_upload"] = own
                    if not held:  # the request names its time: the register erases what it held then
                        version.update(not_held=True, requested_at=now())
                    self.replica.add(tx, "erase", ref, {"subject_id": subject_id, "reason": reason, **version})
                self.replica.scrub(tx, {ref})
                self.replica.local.erase_alerts(tx, {ref})
                self.replica.local.erase_audit_texts(tx, {ref})  # this station's chain's texts about the subject
                self.replica.local.drop_subject(tx, ref)
                service.record(tx, "delete", actor, decision_id, subject_ref=ref, reason=reason, provisional=True,
                               **({} if held else {"outcome": "queued_not_held"}))
            if held:
                service.gallery.remove(subject_id)
                service.gallery.forget_ref(ref)
            for upload_id in [u for u, sid in list(self.provisional.items()) if sid == subject_id]:
                self.provisional.pop(upload_id, None)
        if not held:
            raise SubjectNotFound(
                f"This station is working offline and holds no subject under {subject_id!r}; the central register "
                "may hold one enrolled since the link dropped. The erasure request is recorded here and queued for "
                "the central register: when the link returns, the register erases the enrolment of this document "
                "it held when the request was made (holding none, it records the erasure against the document "
                "number). Nothing more needs to be done here.")

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
            self._settle_withdrawn()
            start, done = time.perf_counter(), 0
            outcomes = {"stored": 0, "review": 0, "erased": 0, "superseded": 0, "refused": 0, "again": 0,
                        "skipped": 0, "failed": 0, "held": 0}
            # a document's writes reach the register in the order they were made (an erasure, then a re-enrolment):
            # behind a write set aside as failed, the later writes of its document wait (retried at the next start)
            blocked = {e.ref for e in self.replica.entries((OUTBOX_FAILED,))}
            for entry in self.replica.entries():
                if not self.service.sync_state.connected:
                    break
                if entry.ref in blocked:
                    outcomes["held"] += 1
                    continue
                with self.service.write_lock:  # no offline erasure between the upload and its settlement
                    try:
                        state, outcome = self._upload(entry)
                    except RegisterUnavailable:
                        raise
                    except SchemaTooNew:  # the register refuses every write of this station: the outbox waits whole
                        break  # (said once by the shipper and in register_refused; uploaded after the upgrade)
                    except Exception as exc:  # this entry only: set aside, audited; the rest of the outbox goes on
                        outcome = self._fail(entry, exc)
                        blocked.add(entry.ref)
                    else:
                        if outcome == "again_withdrawn":  # resolved while this station missed the settlement:
                            dropped = self.replica.withdraw(entry.upload_id, (OUTBOX_PENDING,))  # one transaction
                            if dropped is not None:
                                self._forget_copy(*dropped)
                            self.provisional.pop(entry.upload_id, None)
                        else:
                            self.replica.settle(entry.upload_id, state, outcome)
                        if state == OUTBOX_SUPERSEDED:  # no change reaches this station: its own entries of the
                            with self.replica.local.transaction() as tx:  # subject under review are closed, and
                                self.replica.scrub(tx, {entry.ref})  # keep nothing
                            self.load_provisional()
                        elif state != OUTBOX_REVIEW:  # stored, erased, refused (its change removed the copy)
                            self.provisional.pop(entry.upload_id, None)
                outcomes[outcome if outcome in outcomes else "again"] += 1
                done += 1
            if done:
                self.last_drain = {"entries": done, "seconds": round(time.perf_counter() - start, 3), **outcomes}
                log.info("outbox drained: %s", self.last_drain)
            return done
        finally:
            self._drain_lock.release()

    def _settle_withdrawn(self) -> int:
        """Withdraw this station's uploads under review, its own provisional copy still held, that the register's
        review says an officer did not store (rejected, or linked to the register's subject of the number): their
        ``withdrawn`` change passed without withdrawing them (an island of an older version that died between its
        copy's commit and the withdrawal: it committed them apart). How many; at every drain, one read of the
        register when such an entry is held."""
        assert self.replica is not None
        waiting = [e.upload_id for e in self.replica.entries((OUTBOX_REVIEW,)) if e.upload_id in self.provisional]
        if not waiting:
            return 0
        states = self.reviews.review_states(waiting)
        done = 0
        with self.service.gallery.apply_lock:  # not beside a page that may replace the copy
            for upload_id in [u for u in waiting if states.get(u) in ("reject", "link_held", "erased")]:
                dropped = self.replica.withdraw(upload_id, (OUTBOX_REVIEW,))
                if dropped is not None:
                    self._forget_copy(*dropped)
                self.provisional.pop(upload_id, None)
                done += 1
        if done:
            log.warning("%d upload(s) rejected at review while this station missed the withdrawal: withdrawn now", done)
        return done

    def _fail(self, entry: OutboxEntry, exc: Exception) -> str:
        """Set aside an entry whose upload raised: state ``failed``, its payload kept, an audit record; it is
        retried at the next start. Returns the outcome ("failed")."""
        log.error("upload %s (%s) failed (%s): set aside as failed, retried at the next start; the rest of the "
                  "outbox goes on", entry.upload_id, entry.kind, type(exc).__name__, exc_info=True)
        service = self.service
        assert service.decision_log is not None and self.replica is not None
        with service.decision_log.transaction() as tx:
            self.replica.fail(tx, entry.upload_id, f"upload failed: {type(exc).__name__}")
            service.record(tx, "enrol_upload" if entry.kind == "enrol" else "delete_upload",
                           Actor(role="system", identity=f"station {service.station} drain"), entry.upload_id,
                           subject_ref=entry.ref, outcome="failed", upload_id=entry.upload_id,
                           reason=type(exc).__name__)
        return "failed"

    def _upload(self, entry: OutboxEntry) -> tuple[str, str]:
        service = self.service
        with service.write_lock, service.change_transaction() as tx:
            assert self.replica is not None
            current = self.replica.state_of(entry.upload_id)
            if current != OUTBOX_PENDING:  # cancelled (erased offline) since the drain read it: never uploaded
                return current, "skipped"
            seen = self.reviews.upload_outcome(tx, entry.upload_id)
            if seen is not None:
                keyring = service.storage.keyring  # either side may still hold an older version's plain hash
                if keyed_hash(keyring, seen[0]) != keyed_hash(keyring, entry.content_hash):
                    raise RuntimeError(f"upload {entry.upload_id}: the register holds other content under this id")
                log.warning("upload %s was already in the register (%s): not stored twice", entry.upload_id, seen[1])
                return self._settled_again(tx, entry, seen[1])
            service.catch_up()  # under the register's write lock: the search sees the whole register
            upload = self._upload_enrolment if entry.kind == "enrol" else self._upload_erasure
            outcome, seq = upload(tx, entry)
            self.reviews.record_upload(tx, entry.upload_id, entry.kind, entry.content_hash, outcome, seq,
                                       made_at=self._made_at(entry))
        return self._state_of(outcome), outcome

    def _settled_again(self, tx: Any, entry: OutboxEntry, outcome: str) -> tuple[str, str]:
        """(state, outcome) of an upload the register already held (this station missed its settlement). One held
        for review may have been resolved since, while this station's entry was still pending, so the change hook
        passed over it: stored by the officer (kept), or not (``again_withdrawn``: the drain withdraws it)."""
        if outcome == "review":
            review = self.reviews.review_state(tx, entry.upload_id)
            if review in ("keep_both", "link"):
                return OUTBOX_STORED, "again"
            if review in ("reject", "link_held"):
                return OUTBOX_REVIEW, "again_withdrawn"
            if review == "erased":
                return OUTBOX_ERASED, "again"
        return self._state_of(outcome), "again"

    @staticmethod
    def _made_at(entry: OutboxEntry) -> str | None:
        """When the write of ``entry`` was made here, as the register records it for the rule of an erasure asked
        for offline (:meth:`biometrics.register.RegisterStorage.erase_requested`): an enrolment's own time (made
        offline: not its upload's), an erasure of a document not held the request's; None for another erasure."""
        if entry.kind == "enrol":
            return entry.created_at
        if entry.payload.get("not_held"):
            return str(entry.payload.get("requested_at") or entry.created_at)
        return None

    @staticmethod
    def _state_of(outcome: str) -> str:
        return STATE_OF_OUTCOME.get(outcome, OUTBOX_ERASED)

    def _upload_enrolment(self, tx: Any, entry: OutboxEntry) -> tuple[str, int | None]:
        service = self.service
        payload = entry.payload
        actor = Actor(role="system", identity=f"station {service.station} drain")
        if "seen_seq" in payload:  # refused if the register erased the document since (see the module doc)
            erased = service.storage.erased_after(tx, entry.ref, int(payload["seen_seq"]), entry.created_at)
            if erased is not None:
                service.record(tx, "enrol_upload", actor, entry.upload_id, subject_ref=entry.ref,
                               outcome="refused_erased", upload_id=entry.upload_id, register_seq=erased)
                return "refused", None
        subject_id, info = payload["subject_id"], SubjectInfo(**payload["info"])
        templates = payload_templates(payload)
        faces, fingers = faces_of(templates), fingers_of(templates)
        ids = {*self.provisional.values(), subject_id}
        held = service.storage.held(tx, ids)  # the document numbers the register holds, whoever enrolled them
        exclude = frozenset(ids - held)  # enrolled here, not in the register: each is searched when it is uploaded
        threshold, duplicates, _, _ = service.screen(faces, fingers, allow_duplicate=False, exclude=exclude,
                                                     pending=pending_gallery(service, self.reviews, tx))
        taken = subject_id in held or self.reviews.pending_for(tx, entry.ref)  # or another upload of it waits
        if duplicates or taken:
            # an older version's payload may hold the officer's override reason: never copied to the register
            document = {**without_texts(payload), "threshold": threshold, "enrolled_offline_at": entry.created_at,
                        "document_number_taken": taken,
                        "candidates": [{"subject_id": c.subject_id, "score": c.score} for c in duplicates]}
            review_id = self.reviews.add(tx, entry.upload_id, entry.ref, document)
            service.record(tx, "enrol_upload", actor, review_id, subject_ref=entry.ref, outcome="review",
                           upload_id=entry.upload_id, threshold=threshold,
                           duplicates=[{"subject_ref": service.storage.keyring.pseudonym(c.subject_id),
                                        "score": c.score} for c in duplicates])
            return "review", None
        _, seq, _ = service.storage.insert_subject(tx, subject_id, info, templates)
        service.record(tx, "enrol_upload", actor, entry.upload_id, subject_ref=entry.ref, outcome="stored",
                       upload_id=entry.upload_id, threshold=threshold)
        return "stored", seq

    def _upload_erasure(self, tx: Any, entry: OutboxEntry) -> tuple[str, int | None]:
        """Erase the enrolment the station saw (see the module doc). Every queued erasure names the change it saw
        (this version writes it, and :meth:`Replica.version_legacy` gives one to an older version's at start); one
        that did not would be taken to have seen none, so it could never erase a later enrolment."""
        service = self.service
        payload = entry.payload
        against = False
        if payload.get("not_held"):  # asked offline of a document the station did not hold: what the register
            seq, kept, against = service.storage.erase_requested(  # held when it was asked
                tx, payload["subject_id"], str(self._made_at(entry)),
                int(payload.get("seen_seq", 0)), payload.get("enrolment_upload", ""))
            superseded = kept is not None or seq is None
        else:
            seq, kept = service.storage.erase_seen(tx, payload["subject_id"], int(payload.get("seen_seq", 0)),
                                                   payload.get("enrolment_upload", ""))
            superseded = kept is not None
        outcome = "superseded" if superseded else "erased"
        named = {"register_seq": kept} if kept is not None else {}  # the later enrolment kept
        audited = "recorded_against_document" if against else "absent" if outcome == "erased" and not seq else outcome
        if superseded and payload.get("not_held"):
            log.warning("upload %s: an erasure asked for offline at %s of a document this station did not hold: the "
                        "register's enrolment of it (change %s) was made after the request and is kept",
                        entry.upload_id, self._made_at(entry), kept if kept is not None else "under review")
        service.record(tx, "delete_upload", Actor(role="system", identity=f"station {service.station} drain"),
                       entry.upload_id, subject_ref=entry.ref, outcome=audited, upload_id=entry.upload_id,
                       reason=payload.get("reason", ""), **named)
        return outcome, seq

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
            _, ref, doc, upload_id = taken
            subject_id, info = doc["subject_id"], SubjectInfo(**doc["info"])
            check_reason(reason, "reason", required=True,
                         documents=[subject_id, *(c["subject_id"] for c in doc.get("candidates", []))])
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
                _, seq, _ = service.storage.insert_subject(tx, subject_id, info, payload_templates(doc))
                self.reviews.record_stored(tx, upload_id, seq)
                if resolution == "link":
                    for c in doc["candidates"]:
                        self.reviews.link(tx, ref, service.storage.keyring.pseudonym(c["subject_id"]))
            if not fresh and (resolution == "reject" or held):  # not stored: its station withdraws its copy
                service.storage.append_change(tx, CHANGE_WITHDRAWN, UPLOAD_REF + upload_id)
            if not fresh:  # a link to the subject the register holds under the number stored nothing: not "kept"
                self.reviews.close(tx, review_id, "link_held" if resolution == "link" and held else resolution,
                                   resolution)
                concerned = (ref, *(service.storage.keyring.pseudonym(c["subject_id"]) for c in doc["candidates"]))
                # the candidates named too: the reason concerns them, and only an erasure of one of them (or of
                # the subject) explains its absence to checkpoint-audit verify
                service.record(tx, "review_resolved", actor, review_id, subject_ref=ref, outcome=resolution,
                               duplicates=[{"subject_ref": r, "score": c["score"]}
                                           for r, c in zip(concerned[1:], doc["candidates"], strict=True)],
                               reason=OfficerText(reason, concerned))
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
        ids = {*self.provisional.values(), doc["subject_id"]}  # this station's copies are not the register
        threshold, found, _, _ = service.screen(
            faces_of(templates), fingers_of(templates), allow_duplicate=False,
            exclude=frozenset(ids - service.storage.held(tx, ids)),
            pending=pending_gallery(service, self.reviews, tx, but=review_id))
        shown = {c["subject_id"] for c in doc["candidates"]}
        fresh = [c for c in found if c.subject_id not in shown]
        if fresh:
            found_ids = {c.subject_id for c in found}
            doc["candidates"] = [{"subject_id": c.subject_id, "score": c.score} for c in found] + [
                c for c in doc["candidates"] if c["subject_id"] not in found_ids]
            doc["threshold"] = threshold
        return fresh
