"""The enrolments waiting for an officer's review, as a gallery the duplicate search can search.

An island's upload that found possible duplicates waits in the register's adjudication queue
(:class:`biometrics.register.Reviews`), in no station's gallery: an enrolment made meanwhile, another upload, or
the review's own resolution would not see it (one person enrolled twice, no officer shown both). Under the
register's lock, :func:`pending_gallery` builds a throw-away gallery of the queue's templates, keyed by each
review's document number, for :meth:`biometrics.service.CheckpointService.screen`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from biometrics.gallery import Gallery, faces_of, fingers_of
from biometrics.replica import payload_templates

if TYPE_CHECKING:
    from biometrics.register import Reviews
    from biometrics.service import CheckpointService


def pending_gallery(service: CheckpointService, reviews: Reviews, tx: Any, *, but: str = "") -> Gallery | None:
    """The pending reviews' templates (review ``but`` left out) as a gallery, read in ``tx``; None when none
    waits. Two reviews of one document number are one subject of it."""
    by_number: dict[str, tuple[bool, list[Any]]] = {}
    for review_id, doc in reviews.pending_documents(tx):
        if review_id != but:
            watchlist, templates = by_number.get(doc["subject_id"], (False, []))
            by_number[doc["subject_id"]] = (watchlist or bool(doc["info"].get("watchlist")),
                                            templates + payload_templates(doc))
    if not by_number:
        return None
    gallery = Gallery(service.gallery.fingerprint_gallery.calibration)
    for subject_id, (watchlist, templates) in by_number.items():
        gallery.add(service.storage.keyring.pseudonym(subject_id), subject_id, watchlist, faces_of(templates),
                    fingers_of(templates))
    return gallery
