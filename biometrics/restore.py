"""A station whose register went back: restored from a backup (docs/register.md, "Restoring the register").

The gallery notices (:meth:`biometrics.gallery.Gallery.catch_up`: the register's generation changed, its change
log ends before the change the station applied, or another change holds that seq) and calls :func:`restored`
instead of following a log whose sequence numbers are handed out again. Then, in order:

1. uploads of this station (an island's outbox entries settled ``stored``, ``review`` or ``erased``) that the
   register no longer records go back to the outbox: an enrolment rebuilt from the station's copy (its subject
   provisional again, so nothing acknowledged is lost), an erasure of a subject the restore brought back;
2. the gallery is reloaded from the register (this station's provisional subjects kept), and so is the copy;
3. the erasures are applied here at once (the subject leaves this station before anything else is answered),
   queued again in the local transaction that moves the copy to the restored register (a crash cannot leave
   the copy there with the erasure settled, which no later start would notice);
4. the audit chain is reconciled with the register, whose copy of it may have gone back too (shipped again);
5. a ``register_restored`` record goes into the chain; all of it is logged at ERROR level.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from biometrics.replica import OUTBOX_ERASED, OUTBOX_REVIEW, OUTBOX_STORED, OutboxEntry, enrolment_payload
from biometrics.types import Actor

if TYPE_CHECKING:
    from biometrics.island import Island

log = logging.getLogger(__name__)

LOST = "lost by a register restore"


def restored(island: Island, why: str, reload: Callable[..., Any]) -> None:
    """The gallery's ``on_restore`` hook on a station on a shared register (see the module doc)."""
    service, replica = island.service, island.replica
    lost: list[OutboxEntry] = []
    if replica is not None:
        uploaded = replica.entries((OUTBOX_STORED, OUTBOX_REVIEW, OUTBOX_ERASED))
        with service.storage.transaction() as tx:
            lost = [e for e in uploaded if island.reviews.upload_outcome(tx, e.upload_id) is None]
    requeued = [e.upload_id for e in lost if e.kind == "enrol" and _requeue_enrolment(island, e)]
    reload(keep=frozenset(island.provisional.values()))
    if replica is not None:
        keyring = service.storage.keyring
        # the erasures are queued again in the copy's own move to the restored register (one local transaction)
        erasures = {e.upload_id: queued for e in lost if e.kind == "erase"
                    and (queued := _erasure_again(island, e)) is not None}
        replica.resync(service.storage, {keyring.pseudonym(s) for s in island.provisional.values()},
                       service.sync_state.applied_seq, service.sync_state.generation, erasures)
        for upload_id, (ref, payload, _) in erasures.items():
            _erased_again(island, upload_id, ref, payload["subject_id"])
        requeued += list(erasures)
    assert service.decision_log is not None
    service.decision_log.reconcile()
    with service.decision_log.transaction() as tx:
        service.record(tx, "register_restored", Actor(role="system", identity=f"station {service.station}"),
                       uuid.uuid4().hex, outcome="reloaded", reason=why, count=len(requeued))
    log.error("register restored: this station reloaded from it; %d upload(s) it had lost queued again (%s)",
              len(requeued), ", ".join(requeued) or "none")


def _requeue_enrolment(island: Island, entry: OutboxEntry) -> bool:
    """An enrolment uploaded from here that the register lost goes back to the outbox, its content read from the
    copy; False when the copy no longer holds it."""
    assert island.replica is not None
    loaded = island.replica.local.load_subject(entry.ref)
    if loaded is None:
        log.error("upload %s: the register lost this enrolment and this station no longer holds it",
                  entry.upload_id)
        return False
    if not island.own_copy(entry):  # under review because the number was taken: the copy is the register's subject
        log.error("upload %s: the register lost this enrolment, which waited for review; the copy this station holds "
                  "under its number is another enrolment's, so it cannot be rebuilt: enrol the applicant again",
                  entry.upload_id)
        return False
    record, stored = loaded
    # made knowing the restored register: an erasure it makes from now on refuses the upload, none before
    seen = island.service.storage.head_seq()
    island.replica.requeue(entry.upload_id, enrolment_payload(record.subject_id, record.info, stored,
                                                              seen_seq=seen), LOST)
    island.provisional[entry.upload_id] = record.subject_id
    log.error("upload %s: the register lost this enrolment: queued again", entry.upload_id)
    return True


def _erasure_again(island: Island, entry: OutboxEntry) -> tuple[str, dict[str, Any], str] | None:
    """An erasure uploaded from here that the register lost: when the register holds the subject again, (its
    pseudonym, the erasure's payload to queue again, the outcome), else None. It names the restored register's
    head: the subject it holds now is the one erased, a later re-enrolment is not."""
    service = island.service
    subject_id = service.sync_state.refs.get(entry.ref)
    if subject_id is None:
        return None
    return entry.ref, {"subject_id": subject_id, "reason": f"erased here; {LOST}",
                       "seen_seq": service.storage.head_seq()}, LOST


def _erased_again(island: Island, upload_id: str, ref: str, subject_id: str) -> None:
    """Once its erasure is queued again (and its copy dropped): the subject leaves this station's memory."""
    service = island.service
    service.gallery.remove(subject_id)
    service.gallery.forget_ref(ref)
    log.error("upload %s: the register lost this erasure: the subject left this station, the erasure is queued "
              "again", upload_id)
